// sluice/token_bucket.hpp
//
// Two token buckets with the interface of `sluice::gcra_limiter` (try_acquire / reserve with
// cancel / set_limits, results as `rate_limit_result`):
//
// `sluice::token_bucket<Clock>` is the classic bucket: `burst` tokens, refilled at `rate` per
// `period`, requests take n tokens or are refused. Its decisions are exactly those of
// gcra_limiter (the two algorithms are equivalent); the state is kept the textbook way (tokens +
// last refill, in integer nanoseconds of refill time) behind a mutex. Prefer gcra_limiter on hot
// shared paths (lock-free); use token_bucket where a lock is no concern and the classic form reads
// better, or as the base of custom policies.
//
// `sluice::warming_token_bucket<Clock>` ramps up like Guava's SmoothWarmingUp: a limiter that has
// been idle starts "cold", issuing units at `cold_factor` times the stable interval, and speeds
// up linearly to the stable rate as it is used; idling cools it down again. Use it in front of
// something that needs warming (a cache, a JIT, a connection pool) so a burst after a quiet period
// does not overwhelm it. As in Guava, a request that finds the limiter ready passes at once
// whatever its size, and its cost delays the *next* request (so `remaining` is 1 or 0 and
// `limit` is 1 there).
//
// Thread safety: all member functions may be called concurrently (one detail::mutex per bucket;
//   held for a few arithmetic operations). A reservation is used by one thread at a time.
// Time: read from the injected clock, or passed as `now` by the caller; stale `now` values (older
//   than one already seen) are treated as the newest time seen.
// Errors: refusals are `rate_limit_result` values; bad options are InvalidArgument from `create()`
//   and `set_limits()`. Nothing allocates or throws on the decision paths.
//
// Example:
//   sluice::warming_token_bucket<> warm({.limits = {.rate = 200}, .warmup_period = 10s});
//   if (auto r = warm.try_acquire(); !r) return reply_503(r.retry_after);
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "sluice/detail/mutex.hpp"
#include "sluice/rate_limit.hpp"

namespace sluice {

namespace token_bucket_detail {
inline std::int64_t to_ns(std::chrono::nanoseconds d) noexcept { return d.count(); }
template <class TimePoint>
std::int64_t to_ns(TimePoint t) noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}
}  // namespace token_bucket_detail

// Units reserved ahead from a token bucket, usable from `ready_at()`. Not cancelled by its
// destructor. Movable, not copyable. `Owner` is the bucket type.
template <class Owner>
class bucket_reservation {
 public:
  using time_point = typename Owner::time_point;
  bucket_reservation() = default;
  bucket_reservation(bucket_reservation&& o) noexcept { *this = std::move(o); }
  bucket_reservation& operator=(bucket_reservation&& o) noexcept {
    owner_ = std::exchange(o.owner_, nullptr);
    n_ = o.n_;
    charged_ = o.charged_;
    ready_at_ = o.ready_at_;
    delay_ = o.delay_;
    ok_ = o.ok_;
    exceeds_ = o.exceeds_;
    return *this;
  }

  // Returns whether the units were reserved.
  bool ok() const noexcept { return ok_; }
  explicit operator bool() const noexcept { return ok_; }
  // Returns whether the request can never be granted (n > burst).
  bool exceeds_burst() const noexcept { return exceeds_; }
  // Returns how long after `reserve()` the units may be used (for a refused one: the wait refused).
  std::chrono::nanoseconds delay() const noexcept { return delay_; }
  // Returns when the units may be used.
  time_point ready_at() const noexcept {
    return time_point(std::chrono::duration_cast<typename time_point::duration>(
        std::chrono::nanoseconds(ready_at_)));
  }
  // Gives the units back if they are not usable yet (now <= ready_at). Idempotent. Takes the
  // bucket's mutex; the bucket must still be alive.
  void cancel() {
    if (owner_ == nullptr || !ok_) return;
    std::exchange(owner_, nullptr)->refund(n_, charged_, ready_at_);
  }

 private:
  friend Owner;
  Owner* owner_ = nullptr;
  std::int64_t n_ = 0;
  std::int64_t charged_ = 0;  // ns of credit (token_bucket) or of schedule (warming) charged
  std::int64_t ready_at_ = 0;
  std::chrono::nanoseconds delay_{0};
  bool ok_ = false;
  bool exceeds_ = false;
};

