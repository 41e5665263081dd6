// sluice/sliding_window_limiter.hpp
//
// `sluice::sliding_window_limiter` admits at most `limit` units per `window` (e.g. 100 requests
// per minute) judged over a window that slides with time, in fixed memory: two counters, as
// nginx and Cloudflare approximate it. The count of the previous fixed window is weighted by how
// much of it still overlaps the sliding window:
//
//   estimate(now) = previous * (window - elapsed) / window + current      (elapsed = now - start)
//   a request of n passes iff estimate + n <= limit
//
// Compared with GCRA this states quotas the way people write them ("100 per minute") and forgets
// a burst exactly one window later, but it lets up to 2 x limit through in the worst case around
// a window boundary spread (the approximation assumes the previous window's traffic was even).
//
// Thread safety: all member functions may be called concurrently (one detail::mutex, held for a
//   few arithmetic operations).
// Time: read from the injected clock or passed as `now`; windows are aligned to multiples of
//   `window` since the clock's epoch. A stale `now` (before the current window) counts in the
//   current window.
// Errors: refusals are `rate_limit_result` values (retry_after exact under no further traffic);
//   bad options are InvalidArgument from `create()` / `set_limits()`. No allocation, no throw.
//
// Example:
//   sluice::sliding_window_limiter<> per_minute({.limit = 100, .window = std::chrono::minutes(1)});
//   if (auto r = per_minute.try_acquire(); !r) return reply_429(r);
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "sluice/detail/mutex.hpp"
#include "sluice/rate_limit.hpp"

namespace sluice {

// Options of `sliding_window_limiter`.
struct sliding_window_options {
  // Units admitted per window. No usable default (a policy decision); 0 is rejected.
  std::uint64_t limit = 0;
  // The window length. One minute: the unit per-client quotas are most often written in.
  std::chrono::nanoseconds window = std::chrono::minutes(1);

  // Returns OK, or InvalidArgument when limit is 0 or above 2^40, or window is not positive.
  absl::Status validate() const {
    if (limit == 0 || limit > (std::uint64_t{1} << 40)) {
      return absl::InvalidArgumentError(std::string("sliding_window_limiter: limit in [1, 2^40]"));
    }
    if (window.count() <= 0) {
      return absl::InvalidArgumentError(std::string("sliding_window_limiter: window must be > 0"));
    }
    return absl::OkStatus();
  }
};

template <class Clock = std::chrono::steady_clock>
class sliding_window_limiter {
 public:
  using clock_type = Clock;
  using time_point = typename Clock::time_point;
  using options = sliding_window_options;

  // Returns a limiter, or InvalidArgument when `opts.validate()` fails.
  static absl::StatusOr<sliding_window_limiter> create(const options& opts, Clock clock = Clock()) {
    if (auto s = opts.validate(); !s.ok()) return s;
    return absl::StatusOr<sliding_window_limiter>(absl::in_place, opts, std::move(clock));
  }

  // Creates an empty limiter. Precondition: `opts.validate()` is OK (otherwise clamped).
  explicit sliding_window_limiter(const options& opts, Clock clock = Clock())
      : clock_(std::move(clock)) {
    detail::mutex_lock lock(mu_);
    apply(opts);
  }

  // Moves the limiter. Not thread-safe: move only before sharing it.
  sliding_window_limiter(sliding_window_limiter&& o) noexcept : clock_(std::move(o.clock_)) {
    detail::mutex_lock lock(mu_);
    detail::mutex_lock other(o.mu_);
    limit_ = o.limit_;
    window_ = o.window_;
    start_ = o.start_;
    previous_ = o.previous_;
    current_ = o.current_;
  }
  sliding_window_limiter& operator=(sliding_window_limiter&&) = delete;

  // Counts `n` units now if they fit, or refuses counting nothing. n = 0 only asks. Takes the
  // mutex.
  rate_limit_result try_acquire(std::uint64_t n = 1) { return try_acquire(n, clock_.now()); }

