// sluice/detail/gcra.hpp
//
// Internal; not part of the public API. The Generic Cell Rate Algorithm as pure integer functions,
// so that the in-process `sluice::gcra_limiter` and the Redis-backed distributed limiter (a Lua
// script running the same steps on the server) make exactly the same decisions.
//
// The model. A limiter admits one unit every `emission_interval` (T) on average and lets up to
// `burst` units through at once. Its only state is the theoretical arrival time (TAT): the time at
// which the limiter would be "empty" again if nothing else arrived. A request for n units at `now`
// is admitted when, after charging it, the TAT is at most `capacity` = burst * T ahead of now:
//
//   base     = max(tat, now)              -- an idle limiter does not bank time beyond full
//   new_tat  = base + n * T
//   allow_at = new_tat - capacity         -- = new_tat - (burst_tolerance + T)
//   admitted iff allow_at <= now          -- then store new_tat; else store nothing
//
// with `burst_tolerance` (tau) = capacity - T = (burst - 1) * T, the classic ATM name.
//
// Units. Every input is an integer in ONE unit of time (sluice uses nanoseconds of the limiter's
// clock); the functions only add, subtract, multiply and divide non-negative integers with floor
// division, compare and take max/min. A Lua port must keep every value below 2^53 (Lua 5.1 numbers
// are doubles): use milliseconds or microseconds there, or subtract an epoch first, and replace `/`
// by math.floor(a / b). Nothing here reads a clock or touches memory other than its arguments.
//
// Overflow. `n` is compared with `burst` before any multiplication, and TATs stay within
// [now - anything, now + capacity + reserved], so with nanoseconds of a monotonic clock (< 2^62) and
// capacity below 2^61 no intermediate overflows.
#pragma once

#include <cstdint>

namespace sluice::detail::gcra {

// The limiter's parameters, in one time unit. Invariants (checked by the public option validation,
// assumed here): emission_interval >= 1, burst >= 1, burst * emission_interval fits comfortably in
// an int64 (< 2^61).
struct params {
  std::int64_t emission_interval = 1;  // T: time per unit at the sustained rate
  std::int64_t burst = 1;              // units admitted at once from a full limiter

  // Returns burst * T: how far ahead of now the TAT may be after an admitted request.
  constexpr std::int64_t capacity() const noexcept { return burst * emission_interval; }
  // Returns (burst - 1) * T, the delay variation tolerance of the ATM specification.
  constexpr std::int64_t burst_tolerance() const noexcept { return capacity() - emission_interval; }
};

// The outcome of a decision.
enum class verdict : std::uint8_t {
  allowed,        // admitted; store `tat`
  limited,        // refused for now; retry after `retry_after`; store nothing
  exceeds_burst,  // n > burst: can never be admitted; store nothing
};

// A decision for `n` units at `now`.
struct decision {
  verdict outcome = verdict::limited;
  std::int64_t tat = 0;          // the TAT to store (unchanged unless allowed)
  std::int64_t remaining = 0;    // units that could still pass at `now` after this decision
  std::int64_t retry_after = 0;  // 0 when allowed; wait until the request would pass; -1: never
  std::int64_t reset_after = 0;  // time until the limiter is full (idle) again: tat - now, >= 0
};

// Returns max(a, b).
constexpr std::int64_t max64(std::int64_t a, std::int64_t b) noexcept { return a < b ? b : a; }

// Returns how many units a limiter with TAT `base` (already >= now) could still admit at `now`.
constexpr std::int64_t remaining_at(std::int64_t base, std::int64_t now, const params& p) noexcept {
  const std::int64_t room = now + p.capacity() - base;
  return room <= 0 ? 0 : room / p.emission_interval;
}

// Decides whether `n` units (n >= 0; n = 0 only asks) pass at `now` for a limiter whose stored
// TAT is `tat`. Pure: the caller stores `result.tat` when `result.outcome == verdict::allowed`
// (with a compare-and-swap against the `tat` it read, retrying on failure).
constexpr decision decide(std::int64_t tat, std::int64_t now, const params& p,
                          std::int64_t n) noexcept {
  decision d;
  const std::int64_t base = max64(tat, now);
  d.tat = tat;
  if (n > p.burst) {
    d.outcome = verdict::exceeds_burst;
    d.remaining = remaining_at(base, now, p);
    d.retry_after = -1;
    d.reset_after = base - now;
    return d;
  }
  const std::int64_t new_tat = base + n * p.emission_interval;
  const std::int64_t allow_at = new_tat - p.capacity();
  if (allow_at > now) {
    d.outcome = verdict::limited;
    d.remaining = remaining_at(base, now, p);
    d.retry_after = allow_at - now;
    d.reset_after = base - now;
    return d;
  }
  d.outcome = verdict::allowed;
  d.tat = new_tat;
  d.remaining = remaining_at(new_tat, now, p);
  d.retry_after = 0;
  d.reset_after = new_tat - now;
  return d;
}

// A reservation: `n` units charged now, usable from `ready_at`.
struct reservation {
  verdict outcome = verdict::limited;  // allowed: charged; limited: wait > max_wait; exceeds_burst
  std::int64_t tat = 0;                // the TAT to store when allowed
  std::int64_t ready_at = 0;           // when the reserved units may be used (>= now)
  std::int64_t wait = 0;               // ready_at - now (for limited: the wait that was refused)
};

// Reserves `n` units at `now`, queueing behind earlier reservations: the units are charged at
// once and may be used at `ready_at`. Refused (nothing charged) when the wait would exceed
// `max_wait` (pass a huge value for "any wait") or n > burst.
constexpr reservation reserve(std::int64_t tat, std::int64_t now, const params& p, std::int64_t n,
                              std::int64_t max_wait) noexcept {
  reservation r;
  r.tat = tat;
  if (n > p.burst) {
    r.outcome = verdict::exceeds_burst;
    return r;
  }
  const std::int64_t new_tat = max64(tat, now) + n * p.emission_interval;
  const std::int64_t ready_at = max64(new_tat - p.capacity(), now);
  r.ready_at = ready_at;
  r.wait = ready_at - now;
  if (r.wait > max_wait) {
    r.outcome = verdict::limited;
    return r;
  }
  r.outcome = verdict::allowed;
  r.tat = new_tat;
  return r;
}

// Returns the TAT after giving back `n` units of a reservation that becomes usable at `ready_at`,
// cancelled at `now`. Units already usable (now > ready_at) are treated as used and not returned;
// a TAT at or before now (a full limiter) has nothing to give back to.
constexpr std::int64_t refund(std::int64_t tat, std::int64_t now, const params& p, std::int64_t n,
                              std::int64_t ready_at) noexcept {
  if (now > ready_at || tat <= now) return tat;
  return max64(tat - n * p.emission_interval, now);
}

}  // namespace sluice::detail::gcra