template <class Clock = std::chrono::steady_clock>
class token_bucket {
 public:
  using clock_type = Clock;
  using time_point = typename Clock::time_point;
  using options = rate_limit_options;
  using reservation = bucket_reservation<token_bucket>;

  // Returns a bucket, or InvalidArgument when `opts.validate()` fails.
  static absl::StatusOr<token_bucket> create(const options& opts, Clock clock = Clock()) {
    if (auto s = opts.validate(); !s.ok()) return s;
    return absl::StatusOr<token_bucket>(absl::in_place, opts, std::move(clock));
  }

  // Creates a full bucket. Precondition: `opts.validate()` is OK; otherwise values are clamped.
  explicit token_bucket(const options& opts, Clock clock = Clock()) : clock_(std::move(clock)) {
    detail::mutex_lock lock(mu_);
    apply(opts);
    credit_ = capacity_;
  }

  // Moves the bucket. Not thread-safe: move only before sharing it.
  token_bucket(token_bucket&& o) noexcept : clock_(std::move(o.clock_)) {
    detail::mutex_lock lock(mu_);
    detail::mutex_lock other(o.mu_);
    interval_ = o.interval_;
    burst_ = o.burst_;
    capacity_ = o.capacity_;
    credit_ = o.credit_;
    last_ = o.last_;
  }
  token_bucket& operator=(token_bucket&&) = delete;

  // Takes `n` tokens now, or refuses taking nothing. n = 0 only asks. Takes the mutex.
  rate_limit_result try_acquire(std::uint64_t n = 1) { return try_acquire(n, clock_.now()); }

  // As `try_acquire(n)` at the caller's time `now`.
  rate_limit_result try_acquire(std::uint64_t n, time_point now) {
    detail::mutex_lock lock(mu_);
    refill(token_bucket_detail::to_ns(now));
    rate_limit_result r;
    r.limit = static_cast<std::uint64_t>(burst_);
    if (n > static_cast<std::uint64_t>(burst_)) {
      r.retry_after = rate_limit_result::never();
    } else {
      const std::int64_t need = static_cast<std::int64_t>(n) * interval_;
      if (credit_ >= need) {
        credit_ -= need;
        r.allowed = true;
      } else {
        r.retry_after = std::chrono::nanoseconds(need - credit_);
      }
    }
    r.remaining = credit_ <= 0 ? 0 : static_cast<std::uint64_t>(credit_ / interval_);
    r.reset_after = std::chrono::nanoseconds(capacity_ - credit_);
    return r;
  }

  // Takes `n` tokens now, going into debt if needed: the units may be used after `delay()`.
  // Refused (nothing taken) when n > burst or the wait would exceed `max_wait`.
  reservation reserve(std::uint64_t n = 1,
                      std::chrono::nanoseconds max_wait = std::chrono::nanoseconds::max()) {
    return reserve(n, max_wait, clock_.now());
  }

  // As `reserve(n, max_wait)` at the caller's time `now`.
  reservation reserve(std::uint64_t n, std::chrono::nanoseconds max_wait, time_point now) {
    detail::mutex_lock lock(mu_);
    const std::int64_t t = refill(token_bucket_detail::to_ns(now));
    reservation out;
    out.owner_ = this;
    if (n > static_cast<std::uint64_t>(burst_)) {
      out.exceeds_ = true;
      return out;
    }
    const std::int64_t need = static_cast<std::int64_t>(n) * interval_;
    const std::int64_t wait = need > credit_ ? need - credit_ : 0;
    out.n_ = static_cast<std::int64_t>(n);
    out.delay_ = std::chrono::nanoseconds(wait);
    out.ready_at_ = t + wait;
    if (wait > max_wait.count()) return out;
    credit_ -= need;
    out.charged_ = need;
    out.ok_ = true;
    return out;
  }

  // Changes rate and burst (InvalidArgument and no change when invalid). The tokens held are kept
  // (capped at the new burst).
  absl::Status set_limits(const options& opts) {
    if (auto s = opts.validate(); !s.ok()) return s;
    detail::mutex_lock lock(mu_);
    const std::int64_t tokens_ns = credit_;
    const std::int64_t old_interval = interval_;
    apply(opts);
    // Keep the token count (not the refill time) across a rate change.
    credit_ = tokens_ns / old_interval * interval_ +
              (tokens_ns % old_interval) * interval_ / old_interval;
    if (credit_ > capacity_) credit_ = capacity_;
    return absl::OkStatus();
  }

