#include "sluice/gcra_limiter.hpp"

#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include <sluice/detail/gcra.hpp>
#include <sluice/rate_limit.hpp>
#include <sluice/testing/manual_clock.hpp>

#include "alloc_counter.hpp"
#include "catch.hpp"

using namespace std::chrono_literals;
using sluice::testing::manual_clock;
using limiter_t = sluice::gcra_limiter<manual_clock>;

TEST_CASE("gcra_limiter: create validates options", "[gcra_limiter]") {
  manual_clock clock;
  CHECK(limiter_t::create({.rate = 0, .burst = 1}, clock).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(limiter_t::create({.rate = 10, .burst = 0}, clock).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(limiter_t::create({.rate = 10, .period = 0s, .burst = 1}, clock).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(limiter_t::create({.rate = 2'000'000'000, .burst = 1}, clock).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(limiter_t::create({.rate = 1, .period = 24h, .burst = std::uint64_t{1} << 62}, clock)
            .status()
            .code() == absl::StatusCode::kInvalidArgument);
  auto ok = limiter_t::create({.rate = 10, .burst = 5}, clock);
  REQUIRE(ok.ok());
  CHECK(ok->try_acquire().allowed);
}

TEST_CASE("gcra_limiter: a full limiter admits exactly the burst, then paces", "[gcra_limiter]") {
  manual_clock clock;
  limiter_t limiter({.rate = 10, .burst = 5}, clock);  // T = 100 ms
  for (std::uint64_t i = 0; i < 5; ++i) {
    const auto r = limiter.try_acquire();
    REQUIRE(r.allowed);
    CHECK(r.limit == 5);
    CHECK(r.remaining == 4 - i);
    CHECK(r.retry_after == 0ns);
    CHECK(r.reset_after == 100ms * static_cast<std::int64_t>(i + 1));
  }
  auto r = limiter.try_acquire();
  CHECK_FALSE(r.allowed);
  CHECK(r.remaining == 0);
  CHECK(r.retry_after == 100ms);
  CHECK(r.reset_after == 500ms);

  clock.advance(100ms - 1ns);
  r = limiter.try_acquire();
  CHECK_FALSE(r.allowed);
  CHECK(r.retry_after == 1ns);
  clock.advance(1ns);
  CHECK(limiter.try_acquire().allowed);
  CHECK_FALSE(limiter.try_acquire().allowed);
}

TEST_CASE("gcra_limiter: admitted count over simulated time is exactly burst + t/T",
          "[gcra_limiter]") {
  const auto [rate, burst, step] = GENERATE(std::tuple{10u, 5u, 1ms}, std::tuple{100u, 2u, 3ms},
                                            std::tuple{7u, 20u, 13ms}, std::tuple{1000u, 50u, 0ms});
  INFO("rate " << rate << " burst " << burst);
  manual_clock clock;
  const auto t0 = clock.now();
  limiter_t limiter({.rate = rate, .burst = burst}, clock);
  const auto interval = std::chrono::nanoseconds(1s) / rate;
  std::uint64_t admitted = 0;
  const auto horizon = 10s;
  // Offer far more than the limit: several attempts per step, stepping through 10 s. Every case
  // has burst tolerance ((burst - 1) * T) >= step, so no time is lost to the step granularity.
  const auto dt =
      step == 0ms ? std::chrono::nanoseconds(interval) / 3 : std::chrono::nanoseconds(step);
  while (clock.now() - t0 <= horizon) {
    for (int i = 0; i < 3; ++i) admitted += limiter.try_acquire().allowed ? 1 : 0;
    clock.advance(dt);
  }
  const auto last = clock.now() - dt - t0;  // time of the last attempts
  const auto expected = burst + static_cast<std::uint64_t>(last / interval);
  CHECK(admitted == expected);
}

TEST_CASE("gcra_limiter: multi-unit requests and requests above the burst", "[gcra_limiter]") {
  manual_clock clock;
  limiter_t limiter({.rate = 10, .burst = 10}, clock);
  CHECK(limiter.try_acquire(7).allowed);
  auto r = limiter.try_acquire(4);
  CHECK_FALSE(r.allowed);
  CHECK(r.remaining == 3);
  CHECK(r.retry_after == 100ms);
  CHECK(limiter.try_acquire(3).allowed);
  CHECK(limiter.available() == 0);

  r = limiter.try_acquire(11);
  CHECK_FALSE(r.allowed);
  CHECK(r.retry_after == sluice::rate_limit_result::never());
  CHECK(r.to_status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(sluice::retry_after_value(r).view() == "1");  // reset_after = 1 s

  clock.advance(1s);
  CHECK(limiter.available() == 10);
  CHECK(limiter.try_acquire(0).allowed);  // asking costs nothing
  CHECK(limiter.available() == 10);
}

TEST_CASE("gcra_limiter: reservations queue and cancel returns the units", "[gcra_limiter]") {
  manual_clock clock;
  limiter_t limiter({.rate = 10, .burst = 1}, clock);
  auto a = limiter.reserve();
  auto b = limiter.reserve();
  auto c = limiter.reserve();
  REQUIRE((a.ok() && b.ok() && c.ok()));
  CHECK(a.delay() == 0ns);
  CHECK(b.delay() == 100ms);
  CHECK(c.delay() == 200ms);
  CHECK(c.ready_at() == clock.now() + 200ms);

  // Cancelling the last reservation gives its slot back: the next one gets the same delay.
  c.cancel();
  c.cancel();  // idempotent
  auto d = limiter.reserve();
  CHECK(d.delay() == 200ms);

  // A refused reservation charges nothing.
  auto e = limiter.reserve(1, 250ms);
  CHECK_FALSE(e.ok());
  CHECK(e.delay() == 300ms);
  CHECK(limiter.reserve(1, 300ms).delay() == 300ms);

  // Units already usable are not returned by cancel.
  clock.advance(150ms);  // b became usable at 100 ms
  b.cancel();
  CHECK(limiter.reserve(1, 0ns).delay() == 250ms);  // still queued behind d and the 300 ms one

  CHECK(limiter.reserve(2).exceeds_burst());
}

TEST_CASE("gcra_limiter: cancelling everything restores a full limiter", "[gcra_limiter]") {
  manual_clock clock;
  limiter_t limiter({.rate = 5, .burst = 3}, clock);
  std::vector<limiter_t::reservation> rs;
  for (int i = 0; i < 6; ++i) rs.push_back(limiter.reserve());
  CHECK(limiter.available() == 0);
  for (auto& r : rs) r.cancel();
  CHECK(limiter.available() == 3);
  CHECK(limiter.try_acquire(3).allowed);
}

TEST_CASE("gcra_limiter: rate and burst change at run time", "[gcra_limiter]") {
  manual_clock clock;
  limiter_t limiter({.rate = 10, .burst = 2}, clock);
  CHECK(limiter.try_acquire(2).allowed);
  CHECK(limiter.set_limits({.rate = 0}).code() == absl::StatusCode::kInvalidArgument);
  REQUIRE(limiter.set_limits({.rate = 100, .burst = 4}).ok());
  CHECK(limiter.limits().period == 10ms);
  CHECK(limiter.limits().burst == 4);
  // The 200 ms debt is kept in time: with capacity 4 x 10 ms = 40 ms, the next unit passes at
  // 200 + 10 - 40 = 170 ms.
  CHECK(limiter.try_acquire().retry_after == 170ms);
  clock.advance(200ms);
  CHECK(limiter.try_acquire(4).allowed);
  CHECK_FALSE(limiter.try_acquire().allowed);
  clock.advance(10ms);
  CHECK(limiter.try_acquire().allowed);
  CHECK_FALSE(limiter.try_acquire().allowed);
}

TEST_CASE("gcra_limiter: header values", "[gcra_limiter]") {
  manual_clock clock;
  limiter_t limiter({.rate = 1, .period = 2s, .burst = 3}, clock);
  (void)limiter.try_acquire(3);
  const auto r = limiter.try_acquire();
  CHECK(sluice::ratelimit_limit_value(r).view() == "3");
  CHECK(sluice::ratelimit_remaining_value(r).view() == "0");
  CHECK(sluice::ratelimit_reset_value(r).view() == "6");
  CHECK(sluice::retry_after_value(r).view() == "2");
  CHECK(r.to_status().code() == absl::StatusCode::kResourceExhausted);
  clock.advance(2s - 1ms);
  const auto r2 = limiter.try_acquire();
  CHECK(sluice::retry_after_value(r2).view() == "1");  // 1 ms rounds up to a whole second
  CHECK(sluice::ratelimit_reset_value(r2).str() == "5");
}

TEST_CASE("gcra_limiter: decisions neither allocate nor read past the caller's time",
          "[gcra_limiter]") {
  manual_clock clock;
  limiter_t limiter({.rate = 1000, .burst = 10}, clock);
  const auto now = clock.now();
  sluice_test::alloc_scope scope;
  std::uint64_t admitted = 0;
  for (int i = 0; i < 100; ++i) admitted += limiter.try_acquire(1, now).allowed ? 1 : 0;
  auto r = limiter.reserve(1, 0ns, now);
  CHECK(scope.allocations() == 0);
  CHECK(admitted == 10);
  CHECK_FALSE(r.ok());
}

TEST_CASE("gcra_limiter: the pure arithmetic is unit-agnostic", "[gcra_limiter]") {
  // The same decisions in milliseconds, as a Lua port would compute them.
  namespace g = sluice::detail::gcra;
  const g::params p{.emission_interval = 100, .burst = 3};
  std::int64_t tat = 0;
  const std::int64_t now = 1'000'000;
  for (int i = 0; i < 3; ++i) {
    const auto d = g::decide(tat, now, p, 1);
    REQUIRE(d.outcome == g::verdict::allowed);
    tat = d.tat;
  }
  const auto d = g::decide(tat, now, p, 1);
  CHECK(d.outcome == g::verdict::limited);
  CHECK(d.retry_after == 100);
  CHECK(d.reset_after == 300);
  STATIC_REQUIRE(g::decide(0, 50, g::params{10, 2}, 3).outcome == g::verdict::exceeds_burst);
}

TEST_CASE("gcra_limiter: many threads admit exactly the GCRA bound", "[gcra_limiter][stress]") {
  const int threads = GENERATE(2, 4, 8);
  INFO("threads " << threads);
  manual_clock clock;
  const auto t0 = clock.now();
  limiter_t limiter({.rate = 1000, .burst = 25}, clock);  // T = 1 ms
  constexpr int steps = 200;
  const auto dt = 7ms;  // 7 units per step, far fewer than the attempts
  std::atomic<std::uint64_t> admitted{0};
  std::barrier sync(threads + 1);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      for (int s = 0; s < steps; ++s) {
        sync.arrive_and_wait();  // time is stable during this phase
        std::uint64_t mine = 0;
        for (int i = 0; i < 40; ++i) {
          mine += limiter.try_acquire().allowed ? 1 : 0;
          if (i % 8 == 0) (void)limiter.try_acquire(0);
        }
        admitted.fetch_add(mine, std::memory_order_relaxed);
        sync.arrive_and_wait();  // the driver advances time
      }
    });
  }
  for (int s = 0; s < steps; ++s) {
    sync.arrive_and_wait();
    sync.arrive_and_wait();
    clock.advance(dt);
  }
  for (auto& w : workers) w.join();
  const auto last = (clock.now() - dt) - t0;
  CHECK(admitted.load() == 25 + static_cast<std::uint64_t>(last / 1ms));
}

TEST_CASE("gcra_limiter: free-running threads with rate changes stay within the bound",
          "[gcra_limiter][stress]") {
  const int threads = GENERATE(2, 4);
  manual_clock clock;
  const auto t0 = clock.now();
  limiter_t limiter({.rate = 1000, .burst = 10}, clock);
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> admitted{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      std::uint64_t mine = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        mine += limiter.try_acquire().allowed ? 1 : 0;
        auto r = limiter.reserve(1, 0ns);
        if (r.ok()) r.cancel();
      }
      admitted.fetch_add(mine, std::memory_order_relaxed);
    });
  }
  for (int i = 0; i < 2000; ++i) {
    clock.advance(1ms);
    if (i % 100 == 0)
      REQUIRE(limiter.set_limits({.rate = 1000, .burst = i % 200 == 0 ? 10u : 5u}).ok());
  }
  stop = true;
  for (auto& w : workers) w.join();
  // Never more than the largest burst plus one unit per elapsed millisecond.
  CHECK(admitted.load() <= 10 + static_cast<std::uint64_t>((clock.now() - t0) / 1ms));
}

TEST_CASE("gcra_limiter: reset and the unshared path decide like the shared one",
          "[gcra_limiter]") {
  manual_clock clock;
  limiter_t shared({.rate = 20, .burst = 4}, clock);
  limiter_t unshared({.rate = 20, .burst = 4}, clock);
  for (int i = 0; i < 200; ++i) {
    if (i % 7 == 0) clock.advance(std::chrono::milliseconds(13 * (i % 5)));
    const auto n = static_cast<std::uint64_t>(i % 3);
    const auto a = shared.try_acquire(n, clock.now());
    const auto b = unshared.try_acquire_unshared(n, clock.now());
    REQUIRE(a.allowed == b.allowed);
    REQUIRE(a.remaining == b.remaining);
    REQUIRE(a.retry_after == b.retry_after);
    REQUIRE(a.reset_after == b.reset_after);
  }
  (void)shared.try_acquire(4);
  shared.reset();
  CHECK(shared.available() == 4);
}
