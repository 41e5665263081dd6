// sluice/testing/manual_clock.hpp
//
// `sluice::testing::manual_clock` is a monotonic clock that only moves when a test moves it. Pass
// it as the `Clock` template parameter of any time-dependent sluice primitive (and the clock object
// to its constructor) to test timing behaviour deterministically, without sleeping.
//
// A manual_clock object is a cheap, copyable handle: every copy shares one time line, so the test
// keeps one copy and advances it while the primitive reads its own copy.
//
// Sleeping: a primitive that sleeps (a retry backoff, a paced reconnect) calls `sleep_until`. By
// default that advances the shared time to the wake-up point and returns at once, which makes
// "time spent sleeping" observable and exact (see `slept()`). With `advance_on_sleep = false`, a
// sleeper blocks until another thread advances the clock far enough.
//
// Waiting on a condition with a deadline (a pool acquire, a bulkhead queue) goes through
// `sluice::detail::wait_until`, which notices a manual advance within about a millisecond of real
// time; the deadline itself is judged on manual time only.
//
// Thread safety: all member functions may be called concurrently, from any copy.
// Time: starts at 1 hour past the clock's epoch (so `time_point{}` is safely in the past) unless
//       told otherwise; never goes backwards (advancing by a negative duration is ignored).
// Errors: none.
//
// Example:
//   sluice::testing::manual_clock clock;
//   sluice::circuit_breaker<sluice::testing::manual_clock> breaker(options, clock);
//   ... trip it ...
//   clock.advance(std::chrono::seconds(30));   // the open period has passed
//   REQUIRE(breaker.state() == sluice::breaker_state::half_open);
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>

namespace sluice::testing {

class manual_clock {
 public:
  using duration = std::chrono::nanoseconds;
  using rep = duration::rep;
  using period = duration::period;
  using time_point = std::chrono::time_point<manual_clock, duration>;
  static constexpr bool is_steady = true;
  // Tells sluice's wait helpers that real-time waits cannot be used with this clock.
  static constexpr bool is_manual = true;

  struct options {
    // Where time starts. One hour past the epoch, so code that treats `time_point{}` as "never"
    // or "long ago" behaves as it does with a real clock.
    time_point start = time_point(std::chrono::hours(1));
    // Whether `sleep_until` moves time forward itself (true: simulated sleeps, deterministic in a
    // single-threaded test) or blocks until another thread advances the clock (false).
    bool advance_on_sleep = true;
  };

  // Creates a clock at one hour past its epoch, with simulated sleeps.
  manual_clock() : manual_clock(options{}) {}
  // Creates a clock as `opts` says.
  explicit manual_clock(options opts) : state_(std::make_shared<state>(opts)) {}

  // Returns the current manual time. Acquire pairs with the release in `advance`, so whatever a
  // test wrote before advancing is visible to a reader that sees the new time.
  time_point now() const noexcept {
    return time_point(duration(state_->now_ns.load(std::memory_order_acquire)));
  }

  // Moves time forward by `d` (ignored when negative) and wakes blocked sleepers.
  void advance(duration d) {
    if (d.count() <= 0) return;
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      state_->now_ns.fetch_add(d.count(), std::memory_order_acq_rel);
    }
    state_->cv.notify_all();
  }

  // Moves time forward to `t`; does nothing if `t` is not in the future.
  void advance_to(time_point t) {
    {
      std::lock_guard<std::mutex> lock(state_->mu);
      std::int64_t target = t.time_since_epoch().count();
      std::int64_t cur = state_->now_ns.load(std::memory_order_relaxed);
      if (target <= cur) return;
      state_->now_ns.store(target, std::memory_order_release);
    }
    state_->cv.notify_all();
  }

  // Sleeps until `t` in manual time: advances to it (the default) or blocks until another thread
  // has advanced the clock to it. Counts the sleep and the time slept in `sleeps()`/`slept()`.
  void sleep_until(time_point t) {
    const time_point start = now();
    state_->sleeps.fetch_add(1, std::memory_order_relaxed);
    if (t > start) {
      state_->slept_ns.fetch_add((t - start).count(), std::memory_order_relaxed);
    }
    if (state_->advance_on_sleep) {
      advance_to(t);
      return;
    }
    std::unique_lock<std::mutex> lock(state_->mu);
    state_->cv.wait(lock, [&] {
      return state_->now_ns.load(std::memory_order_relaxed) >= t.time_since_epoch().count();
    });
  }

  // Sleeps for `d` in manual time; see `sleep_until`.
  void sleep_for(duration d) { sleep_until(now() + d); }

  // Returns how many times `sleep_until`/`sleep_for` were called on this time line.
  std::uint64_t sleeps() const noexcept { return state_->sleeps.load(std::memory_order_relaxed); }

  // Returns the total manual time requested by sleeps on this time line.
  duration slept() const noexcept {
    return duration(state_->slept_ns.load(std::memory_order_relaxed));
  }

 private:
  struct state {
    explicit state(const options& o)
        : now_ns(o.start.time_since_epoch().count()), advance_on_sleep(o.advance_on_sleep) {}
    std::atomic<std::int64_t> now_ns;
    std::atomic<std::uint64_t> sleeps{0};
    std::atomic<std::int64_t> slept_ns{0};
    const bool advance_on_sleep;
    std::mutex mu;
    std::condition_variable cv;
  };
  std::shared_ptr<state> state_;
};

}  // namespace sluice::testing
