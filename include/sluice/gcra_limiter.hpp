// sluice/gcra_limiter.hpp
//
// `sluice::gcra_limiter` limits how often something happens: `rate` units per `period`, with up to
// `burst` at once, using the Generic Cell Rate Algorithm (as governor, redis-cell and throttled
// do). Its whole state is one 8-byte atomic (the theoretical arrival time, int64 nanoseconds of
// the clock), updated with one compare-and-swap loop: no lock, no allocation, no throw.
//
//   try_acquire(n)  admits n units now or refuses, with remaining / retry_after / reset_after
//                   (everything the RateLimit-* and Retry-After headers need, see rate_limit.hpp)
//   reserve(n)      charges n units now and says when they may be used (a queue, like
//                   golang.org/x/time/rate's Reserve); the reservation can be cancelled to give the
//                   units back while they are not yet usable
//   set_limits(o)   changes rate and burst at run time, safely under concurrent use
//
// The arithmetic lives in <sluice/detail/gcra.hpp> as pure integer functions, shared with the
// Redis-backed distributed limiter, so both decide identically.
//
// Thread safety: all member functions may be called concurrently, except moving the limiter
//   (move only before sharing it). A `reservation` is used by one thread at a time.
// Time: read from the injected clock on every decision, or passed by the caller
//   (`try_acquire(n, now)`: e.g. a per-event-loop cached time, the cheapest path). With
//   `sluice::coarse_clock` decisions are made on a clock that ticks every 1-4 ms: fine for rates up
//   to a few hundred per second per limiter, coarse above that. Runtime changes keep the current
//   debt in time: a client told to wait 2 s still waits 2 s after a rate change.
// Errors: refusals are values (`rate_limit_result`); bad options are InvalidArgument from
//   `create()` / `set_limits()`. The constructor takes already valid options (precondition; invalid
//   ones are clamped to the nearest valid value rather than trusted).
//
// Example:
//   auto limiter = sluice::gcra_limiter<>::create({.rate = 100, .burst = 20});   // 100/s
//   if (!limiter.ok()) return limiter.status();
//   if (auto r = limiter->try_acquire(); !r) return reply_429(r.retry_after);
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "sluice/detail/gcra.hpp"
#include "sluice/rate_limit.hpp"

namespace sluice {

template <class Clock = std::chrono::steady_clock>
class gcra_limiter {
 public:
  using clock_type = Clock;
  using time_point = typename Clock::time_point;
  using options = rate_limit_options;

  // Units reserved ahead, to be used at `ready_at()`. Returned by `reserve()`; not cancelled by
  // its destructor (a used reservation is simply dropped). Movable, not copyable.
  class reservation {
   public:
    reservation() = default;
    reservation(reservation&& o) noexcept { *this = std::move(o); }
    reservation& operator=(reservation&& o) noexcept {
      owner_ = std::exchange(o.owner_, nullptr);
      n_ = o.n_;
      ready_at_ = o.ready_at_;
      delay_ = o.delay_;
      outcome_ = o.outcome_;
      return *this;
    }

    // Returns whether the units were reserved (false: the wait exceeded max_wait, or n > burst).
    bool ok() const noexcept { return outcome_ == detail::gcra::verdict::allowed; }
    explicit operator bool() const noexcept { return ok(); }
    // Returns whether the request can never be granted (n > burst).
    bool exceeds_burst() const noexcept { return outcome_ == detail::gcra::verdict::exceeds_burst; }
    // Returns how long the caller must wait from the time of `reserve()` before using the units
    // (for a refused reservation: the wait that was refused; 0 when n > burst).
    std::chrono::nanoseconds delay() const noexcept { return delay_; }
    // Returns when the units may be used.
    time_point ready_at() const noexcept {
      return time_point(std::chrono::duration_cast<typename Clock::duration>(
          std::chrono::nanoseconds(ready_at_)));
    }
    // Gives the units back if they are not usable yet (now <= ready_at); otherwise they count as
    // used and nothing changes. Idempotent; a no-op on a refused reservation. Lock-free (one CAS
    // loop on the limiter); the limiter must still be alive.
    void cancel() noexcept {
      if (owner_ == nullptr || !ok()) return;
      std::exchange(owner_, nullptr)->refund(n_, ready_at_);
    }

