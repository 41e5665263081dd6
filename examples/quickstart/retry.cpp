// Shows: retrying a flaky call with capped exponential backoff, a retry budget shared by every
// call to the dependency, and a deadline that no attempt or backoff sleep may overrun; then the
// same retry inside a pipeline with a per-attempt timeout and a fallback.
// Needs: sluice::core.
#include <chrono>
#include <cstdio>

#include <sluice/deadline.hpp>
#include <sluice/fallback.hpp>
#include <sluice/pipeline.hpp>
#include <sluice/retry.hpp>
#include <sluice/retry_budget.hpp>
#include <sluice/timeout.hpp>

using namespace std::chrono_literals;

// A dependency that fails its first `failures` calls with Unavailable.
struct flaky_service {
  int failures;
  int calls = 0;
  absl::StatusOr<int> get_price() {
    if (++calls <= failures) return absl::UnavailableError("connection refused");
    return 42;
  }
};

int main() {
  std::chrono::steady_clock clock;
  // One budget per dependency: retries stop when failures outweigh successes (gRPC's rule).
  sluice::token_bucket_retry_budget budget({.max_tokens = 10, .token_ratio = 0.1});
  sluice::retry retry({.max_attempts = 5, .delay = sluice::backoff::exponential(1ms, 20ms)},
                      budget);

  flaky_service service{3};
  const auto deadline = sluice::deadline<>::after(clock, 500ms);
  absl::StatusOr<int> price = retry.execute([&] { return service.get_price(); }, deadline);
  if (!price.ok()) {
    std::printf("failed: %s\n", price.status().ToString().c_str());
    return 1;
  }
  std::printf("price %d after %d attempts\n", *price, service.calls);

  // A deadline too short for the next backoff: the retry gives up early with the last error
  // instead of sleeping past it.
  flaky_service down{100};
  auto hurried =
      retry.execute([&] { return down.get_price(); }, sluice::deadline<>::after(clock, 2ms));
  std::printf("hurried: %s after %d attempt(s)\n", hurried.status().ToString().c_str(), down.calls);
  if (hurried.ok() || down.calls > 2) return 1;

  // During an outage the shared budget stops retrying: each call then makes a single attempt.
  int attempts_before = down.calls;
  for (int i = 0; i < 5; ++i) (void)retry.execute([&] { return down.get_price(); });
  std::printf("outage: 5 calls made %d attempts, budget %.1f tokens\n",
              down.calls - attempts_before, budget.tokens());
  if (budget.try_retry()) return 1;

  // A retry in a pipeline: a fallback outermost, a timeout per attempt innermost.
  auto pipeline =
      sluice::pipeline(sluice::fallback(-1),
                       sluice::retry({.max_attempts = 3, .delay = sluice::backoff::constant(1ms)}),
                       sluice::timeout(100ms));
  flaky_service other{1};
  auto outcome = pipeline.execute_outcome([&](sluice::call_context<>& ctx) {
    (void)ctx.deadline();  // pass ctx.deadline().remaining(clock) on to a real client
    return other.get_price();
  });
  std::printf("pipeline: %d (attempts %d, fallback %s, reason %s)\n", outcome.result.value_or(0),
              outcome.attempts, outcome.fallback_used ? "yes" : "no",
              sluice::to_string(outcome.reason));
  return outcome.ok() && *outcome.result == 42 ? 0 : 1;
}
