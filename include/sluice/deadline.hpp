// sluice/deadline.hpp
//
// `sluice::deadline<Clock>` is the point in time by which a call must be finished, carried through
// every sluice primitive that may wait (pool, offload, limiter, bulkhead, retry, pipeline). It is a
// single time point of the primitive's clock: infinite by default, composed by taking the earliest
// of several, and asked how much time is left.
//
// A deadline is a value (8 bytes, trivially copyable): pass it by value. It does not hold a clock;
// the functions that need "now" take the clock (or the time) as an argument, so the same deadline
// works with `std::chrono::steady_clock`, `sluice::coarse_clock` and
// `sluice::testing::manual_clock`.
//
// Thread safety: a value type; distinct objects may be used concurrently, as an int.
// Time: the caller's clock; `Clock::time_point::max()` means "no deadline". Arithmetic saturates,
//       so `after(clock, hours::max())` is infinite rather than an overflow.
// Errors: none; everything is noexcept. Primitives report a passed deadline as
//       absl::StatusCode::kDeadlineExceeded.
//
// Example:
//   std::chrono::steady_clock clock;
//   auto d = sluice::deadline<>::after(clock, std::chrono::milliseconds(200));
//   d = sluice::earliest(d, request_deadline);
//   if (d.expired(clock)) return absl::DeadlineExceededError("no time left");
//   auto budget = d.remaining(clock);   // pass to the next hop
#pragma once

#include <chrono>
#include <compare>
#include <limits>
#include <ratio>
#include <type_traits>

namespace sluice {

template <class Clock = std::chrono::steady_clock>
class deadline {
 public:
  using clock_type = Clock;
  using time_point = typename Clock::time_point;
  using duration = typename Clock::duration;

  // Creates an infinite deadline (never expires): the default, so an API that takes a deadline
  // costs nothing to callers that have none.
  constexpr deadline() noexcept = default;

  // Creates a deadline at `t`; `time_point::max()` is infinite.
  constexpr explicit deadline(time_point t) noexcept : at_(t) {}

  // Returns the infinite deadline.
  static constexpr deadline infinite() noexcept { return deadline(); }

  // Returns a deadline at `t`.
  static constexpr deadline at(time_point t) noexcept { return deadline(t); }

  // Returns the deadline `d` after `now`, saturating to infinite when the sum would overflow.
  // A negative or zero `d` gives an already expired deadline.
  template <class Rep, class Period>
  static constexpr deadline after(time_point now, std::chrono::duration<Rep, Period> d) noexcept {
    return deadline(saturating_add(now, d));
  }

  // Returns the deadline `d` from the current time of `clock`.
  template <class Rep, class Period>
  static deadline after(const Clock& clock, std::chrono::duration<Rep, Period> d) noexcept {
    return after(clock.now(), d);
  }

  // Returns whether this deadline never expires.
  constexpr bool is_infinite() const noexcept { return at_ == time_point::max(); }

  // Returns the time point (`time_point::max()` when infinite).
  constexpr time_point time() const noexcept { return at_; }

  // Returns the time left at `now`: zero once passed, `duration::max()` when infinite.
  constexpr duration remaining(time_point now) const noexcept {
    if (is_infinite()) return duration::max();
    if (at_ <= now) return duration::zero();
    return at_ - now;
  }

  // Returns the time left on `clock`; see `remaining(time_point)`.
  duration remaining(const Clock& clock) const noexcept {
    return is_infinite() ? duration::max() : remaining(clock.now());
  }

  // Returns whether the deadline has passed at `now` (a deadline at `now` has passed).
  constexpr bool expired(time_point now) const noexcept { return !is_infinite() && at_ <= now; }

  // Returns whether the deadline has passed on `clock`. Reads the clock only when finite.
  bool expired(const Clock& clock) const noexcept { return !is_infinite() && at_ <= clock.now(); }

  // Returns whether work of length `d` started at `now` would end strictly before the deadline.
  // Retry uses it so that no attempt or backoff sleep starts that cannot finish in time.
  template <class Rep, class Period>
  constexpr bool fits(time_point now, std::chrono::duration<Rep, Period> d) const noexcept {
    return is_infinite() || saturating_add(now, d) < at_;
  }

  // Returns the earlier of this deadline and `d` from `now` (a per-call timeout inside a request
  // deadline).
  template <class Rep, class Period>
  constexpr deadline within(time_point now, std::chrono::duration<Rep, Period> d) const noexcept {
    const time_point t = saturating_add(now, d);
    return deadline(t < at_ ? t : at_);
  }

  // Compares by time point; infinite compares greater than every finite deadline.
  friend constexpr auto operator<=>(const deadline&, const deadline&) noexcept = default;
  friend constexpr bool operator==(const deadline&, const deadline&) noexcept = default;

 private:
  template <class Rep, class Period>
  static constexpr time_point saturating_add(time_point t,
                                             std::chrono::duration<Rep, Period> d) noexcept {
    if (t == time_point::max()) return t;
    using rep = typename duration::rep;
    using scale = std::ratio_divide<Period, typename duration::period>;
    if constexpr (scale::den == 1 && std::is_integral_v<Rep> && std::is_signed_v<Rep> &&
                  std::is_integral_v<rep> && std::is_signed_v<rep> && sizeof(Rep) <= sizeof(rep)) {
      // Exact integer path (the common case: `d` in the clock's unit or a coarser one): scale
      // with a bound check, then add with an overflow check.
      constexpr rep limit = std::numeric_limits<rep>::max() / static_cast<rep>(scale::num);
      const rep count = static_cast<rep>(d.count());
      if (count > limit) return time_point::max();
      if (count < -limit) return time_point::min();
      rep sum = 0;
      if (__builtin_add_overflow(t.time_since_epoch().count(), count * static_cast<rep>(scale::num),
                                 &sum)) {
        return count > 0 ? time_point::max() : time_point::min();
      }
      return time_point(duration(sum));
    }
    // Otherwise compare in floating point first: converting hours::max() to nanoseconds, or
    // subtracting from time_point::min(), would overflow. The margin covers double's rounding.
    using fp = std::chrono::duration<double, typename duration::period>;
    const double margin = fp(duration::max()).count() * 1e-12 + 1.0;
    const double now_c = fp(t.time_since_epoch()).count();
    const double d_c = fp(d).count();
    if (d_c >= fp(time_point::max().time_since_epoch()).count() - now_c - margin) {
      return time_point::max();
    }
    if (d_c <= fp(time_point::min().time_since_epoch()).count() - now_c + margin) {
      return time_point::min();
    }
    return t + std::chrono::duration_cast<duration>(d);
  }

  time_point at_ = time_point::max();
};

// Returns the earliest of the given deadlines (infinite if all are).
template <class Clock, class... More>
constexpr deadline<Clock> earliest(deadline<Clock> first, More... more) noexcept {
  deadline<Clock> result = first;
  ((result = more < result ? deadline<Clock>(more) : result), ...);
  return result;
}

}  // namespace sluice