  // Returns the current options (rate expressed as 1 per emission interval).
  options limits() const {
    detail::mutex_lock lock(mu_);
    return options{.rate = 1,
                   .period = std::chrono::nanoseconds(interval_),
                   .burst = static_cast<std::uint64_t>(burst_)};
  }

  // Makes the bucket full again (forgets charges and reservations). Takes the mutex.
  void reset() {
    detail::mutex_lock lock(mu_);
    credit_ = capacity_;
    last_ = 0;
  }

  // Returns the tokens available now, taking nothing.
  std::uint64_t available() { return try_acquire(0).remaining; }

  // Returns the clock the bucket reads.
  const Clock& clock() const noexcept { return clock_; }

 private:
  friend reservation;

  void apply(const options& opts) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const std::int64_t t = opts.emission_interval().count();
    interval_ = t < 1 ? 1 : t;
    const std::uint64_t max_burst =
        (std::uint64_t{1} << 61) / static_cast<std::uint64_t>(interval_);
    burst_ = static_cast<std::int64_t>(
        opts.burst < 1 ? 1 : (opts.burst > max_burst ? max_burst : opts.burst));
    capacity_ = burst_ * interval_;
  }

  // Adds the credit earned since the last refill; returns the effective now.
  std::int64_t refill(std::int64_t now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (now > last_) {
      const std::int64_t earned = now - last_;
      credit_ = capacity_ - credit_ < earned ? capacity_ : credit_ + earned;
      last_ = now;
    }
    return last_;
  }

  void refund(std::int64_t /*n*/, std::int64_t charged, std::int64_t ready_at) {
    detail::mutex_lock lock(mu_);
    const std::int64_t now = refill(token_bucket_detail::to_ns(clock_.now()));
    if (now > ready_at) return;
    credit_ = capacity_ - credit_ < charged ? capacity_ : credit_ + charged;
  }

  mutable detail::mutex mu_;
  std::int64_t interval_ ABSL_GUARDED_BY(mu_) = 1;  // ns per token
  std::int64_t burst_ ABSL_GUARDED_BY(mu_) = 1;
  std::int64_t capacity_ ABSL_GUARDED_BY(mu_) = 1;  // burst * interval: a full bucket's credit
  std::int64_t credit_ ABSL_GUARDED_BY(mu_) = 0;    // tokens * interval; negative = reserved debt
  std::int64_t last_ ABSL_GUARDED_BY(mu_) = 0;      // ns of the clock at the last refill
  Clock clock_;
};

// Options of `warming_token_bucket`.
struct warming_options {
  // The stable rate (rate per period). `burst` is not used: the stored units follow from the
  // warm-up period, as in Guava.
  rate_limit_options limits{};
  // How long a cold limiter takes to reach the stable rate under saturating demand. No usable
  // default (depends on what is warmed); must be positive.
  std::chrono::nanoseconds warmup_period{0};
  // Cold interval / stable interval. 3: Guava's choice, a cold limiter runs at a third of the rate.
  double cold_factor = 3.0;

  // Returns OK or InvalidArgument (bad limits, warmup_period <= 0, cold_factor < 1).
  absl::Status validate() const {
    if (auto s = limits.validate(); !s.ok()) return s;
    if (warmup_period.count() <= 0) {
      return absl::InvalidArgumentError(std::string("warming_token_bucket: warmup_period > 0"));
    }
    if (!(cold_factor >= 1.0)) {
      return absl::InvalidArgumentError(std::string("warming_token_bucket: cold_factor >= 1"));
    }
    return absl::OkStatus();
  }
};

template <class Clock = std::chrono::steady_clock>
class warming_token_bucket {
 public:
  using clock_type = Clock;
  using time_point = typename Clock::time_point;
  using options = warming_options;
  using reservation = bucket_reservation<warming_token_bucket>;

  // Returns a cold bucket, or InvalidArgument when `opts.validate()` fails.
  static absl::StatusOr<warming_token_bucket> create(const options& opts, Clock clock = Clock()) {
    if (auto s = opts.validate(); !s.ok()) return s;
    return absl::StatusOr<warming_token_bucket>(absl::in_place, opts, std::move(clock));
  }

  // Creates a cold bucket (fully stored). Precondition: `opts.validate()` is OK.
  explicit warming_token_bucket(const options& opts, Clock clock = Clock())
      : clock_(std::move(clock)) {
    detail::mutex_lock lock(mu_);
    apply(opts);
    stored_ = max_stored_;
  }

