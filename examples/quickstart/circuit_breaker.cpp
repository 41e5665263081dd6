// Shows: protecting a flaky dependency with sluice::circuit_breaker and falling back to cached
// data while it is down; the breaker trips, rejects fast, probes, and closes again.
// Needs: sluice::core.
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include <sluice/circuit_breaker.hpp>

// A pretend downstream: a price service that is unreachable while `down` is set.
struct price_service {
  bool down = false;
  int calls = 0;
  absl::StatusOr<double> quote(const std::string& symbol) {
    ++calls;
    if (down) return absl::UnavailableError("price service unreachable: " + symbol);
    return 101.25;
  }
};

int main() {
  sluice::circuit_breaker_options options;
  options.minimum_calls = 5;                               // judge after 5 calls
  options.failure_rate_threshold = 0.5;                    // trip at 50% failures
  options.open_duration = std::chrono::milliseconds(200);  // then probe after 200 ms
  options.half_open_probes = 2;                            // 2 good probes close it
  auto created = sluice::circuit_breaker<>::create(options);
  if (!created.ok()) {
    std::fprintf(stderr, "bad options: %s\n", std::string(created.status().message()).c_str());
    return 1;
  }
  sluice::circuit_breaker<>& breaker = *created;
  breaker.add_listener([](const sluice::circuit_breaker<>::transition& t) {
    std::printf("breaker: %s -> %s\n", sluice::to_string(t.from), sluice::to_string(t.to));
  });

  price_service service;
  double cached = 100.0;  // the last good answer
  auto price = [&] {
    absl::StatusOr<double> quote = breaker.execute([&] { return service.quote("ACME"); });
    if (quote.ok()) return cached = *quote;
    // Failed, or rejected by the open breaker (Unavailable, no call made): serve the cache.
    return cached;
  };

  std::printf("healthy: %.2f\n", price());
  service.down = true;
  for (int i = 0; i < 20; ++i) price();  // trips after 5 failures; the rest never reach it
  std::printf("outage: served %.2f from cache; the service saw only %d of 22 calls\n", price(),
              service.calls);

  service.down = false;
  std::this_thread::sleep_for(std::chrono::milliseconds(250));  // the open period passes
  for (int i = 0; i < 3; ++i) price();  // two probes succeed, the breaker closes
  std::printf("recovered: %.2f, state %s\n", price(), sluice::to_string(breaker.state()));
  return breaker.state() == sluice::breaker_state::closed && service.calls < 12 ? 0 : 1;
}
