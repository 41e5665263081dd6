// sluice/adaptive_limiter.hpp
//
// `sluice::adaptive_limiter` is a concurrency limiter that learns its cap from the latency and
// the drops it observes, as Netflix's concurrency-limits and Envoy's adaptive concurrency filter
// do: when latency rises above the no-load latency, or calls are dropped, queues are building
// somewhere, so fewer calls are let in; while latency stays at the baseline, the cap grows.
//
// Algorithms (`options::algorithm`), both updated once per window of samples (at least
// `min_window_samples`, and at least one sample per admitted slot: one "round trip" of the cap):
//   - gradient (Gradient2 / Vegas style, the default): gradient = clamp(tolerance * min_rtt /
//     mean_rtt, 0.5, 1); target = limit * gradient + sqrt(limit) (the headroom lets a small queue
//     form, which is how spare capacity is discovered); limit moves `smoothing` of the way to the
//     target. min_rtt is the no-load latency, re-measured by jittered probes (below).
//   - aimd: +1 per window while the cap is used (in flight >= limit / 2), x backoff_ratio after a
//     window with a mean latency above `aimd_latency_threshold`.
//   Both multiply the cap by backoff_ratio instead after a window whose failure rate (from the
//   health recorder, below) exceeds `failure_rate_threshold` (default 0: any dropped call).
//
// Corrections users of the original libraries found necessary, built in:
//   - explicit min and max limits (min keeps samples flowing so the limiter can recover);
//   - cancelled calls are ignored (`permit::record_ignored()`, also what an unrecorded permit does
//     on destruction): a caller giving up says nothing about the dependency;
//   - dropped calls (`record_dropped()`: a timeout, a 503 from downstream, a rejection further
//     along) back the limit off and their latency is never used as a sample, since a fast failure
//     would look like a fast, healthy call; calls this limiter rejects yield no sample at all;
//   - the cap does not grow while it is not used (in flight < limit / 2: app-limited traffic
//     proves nothing about capacity);
//   - probing: every `probe_interval` (+/- `probe_jitter`, so a fleet does not probe in unison) the
//     cap drops to min_limit for `probe_samples` calls started during the probe, and their
//     fastest latency becomes the new min_rtt. Without it a baseline measured on a quiet
//     dependency pins the limit low forever once the dependency is permanently slower;
//   - priority partitions: `try_acquire(priority)` admits `sheddable` calls only below
//     admit_fraction[sheddable] x limit, `normal` below admit_fraction[normal] x limit, and
//     `critical` up to the full limit, so critical traffic keeps a share when the rest saturates.
//
// Outcome window: the limiter keeps a sluice::health_recorder<Clock> (count-based, one stripe,
// sized max(min_window_samples, max_limit) capped at 1024 calls, so it holds a whole update window
// or, for a larger one, its last 1024 calls) and records every finished call of the current window
// in it: record_success() as a success, record_dropped() as a failure, record_ignored() (and an
// unrecorded permit) as ignored, which the recorder does not count. In aimd mode with
// `aimd_latency_threshold` set, a success slower than the threshold is also recorded as slow (the
// gradient mode judges the window's mean latency, not single calls, so it marks none). At each
// update the recorder's snapshot decides the backoff (failure_rate > failure_rate_threshold), then
// the recorder is reset so a failure backs the limit off at most once. `stats().health` is that
// snapshot for the window in progress. Calls finished during a probe are probe samples and are not
// recorded. Latencies stay with the limiter: the recorder keeps counts, not times, and the gradient
// and the aimd latency test need the mean.
//
// Thread safety: all member functions may be called concurrently. Admission is lock-free (one CAS
//   on the in-flight count); recording a sample takes a detail::mutex for a few arithmetic
//   operations plus one recorder write. An update (at most once per min_window_samples calls)
//   also resets the recorder: one relaxed exchange per recorder slot (<= 1024), under the mutex.
//   A permit is used by one thread at a time.
// Time: latencies are measured on the injected clock (permit creation to record_*).
// Errors: a refusal is an empty std::optional; bad options are InvalidArgument from `create()`.
//   Admission neither allocates nor throws.
//
// Example:
//   auto limiter = sluice::adaptive_limiter<>::create({.min_limit = 4, .max_limit = 500}).value();
//   auto permit = limiter->try_acquire(sluice::call_priority::normal);
//   if (!permit) return reply_503();
//   auto result = call_backend();
//   result.ok() ? permit->record_success() : permit->record_dropped();
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "sluice/detail/mutex.hpp"
#include "sluice/detail/random.hpp"
#include "sluice/health_recorder.hpp"