  // Moves the bucket. Not thread-safe: move only before sharing it.
  warming_token_bucket(warming_token_bucket&& o) noexcept : clock_(std::move(o.clock_)) {
    detail::mutex_lock lock(mu_);
    detail::mutex_lock other(o.mu_);
    stable_ = o.stable_;
    cold_ = o.cold_;
    threshold_ = o.threshold_;
    max_stored_ = o.max_stored_;
    slope_ = o.slope_;
    cool_down_ = o.cool_down_;
    stored_ = o.stored_;
    next_free_ = o.next_free_;
    warmup_ = o.warmup_;
    cold_factor_ = o.cold_factor_;
  }
  warming_token_bucket& operator=(warming_token_bucket&&) = delete;

  // Admits the request if the limiter is ready now (charging its cost to the schedule), or
  // refuses with the wait until it is. n = 0 only asks. Takes the mutex.
  rate_limit_result try_acquire(std::uint64_t n = 1) { return try_acquire(n, clock_.now()); }

  // As `try_acquire(n)` at the caller's time `now`.
  rate_limit_result try_acquire(std::uint64_t n, time_point now) {
    detail::mutex_lock lock(mu_);
    const double t = static_cast<double>(token_bucket_detail::to_ns(now));
    rate_limit_result r;
    r.limit = 1;
    if (next_free_ > t) {
      r.retry_after =
          std::chrono::nanoseconds(static_cast<std::int64_t>(std::ceil(next_free_ - t)));
    } else if (n > 0) {
      (void)reserve_locked(static_cast<double>(n), t);
      r.allowed = true;
    } else {
      r.allowed = true;
    }
    r.remaining = next_free_ <= t ? 1 : 0;
    r.reset_after = std::chrono::nanoseconds(
        next_free_ > t ? static_cast<std::int64_t>(std::ceil(next_free_ - t)) : 0);
    return r;
  }

  // Reserves `n` units: they may be used after `delay()` (when the earlier requests' costs have
  // passed). Refused when the wait would exceed `max_wait`. Takes the mutex.
  reservation reserve(std::uint64_t n = 1,
                      std::chrono::nanoseconds max_wait = std::chrono::nanoseconds::max()) {
    return reserve(n, max_wait, clock_.now());
  }

  // As `reserve(n, max_wait)` at the caller's time `now`.
  reservation reserve(std::uint64_t n, std::chrono::nanoseconds max_wait, time_point now) {
    detail::mutex_lock lock(mu_);
    const double t = static_cast<double>(token_bucket_detail::to_ns(now));
    reservation out;
    out.owner_ = this;
    out.n_ = static_cast<std::int64_t>(n);
    const double wait = next_free_ > t ? next_free_ - t : 0.0;
    out.delay_ = std::chrono::nanoseconds(static_cast<std::int64_t>(std::ceil(wait)));
    out.ready_at_ = token_bucket_detail::to_ns(now) + out.delay_.count();
    if (wait > static_cast<double>(max_wait.count())) return out;
    out.charged_ = static_cast<std::int64_t>(reserve_locked(static_cast<double>(n), t));
    out.ok_ = true;
    return out;
  }

  // Changes all options (see the overload below for how the stored units carry over).
  // InvalidArgument and no change when invalid.
  absl::Status set_limits(const options& opts) {
    if (auto s = opts.validate(); !s.ok()) return s;
    detail::mutex_lock lock(mu_);
    const double fraction = max_stored_ > 0 ? stored_ / max_stored_ : 1.0;
    apply(opts);
    stored_ = fraction * max_stored_;
    return absl::OkStatus();
  }

  // Changes the stable rate (keeping warmup_period and cold_factor) and recomputes the curve;
  // the stored units are scaled to the new maximum. InvalidArgument and no change when invalid.
  absl::Status set_limits(const rate_limit_options& limits) {
    detail::mutex_lock lock(mu_);
    options o{.limits = limits,
              .warmup_period = std::chrono::nanoseconds(static_cast<std::int64_t>(warmup_)),
              .cold_factor = cold_factor_};
    if (auto s = o.validate(); !s.ok()) return s;
    const double fraction = max_stored_ > 0 ? stored_ / max_stored_ : 1.0;
    apply(o);
    stored_ = fraction * max_stored_;
    return absl::OkStatus();
  }

