#include "sluice/retry_budget.hpp"

#include <atomic>
#include <chrono>
#include <cmath>
#include <thread>
#include <vector>

#include <sluice/testing/manual_clock.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using manual = sluice::testing::manual_clock;

TEST_CASE("retry_budget: token bucket follows gRPC's arithmetic", "[retry_budget]") {
  sluice::token_bucket_retry_budget budget({.max_tokens = 10, .token_ratio = 0.1});
  CHECK(budget.tokens() == 10.0);
  CHECK(budget.try_retry());
  for (int i = 0; i < 4; ++i) budget.record_failure();
  CHECK(budget.tokens() == 6.0);
  CHECK(budget.try_retry());
  budget.record_failure();  // 5 tokens: not above the threshold of max/2
  CHECK(budget.tokens() == 5.0);
  CHECK_FALSE(budget.try_retry());
  budget.record_success();  // 5.1
  CHECK(std::abs(budget.tokens() - 5.1) < 1e-9);
  CHECK(budget.try_retry());
  for (int i = 0; i < 100; ++i) budget.record_failure();
  CHECK(budget.tokens() == 0.0);  // floored at zero
  for (int i = 0; i < 1000; ++i) budget.record_success();
  CHECK(budget.tokens() == 10.0);  // capped at max
}

TEST_CASE("retry_budget: token bucket honours an explicit threshold", "[retry_budget]") {
  sluice::token_bucket_retry_budget budget({.max_tokens = 4, .token_ratio = 1, .threshold = 1});
  budget.record_failure();
  budget.record_failure();
  CHECK(budget.try_retry());  // 2 > 1
  budget.record_failure();
  CHECK_FALSE(budget.try_retry());  // 1 is not > 1
  budget.record_success();
  CHECK(budget.try_retry());
}

TEST_CASE("retry_budget: ratio budget grants ratio of traffic plus the floor", "[retry_budget]") {
  manual clock;
  sluice::ratio_retry_budget<manual> budget(
      {.ratio = 0.5, .min_retries_per_second = 1, .ttl = 10s, .buckets = 10}, clock);
  // Floor only: 1/s over 10 s = 10 retries.
  int granted = 0;
  while (budget.try_retry()) ++granted;
  CHECK(granted == 10);
  // 20 calls earn 10 more.
  for (int i = 0; i < 20; ++i) budget.record_call();
  granted = 0;
  while (budget.try_retry()) ++granted;
  CHECK(granted == 10);
  CHECK(budget.available() == 0.0);
  // Half the window later nothing has expired yet.
  clock.advance(5s);
  CHECK_FALSE(budget.try_retry());
  // Once the window has slid past them, everything is available again (floor only).
  clock.advance(6s);
  CHECK(budget.available() == 10.0);
  granted = 0;
  while (budget.try_retry()) ++granted;
  CHECK(granted == 10);
}

TEST_CASE("retry_budget: ratio budget window slides bucket by bucket", "[retry_budget]") {
  manual clock;
  sluice::ratio_retry_budget<manual> budget(
      {.ratio = 1.0, .min_retries_per_second = 0, .ttl = 4s, .buckets = 4}, clock);
  CHECK_FALSE(budget.try_retry());  // no traffic, no floor
  for (int i = 0; i < 3; ++i) budget.record_call();
  clock.advance(2s);
  for (int i = 0; i < 2; ++i) budget.record_call();
  CHECK(budget.available() == 5.0);
  clock.advance(2s);  // the first three calls left the window
  CHECK(budget.available() == 2.0);
  CHECK(budget.try_retry());
  CHECK(budget.try_retry());
  CHECK_FALSE(budget.try_retry());
}

TEST_CASE("retry_budget: concurrent use keeps the invariants", "[retry_budget]") {
  const int threads = GENERATE(2, 4, 8);
  INFO("threads = " << threads);
  constexpr int per_thread = 20000;
  {
    sluice::token_bucket_retry_budget budget({.max_tokens = 100, .token_ratio = 0.5});
    std::atomic<bool> out_of_range{false};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        for (int i = 0; i < per_thread; ++i) {
          if ((i + t) % 3 == 0) {
            budget.record_failure();
          } else {
            budget.record_success();
          }
          const double tokens = budget.tokens();
          if (tokens < 0.0 || tokens > 100.0) out_of_range = true;
          (void)budget.try_retry();
        }
      });
    }
    for (auto& th : pool) th.join();
    CHECK_FALSE(out_of_range.load());
  }
  {
    manual clock;
    sluice::ratio_retry_budget<manual> budget(
        {.ratio = 0.1, .min_retries_per_second = 5, .ttl = 10s, .buckets = 10}, clock);
    std::atomic<int> granted{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&] {
        for (int i = 0; i < per_thread / 10; ++i) {
          budget.record_call();
          if (budget.try_retry()) granted.fetch_add(1, std::memory_order_relaxed);
        }
      });
    }
    for (auto& th : pool) th.join();
    const int calls = threads * (per_thread / 10);
    CHECK(granted.load() <= static_cast<int>(0.1 * calls + 50.0));
    CHECK(granted.load() >= static_cast<int>(0.1 * calls));  // every call earned its share
  }
}
