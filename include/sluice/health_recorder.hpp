// sluice/health_recorder.hpp
//
// `sluice::health_recorder` remembers the outcomes of recent calls to a dependency -- success,
// failure, or ignored, each possibly also "slow" -- in a sliding window, and answers "how healthy is
// it?" with a cheap snapshot {calls, failures, slow_calls, failure_rate, slow_call_rate}. The circuit
// breaker judges its failure and slow-call thresholds with it; the retry budget and the adaptive
// concurrency limiter read it too.
//
// Two kinds of window:
//   - count-based (the default): the outcomes of the last `window_size` calls. It never reads the
//     clock. Recording a call writes nothing shared when the outcome equals the one it replaces
//     (the steady state of a healthy dependency), so it scales across threads.
//   - time-based: the calls of the last `window_duration`, kept in `buckets` buckets per stripe;
//     it reads the clock once per record (or takes the time from the caller, `record_at`).
//
// Outcomes: `call_outcome::ignored` leaves the window untouched (a cancelled call says nothing
// about the dependency). "Slow" is orthogonal to success/failure: a call can be a slow success or a
// slow failure, and counts in `slow_calls` either way.
//
// Concurrency and accuracy (lock-free; no mutex anywhere):
//   - Count-based: one ring of `window_size` outcome bytes. Threads do not share a cursor per call:
//     each thread's stripe reserves a chunk of consecutive ring slots (`chunk()`: an eighth of
//     the window, at most 64) from a shared chunk cursor and fills it call by call; a thread that
//     meets another on its stripe moves to another stripe (detail/breaker_stripe.hpp). Aggregate
//     counters change only when a
//     slot's outcome changes, by exactly the difference (an atomic exchange of the slot), so at
//     quiescence `calls`/`failures`/`slow_calls` equal the ring's contents exactly. The one
//     approximation: a chunk a thread has reserved but not yet filled still holds the outcomes of
//     the previous lap, so with T threads recording, up to T*(chunk-1) of the N remembered outcomes
//     may be up to N + T*chunk calls old instead of N. With one thread the window is exact.
//   - Time-based: per-stripe buckets (a 32-bit bucket number packed with each 32-bit counter, so a
//     stale bucket is recognised and restarted with one CAS); counters saturate, never wrap. The
//     window covers the current, partial bucket plus the `buckets - 1` before it, so it spans
//     between (buckets-1)/buckets and all of `window_duration`.
//   - A snapshot taken while other threads record may be off by the calls in flight; rates are
//     clamped to [0, 1].
//   - `reset()` concurrent with recording may keep a few of the concurrent calls; it never leaves
//     the counters inconsistent with the window.
//
// Cost: count-based record ~5 ns (one uncontended CAS on the thread's own cache line plus a
// byte compare); time-based record ~10 ns plus the clock read (`sluice::coarse_clock` is a fair
// choice for windows of seconds: ~5 ns, 4 ms resolution). `snapshot()` is O(1) for count-based
// windows (three loads) and O(stripes * buckets) loads for time-based ones (independent of traffic;
// 40 loads with the defaults on a 2-core machine).
//
// Thread safety: all member functions may be called concurrently. A recorder is movable (its
//                window lives on the heap) but must not be moved while other threads use it.
// Time: read from the injected clock (default std::chrono::steady_clock) by time-based windows only.
// Errors: invalid options are rejected by `create` with InvalidArgument (the constructor throws
//         std::invalid_argument for them); recording and snapshots never fail, throw or allocate.
//
// Example:
//   auto recorder = sluice::health_recorder<>::create({.window_size = 50}).value();
//   recorder.record(sluice::call_outcome::failure);
//   recorder.record(sluice::call_outcome::success, /*slow=*/true);
//   sluice::health_snapshot s = recorder.snapshot();   // calls 2, failures 1, slow_calls 1
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "sluice/detail/breaker_stripe.hpp"
#include "sluice/detail/cache_line.hpp"