namespace sluice {

// How the adaptive limiter moves its cap.
enum class adaptive_algorithm : std::uint8_t { gradient, aimd };

// How much a call matters when the limiter is saturated.
enum class call_priority : std::uint8_t { critical = 0, normal = 1, sheddable = 2 };

struct adaptive_limiter_options {
  // The update rule. gradient: reacts to rising latency before anything fails.
  adaptive_algorithm algorithm = adaptive_algorithm::gradient;
  // The cap before anything is learned. 20: Netflix's default, safe for a cold dependency yet
  // not starving a healthy one while the limit grows.
  std::size_t initial_limit = 20;
  // The cap never goes below this. 4: enough calls keep flowing to measure recovery.
  std::size_t min_limit = 4;
  // The cap never goes above this. 1000: a ceiling for when latency carries no signal (e.g. a
  // dependency that never slows down until it falls over).
  std::size_t max_limit = 1000;
  // Samples per update at least (an update also waits for one sample per slot of the cap). 10:
  // a mean over fewer is mostly noise.
  std::size_t min_window_samples = 10;
  // Multiplicative decrease after a window with drops (both algorithms). 0.9: TCP-like, gentle
  // enough not to collapse the cap on a single timeout.
  double backoff_ratio = 0.9;
  // aimd only: a window whose mean latency exceeds this backs off like a drop; single calls above
  // it are recorded as slow in the health recorder. 0: latency is ignored and only drops back off
  // (the right value depends on the dependency).
  std::chrono::nanoseconds aimd_latency_threshold{0};
  // Both algorithms: a window whose failure rate (dropped / recorded calls, from the health
  // recorder's snapshot) exceeds this backs off. 0: any drop backs off, as in Netflix's AIMD and
  // TCP, since a drop is the clearest overload signal; raise it (e.g. 0.05) for a dependency with
  // a background error rate that is not overload.
  double failure_rate_threshold = 0.0;
  // gradient only: latency may reach tolerance x min_rtt before the cap shrinks. 1.0: the
  // sqrt(limit) headroom already admits a small queue; raise it for noisy latencies.
  double tolerance = 1.0;
  // gradient only: fraction of the way to the new target taken per update. 0.2: reacts within a
  // few windows while riding out one odd window.
  double smoothing = 0.2;
  // gradient only: how often min_rtt is re-measured. 30 s: often enough to follow a dependency
  // whose baseline changed, rarely enough that probes (at min_limit) cost little throughput.
  std::chrono::nanoseconds probe_interval = std::chrono::seconds(30);
  // gradient only: +/- fraction of random spread on each probe interval. 0.25: instances that
  // started together drift apart within a few probes.
  double probe_jitter = 0.25;
  // gradient only: calls started during a probe whose latencies make the new min_rtt. 16: enough
  // that one lucky or unlucky call does not decide it.
  std::size_t probe_samples = 16;
  // Share of the cap each priority may fill (index: call_priority). critical 1.0, normal 0.9,
  // sheddable 0.75: under saturation the last 10 % of slots stay for critical calls and the last
  // 25 % for critical and normal ones.
  std::array<double, 3> admit_fraction = {1.0, 0.9, 0.75};

