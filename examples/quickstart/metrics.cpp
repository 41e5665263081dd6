// Shows: Prometheus metrics for a service — a labelled request counter, a latency histogram with
// percentiles, process metrics, and a circuit breaker publishing its own state at scrape time.
// Needs: sluice::core (<sluice/metrics.hpp>).
#include <chrono>
#include <cstdio>
#include <string>

#include <sluice/circuit_breaker.hpp>
#include <sluice/metrics.hpp>
#include <sluice/metrics/circuit_breaker_metrics.hpp>

int main() {
  using namespace std::chrono_literals;
  sluice::metrics::registry registry;

  // Push: metrics updated on the hot path (lock-free, no allocation after creation).
  auto requests =
      registry.add_counter_family("http_requests_total", "Requests served.", {"method", "code"});
  auto latency =
      registry.add_latency_histogram("http_request_duration_seconds", "Time to answer a request.");
  if (!requests.ok() || !latency.ok()) {
    std::printf("registration failed: %s\n", requests.status().ToString().c_str());
    return 1;
  }
  sluice::metrics::counter& get_ok = (*requests)->with({"GET", "200"});  // keep the reference
  sluice::metrics::counter& get_404 = (*requests)->with({"GET", "404"});
  for (int i = 0; i < 1000; ++i) {
    get_ok.inc();
    (*latency)->observe(std::chrono::microseconds(100 + i));
  }
  get_404.inc(3);

  // Pull: figures read only when /metrics is scraped (the breaker pays nothing in between).
  sluice::circuit_breaker<> breaker(sluice::circuit_breaker_options{});
  auto published = sluice::metrics::publish(registry, "user_store", breaker);
  auto process = registry.add_collector(sluice::metrics::process_collector{});

  const std::string body = registry.render();  // serve with registry::content_type
  std::printf("%s", body.c_str());

  const auto p99 = (*latency)->read().quantile(0.99);
  std::printf("# p99 latency: %.0f us\n", p99 * 1e6);
  const bool ok =
      get_ok.value() == 1000 &&
      body.find("http_requests_total{method=\"GET\",code=\"404\"} 3") != std::string::npos &&
      body.find("process_resident_memory_bytes") != std::string::npos;
  return ok ? 0 : 1;
}