namespace sluice {

// What a finished call says about the dependency's health.
enum class call_outcome : std::uint8_t {
  success,  // the dependency did its job
  failure,  // the dependency failed (counts towards the failure rate)
  ignored,  // says nothing about the dependency (cancelled by the caller, a client error, ...)
};

// Returns the outcome's name ("success", "failure", "ignored").
constexpr const char* to_string(call_outcome o) noexcept {
  switch (o) {
    case call_outcome::success:
      return "success";
    case call_outcome::failure:
      return "failure";
    case call_outcome::ignored:
      return "ignored";
  }
  return "unknown";
}

// The health of a window at one moment.
struct health_snapshot {
  std::uint64_t calls = 0;       // recorded calls in the window (ignored ones excluded)
  std::uint64_t failures = 0;    // failed calls among them
  std::uint64_t slow_calls = 0;  // slow calls among them (successes and failures)
  double failure_rate = 0.0;     // failures / calls, 0 when calls == 0
  double slow_call_rate = 0.0;   // slow_calls / calls, 0 when calls == 0
};

// How a health_recorder's window is shaped.
struct health_recorder_options {
  enum class window_kind : std::uint8_t { count_based, time_based };

  // Count-based by default: it needs no clock read, and "the last N calls" reacts at the same
  // speed whatever the traffic rate.
  window_kind kind = window_kind::count_based;
  // Count-based: how many recent calls the window remembers. 100, as resilience4j: enough for a
  // failure rate with ~10% resolution, small enough to react within a burst of failures.
  std::size_t window_size = 100;
  // Time-based: how far back the window reaches. 10 s: long enough to smooth a spike, short
  // enough that a breaker reacts within seconds.
  std::chrono::nanoseconds window_duration = std::chrono::seconds(10);
  // Time-based: how many buckets divide `window_duration`. 10 gives the window 10% granularity;
  // more buckets make snapshots proportionally slower.
  std::size_t buckets = 10;
  // How many stripes spread concurrent recorders over separate cache lines; 0 picks
  // next_pow2(2 * hardware threads), at most 32. A thread that meets another on its stripe moves
  // to a different one, so this many busy threads settle on separate lines. Rounded up to a power
  // of two.
  std::size_t stripes = 0;
};

template <class Clock = std::chrono::steady_clock>
class health_recorder {
 public:
  using clock_type = Clock;
  using time_point = typename Clock::time_point;
  using options_type = health_recorder_options;

  // Returns OK if `opts` describes a valid window, else InvalidArgument saying why.
  [[nodiscard]] static absl::Status validate(const health_recorder_options& opts) {
    if (opts.kind == health_recorder_options::window_kind::count_based) {
      if (opts.window_size == 0 || opts.window_size > (std::size_t{1} << 30)) {
        return absl::InvalidArgumentError("health_recorder: window_size must be in [1, 2^30]");
      }
    } else {
      if (opts.buckets == 0 || opts.buckets > 1024) {
        return absl::InvalidArgumentError("health_recorder: buckets must be in [1, 1024]");
      }
      if (opts.window_duration.count() <= 0 ||
          opts.window_duration.count() / static_cast<std::int64_t>(opts.buckets) <= 0) {
        return absl::InvalidArgumentError(
            "health_recorder: window_duration must be positive and at least 1 ns per bucket");
      }
    }
    if (opts.stripes > 1024) {
      return absl::InvalidArgumentError("health_recorder: stripes must be at most 1024");
    }
    return absl::OkStatus();
  }

  // Creates a recorder, or returns InvalidArgument if `opts` is invalid. Allocates the window.
  [[nodiscard]] static absl::StatusOr<health_recorder> create(const health_recorder_options& opts,
                                                              Clock clock = Clock()) {
    if (absl::Status st = validate(opts); !st.ok()) return st;
    return health_recorder(opts, clock, valid_tag{});
  }