  // Returns OK, or InvalidArgument for min_limit 0, min > initial or initial > max, ratios out of
  // (0, 1], failure_rate_threshold out of [0, 1), tolerance < 1, non-positive probe interval, or
  // fractions out of (0, 1].
  absl::Status validate() const {
    auto bad = [](const char* what) {
      return absl::InvalidArgumentError(std::string("adaptive_limiter: ") + what);
    };
    if (min_limit == 0) return bad("min_limit must be >= 1");
    if (min_limit > initial_limit || initial_limit > max_limit) {
      return bad("need min_limit <= initial_limit <= max_limit");
    }
    if (!(backoff_ratio > 0 && backoff_ratio < 1)) return bad("backoff_ratio in (0, 1)");
    if (!(smoothing > 0 && smoothing <= 1)) return bad("smoothing in (0, 1]");
    if (!(failure_rate_threshold >= 0 && failure_rate_threshold < 1)) {
      return bad("failure_rate_threshold in [0, 1)");
    }
    if (!(tolerance >= 1)) return bad("tolerance >= 1");
    if (probe_interval.count() <= 0) return bad("probe_interval must be > 0");
    if (!(probe_jitter >= 0 && probe_jitter < 1)) return bad("probe_jitter in [0, 1)");
    if (min_window_samples == 0 || probe_samples == 0) return bad("sample counts must be >= 1");
    for (double f : admit_fraction) {
      if (!(f > 0 && f <= 1)) return bad("admit_fraction values in (0, 1]");
    }
    return absl::OkStatus();
  }
};

// A point-in-time view of an adaptive limiter.
struct adaptive_limiter_stats {
  double estimated_limit = 0;           // the learned cap (not lowered by probes)
  std::size_t limit = 0;                // the cap admission uses now (min_limit while probing)
  std::size_t in_flight = 0;            // admitted calls not yet finished
  std::chrono::nanoseconds min_rtt{0};  // the no-load latency baseline (0: not measured yet)
  std::uint64_t samples = 0;            // successful calls sampled
  std::uint64_t dropped = 0;            // calls recorded as dropped
  std::uint64_t ignored = 0;            // calls recorded as ignored (cancelled)
  std::uint64_t probes = 0;             // probes completed
  bool probing = false;
  // The health recorder's snapshot of the window in progress (calls recorded since the last update;
  // failures are drops, slow calls as described in the header comment).
  health_snapshot health;
};

template <class Clock = std::chrono::steady_clock>
class adaptive_limiter {
 public:
  using clock_type = Clock;
  using time_point = typename Clock::time_point;
  using options = adaptive_limiter_options;

  // One admitted call. Record how it ended with exactly one record_* call; a permit destroyed
  // without one counts as ignored. Movable, not copyable; the limiter must outlive it.
  class permit {
   public:
    permit(permit&& o) noexcept
        : owner_(std::exchange(o.owner_, nullptr)), start_(o.start_), epoch_(o.epoch_) {}
    permit& operator=(permit&& o) noexcept {
      if (this != &o) {
        record_ignored();
        owner_ = std::exchange(o.owner_, nullptr);
        start_ = o.start_;
        epoch_ = o.epoch_;
      }
      return *this;
    }
    permit(const permit&) = delete;
    permit& operator=(const permit&) = delete;
    ~permit() { record_ignored(); }

    // Records a successful call; its latency (now - admission) is a sample. Frees the slot.
    void record_success() { finish(outcome::success); }
    // Records a dropped call (timeout, overload response, rejection downstream): backs the limit
    // off; its latency is not used. Frees the slot.
    void record_dropped() { finish(outcome::dropped); }
    // Records a call that says nothing about capacity (cancelled by the caller). Frees the slot.
    void record_ignored() { finish(outcome::ignored); }

   private:
    friend class adaptive_limiter;
    enum class outcome { success, dropped, ignored };
    permit(adaptive_limiter* owner, time_point start, std::uint32_t epoch) noexcept
        : owner_(owner), start_(start), epoch_(epoch) {}
    void finish(outcome o) {
      if (owner_ == nullptr) return;
      std::exchange(owner_, nullptr)->on_finish(o, start_, epoch_);
    }
    adaptive_limiter* owner_;
    time_point start_;
    std::uint32_t epoch_;
  };

  // Returns a limiter, or InvalidArgument when `opts.validate()` fails.
  static absl::StatusOr<std::unique_ptr<adaptive_limiter>> create(const options& opts,
                                                                  Clock clock = Clock()) {
    if (auto s = opts.validate(); !s.ok()) return s;
    return std::make_unique<adaptive_limiter>(opts, std::move(clock));
  }

  // Creates a limiter at initial_limit. Precondition: `opts.validate()` is OK.
  explicit adaptive_limiter(const options& opts, Clock clock = Clock())
      : opts_(opts), clock_(std::move(clock)), health_(recorder_options(opts_), clock_) {
    detail::mutex_lock lock(mu_);
    estimate_ = static_cast<double>(opts_.initial_limit);
    limit_.store(opts_.initial_limit, std::memory_order_relaxed);
    next_probe_ = clock_.now() + next_probe_delay();
  }

  adaptive_limiter(const adaptive_limiter&) = delete;
  adaptive_limiter& operator=(const adaptive_limiter&) = delete;

