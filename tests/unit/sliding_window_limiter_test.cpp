#include "sluice/sliding_window_limiter.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include <sluice/keyed_limiter.hpp>
#include <sluice/testing/manual_clock.hpp>

#include "alloc_counter.hpp"
#include "catch.hpp"

using namespace std::chrono_literals;
using sluice::testing::manual_clock;
using window_t = sluice::sliding_window_limiter<manual_clock>;

TEST_CASE("sliding_window_limiter: create validates options", "[sliding_window_limiter]") {
  manual_clock clock;
  CHECK(window_t::create({.limit = 0}, clock).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(window_t::create({.limit = 5, .window = 0s}, clock).status().code() ==
        absl::StatusCode::kInvalidArgument);
  REQUIRE(window_t::create({.limit = 5, .window = 1s}, clock).ok());
}

TEST_CASE("sliding_window_limiter: the previous window is weighted by its overlap",
          "[sliding_window_limiter]") {
  manual_clock clock;  // starts at a whole hour: windows start at the current time
  window_t limiter({.limit = 10, .window = 1s}, clock);
  for (std::uint64_t i = 0; i < 10; ++i) {
    const auto r = limiter.try_acquire();
    REQUIRE(r.allowed);
    CHECK(r.remaining == 9 - i);
  }
  auto r = limiter.try_acquire();
  CHECK_FALSE(r.allowed);
  // Next window at 1 s; at 1.1 s the previous 10 weigh 9, so one more fits.
  CHECK(r.retry_after == 1100ms);
  CHECK(r.reset_after == 2s);
  clock.advance(1100ms - 1ns);
  CHECK_FALSE(limiter.try_acquire().allowed);
  clock.advance(1ns);
  CHECK(limiter.try_acquire().allowed);
  CHECK_FALSE(limiter.try_acquire().allowed);

  clock.advance(400ms);  // 1.5 s: previous 10 weigh 5, current holds 1 -> 4 more
  std::uint64_t admitted = 0;
  for (int i = 0; i < 10; ++i) admitted += limiter.try_acquire().allowed ? 1 : 0;
  CHECK(admitted == 4);

  clock.advance(2s);  // two windows later: everything forgotten
  CHECK(limiter.available() == 10);
  CHECK(limiter.try_acquire(11).retry_after == sluice::rate_limit_result::never());
}

TEST_CASE("sliding_window_limiter: retry_after is exact on random traffic",
          "[sliding_window_limiter]") {
  manual_clock clock;
  const sluice::sliding_window_options opts{.limit = 7, .window = 100ms};
  window_t limiter(opts, clock);
  std::mt19937_64 rng(11);
  std::vector<std::pair<manual_clock::time_point, std::uint64_t>> history;  // admitted requests
  auto replay = [&](manual_clock::time_point probe_at, std::uint64_t n) {
    window_t fresh(opts, clock);
    for (const auto& [t, k] : history) REQUIRE(fresh.try_acquire(k, t).allowed);
    return fresh.try_acquire(n, probe_at).allowed;
  };
  auto t = clock.now();
  int checked = 0;
  for (int i = 0; i < 400; ++i) {
    t += std::chrono::microseconds(rng() % 40'000);
    const std::uint64_t n = 1 + rng() % 4;
    const auto r = limiter.try_acquire(n, t);
    if (r.allowed) {
      history.emplace_back(t, n);
      continue;
    }
    INFO("step " << i << " n " << n);
    REQUIRE(r.retry_after > 0ns);
    CHECK_FALSE(replay(t + r.retry_after - 1ns, n));
    CHECK(replay(t + r.retry_after, n));
    ++checked;
  }
  CHECK(checked > 50);
}

TEST_CASE("sliding_window_limiter: limit changes, reset and no allocation",
          "[sliding_window_limiter]") {
  manual_clock clock;
  window_t limiter({.limit = 3, .window = 1s}, clock);
  sluice_test::alloc_scope scope;
  CHECK(limiter.try_acquire(3).allowed);
  CHECK_FALSE(limiter.try_acquire().allowed);
  CHECK(scope.allocations() == 0);
  REQUIRE(limiter.set_limits({.limit = 5, .window = 1s}).ok());
  CHECK(limiter.try_acquire(2).allowed);
  CHECK(limiter.set_limits({.limit = 0}).code() == absl::StatusCode::kInvalidArgument);
  limiter.reset();
  CHECK(limiter.available() == 5);
}

TEST_CASE("sliding_window_limiter: works as the keyed limiter's per-key limiter",
          "[sliding_window_limiter]") {
  manual_clock clock;
  sluice::keyed_limiter<int, window_t> keyed({.limits = {.limit = 2, .window = 1s}}, clock);
  CHECK(keyed.try_acquire(1, 2).allowed);
  CHECK_FALSE(keyed.try_acquire(1).allowed);
  CHECK(keyed.try_acquire(2, 2).allowed);
}

TEST_CASE("sliding_window_limiter: concurrent callers never exceed the limit",
          "[sliding_window_limiter][stress]") {
  const int threads = GENERATE(2, 4);
  manual_clock clock;
  window_t limiter({.limit = 50, .window = 1s}, clock);
  std::atomic<std::uint64_t> admitted{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      std::uint64_t mine = 0;
      for (int i = 0; i < 300; ++i) mine += limiter.try_acquire().allowed ? 1 : 0;
      admitted.fetch_add(mine);
    });
  }
  for (auto& w : workers) w.join();
  CHECK(admitted.load() == 50);
}