  // Creates a recorder; throws std::invalid_argument if `opts` is invalid (see `create`).
  explicit health_recorder(const health_recorder_options& opts = {}, Clock clock = Clock())
      : health_recorder(checked(opts), clock, valid_tag{}) {}

  health_recorder(health_recorder&&) noexcept = default;
  health_recorder& operator=(health_recorder&&) noexcept = default;

  // Records one finished call. Count-based windows never read the clock; time-based ones read it
  // once (use `record_at` to pass a time already read). `ignored` outcomes change nothing.
  void record(call_outcome outcome, bool slow = false) noexcept {
    if (outcome == call_outcome::ignored) return;
    if (kind_ == health_recorder_options::window_kind::count_based) {
      record_count(encode(outcome, slow));
    } else {
      record_time(outcome, slow, clock_.now());
    }
  }

  // Records one finished call that ended at `now` (read from this recorder's clock). The time is
  // used by time-based windows only.
  void record_at(call_outcome outcome, bool slow, time_point now) noexcept {
    if (outcome == call_outcome::ignored) return;
    if (kind_ == health_recorder_options::window_kind::count_based) {
      record_count(encode(outcome, slow));
    } else {
      record_time(outcome, slow, now);
    }
  }

  // Returns the window's current counts and rates. O(1) for count-based windows (reads no clock),
  // O(stripes * buckets) for time-based ones (reads the clock once).
  [[nodiscard]] health_snapshot snapshot() const noexcept {
    if (kind_ == health_recorder_options::window_kind::count_based) return snapshot_count();
    return snapshot_time(clock_.now());
  }

  // Returns the window's counts as of `now` (time-based windows; count-based ignore `now`).
  [[nodiscard]] health_snapshot snapshot_at(time_point now) const noexcept {
    if (kind_ == health_recorder_options::window_kind::count_based) return snapshot_count();
    return snapshot_time(now);
  }

  // Forgets every recorded call. O(window_size) or O(stripes * buckets). Calls recorded
  // concurrently with a reset may or may not survive it.
  void reset() noexcept {
    if (kind_ == health_recorder_options::window_kind::count_based) {
      for (std::size_t i = 0; i < ring_size_; ++i) {
        // Exchange, not store: a concurrent recorder may have changed the slot; subtracting what
        // the slot really held keeps the aggregates equal to the ring.
        const std::uint8_t old = ring_[i].exchange(0, std::memory_order_relaxed);
        apply_delta(old, 0);
      }
    } else {
      const std::uint32_t stale =
          static_cast<std::uint32_t>(bucket_number(clock_.now()) - bucket_count_);
      const std::uint64_t cleared = std::uint64_t{stale} << 32;
      for (std::size_t s = 0; s < stripe_count_; ++s) {
        for (std::size_t i = 0; i < bucket_count_; ++i) {
          bucket& b = bucket_at(s, i);
          // Relaxed: counters are statistics; nothing else is published through them.
          b.calls.store(cleared, std::memory_order_relaxed);
          b.failures.store(cleared, std::memory_order_relaxed);
          b.slow.store(cleared, std::memory_order_relaxed);
        }
      }
    }
  }

  // Returns the options the recorder was built with (stripes as resolved).
  const health_recorder_options& options() const noexcept { return options_; }

  // Returns the clock the recorder reads.
  const Clock& clock() const noexcept { return clock_; }

  // Returns how many ring slots a stripe reserves at once (count-based windows; 0 otherwise).
  std::size_t chunk() const noexcept { return chunk_; }

 private:
  struct valid_tag {};

  // One stripe's chunk reservation (count-based): bits 32.. ring offset of the chunk, bits 16..31
  // its length, bits 0..15 how many of its slots were handed out.
  struct cursor_cell {
    std::atomic<std::uint64_t> word;
  };