   private:
    friend class gcra_limiter;
    gcra_limiter* owner_ = nullptr;
    std::int64_t n_ = 0;
    std::int64_t ready_at_ = 0;
    std::chrono::nanoseconds delay_{0};
    detail::gcra::verdict outcome_ = detail::gcra::verdict::limited;
  };

  // Returns a limiter, or InvalidArgument when `opts.validate()` fails.
  static absl::StatusOr<gcra_limiter> create(const options& opts, Clock clock = Clock()) {
    if (auto s = opts.validate(); !s.ok()) return s;
    return absl::StatusOr<gcra_limiter>(absl::in_place, opts, std::move(clock));
  }

  // Creates a full limiter. Precondition: `opts.validate()` is OK (use `create()` to check);
  // otherwise the values are clamped (rate >= 1, burst >= 1, interval >= 1 ns).
  explicit gcra_limiter(const options& opts, Clock clock = Clock()) : clock_(std::move(clock)) {
    const auto p = to_params(opts);
    interval_.store(p.emission_interval, std::memory_order_relaxed);
    burst_.store(p.burst, std::memory_order_relaxed);
  }

  // Moves the state and parameters. Not thread-safe: move only before the limiter is shared.
  gcra_limiter(gcra_limiter&& o) noexcept : clock_(std::move(o.clock_)) {
    tat_.store(o.tat_.load(std::memory_order_relaxed), std::memory_order_relaxed);
    interval_.store(o.interval_.load(std::memory_order_relaxed), std::memory_order_relaxed);
    burst_.store(o.burst_.load(std::memory_order_relaxed), std::memory_order_relaxed);
  }
  gcra_limiter& operator=(gcra_limiter&&) = delete;
  gcra_limiter(const gcra_limiter&) = delete;
  gcra_limiter& operator=(const gcra_limiter&) = delete;

  // Admits `n` units now (charging them) or refuses (charging nothing). n = 0 only asks.
  // Lock-free: one CAS loop; no allocation.
  rate_limit_result try_acquire(std::uint64_t n = 1) noexcept {
    return try_acquire(n, clock_.now());
  }

  // As `try_acquire(n)` at the caller's time `now` (for callers that already read the clock, e.g.
  // once per event-loop turn). `now` may lag other threads' times a little: the decision is still
  // exact for the times given.
  rate_limit_result try_acquire(std::uint64_t n, time_point now) noexcept {
    const std::int64_t now_ns = to_ns(now);
    const detail::gcra::params p = load_params();
    const std::int64_t units = clamp_units(n);
    // Relaxed load: the CAS below validates it; a stale value only costs a retry.
    std::int64_t tat = tat_.load(std::memory_order_relaxed);
    for (;;) {
      const detail::gcra::decision d = detail::gcra::decide(tat, now_ns, p, units);
      if (d.outcome != detail::gcra::verdict::allowed || d.tat == tat) return to_result(d, p);
      // Relaxed on success and failure: the TAT is the only shared datum; no other memory is
      // published through it, and the CAS itself serialises all updates of it.
      if (tat_.compare_exchange_weak(tat, d.tat, std::memory_order_relaxed,
                                     std::memory_order_relaxed)) {
        return to_result(d, p);
      }
    }
  }