  // As `try_acquire(n)` at the caller's time `now`.
  rate_limit_result try_acquire(std::uint64_t n, time_point now) {
    detail::mutex_lock lock(mu_);
    const std::int64_t e = roll(to_ns(now));
    const i128 w = window_;
    const i128 used = static_cast<i128>(previous_) * (w - e) + static_cast<i128>(current_) * w;
    const i128 cap = static_cast<i128>(limit_) * w;
    rate_limit_result r;
    r.limit = limit_;
    if (n <= limit_ && used + static_cast<i128>(n) * w <= cap) {
      current_ += n;
      r.allowed = true;
    } else if (n > limit_) {
      r.retry_after = rate_limit_result::never();
    } else {
      r.retry_after = std::chrono::nanoseconds(wait_for(n, e));
    }
    const i128 after = static_cast<i128>(previous_) * (w - e) + static_cast<i128>(current_) * w;
    r.remaining = after >= cap ? 0 : static_cast<std::uint64_t>((cap - after) / w);
    r.reset_after = std::chrono::nanoseconds(current_ > 0    ? 2 * window_ - e
                                             : previous_ > 0 ? window_ - e
                                                             : 0);
    return r;
  }

  // Changes limit and window (InvalidArgument and no change when invalid). A window change
  // starts counting afresh; a limit change keeps the counts.
  absl::Status set_limits(const options& opts) {
    if (auto s = opts.validate(); !s.ok()) return s;
    detail::mutex_lock lock(mu_);
    const std::int64_t old_window = window_;
    apply(opts);
    if (window_ != old_window) start_ = previous_ = current_ = 0;
    return absl::OkStatus();
  }

  // Forgets all counts. Takes the mutex.
  void reset() {
    detail::mutex_lock lock(mu_);
    start_ = 0;
    previous_ = current_ = 0;
  }

  // Returns the units that could pass now, counting nothing.
  std::uint64_t available() { return try_acquire(0).remaining; }

  // Returns the clock the limiter reads.
  const Clock& clock() const noexcept { return clock_; }

 private:
  __extension__ typedef __int128 i128;  // products of counts and nanoseconds overflow int64

  static std::int64_t to_ns(time_point t) noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  }

  void apply(const options& o) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    limit_ = o.limit < 1 ? 1 : o.limit;
    window_ = o.window.count() < 1 ? 1 : o.window.count();
  }

  // Moves the windows forward to the one containing `now`; returns the time elapsed in it.
  std::int64_t roll(std::int64_t now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const std::int64_t start = now - now % window_;
    if (start > start_) {
      previous_ = start - start_ == window_ ? current_ : 0;
      current_ = 0;
      start_ = start;
    }
    return now < start_ ? 0 : now - start_;
  }

  // Returns how long until `n` units fit, with no other traffic (n <= limit, refused now).
  std::int64_t wait_for(std::uint64_t n, std::int64_t e) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const i128 w = window_;
    if (current_ + n <= limit_) {
      // Within this window, once previous' weight has shrunk enough:
      // previous * (w - e - d) <= (limit - current - n) * w.
      const i128 room = static_cast<i128>(limit_ - current_ - n) * w;
      const i128 left = room / static_cast<i128>(previous_);  // previous_ > 0 here
      return static_cast<std::int64_t>((w - e) - left);
    }
    // In the next window, where current becomes previous: current * (w - e') <= (limit - n) * w.
    const i128 room = static_cast<i128>(limit_ - n) * w;
    const i128 left = room / static_cast<i128>(current_);  // current_ > 0 here
    return static_cast<std::int64_t>((w - e) + (w - left));
  }

  mutable detail::mutex mu_;
  std::uint64_t limit_ ABSL_GUARDED_BY(mu_) = 1;
  std::int64_t window_ ABSL_GUARDED_BY(mu_) = 1;     // ns
  std::int64_t start_ ABSL_GUARDED_BY(mu_) = 0;      // ns: start of the current fixed window
  std::uint64_t previous_ ABSL_GUARDED_BY(mu_) = 0;  // units counted in the previous window
  std::uint64_t current_ ABSL_GUARDED_BY(mu_) = 0;   // units counted in the current window
  Clock clock_;
};

}  // namespace sluice