  // One time bucket of one stripe: each word packs the bucket number (high 32 bits) with a
  // saturating 32-bit counter, so a stale bucket is detected and restarted by one CAS.
  struct bucket {
    std::atomic<std::uint64_t> calls{0};
    std::atomic<std::uint64_t> failures{0};
    std::atomic<std::uint64_t> slow{0};
  };

  static constexpr std::uint8_t recorded_bit = 1;
  static constexpr std::uint8_t failure_bit = 2;
  static constexpr std::uint8_t slow_bit = 4;
  static constexpr std::uint64_t used_mask = 0xffff;

  static const health_recorder_options& checked(const health_recorder_options& opts) {
    if (absl::Status st = validate(opts); !st.ok()) {
      throw std::invalid_argument(std::string(st.message()));
    }
    return opts;
  }

  static std::size_t resolve_stripes(std::size_t requested) {
    if (requested != 0) return detail::next_pow2(requested);
    const std::size_t hw = std::max<std::size_t>(1, std::thread::hardware_concurrency());
    return std::min<std::size_t>(32, detail::next_pow2(2 * hw));
  }

  health_recorder(const health_recorder_options& opts, Clock clock, valid_tag)
      : options_(opts), clock_(clock), kind_(opts.kind) {
    stripe_count_ = resolve_stripes(opts.stripes);
    options_.stripes = stripe_count_;
    stripe_mask_ = stripe_count_ - 1;
    if (kind_ == health_recorder_options::window_kind::count_based) {
      ring_size_ = opts.window_size;
      // Chunks of an eighth of the ring (at most 64 slots, one cache line): the shared chunk
      // cursor is touched once per chunk, and each thread lags by less than one chunk.
      chunk_ = std::clamp<std::size_t>(ring_size_ / 8, 1, 64);
      chunk_count_ = (ring_size_ + chunk_ - 1) / chunk_;
      ring_ = std::make_unique<std::atomic<std::uint8_t>[]>(ring_size_);
      for (std::size_t i = 0; i < ring_size_; ++i) ring_[i].store(0, std::memory_order_relaxed);
      cursors_ = std::make_unique<detail::padded<cursor_cell>[]>(stripe_count_);
      for (std::size_t i = 0; i < stripe_count_; ++i) {
        // An exhausted, empty chunk: the first record on the stripe reserves a real one.
        cursors_[i].value.word.store(0, std::memory_order_relaxed);
      }
      shared_ = std::make_unique<shared_counters>();
    } else {
      bucket_count_ = opts.buckets;
      bucket_ns_ = static_cast<std::uint64_t>(opts.window_duration.count()) / bucket_count_;
      lines_per_stripe_ = (bucket_count_ + bucket_line::size - 1) / bucket_line::size;
      bucket_lines_ = std::make_unique<bucket_line[]>(stripe_count_ * lines_per_stripe_);
      reset();
    }
  }

  struct aggregate {
    std::atomic<std::int64_t> calls{0};
    std::atomic<std::int64_t> failures{0};
    std::atomic<std::int64_t> slow{0};
  };

  // Counters shared by every stripe, each group on its own cache line.
  struct shared_counters {
    detail::padded<aggregate> totals;
    // The shared chunk cursor: touched once per chunk per stripe. Relaxed (see next_slot).
    detail::padded<std::atomic<std::uint64_t>> chunk_cursor;
  };

  // Eight buckets (192 bytes, three whole cache lines); a stripe's buckets start on a fresh line.
  struct alignas(detail::cache_line_size) bucket_line {
    static constexpr std::size_t size = 8;
    bucket b[size];
  };

  bucket& bucket_at(std::size_t stripe, std::size_t i) const noexcept {
    return bucket_lines_[stripe * lines_per_stripe_ + i / bucket_line::size]
        .b[i % bucket_line::size];
  }