  // As `try_acquire(n, now)` for callers that already serialise every call on this limiter (a
  // keyed limiter holding its shard lock): a plain load and store instead of the CAS loop.
  // Precondition: no other thread calls any member of this limiter concurrently.
  rate_limit_result try_acquire_unshared(std::uint64_t n, time_point now) noexcept {
    const detail::gcra::params p = load_params();
    // Relaxed: the caller's own synchronisation orders these accesses.
    const std::int64_t tat = tat_.load(std::memory_order_relaxed);
    const detail::gcra::decision d = detail::gcra::decide(tat, to_ns(now), p, clamp_units(n));
    if (d.outcome == detail::gcra::verdict::allowed) tat_.store(d.tat, std::memory_order_relaxed);
    return to_result(d, p);
  }

  // Reserves `n` units now, to be used after `reservation::delay()`; refused (nothing charged) if
  // n > burst or the wait would exceed `max_wait`. Lock-free; no allocation.
  reservation reserve(std::uint64_t n = 1, std::chrono::nanoseconds max_wait =
                                               std::chrono::nanoseconds::max()) noexcept {
    return reserve(n, max_wait, clock_.now());
  }

  // As `reserve(n, max_wait)` at the caller's time `now`.
  reservation reserve(std::uint64_t n, std::chrono::nanoseconds max_wait, time_point now) noexcept {
    const std::int64_t now_ns = to_ns(now);
    const detail::gcra::params p = load_params();
    const std::int64_t units = clamp_units(n);
    std::int64_t tat = tat_.load(std::memory_order_relaxed);
    detail::gcra::reservation r;
    for (;;) {
      r = detail::gcra::reserve(tat, now_ns, p, units, max_wait.count());
      if (r.outcome != detail::gcra::verdict::allowed || r.tat == tat) break;
      // Relaxed: as in try_acquire.
      if (tat_.compare_exchange_weak(tat, r.tat, std::memory_order_relaxed,
                                     std::memory_order_relaxed)) {
        break;
      }
    }
    reservation out;
    out.owner_ = this;
    out.n_ = units;
    out.ready_at_ = r.ready_at;
    out.delay_ = std::chrono::nanoseconds(r.wait);
    out.outcome_ = r.outcome;
    return out;
  }

  // Changes rate and burst; InvalidArgument (and no change) when `opts.validate()` fails. Safe
  // while other threads decide: each decision sees either the old or the new pair, never a mix.
  // Concurrent set_limits calls are serialised (the last one wins).
  absl::Status set_limits(const options& opts) {
    if (auto s = opts.validate(); !s.ok()) return s;
    const auto p = to_params(opts);
    // Claim the write side: seq_ goes even -> odd. Acquire on success orders the parameter
    // stores below after the claim.
    std::uint32_t seq = seq_.load(std::memory_order_relaxed);
    for (;;) {
      if ((seq & 1U) != 0) {
        seq = seq_.load(std::memory_order_relaxed);
        continue;
      }
      if (seq_.compare_exchange_weak(seq, seq + 1, std::memory_order_acquire,
                                     std::memory_order_relaxed)) {
        break;
      }
    }
    // Release fence: a reader that sees either new parameter also sees seq odd (and retries).
    std::atomic_thread_fence(std::memory_order_release);
    interval_.store(p.emission_interval, std::memory_order_relaxed);
    burst_.store(p.burst, std::memory_order_relaxed);
    // Release: a reader that sees seq + 2 sees both new parameters.
    seq_.store(seq + 2, std::memory_order_release);
    return absl::OkStatus();
  }

  // Returns the current options (rate expressed per the emission interval: rate = 1 per interval).
  options limits() const noexcept {
    const auto p = load_params();
    options o;
    o.rate = 1;
    o.period = std::chrono::nanoseconds(p.emission_interval);
    o.burst = static_cast<std::uint64_t>(p.burst);
    return o;
  }

  // Makes the limiter full again (forgets all charges and reservations). Safe concurrently; a
  // decision racing with it sees the state before or after.
  void reset() noexcept {
    // Relaxed: the TAT publishes nothing else (see try_acquire).
    tat_.store(0, std::memory_order_relaxed);
  }