  // Admits a call of `priority` if the in-flight count is below its share of the cap. Lock-free;
  // a rejection records nothing (it is not a sample).
  std::optional<permit> try_acquire(call_priority priority = call_priority::normal) {
    // Relaxed: the cap is advisory (a racing update may be seen late); the CAS below keeps the
    // in-flight count itself exact.
    const std::size_t limit = limit_.load(std::memory_order_relaxed);
    const double share = opts_.admit_fraction[static_cast<std::size_t>(priority)];
    std::size_t cap = static_cast<std::size_t>(static_cast<double>(limit) * share);
    if (cap == 0) cap = 1;
    std::size_t cur = in_flight_.load(std::memory_order_relaxed);
    do {
      if (cur >= cap) return std::nullopt;
    } while (!in_flight_.compare_exchange_weak(cur, cur + 1, std::memory_order_relaxed,
                                               std::memory_order_relaxed));
    // Relaxed: the epoch only classifies samples; a permit taken just as a probe starts may be
    // counted in either phase, both are acceptable.
    return permit(this, clock_.now(), epoch_.load(std::memory_order_relaxed));
  }

  // Returns the cap admission uses now.
  std::size_t limit() const noexcept { return limit_.load(std::memory_order_relaxed); }

  // Returns the admitted calls not yet finished.
  std::size_t in_flight() const noexcept { return in_flight_.load(std::memory_order_relaxed); }

  // Returns a snapshot of the learned state. Takes the mutex.
  adaptive_limiter_stats stats() const {
    detail::mutex_lock lock(mu_);
    adaptive_limiter_stats s;
    s.estimated_limit = estimate_;
    s.limit = limit();
    s.in_flight = in_flight();
    s.min_rtt = std::chrono::nanoseconds(static_cast<std::int64_t>(min_rtt_));
    s.samples = samples_;
    s.dropped = dropped_;
    s.ignored = ignored_;
    s.probes = probes_;
    s.probing = probing_;
    s.health = health_.snapshot();
    return s;
  }

  // Returns the clock latencies are measured on.
  const Clock& clock() const noexcept { return clock_; }

 private:
  using outcome = typename permit::outcome;

  // Returns the recorder's shape: count-based, large enough for a whole update window (at most
  // max(min_window_samples, max_limit) calls; capped at 1024, beyond which the rate is judged on
  // the last 1024 calls, plenty for a rate and it bounds the reset), one stripe since it is only
  // written under mu_ (which keeps it exact).
  static health_recorder_options recorder_options(const options& o) {
    health_recorder_options r;
    r.kind = health_recorder_options::window_kind::count_based;
    r.window_size =
        std::clamp<std::size_t>(std::max(o.min_window_samples, o.max_limit), 1, std::size_t{1024});
    r.stripes = 1;
    return r;
  }

  std::chrono::nanoseconds next_probe_delay() const {
    return detail::jitter(opts_.probe_interval, opts_.probe_jitter);
  }

  void on_finish(outcome o, time_point start, std::uint32_t epoch) {
    const time_point now = clock_.now();
    // Relaxed: see try_acquire.
    in_flight_.fetch_sub(1, std::memory_order_relaxed);
    detail::mutex_lock lock(mu_);
    if (o == outcome::ignored) {
      ++ignored_;
      return;
    }
    const double rtt = std::chrono::duration<double, std::nano>(now - start).count();
    if (o == outcome::dropped) {
      ++dropped_;
    } else {
      ++samples_;
    }
    if (probing_) {
      if (epoch != epoch_.load(std::memory_order_relaxed)) return;  // started before the probe
      if (o == outcome::success) probe_min_ = std::min(probe_min_, rtt);
      if (++probe_count_ >= opts_.probe_samples) end_probe(now);
      return;
    }
    ++window_count_;
    if (o == outcome::dropped) {
      health_.record(call_outcome::failure);
    } else {
      const auto slow_after = opts_.aimd_latency_threshold.count();
      const bool slow = opts_.algorithm == adaptive_algorithm::aimd && slow_after > 0 &&
                        rtt > static_cast<double>(slow_after);
      health_.record(call_outcome::success, slow);
      ++window_ok_;
      window_sum_ += rtt;
      window_min_ = std::min(window_min_, rtt);
    }
    // In flight when this call finished, itself included: how much of the cap was in use.
    window_max_in_flight_ = std::max(window_max_in_flight_, in_flight() + 1);
    const auto round = static_cast<std::size_t>(estimate_);
    if (window_count_ < std::max(opts_.min_window_samples, round)) return;
    update(now);
  }