  static constexpr std::uint8_t encode(call_outcome outcome, bool slow) noexcept {
    return static_cast<std::uint8_t>(recorded_bit |
                                     (outcome == call_outcome::failure ? failure_bit : 0) |
                                     (slow ? slow_bit : 0));
  }

  void apply_delta(std::uint8_t from, std::uint8_t to) noexcept {
    aggregate& a = shared_->totals.value;
    // Relaxed: each counter is an independent statistic; the exchange on the slot already made
    // every transition count exactly once, and no other data is published through them.
    const int dc = (to & recorded_bit) - (from & recorded_bit);
    const int df = ((to & failure_bit) >> 1) - ((from & failure_bit) >> 1);
    const int ds = ((to & slow_bit) >> 2) - ((from & slow_bit) >> 2);
    if (dc != 0) a.calls.fetch_add(dc, std::memory_order_relaxed);
    if (df != 0) a.failures.fetch_add(df, std::memory_order_relaxed);
    if (ds != 0) a.slow.fetch_add(ds, std::memory_order_relaxed);
  }

  // Reserves the next ring slot for the calling thread's stripe.
  std::size_t next_slot() noexcept {
    for (;;) {
      std::atomic<std::uint64_t>& cell = cursors_[detail::stripe_hint() & stripe_mask_].value.word;
      // Relaxed: the word only hands out slot numbers; ring bytes are atomics of their own.
      std::uint64_t w = cell.load(std::memory_order_relaxed);
      const std::uint64_t used = w & used_mask;
      const std::uint64_t len = (w >> 16) & 0xffff;
      if (used < len) {
        if (cell.compare_exchange_strong(w, w + 1, std::memory_order_relaxed)) {
          return static_cast<std::size_t>((w >> 32) + used);
        }
        detail::stripe_rehash();  // another thread is on this stripe: move away
        continue;
      }
      // The chunk is used up: reserve a fresh one from the shared cursor and install it (slot 0 is
      // ours). If another thread installed one first, ours is skipped: its slots keep the
      // previous lap's outcomes, which is the documented lag.
      const std::uint64_t k =
          shared_->chunk_cursor.value.fetch_add(1, std::memory_order_relaxed) % chunk_count_;
      const std::uint64_t base = k * chunk_;
      const std::uint64_t fresh_len = std::min<std::uint64_t>(chunk_, ring_size_ - base);
      const std::uint64_t installed = (base << 32) | (fresh_len << 16) | 1;
      if (cell.compare_exchange_strong(w, installed, std::memory_order_relaxed)) {
        return static_cast<std::size_t>(base);
      }
      detail::stripe_rehash();
    }
  }

  void record_count(std::uint8_t v) noexcept {
    std::atomic<std::uint8_t>& slot = ring_[next_slot()];
    // Relaxed: a slot is a statistic. The compare skips the write in the steady state (same
    // outcome as a lap ago), which keeps the line shared between cores.
    if (slot.load(std::memory_order_relaxed) == v) return;
    const std::uint8_t old = slot.exchange(v, std::memory_order_relaxed);
    if (old != v) apply_delta(old, v);
  }

  std::uint64_t bucket_number(time_point now) const noexcept {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch());
    return static_cast<std::uint64_t>(ns.count()) / bucket_ns_;
  }

  // Adds one to the counter packed in `w` for bucket `epoch`, restarting a stale bucket.
  static void bump(std::atomic<std::uint64_t>& w, std::uint32_t epoch) noexcept {
    // Relaxed: the packed word is self-contained; nothing else is published through it.
    std::uint64_t cur = w.load(std::memory_order_relaxed);
    for (;;) {
      const auto cur_epoch = static_cast<std::uint32_t>(cur >> 32);
      const auto count = static_cast<std::uint32_t>(cur);
      std::uint64_t next;
      if (cur_epoch == epoch || static_cast<std::int32_t>(cur_epoch - epoch) > 0) {
        // Same bucket, or a newer one another thread of this stripe started: count it there.
        if (count == std::numeric_limits<std::uint32_t>::max()) return;  // saturated
        next = cur + 1;
      } else {
        next = (std::uint64_t{epoch} << 32) | 1;
      }
      if (w.compare_exchange_weak(cur, next, std::memory_order_relaxed)) return;
      detail::stripe_rehash();  // contended (or spurious): try another stripe next time
    }
  }

