#include "sluice/token_bucket.hpp"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <random>
#include <thread>
#include <vector>

#include <sluice/gcra_limiter.hpp>
#include <sluice/keyed_limiter.hpp>
#include <sluice/testing/manual_clock.hpp>

#include "alloc_counter.hpp"
#include "catch.hpp"

using namespace std::chrono_literals;
using sluice::testing::manual_clock;
using bucket_t = sluice::token_bucket<manual_clock>;
using warming_t = sluice::warming_token_bucket<manual_clock>;

TEST_CASE("token_bucket: create validates options", "[token_bucket]") {
  manual_clock clock;
  CHECK(bucket_t::create({.rate = 0}, clock).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(bucket_t::create({.rate = 5, .burst = 0}, clock).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(warming_t::create({.limits = {.rate = 5}}, clock).status().code() ==
        absl::StatusCode::kInvalidArgument);  // no warm-up period
  CHECK(warming_t::create({.limits = {.rate = 5}, .warmup_period = 1s, .cold_factor = 0.5}, clock)
            .status()
            .code() == absl::StatusCode::kInvalidArgument);
  REQUIRE(bucket_t::create({.rate = 5, .burst = 2}, clock).ok());
  REQUIRE(warming_t::create({.limits = {.rate = 5}, .warmup_period = 1s}, clock).ok());
}

TEST_CASE("token_bucket: burst, refill and retry_after edges", "[token_bucket]") {
  manual_clock clock;
  bucket_t bucket({.rate = 4, .burst = 3}, clock);  // 250 ms per token
  for (std::uint64_t i = 0; i < 3; ++i) {
    const auto r = bucket.try_acquire();
    REQUIRE(r.allowed);
    CHECK(r.remaining == 2 - i);
  }
  auto r = bucket.try_acquire();
  CHECK_FALSE(r.allowed);
  CHECK(r.retry_after == 250ms);
  CHECK(r.reset_after == 750ms);
  clock.advance(249ms);
  CHECK(bucket.try_acquire().retry_after == 1ms);
  clock.advance(1ms);
  CHECK(bucket.try_acquire().allowed);
  clock.advance(10s);
  CHECK(bucket.available() == 3);  // refill stops at the burst
  CHECK(bucket.try_acquire(4).retry_after == sluice::rate_limit_result::never());
}

TEST_CASE("token_bucket: admitted count over simulated time is exactly burst + t/T",
          "[token_bucket]") {
  manual_clock clock;
  const auto t0 = clock.now();
  bucket_t bucket({.rate = 50, .burst = 10}, clock);  // 20 ms per token
  std::uint64_t admitted = 0;
  while (clock.now() - t0 <= 30s) {
    for (int i = 0; i < 4; ++i) admitted += bucket.try_acquire().allowed ? 1 : 0;
    clock.advance(7ms);
  }
  CHECK(admitted == 10 + static_cast<std::uint64_t>((clock.now() - 7ms - t0) / 20ms));
}

TEST_CASE("token_bucket: decides exactly as gcra_limiter on random traffic", "[token_bucket]") {
  manual_clock clock;
  const sluice::rate_limit_options limits{.rate = 30, .burst = 7};
  bucket_t bucket(limits, clock);
  sluice::gcra_limiter<manual_clock> gcra(limits, clock);
  std::mt19937_64 rng(7);
  for (int i = 0; i < 20'000; ++i) {
    clock.advance(std::chrono::microseconds(rng() % 60'000));
    const std::uint64_t n = rng() % 9;
    const auto a = bucket.try_acquire(n);
    const auto b = gcra.try_acquire(n);
    INFO("step " << i << " n " << n);
    REQUIRE(a.allowed == b.allowed);
    REQUIRE(a.remaining == b.remaining);
    REQUIRE(a.retry_after == b.retry_after);
    REQUIRE(a.reset_after == b.reset_after);
  }
}

TEST_CASE("token_bucket: reservations go into debt and cancel returns tokens", "[token_bucket]") {
  manual_clock clock;
  bucket_t bucket({.rate = 10, .burst = 2}, clock);
  auto a = bucket.reserve(2);
  auto b = bucket.reserve(1);
  auto c = bucket.reserve(2);
  CHECK(a.delay() == 0ms);
  CHECK(b.delay() == 100ms);
  CHECK(c.delay() == 300ms);
  c.cancel();
  CHECK(bucket.reserve(1, 0ms).delay() == 200ms);  // refused: only b's debt remains
  CHECK_FALSE(bucket.reserve(1, 0ms).ok());
  b.cancel();
  CHECK(bucket.reserve(1, 0ms).delay() == 100ms);
  clock.advance(200ms);
  CHECK(bucket.try_acquire(2).allowed);
  CHECK(bucket.reserve(3).exceeds_burst());
}

TEST_CASE("token_bucket: rate changes keep the tokens held", "[token_bucket]") {
  manual_clock clock;
  bucket_t bucket({.rate = 10, .burst = 10}, clock);
  CHECK(bucket.try_acquire(6).allowed);
  REQUIRE(bucket.set_limits({.rate = 1000, .burst = 5}).ok());
  CHECK(bucket.available() == 4);
  CHECK(bucket.try_acquire(4).allowed);
  clock.advance(1ms);
  CHECK(bucket.try_acquire().allowed);
  CHECK_FALSE(bucket.try_acquire().allowed);
  CHECK(bucket.set_limits({.rate = 0}).code() == absl::StatusCode::kInvalidArgument);
  CHECK(bucket.limits().period == 1ms);
}

TEST_CASE("token_bucket: warm-up follows Guava's SmoothWarmingUp curve", "[token_bucket]") {
  manual_clock clock;
  // Stable 10/s (100 ms), warm-up 2 s, cold factor 3: threshold 10 units, max 20 units, slope
  // 20 ms per unit above the threshold.
  warming_t warm({.limits = {.rate = 10}, .warmup_period = 2s}, clock);
  CHECK(std::abs(warm.threshold_units() - 10.0) < 1e-9);
  CHECK(std::abs(warm.max_units() - 20.0) < 1e-9);
  CHECK(warm.current_interval() == 300ms);

  // Back-to-back requests: each waits for the cost of the one before it.
  std::vector<std::chrono::nanoseconds> waits;
  for (int i = 0; i < 14; ++i) {
    auto r = warm.reserve();
    REQUIRE(r.ok());
    waits.push_back(r.delay());
    clock.advance_to(r.ready_at());
  }
  CHECK(waits[0] == 0ms);
  std::chrono::nanoseconds warmup_total{0};
  for (int k = 1; k <= 10; ++k) {
    INFO("request " << k);
    CHECK(waits[static_cast<std::size_t>(k)] == std::chrono::milliseconds(310 - 20 * k));
    warmup_total += waits[static_cast<std::size_t>(k)];
  }
  CHECK(warmup_total == 2s);  // the time from cold to warm is the warm-up period
  for (std::size_t k = 11; k < waits.size(); ++k) CHECK(waits[k] == 100ms);

  // try_acquire refuses until the schedule allows, then passes at once.
  auto refused = warm.try_acquire();
  CHECK_FALSE(refused.allowed);
  CHECK(refused.retry_after == 100ms);
  clock.advance(100ms);
  CHECK(warm.try_acquire().allowed);

  // A short idle stays warm; a warm-up period of idleness makes it cold again.
  clock.advance(100ms + 500ms);
  CHECK(warm.current_interval() == 100ms);
  clock.advance(2s);
  CHECK(warm.current_interval() == 300ms);
}

TEST_CASE("token_bucket: warm-up reservation cancel returns schedule time", "[token_bucket]") {
  manual_clock clock;
  warming_t warm({.limits = {.rate = 10}, .warmup_period = 2s, .cold_factor = 1.0}, clock);
  auto a = warm.reserve();
  CHECK(a.delay() == 0ms);
  auto b = warm.reserve();
  CHECK(b.delay() == 100ms);
  auto c = warm.reserve();
  CHECK(c.delay() == 200ms);
  c.cancel();
  b.cancel();
  CHECK(warm.reserve(1, 0ms).delay() == 100ms);  // a's cost remains
}

TEST_CASE("token_bucket: concurrent use stays exact", "[token_bucket][stress]") {
  const int threads = GENERATE(2, 4);
  manual_clock clock;
  bucket_t bucket({.rate = 1000, .burst = 100}, clock);
  warming_t warm({.limits = {.rate = 1000}, .warmup_period = 1s}, clock);
  std::atomic<std::uint64_t> admitted{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      std::uint64_t mine = 0;
      for (int i = 0; i < 500; ++i) {
        mine += bucket.try_acquire().allowed ? 1 : 0;
        (void)warm.try_acquire();
        auto r = bucket.reserve(1, 0ms);
        if (r.ok()) r.cancel();
      }
      admitted.fetch_add(mine);
    });
  }
  for (auto& w : workers) w.join();
  CHECK(admitted.load() == 100);  // time never moved: the burst exactly
}

TEST_CASE("token_bucket: reset refills, and both buckets serve as keyed limiters",
          "[token_bucket]") {
  manual_clock clock;
  bucket_t bucket({.rate = 1, .burst = 2}, clock);
  CHECK(bucket.try_acquire(2).allowed);
  bucket.reset();
  CHECK(bucket.available() == 2);

  sluice::keyed_limiter<int, bucket_t> keyed(
      {.limits = {.rate = 1, .burst = 2}, .max_keys = 1, .shards = 1}, clock);
  CHECK(keyed.try_acquire(1, 2).allowed);
  CHECK_FALSE(keyed.try_acquire(1).allowed);
  CHECK(keyed.try_acquire(2).allowed);     // evicts key 1 (cap 1): its slot is reused ...
  CHECK(keyed.try_acquire(1, 2).allowed);  // ... and key 1 starts full again

  sluice::keyed_limiter<int, warming_t> warm_keyed(
      {.limits = {.limits = {.rate = 10}, .warmup_period = 1s}}, clock);
  CHECK(warm_keyed.try_acquire(1).allowed);
  CHECK_FALSE(warm_keyed.try_acquire(1).allowed);  // cold: the next one waits
  REQUIRE(warm_keyed.set_override(1, {.limits = {.rate = 100}, .warmup_period = 1s}).ok());
}
