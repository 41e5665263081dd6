// Shows: per-client rate limiting with sluice::keyed_limiter (GCRA per key, bounded memory), the
// RateLimit-* / Retry-After header values of a 429, and one admit() decision combining a global
// rate limit with an in-flight cap (sluice::load_shedder).
// Needs: sluice::core.
#include <chrono>
#include <cstdio>
#include <string>

#include <sluice/clock.hpp>
#include <sluice/concurrency_limiter.hpp>
#include <sluice/gcra_limiter.hpp>
#include <sluice/keyed_limiter.hpp>
#include <sluice/load_shedder.hpp>
#include <sluice/rate_limit.hpp>

int main() {
  using namespace std::chrono_literals;

  // Each client may send 1 request per second on average, 3 at once; at most 10'000 clients are
  // remembered (the least recently seen are forgotten first).
  auto per_client = sluice::keyed_limiter<std::string>::create(
      {.limits = {.rate = 1, .period = 1s, .burst = 3}, .max_keys = 10'000});
  if (!per_client.ok()) return std::puts(per_client.status().ToString().c_str()), 1;

  for (int i = 1; i <= 4; ++i) {
    const auto r = (*per_client)->try_acquire("203.0.113.7");
    if (r) {
      std::printf("request %d: 200, RateLimit-Remaining: %s\n", i,
                  sluice::ratelimit_remaining_value(r).str().c_str());
    } else {
      std::printf("request %d: 429, Retry-After: %s, RateLimit-Limit: %s, RateLimit-Reset: %s\n", i,
                  sluice::retry_after_value(r).str().c_str(),
                  sluice::ratelimit_limit_value(r).str().c_str(),
                  sluice::ratelimit_reset_value(r).str().c_str());
      if (i != 4) return 1;  // the fourth request in a burst of three must be refused
    }
  }
  // Another client has its own quota.
  if (!(*per_client)->try_acquire("198.51.100.2")) return 1;

  // A whole server: 1000 requests/s overall (on the cheap coarse clock) and 2 in flight.
  auto global = sluice::gcra_limiter<sluice::coarse_clock>::create({.rate = 1000, .burst = 100});
  if (!global.ok()) return 1;
  sluice::concurrency_limiter inflight({.limit = 2});
  sluice::load_shedder<sluice::gcra_limiter<sluice::coarse_clock>> shedder(&*global, &inflight);

  auto first = shedder.admit();
  auto second = shedder.admit();
  auto third = shedder.admit();  // both slots taken: 503
  std::printf("admit: %d %d %d, Retry-After: %s\n", first.http_status(), second.http_status(),
              third.http_status(), third.retry_after_value().str().c_str());
  if (!first || !second || third.http_status() != 503) return 1;
  first.permit().reset();  // the first request finished
  return shedder.admit().admitted() ? 0 : 1;
}
