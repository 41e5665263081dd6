#include "sluice/health_recorder.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include <sluice/clock.hpp>
#include <sluice/testing/manual_clock.hpp>

#include "alloc_counter.hpp"
#include "catch.hpp"

using namespace std::chrono_literals;
using sluice::call_outcome;
using sluice::health_recorder;
using sluice::health_recorder_options;
using sluice::testing::manual_clock;
using window_kind = sluice::health_recorder_options::window_kind;

TEST_CASE("health_recorder: invalid options are rejected by create", "[health_recorder]") {
  CHECK(health_recorder<>::create({.window_size = 0}).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(
      health_recorder<>::create({.kind = window_kind::time_based, .buckets = 0}).status().code() ==
      absl::StatusCode::kInvalidArgument);
  CHECK(health_recorder<>::create(
            {.kind = window_kind::time_based, .window_duration = 0s, .buckets = 4})
            .status()
            .code() == absl::StatusCode::kInvalidArgument);
  CHECK_THROWS_AS(health_recorder<>(health_recorder_options{.window_size = 0}),
                  std::invalid_argument);
  CHECK(health_recorder<>::create({}).ok());
}

TEST_CASE("health_recorder: count window keeps exactly the last N calls on one thread",
          "[health_recorder]") {
  const std::size_t n =
      GENERATE(std::size_t{1}, std::size_t{5}, std::size_t{100}, std::size_t{1000});
  INFO("window_size " << n);
  auto r = health_recorder<>::create({.window_size = n, .stripes = 4}).value();
  for (std::size_t i = 0; i < n; ++i) r.record(call_outcome::failure);
  auto s = r.snapshot();
  CHECK(s.calls == n);
  CHECK(s.failures == n);
  CHECK(s.failure_rate == 1.0);
  CHECK(s.slow_calls == 0);
  // Push the failures out one by one with successes: the window slides exactly.
  for (std::size_t i = 1; i <= n; ++i) {
    r.record(call_outcome::success, /*slow=*/true);
    s = r.snapshot();
    REQUIRE(s.calls == n);
    REQUIRE(s.failures == n - i);
    REQUIRE(s.slow_calls == i);
  }
  CHECK(s.slow_call_rate == 1.0);
  CHECK(s.failure_rate == 0.0);
}

TEST_CASE("health_recorder: slow is orthogonal and ignored changes nothing", "[health_recorder]") {
  auto r = health_recorder<>::create({.window_size = 10}).value();
  r.record(call_outcome::success);
  r.record(call_outcome::success, true);
  r.record(call_outcome::failure, true);
  r.record(call_outcome::failure);
  r.record(call_outcome::ignored, true);
  const auto s = r.snapshot();
  CHECK(s.calls == 4);
  CHECK(s.failures == 2);
  CHECK(s.slow_calls == 2);
  CHECK(s.failure_rate == 0.5);
  CHECK(s.slow_call_rate == 0.5);
  r.reset();
  const auto z = r.snapshot();
  CHECK(z.calls == 0);
  CHECK(z.failures == 0);
  CHECK(z.slow_calls == 0);
  CHECK(z.failure_rate == 0.0);
}

TEST_CASE("health_recorder: time window forgets calls older than its duration",
          "[health_recorder]") {
  manual_clock clock;
  auto r = health_recorder<manual_clock>::create(
               {.kind = window_kind::time_based, .window_duration = 10s, .buckets = 10}, clock)
               .value();
  r.record(call_outcome::failure);
  clock.advance(3s);
  r.record(call_outcome::success, true);
  r.record(call_outcome::success);
  auto s = r.snapshot();
  CHECK(s.calls == 3);
  CHECK(s.failures == 1);
  CHECK(s.slow_calls == 1);
  // The first call's bucket drops out once the window has moved past it.
  clock.advance(7s + 500ms);
  s = r.snapshot();
  CHECK(s.calls == 2);
  CHECK(s.failures == 0);
  // The rest drop out 10 s after they were recorded.
  clock.advance(3s);
  s = r.snapshot();
  CHECK(s.calls == 0);
  // A bucket reused after a full lap restarts from zero.
  r.record(call_outcome::failure);
  s = r.snapshot();
  CHECK(s.calls == 1);
  CHECK(s.failures == 1);
  r.reset();
  CHECK(r.snapshot().calls == 0);
  r.record(call_outcome::success);
  CHECK(r.snapshot().calls == 1);
}

TEST_CASE("health_recorder: recording allocates nothing", "[health_recorder]") {
  auto counted = health_recorder<>::create({.window_size = 64}).value();
  auto timed = health_recorder<sluice::coarse_clock>::create(
                   {.kind = window_kind::time_based, .window_duration = 10s})
                   .value();
  sluice_test::alloc_scope scope;
  for (int i = 0; i < 10000; ++i) {
    counted.record(i % 3 == 0 ? call_outcome::failure : call_outcome::success, i % 5 == 0);
    timed.record(i % 3 == 0 ? call_outcome::failure : call_outcome::success, i % 5 == 0);
    (void)counted.snapshot();
    (void)timed.snapshot();
  }
  CHECK(scope.allocations() == 0);
}

TEST_CASE("health_recorder: concurrent recording keeps the counters equal to the window",
          "[health_recorder]") {
  const int threads = GENERATE(2, 4, 8);
  INFO("threads " << threads);
  auto r = health_recorder<>::create({.window_size = 500}).value();
  auto t =
      health_recorder<>::create({.kind = window_kind::time_based, .window_duration = 1h}).value();
  constexpr int per_thread = 50000;
  std::atomic<int> bad_snapshots{0};
  std::vector<std::thread> pool;
  for (int k = 0; k < threads; ++k) {
    pool.emplace_back([&, k] {
      for (int i = 0; i < per_thread; ++i) {
        // Every thread fails exactly one call in four, and one in eight is slow.
        const auto o = (i + k) % 4 == 0 ? call_outcome::failure : call_outcome::success;
        r.record(o, i % 8 == 0);
        t.record(o, i % 8 == 0);
        if (i % 1000 == 0) {
          // Catch2 assertions are not thread-safe: collect, check after the join.
          const auto s = r.snapshot();
          if (s.failure_rate > 1.0 || s.failures > s.calls || s.calls > 500) bad_snapshots++;
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  CHECK(bad_snapshots.load() == 0);
  const auto s = r.snapshot();
  // Every slot has been written many laps over: the window is full and its counters agree with a
  // rate close to the true one (the lag only mixes in older outcomes of the same mix).
  CHECK(s.calls == 500);
  CHECK(s.failure_rate > 0.15);
  CHECK(s.failure_rate < 0.35);
  const auto ts = t.snapshot();
  CHECK(ts.calls == static_cast<std::uint64_t>(threads) * per_thread);
  CHECK(ts.failures == static_cast<std::uint64_t>(threads) * per_thread / 4);
  CHECK(ts.slow_calls == static_cast<std::uint64_t>(threads) * per_thread / 8);
  // After a reset (no concurrent recorders) the counters are exactly zero again.
  r.reset();
  CHECK(r.snapshot().calls == 0);
  CHECK(r.snapshot().failures == 0);
}