  void record_time(call_outcome outcome, bool slow, time_point now) noexcept {
    const auto epoch = static_cast<std::uint32_t>(bucket_number(now));
    bucket& b = bucket_at(detail::stripe_hint() & stripe_mask_, epoch % bucket_count_);
    bump(b.calls, epoch);
    if (outcome == call_outcome::failure) bump(b.failures, epoch);
    if (slow) bump(b.slow, epoch);
  }

  static health_snapshot make_snapshot(std::int64_t calls, std::int64_t failures,
                                       std::int64_t slow) noexcept {
    health_snapshot s;
    s.calls = static_cast<std::uint64_t>(std::max<std::int64_t>(calls, 0));
    s.failures = std::min(s.calls, static_cast<std::uint64_t>(std::max<std::int64_t>(failures, 0)));
    s.slow_calls = std::min(s.calls, static_cast<std::uint64_t>(std::max<std::int64_t>(slow, 0)));
    if (s.calls != 0) {
      s.failure_rate = static_cast<double>(s.failures) / static_cast<double>(s.calls);
      s.slow_call_rate = static_cast<double>(s.slow_calls) / static_cast<double>(s.calls);
    }
    return s;
  }

  health_snapshot snapshot_count() const noexcept {
    const aggregate& a = shared_->totals.value;
    return make_snapshot(a.calls.load(std::memory_order_relaxed),
                         a.failures.load(std::memory_order_relaxed),
                         a.slow.load(std::memory_order_relaxed));
  }

  std::int64_t live_count(const std::atomic<std::uint64_t>& w,
                          std::uint32_t now_epoch) const noexcept {
    const std::uint64_t v = w.load(std::memory_order_relaxed);
    const auto age = static_cast<std::int32_t>(now_epoch - static_cast<std::uint32_t>(v >> 32));
    const auto span = static_cast<std::int32_t>(bucket_count_);
    if (age >= span || age <= -span) return 0;
    return static_cast<std::int64_t>(static_cast<std::uint32_t>(v));
  }

  health_snapshot snapshot_time(time_point now) const noexcept {
    const auto epoch = static_cast<std::uint32_t>(bucket_number(now));
    std::int64_t calls = 0, failures = 0, slow = 0;
    for (std::size_t s = 0; s < stripe_count_; ++s) {
      for (std::size_t i = 0; i < bucket_count_; ++i) {
        const bucket& b = bucket_at(s, i);
        calls += live_count(b.calls, epoch);
        failures += live_count(b.failures, epoch);
        slow += live_count(b.slow, epoch);
      }
    }
    return make_snapshot(calls, failures, slow);
  }

  health_recorder_options options_;
  Clock clock_;
  health_recorder_options::window_kind kind_;
  std::size_t stripe_count_ = 1;
  std::size_t stripe_mask_ = 0;

  // Count-based window.
  std::size_t ring_size_ = 0;
  std::size_t chunk_ = 0;
  std::size_t chunk_count_ = 0;
  std::unique_ptr<std::atomic<std::uint8_t>[]> ring_;
  std::unique_ptr<detail::padded<cursor_cell>[]> cursors_;
  std::unique_ptr<shared_counters> shared_;

  // Time-based window.
  std::size_t bucket_count_ = 0;
  std::uint64_t bucket_ns_ = 1;
  std::size_t lines_per_stripe_ = 0;
  std::unique_ptr<bucket_line[]> bucket_lines_;
};

}  // namespace sluice