  void update(time_point now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const bool used = static_cast<double>(window_max_in_flight_) * 2 >= estimate_;
    const health_snapshot health = health_.snapshot();
    const bool failing = health.calls > 0 && health.failure_rate > opts_.failure_rate_threshold;
    if (opts_.algorithm == adaptive_algorithm::aimd) {
      const double mean = window_ok_ > 0 ? window_sum_ / static_cast<double>(window_ok_) : 0;
      const double threshold = static_cast<double>(opts_.aimd_latency_threshold.count());
      if (failing || (threshold > 0 && window_ok_ > 0 && mean > threshold)) {
        estimate_ *= opts_.backoff_ratio;
      } else if (used) {
        estimate_ += 1;
      }
    } else {
      if (window_ok_ > 0) {
        min_rtt_ = min_rtt_ <= 0 ? window_min_ : std::min(min_rtt_, window_min_);
      }
      if (failing) {
        estimate_ *= opts_.backoff_ratio;
      } else if (window_ok_ > 0) {
        const double mean = window_sum_ / static_cast<double>(window_ok_);
        // A mean of 0 (every call within one clock tick) shows no queueing: gradient 1, not the
        // 0/0 NaN that would poison the estimate.
        const double gradient =
            mean > 0 ? std::clamp(opts_.tolerance * min_rtt_ / mean, 0.5, 1.0) : 1.0;
        double target = estimate_ * gradient + std::sqrt(estimate_);
        if (!used) target = std::min(target, estimate_);  // app-limited: no evidence to grow
        estimate_ += opts_.smoothing * (target - estimate_);
      }
    }
    estimate_ = std::clamp(estimate_, static_cast<double>(opts_.min_limit),
                           static_cast<double>(opts_.max_limit));
    window_count_ = window_ok_ = 0;
    window_sum_ = 0;
    window_min_ = std::numeric_limits<double>::infinity();
    health_.reset();
    window_max_in_flight_ = 0;
    if (opts_.algorithm == adaptive_algorithm::gradient && now >= next_probe_) {
      probing_ = true;
      probe_count_ = 0;
      probe_min_ = std::numeric_limits<double>::infinity();
      // Relaxed: the epoch only classifies samples (see try_acquire).
      epoch_.fetch_add(1, std::memory_order_relaxed);
      limit_.store(opts_.min_limit, std::memory_order_relaxed);
    } else {
      limit_.store(static_cast<std::size_t>(std::lround(estimate_)), std::memory_order_relaxed);
    }
  }

  void end_probe(time_point now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (probe_min_ < std::numeric_limits<double>::infinity()) min_rtt_ = probe_min_;
    probing_ = false;
    ++probes_;
    next_probe_ = now + next_probe_delay();
    // Relaxed: publishes only the cap (see try_acquire).
    limit_.store(static_cast<std::size_t>(std::lround(estimate_)), std::memory_order_relaxed);
  }

  const options opts_;
  Clock clock_;
  std::atomic<std::size_t> limit_{1};
  std::atomic<std::size_t> in_flight_{0};
  std::atomic<std::uint32_t> epoch_{0};  // bumped when a probe starts
  // The outcome window. Lock-free itself, but written and reset only under mu_ so that its
  // contents are exactly the current update window; read by stats() under mu_ too.
  health_recorder<Clock> health_;

  mutable detail::mutex mu_;
  double estimate_ ABSL_GUARDED_BY(mu_) = 1;
  double min_rtt_ ABSL_GUARDED_BY(mu_) = 0;  // ns; 0 = unknown
  std::size_t window_count_ ABSL_GUARDED_BY(mu_) = 0;
  std::size_t window_ok_ ABSL_GUARDED_BY(mu_) = 0;
  double window_sum_ ABSL_GUARDED_BY(mu_) = 0;
  double window_min_ ABSL_GUARDED_BY(mu_) = std::numeric_limits<double>::infinity();
  std::size_t window_max_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  bool probing_ ABSL_GUARDED_BY(mu_) = false;
  std::size_t probe_count_ ABSL_GUARDED_BY(mu_) = 0;
  double probe_min_ ABSL_GUARDED_BY(mu_) = 0;
  time_point next_probe_ ABSL_GUARDED_BY(mu_){};
  std::uint64_t samples_ ABSL_GUARDED_BY(mu_) = 0;
  std::uint64_t dropped_ ABSL_GUARDED_BY(mu_) = 0;
  std::uint64_t ignored_ ABSL_GUARDED_BY(mu_) = 0;
  std::uint64_t probes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace sluice