  // Returns the units that could pass now, without charging anything.
  std::uint64_t available() noexcept { return try_acquire(0).remaining; }

  // Returns the clock the limiter reads.
  const Clock& clock() const noexcept { return clock_; }

 private:
  static detail::gcra::params to_params(const options& opts) noexcept {
    detail::gcra::params p;
    const std::int64_t t = opts.emission_interval().count();
    p.emission_interval = t < 1 ? 1 : t;
    const std::uint64_t max_burst =
        (std::uint64_t{1} << 61) / static_cast<std::uint64_t>(p.emission_interval);
    const std::uint64_t b = opts.burst < 1 ? 1 : (opts.burst > max_burst ? max_burst : opts.burst);
    p.burst = static_cast<std::int64_t>(b);
    return p;
  }

  static std::int64_t to_ns(time_point t) noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  }

  // Requests above any burst are "never" anyway; clamp so the conversion cannot go negative.
  static std::int64_t clamp_units(std::uint64_t n) noexcept {
    constexpr auto cap = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
    return static_cast<std::int64_t>(n > cap ? cap : n);
  }

  // Reads both parameters consistently (a sequence lock; writers are rare).
  detail::gcra::params load_params() const noexcept {
    detail::gcra::params p;
    for (;;) {
      // Acquire: pairs with the release store of seq + 2 in set_limits.
      const std::uint32_t s1 = seq_.load(std::memory_order_acquire);
      p.emission_interval = interval_.load(std::memory_order_relaxed);
      p.burst = burst_.load(std::memory_order_relaxed);
      // Acquire fence: the parameter loads above happen before the re-check of seq_; if a writer
      // touched them, the re-check sees its odd or newer value.
      std::atomic_thread_fence(std::memory_order_acquire);
      const std::uint32_t s2 = seq_.load(std::memory_order_relaxed);
      if (s1 == s2 && (s1 & 1U) == 0) return p;
    }
  }

  void refund(std::int64_t n, std::int64_t ready_at) noexcept {
    const std::int64_t now_ns = to_ns(clock_.now());
    const detail::gcra::params p = load_params();
    std::int64_t tat = tat_.load(std::memory_order_relaxed);
    for (;;) {
      const std::int64_t next = detail::gcra::refund(tat, now_ns, p, n, ready_at);
      // Relaxed: as in try_acquire.
      if (next == tat || tat_.compare_exchange_weak(tat, next, std::memory_order_relaxed,
                                                    std::memory_order_relaxed)) {
        return;
      }
    }
  }

  static rate_limit_result to_result(const detail::gcra::decision& d,
                                     const detail::gcra::params& p) noexcept {
    rate_limit_result r;
    r.allowed = d.outcome == detail::gcra::verdict::allowed;
    r.limit = static_cast<std::uint64_t>(p.burst);
    r.remaining = static_cast<std::uint64_t>(d.remaining);
    r.retry_after =
        d.retry_after < 0 ? rate_limit_result::never() : std::chrono::nanoseconds(d.retry_after);
    r.reset_after = std::chrono::nanoseconds(d.reset_after);
    return r;
  }

  // The decision state and the parameters are adjacent on purpose: every decision reads the
  // parameters and then CASes the TAT, so one cache-line transfer serves both. Not padded to a
  // line, so a keyed limiter can hold millions densely.
  // The theoretical arrival time, ns of the clock; 0 means "long ago" (a full limiter).
  std::atomic<std::int64_t> tat_{0};
  std::atomic<std::int64_t> interval_{1};
  std::atomic<std::int64_t> burst_{1};
  // Sequence lock over interval_ and burst_: even = stable, odd = a writer is storing. 32 bits:
  // a reader would need to sleep through 2^31 rate changes to be fooled by wrap-around.
  std::atomic<std::uint32_t> seq_{0};
  Clock clock_;
};

}  // namespace sluice