  // Makes the bucket cold again, as new. Takes the mutex.
  void reset() {
    detail::mutex_lock lock(mu_);
    stored_ = max_stored_;
    next_free_ = 0;
  }

  // Returns the interval the next unit would cost at the current stored level (the warm-up
  // curve: cold_factor * stable when cold, stable when warm). Takes the mutex.
  std::chrono::nanoseconds current_interval() {
    detail::mutex_lock lock(mu_);
    resync(static_cast<double>(token_bucket_detail::to_ns(clock_.now())));
    const double above = stored_ - threshold_;
    return std::chrono::nanoseconds(
        static_cast<std::int64_t>(above > 0 ? stable_ + above * slope_ : stable_));
  }

  // Returns the units stored beyond which the limiter is warm, and the cold maximum.
  double threshold_units() const {
    detail::mutex_lock lock(mu_);
    return threshold_;
  }
  double max_units() const {
    detail::mutex_lock lock(mu_);
    return max_stored_;
  }

  // Returns the clock the bucket reads.
  const Clock& clock() const noexcept { return clock_; }

 private:
  friend reservation;

  void apply(const options& o) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    stable_ = static_cast<double>(o.limits.emission_interval().count());
    if (stable_ < 1) stable_ = 1;
    cold_factor_ = o.cold_factor < 1.0 ? 1.0 : o.cold_factor;
    cold_ = stable_ * cold_factor_;
    warmup_ = static_cast<double>(o.warmup_period.count());
    if (warmup_ < 1) warmup_ = 1;
    threshold_ = 0.5 * warmup_ / stable_;
    max_stored_ = threshold_ + 2.0 * warmup_ / (stable_ + cold_);
    slope_ = max_stored_ > threshold_ ? (cold_ - stable_) / (max_stored_ - threshold_) : 0.0;
    cool_down_ = warmup_ / max_stored_;
  }

  // Stores the units earned while idle (since next_free_), at the cool-down rate.
  void resync(double now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (now > next_free_) {
      stored_ = std::min(max_stored_, stored_ + (now - next_free_) / cool_down_);
      next_free_ = now;
    }
  }

  // Returns the time it takes to spend `take` stored units from level `stored` (the area under
  // the curve between stored - take and stored).
  double stored_cost(double stored, double take) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const double above = stored - threshold_;
    double cost = 0;
    if (above > 0) {
      const double take_above = std::min(above, take);
      const double length = (stable_ + above * slope_) + (stable_ + (above - take_above) * slope_);
      cost = take_above * length / 2.0;
      take -= take_above;
    }
    return cost + stable_ * take;
  }

  // Charges `n` units at `now` to the schedule; returns the time charged.
  double reserve_locked(double n, double now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    resync(now);
    const double spend = std::min(n, stored_);
    const double fresh = n - spend;
    const double wait = stored_cost(stored_, spend) + fresh * stable_;
    next_free_ += wait;
    stored_ -= spend;
    return wait;
  }

  void refund(std::int64_t /*n*/, std::int64_t charged, std::int64_t ready_at) {
    detail::mutex_lock lock(mu_);
    const double now = static_cast<double>(token_bucket_detail::to_ns(clock_.now()));
    if (now > static_cast<double>(ready_at)) return;
    // Give back the schedule time (the stored units spent stay spent: a cancelled request
    // still warmed the limiter a little, as a real one would have).
    next_free_ = std::max(now, next_free_ - static_cast<double>(charged));
  }

  mutable detail::mutex mu_;
  double stable_ ABSL_GUARDED_BY(mu_) = 1;      // ns per unit when warm
  double cold_ ABSL_GUARDED_BY(mu_) = 3;        // ns per unit when fully cold
  double threshold_ ABSL_GUARDED_BY(mu_) = 0;   // stored units at which warming starts
  double max_stored_ ABSL_GUARDED_BY(mu_) = 0;  // stored units when fully cold
  double slope_ ABSL_GUARDED_BY(mu_) = 0;       // extra ns per unit per stored unit
  double cool_down_ ABSL_GUARDED_BY(mu_) = 1;   // idle ns per stored unit regained
  double stored_ ABSL_GUARDED_BY(mu_) = 0;
  double next_free_ ABSL_GUARDED_BY(mu_) = 0;  // ns: when the next request may pass
  double warmup_ ABSL_GUARDED_BY(mu_) = 1;
  double cold_factor_ ABSL_GUARDED_BY(mu_) = 3;
  Clock clock_;
};

}  // namespace sluice
