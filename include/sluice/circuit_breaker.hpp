// sluice/circuit_breaker.hpp
//
// `sluice::circuit_breaker` stops calls to a failing dependency, then probes it and lets traffic
// back gradually.
//
// States (`sluice::breaker_state`):
//   closed       calls pass; their outcomes go into a sliding window (`sluice::health_recorder`).
//                Once the window holds `minimum_calls` calls and its failure rate reaches
//                `failure_rate_threshold`, or its slow-call rate reaches
//                `slow_call_rate_threshold`, the breaker trips to open.
//   open         calls are rejected at once (no exception, no allocation) with the time left until
//                the breaker lets probes through. The open duration starts at `open_duration` and
//                is multiplied by `open_duration_multiplier` on each consecutive trip, capped at
//                `max_open_duration`, with +-`open_duration_jitter`; after the breaker has been
//                closed for `reset_open_duration_after` the next trip starts from the base again.
//   half_open    exactly `half_open_probes` probe calls are admitted (permits handed out beyond
//                that are refused). A probe permit dropped without a result -- a cancelled call,
//                an exception that skipped the record -- frees its slot, so half-open never gets
//                stuck. When the probes' failure (or slow) rate reaches the threshold the breaker
//                opens again; when all probes have reported below it, it closes. If the probes
//                take longer than `max_half_open_duration`, it opens again.
//   closed (ramping) right after closing, for `slow_start_duration`, only a rising fraction of
//                calls is admitted: from `slow_start_initial_fraction` up to all of them, linearly.
//   forced_open  every call is rejected until `reset()` (operator action).
//   disabled     every call passes and nothing is recorded until `reset()` (operator action).
//
// Using it: `execute(fn)` for a synchronous call, or `try_acquire()` for a permit (RAII) that you
// complete with `record_success()` / `record_failure()` / `record_ignored()` / `record(status)`
// after the call -- across threads, callbacks or coroutines. Outcomes are classified by
// predicates: `classify_status` (absl::Status codes), `classify_exception` (exception types) and,
// per call, a classifier of result values passed to `execute(fn, classify)`.
//
// Slow calls: with `slow_call_duration` > 0 a permit reads the clock when it is acquired and when
// it is recorded (or takes a measured duration: `record_success(elapsed)`), and a call that took at
// least that long counts as slow (whether it succeeded or failed).
//
// Costs (2-core AMD EPYC, release build; bench/RESULTS.md): execute() around an empty
// function with a count-based window and slow-call detection off ~15 ns, with no shared cache-line
// write in the steady state, so two threads reach ~4x the throughput of a mutex-based breaker;
// with a time-based window and slow-call detection on it reads the clock twice -- with
// `sluice::coarse_clock` (4 ms resolution, ~5 ns a read) ~18 ns. A rejection while open reads the
// clock once: ~9 ns with coarse_clock, ~24 ns with steady_clock. Nothing on these paths allocates.
//
// Thread safety: all member functions may be called concurrently. Permits may be completed on any
//                thread. The breaker must outlive its permits. A breaker is movable (its state
//                lives on the heap) but must not be moved while in use.
// Time: read from the injected clock (default std::chrono::steady_clock).
// Errors: rejections are returned, never thrown: `try_acquire` gives a `breaker_rejection` with the
//         state and the remaining open time; `execute` returns Unavailable with an empty message
//         (so it does not allocate; `breaker_rejection::to_status()` builds a descriptive one).
//         Exceptions thrown by `fn` are classified, recorded and rethrown. Invalid options:
//         `create` returns InvalidArgument; the constructor throws std::invalid_argument.
// Listeners: `add_listener` callbacks run after each transition, in transition order, on the thread
//         that caused the transition (or on one already delivering), never under the breaker's
//         lock, so they may call the breaker. Exceptions they throw are swallowed.
//
// Example:
//   sluice::circuit_breaker<> breaker({.failure_rate_threshold = 0.5, .minimum_calls = 20});
//   absl::StatusOr<std::string> body = breaker.execute([&] { return fetch(url); });
//   if (absl::IsUnavailable(body.status())) body = cached(url);  // rejected or failed: fall back
//
//   if (auto permit = breaker.try_acquire()) {
//     start_async_call(..., [p = std::move(*permit)](absl::Status st) mutable { p.record(st); });
//   } else {
//     retry_after(permit.rejection().retry_after);
//   }
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "sluice/detail/breaker_stripe.hpp"
#include "sluice/detail/cache_line.hpp"
#include "sluice/detail/mutex.hpp"
#include "sluice/detail/random.hpp"
#include "sluice/health_recorder.hpp"

namespace sluice {

// The state of a circuit breaker.
enum class breaker_state : std::uint8_t {
  closed = 0,       // calls pass and are judged
  open = 1,         // calls are rejected until the open duration passes
  half_open = 2,    // a limited number of probe calls pass
  forced_open = 3,  // calls are rejected until reset() (operator action)
  disabled = 4,     // calls pass and are not judged until reset() (operator action)
};

// How many breaker states there are (for arrays indexed by state).
inline constexpr std::size_t breaker_state_count = 5;

// Returns the state's name ("closed", "open", "half_open", "forced_open", "disabled").
constexpr const char* to_string(breaker_state s) noexcept {
  switch (s) {
    case breaker_state::closed:
      return "closed";
    case breaker_state::open:
      return "open";
    case breaker_state::half_open:
      return "half_open";
    case breaker_state::forced_open:
      return "forced_open";
    case breaker_state::disabled:
      return "disabled";
  }
  return "unknown";
}

// Classifies a non-OK status the way most RPC stacks judge a dependency's health: Unavailable,
// DeadlineExceeded, Internal, Unknown, ResourceExhausted, DataLoss and Aborted are failures of the
// dependency; Cancelled is ignored (the caller gave up); every other code (InvalidArgument,
// NotFound, PermissionDenied, ...) is an answer the dependency gave correctly, so a success.
inline call_outcome default_status_classifier(const absl::Status& status) noexcept {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return call_outcome::success;
    case absl::StatusCode::kCancelled:
      return call_outcome::ignored;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kInternal:
    case absl::StatusCode::kUnknown:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kDataLoss:
    case absl::StatusCode::kAborted:
      return call_outcome::failure;
    default:
      return call_outcome::success;
  }
}

namespace detail {

template <class E, class... Rest>
bool exception_is_one_of(const std::exception_ptr& e) noexcept {
#if defined(__cpp_exceptions)
  try {
    std::rethrow_exception(e);
  } catch (const E&) {
    return true;
  } catch (...) {
  }
  if constexpr (sizeof...(Rest) > 0) {
    return exception_is_one_of<Rest...>(e);
  } else {
    return false;
  }
#else
  (void)e;
  return false;
#endif
}

}  // namespace detail

// Returns a `classify_exception` predicate that classifies exceptions of the types `E...` (or
// derived from them) as `outcome` and every other exception as a failure. Rethrows to inspect the
// type, so it costs an exception rethrow per classified exception.
//
// Example:
//   options.classify_exception =
//       sluice::classify_exceptions<std::invalid_argument, std::out_of_range>(
//           sluice::call_outcome::ignored);   // caller bugs say nothing about the dependency
template <class... E>
std::function<call_outcome(std::exception_ptr)> classify_exceptions(call_outcome outcome) {
  static_assert(sizeof...(E) > 0, "name at least one exception type");
  return [outcome](std::exception_ptr e) {
    return e != nullptr && detail::exception_is_one_of<E...>(e) ? outcome : call_outcome::failure;
  };
}

// How a circuit breaker judges its dependency. Validate with circuit_breaker<>::validate.
struct circuit_breaker_options {
  // The sliding window of recent calls: count-based, last 100 calls by default (see
  // health_recorder_options). A time-based window (`.kind = time_based`) judges "the last T
  // seconds" whatever the traffic, at the cost of a clock read per call.
  health_recorder_options window = {};
  // Trip when at least this fraction of the window's calls failed. 0.5, as resilience4j: a
  // dependency failing half its calls is doing more harm than good.
  double failure_rate_threshold = 0.5;
  // A call taking at least this long is slow. 0 (the default) turns slow-call detection off,
  // which saves two clock reads per call; set it to the latency beyond which the caller would
  // rather fail fast.
  std::chrono::nanoseconds slow_call_duration = std::chrono::nanoseconds::zero();
  // Trip when at least this fraction of the window's calls were slow. 1.0: only a dependency that
  // is slow on every call trips by slowness alone unless you lower it.
  double slow_call_rate_threshold = 1.0;
  // Judge no rates until the window holds this many calls (capped at a count-based window's size).
  // 20: a rate over fewer calls is noise (one failure in two calls is "50%").
  std::size_t minimum_calls = 20;
  // How many probe calls half-open admits, and how many results decide it. 5: enough for a rate
  // with 20% resolution, few enough not to hurt a still-sick dependency.
  std::uint32_t half_open_probes = 5;
  // Open again if the probes have not all reported after this long. 60 s: a probe that hangs
  // longer than that says enough. 0 means wait forever (dropped permits are still released).
  std::chrono::nanoseconds max_half_open_duration = std::chrono::seconds(60);
  // How long the first trip keeps the breaker open. 30 s: long enough for a restart or failover
  // of a typical service, short enough to notice recovery soon.
  std::chrono::nanoseconds open_duration = std::chrono::seconds(30);
  // Each consecutive trip (re-opening from half-open, or tripping soon after closing) multiplies
  // the open duration by this. 2: a dependency that keeps failing gets probed less and less often.
  double open_duration_multiplier = 2.0;
  // The open duration never exceeds this. 5 min: the longest a caller should go without a probe.
  std::chrono::nanoseconds max_open_duration = std::chrono::minutes(5);
  // Randomises each open duration by +-this fraction (then caps it), so that many breakers
  // tripped by one outage do not all probe at the same instant. 0.1 (+-10%).
  double open_duration_jitter = 0.1;
  // Once the breaker has stayed closed this long, the next trip starts from `open_duration`
  // again. 60 s: two base open durations of health.
  std::chrono::nanoseconds reset_open_duration_after = std::chrono::seconds(60);
  // After closing, ramp admitted traffic from `slow_start_initial_fraction` to 100% over this
  // long (rejected calls see `breaker_state::closed` in their rejection). 0 (the default) admits
  // everything at once; set it for dependencies that recover cold (caches, connection pools).
  std::chrono::nanoseconds slow_start_duration = std::chrono::nanoseconds::zero();
  // The fraction of calls admitted right after closing when ramping. 0.1: enough traffic to warm
  // the dependency, little enough not to knock it over again.
  double slow_start_initial_fraction = 0.1;
  // Classifies a non-OK absl::Status from a call (OK is always a success). Empty: use
  // `default_status_classifier`. Runs on the recording thread; must not throw.
  std::function<call_outcome(const absl::Status&)> classify_status = {};
  // Classifies an exception thrown by a call passed to `execute` (rethrow it to inspect its type,
  // or use sluice::classify_exceptions<E...>(outcome)). Empty: every exception is a failure.
  std::function<call_outcome(std::exception_ptr)> classify_exception = {};
};

// Why try_acquire refused a call.
struct breaker_rejection {
  // The state that refused: open (retry_after says when probes start), forced_open, half_open
  // (all probe permits are out), or closed (shed by the slow-start ramp).
  breaker_state state = breaker_state::open;
  // How long until the breaker lets calls through again, when known (open); zero otherwise.
  std::chrono::nanoseconds retry_after = std::chrono::nanoseconds::zero();

  // Returns an Unavailable status describing the rejection. Allocates (it has a message).
  absl::Status to_status() const {
    std::string msg = "circuit breaker ";
    msg += to_string(state);
    if (state == breaker_state::half_open) msg += ": all probe permits in use";
    if (state == breaker_state::closed) msg += ": shed by slow start";
    if (retry_after.count() > 0) {
      msg += "; retry after ";
      msg += std::to_string(
          std::chrono::duration_cast<std::chrono::milliseconds>(retry_after).count());
      msg += " ms";
    }
    return absl::UnavailableError(msg);
  }
};

// Counters of a breaker since it was created (monotonic; not reset by transitions).
struct breaker_metrics {
  breaker_state state = breaker_state::closed;
  std::uint64_t successful_calls = 0;  // calls recorded as success (probes included)
  std::uint64_t failed_calls = 0;      // calls recorded as failure
  std::uint64_t ignored_calls = 0;     // calls recorded as ignored, and permits dropped unrecorded
  std::uint64_t slow_calls = 0;        // slow calls among successes and failures
  std::uint64_t rejected_calls = 0;    // calls refused by try_acquire / execute
  // How many times the breaker entered each state, indexed by breaker_state.
  std::uint64_t transitions[breaker_state_count] = {};
  std::uint32_t consecutive_trips = 0;  // trips since the open duration was last reset
  health_snapshot window = {};          // the closed-state window right now

  // Returns the number of admitted calls that finished (successful + failed + ignored).
  std::uint64_t calls() const noexcept { return successful_calls + failed_calls + ignored_calls; }
};

namespace detail {

// The time in nanoseconds since the clock's epoch (breaker time stamps are stored as integers).
template <class Clock>
std::int64_t breaker_ns(typename Clock::time_point t) noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

// A state word: bits 0..2 the state, bit 3 "ramping", bits 8.. a generation bumped on every
// transition, so a permit can tell whether the state it was issued in is still current.
inline constexpr std::uint64_t breaker_state_mask = 0x7;
inline constexpr std::uint64_t breaker_ramp_bit = 0x8;
inline constexpr std::uint64_t breaker_gen_one = 0x100;

constexpr breaker_state breaker_state_of(std::uint64_t w) noexcept {
  return static_cast<breaker_state>(w & breaker_state_mask);
}
constexpr std::uint64_t breaker_gen_of(std::uint64_t w) noexcept { return w >> 8; }

// Returns `t + d` (ns), saturating at the int64 limits: open and half-open limits may be "forever".
constexpr std::int64_t breaker_add_ns(std::int64_t t, std::int64_t d) noexcept {
  std::int64_t sum = 0;
  if (__builtin_add_overflow(t, d, &sum)) {
    return d > 0 ? std::numeric_limits<std::int64_t>::max()
                 : std::numeric_limits<std::int64_t>::min();
  }
  return sum;
}

// Per-stripe counters (one cache line per stripe, so the closed fast path writes only its own).
// Relaxed throughout: monotonic statistics, summed by metrics(); they publish no other data.
struct breaker_counters {
  std::atomic<std::uint64_t> success{0};
  std::atomic<std::uint64_t> failure{0};
  std::atomic<std::uint64_t> ignored{0};
  std::atomic<std::uint64_t> slow{0};
  std::atomic<std::uint64_t> rejected{0};
};

}  // namespace detail

template <class Clock = std::chrono::steady_clock>
class circuit_breaker {
 public:
  using clock_type = Clock;
  using time_point = typename Clock::time_point;
  using duration = typename Clock::duration;

  // One state change, as listeners see it.
  struct transition {
    breaker_state from = breaker_state::closed;
    breaker_state to = breaker_state::closed;
    time_point at{};  // when it happened, on the breaker's clock
    // For transitions to open: how long it stays open (jitter included). Zero otherwise.
    std::chrono::nanoseconds open_for = std::chrono::nanoseconds::zero();
    std::uint32_t consecutive_trips = 0;  // trips since the open duration was last reset
    health_snapshot window = {};          // the window (or, from half-open, the probes) judged
  };

  // A listener of state changes; see the header comment for when and where it runs.
  using listener = std::function<void(const transition&)>;

 private:
  struct core;

 public:
  // The right to make one call. Complete it with exactly one `record_*` call; a permit destroyed
  // without one is released as "ignored" (a probe's slot is freed for another caller). Movable,
  // not copyable. The breaker must outlive it. Its members are not thread-safe: one owner at a
  // time (moving it to another thread is fine).
  class permit {
   public:
    permit() noexcept = default;
    permit(permit&& other) noexcept
        : core_(std::exchange(other.core_, nullptr)),
          gen_(other.gen_),
          start_(other.start_),
          kind_(other.kind_) {}
    permit& operator=(permit&& other) noexcept {
      if (this != &other) {
        release();
        core_ = std::exchange(other.core_, nullptr);
        gen_ = other.gen_;
        start_ = other.start_;
        kind_ = other.kind_;
      }
      return *this;
    }
    permit(const permit&) = delete;
    permit& operator=(const permit&) = delete;
    // Releases the permit as ignored if no outcome was recorded.
    ~permit() { release(); }

    // Records a successful call (slow if it took at least slow_call_duration since acquisition).
    void record_success() noexcept { finish(call_outcome::success, false, {}); }
    // Records a failed call.
    void record_failure() noexcept { finish(call_outcome::failure, false, {}); }
    // Records a call that says nothing about the dependency; a probe's slot is freed.
    void record_ignored() noexcept { finish(call_outcome::ignored, false, {}); }
    // Records `outcome`.
    void record(call_outcome outcome) noexcept { finish(outcome, false, {}); }
    // Records a call's status, classified by the breaker's `classify_status` (OK is success).
    void record(const absl::Status& status) noexcept {
      finish(core_ == nullptr ? call_outcome::ignored : core_->classify(status), false, {});
    }
    // Records a call that threw `e`, classified by the breaker's `classify_exception` (a failure
    // when it is empty). Adapters that run the call themselves (pipeline stages) use it so that a
    // breaker judges exceptions the same way with or without `execute`.
    void record_exception(std::exception_ptr e) noexcept {
      finish(core_ == nullptr ? call_outcome::ignored : core_->classify(std::move(e)), false, {});
    }
    // Records a successful call that took `elapsed` (measured by the caller; no clock read for
    // the slow-call check).
    void record_success(std::chrono::nanoseconds elapsed) noexcept {
      finish(call_outcome::success, true, elapsed);
    }
    // Records a failed call that took `elapsed`.
    void record_failure(std::chrono::nanoseconds elapsed) noexcept {
      finish(call_outcome::failure, true, elapsed);
    }
    // Records `outcome` for a call that took `elapsed`.
    void record(call_outcome outcome, std::chrono::nanoseconds elapsed) noexcept {
      finish(outcome, true, elapsed);
    }

    // Returns whether the permit still awaits its outcome.
    bool active() const noexcept { return core_ != nullptr; }
    // Returns whether this permit is one of half-open's probes.
    bool is_probe() const noexcept { return kind_ == kind::probe; }
    // Returns when the permit was acquired (only read from the clock when slow-call detection is
    // on; otherwise the clock's epoch).
    time_point start_time() const noexcept { return start_; }

   private:
    friend class circuit_breaker;
    enum class kind : std::uint8_t { closed, probe, disabled };

    permit(core* c, std::uint64_t gen, time_point start, kind k) noexcept
        : core_(c), gen_(gen), start_(start), kind_(k) {}

    void release() noexcept {
      if (core_ != nullptr) finish(call_outcome::ignored, false, {});
    }

    void finish(call_outcome outcome, bool measured, std::chrono::nanoseconds elapsed) noexcept {
      core* c = std::exchange(core_, nullptr);
      if (c == nullptr) return;
      c->complete(kind_, gen_, start_, outcome, measured, elapsed);
    }

    core* core_ = nullptr;
    std::uint64_t gen_ = 0;
    time_point start_{};
    kind kind_ = kind::closed;
  };

  // What try_acquire returns: a permit, or the rejection. Tests true when it holds a permit.
  class acquire_result {
   public:
    // Returns whether a permit was granted.
    explicit operator bool() const noexcept { return granted_; }
    // Returns whether a permit was granted.
    bool has_value() const noexcept { return granted_; }
    // Returns the permit. Precondition: has_value().
    permit& operator*() noexcept { return permit_; }
    // Accesses the permit. Precondition: has_value().
    permit* operator->() noexcept { return &permit_; }
    // Returns the permit. Precondition: has_value().
    permit& value() noexcept { return permit_; }
    // Returns why the call was refused. Precondition: !has_value().
    const breaker_rejection& rejection() const noexcept { return rejection_; }
    // Returns OK with a permit, else the rejection as Unavailable with an empty message (no
    // allocation; see breaker_rejection::to_status for a descriptive one).
    absl::Status status() const noexcept {
      return granted_ ? absl::OkStatus() : absl::Status(absl::StatusCode::kUnavailable, "");
    }

   private:
    friend class circuit_breaker;
    explicit acquire_result(permit p) noexcept : permit_(std::move(p)), granted_(true) {}
    explicit acquire_result(breaker_rejection r) noexcept : rejection_(r) {}

    permit permit_;
    breaker_rejection rejection_;
    bool granted_ = false;
  };

  // Returns OK if `opts` are valid, else InvalidArgument saying which option is wrong.
  [[nodiscard]] static absl::Status validate(const circuit_breaker_options& opts) {
    if (absl::Status st = health_recorder<Clock>::validate(opts.window); !st.ok()) return st;
    auto bad = [](const char* what) {
      return absl::InvalidArgumentError(std::string("circuit_breaker: ") + what);
    };
    if (!(opts.failure_rate_threshold > 0.0 && opts.failure_rate_threshold <= 1.0)) {
      return bad("failure_rate_threshold must be in (0, 1]");
    }
    if (!(opts.slow_call_rate_threshold > 0.0 && opts.slow_call_rate_threshold <= 1.0)) {
      return bad("slow_call_rate_threshold must be in (0, 1]");
    }
    if (opts.slow_call_duration.count() < 0) return bad("slow_call_duration must be >= 0");
    if (opts.minimum_calls == 0) return bad("minimum_calls must be >= 1");
    if (opts.half_open_probes == 0 || opts.half_open_probes > 1'000'000) {
      return bad("half_open_probes must be in [1, 1000000]");
    }
    if (opts.max_half_open_duration.count() < 0) return bad("max_half_open_duration must be >= 0");
    if (opts.open_duration.count() <= 0) return bad("open_duration must be > 0");
    if (opts.max_open_duration < opts.open_duration) {
      return bad("max_open_duration must be >= open_duration");
    }
    if (!(opts.open_duration_multiplier >= 1.0 && opts.open_duration_multiplier <= 1000.0)) {
      return bad("open_duration_multiplier must be in [1, 1000]");
    }
    if (!(opts.open_duration_jitter >= 0.0 && opts.open_duration_jitter < 1.0)) {
      return bad("open_duration_jitter must be in [0, 1)");
    }
    if (opts.reset_open_duration_after.count() < 0) {
      return bad("reset_open_duration_after must be >= 0");
    }
    if (opts.slow_start_duration.count() < 0) return bad("slow_start_duration must be >= 0");
    if (!(opts.slow_start_initial_fraction > 0.0 && opts.slow_start_initial_fraction <= 1.0)) {
      return bad("slow_start_initial_fraction must be in (0, 1]");
    }
    return absl::OkStatus();
  }

  // Creates a closed breaker, or returns InvalidArgument if `opts` are invalid.
  [[nodiscard]] static absl::StatusOr<circuit_breaker> create(circuit_breaker_options opts,
                                                              Clock clock = Clock()) {
    if (absl::Status st = validate(opts); !st.ok()) return st;
    return circuit_breaker(std::move(opts), clock, valid_tag{});
  }

  // Creates a closed breaker; throws std::invalid_argument if `opts` are invalid (see `create`).
  explicit circuit_breaker(circuit_breaker_options opts = {}, Clock clock = Clock())
      : circuit_breaker(checked(std::move(opts)), clock, valid_tag{}) {}

  circuit_breaker(circuit_breaker&&) noexcept = default;
  circuit_breaker& operator=(circuit_breaker&&) noexcept = default;

  // Asks to make one call: returns a permit, or a rejection (open, forced open, half-open probes
  // all out, shed by slow start). Never throws or allocates on the closed or open paths; takes
  // the breaker's lock only in half-open or when the open duration has just passed.
  [[nodiscard]] acquire_result try_acquire() noexcept {
    core& c = *core_;
    for (;;) {
      // Acquire: pairs with the release publishing a transition, so open_until_ns and the other
      // fields written before it are visible.
      const std::uint64_t w = c.word.load(std::memory_order_acquire);
      switch (detail::breaker_state_of(w)) {
        case breaker_state::closed: {
          if ((w & detail::breaker_ramp_bit) != 0 && !c.ramp_admits(w)) {
            c.count_rejection();
            return acquire_result(breaker_rejection{breaker_state::closed, {}});
          }
          const time_point start = c.slow_on ? c.clock.now() : time_point{};
          return acquire_result(permit(&c, detail::breaker_gen_of(w), start, permit::kind::closed));
        }
        case breaker_state::disabled:
          return acquire_result(
              permit(&c, detail::breaker_gen_of(w), time_point{}, permit::kind::disabled));
        case breaker_state::forced_open:
          c.count_rejection();
          return acquire_result(breaker_rejection{breaker_state::forced_open, {}});
        case breaker_state::open: {
          const time_point now = c.clock.now();
          // Relaxed: ordered by the acquire load of `word` above.
          const std::int64_t until = c.open_until_ns.load(std::memory_order_relaxed);
          const std::int64_t now_ns = detail::breaker_ns<Clock>(now);
          if (now_ns < until) {
            c.count_rejection();
            return acquire_result(
                breaker_rejection{breaker_state::open, std::chrono::nanoseconds(until - now_ns)});
          }
          break;  // the open period is over: the slow path moves to half-open
        }
        case breaker_state::half_open:
          // All probe permits out: refuse without the lock, unless half-open has overstayed
          // (then the slow path re-opens it). Relaxed: ordered by the acquire load of `word`; a
          // stale "full" only refuses a call racing with a slot being freed.
          if (c.probes_full.load(std::memory_order_relaxed)) {
            const std::int64_t limit = c.half_open_deadline_ns.load(std::memory_order_relaxed);
            if (limit == 0 || detail::breaker_ns<Clock>(c.clock.now()) < limit) {
              c.count_rejection();
              return acquire_result(breaker_rejection{breaker_state::half_open, {}});
            }
          }
          break;
      }
      std::optional<acquire_result> r = c.acquire_slow();
      c.deliver();
      if (r) return std::move(*r);
      // The state changed under us (closed, disabled, ...): take the fast path again.
    }
  }

  // Runs `fn()` if the breaker admits it and records its outcome. Returns:
  //   fn returns void            -> absl::Status (OK)
  //   fn returns absl::Status    -> that status (classified by classify_status)
  //   fn returns StatusOr<T>     -> that StatusOr (its status classified)
  //   fn returns T               -> absl::StatusOr<T> (always a success)
  // or, if refused, Unavailable with an empty message (no allocation, no exception). An exception
  // from fn is classified by classify_exception, recorded, and rethrown.
  template <class F>
  [[nodiscard]] auto execute(F&& fn) {
    return execute(std::forward<F>(fn), no_classifier{});
  }

  // As execute(fn), but classifies a returned value with `classify(value) -> call_outcome` (for
  // StatusOr results, the value of an OK one; a non-OK status still goes to classify_status).
  template <class F, class Classify>
  [[nodiscard]] auto execute(F&& fn, Classify&& classify) {
    using raw = std::invoke_result_t<F&>;
    using result = result_of_t<raw>;
    acquire_result a = try_acquire();
    if (!a) return result(absl::Status(absl::StatusCode::kUnavailable, ""));
    permit& p = *a;
#if defined(__cpp_exceptions)
    try {
#endif
      if constexpr (std::is_void_v<raw>) {
        fn();
        p.record_success();
        return result(absl::OkStatus());
      } else if constexpr (std::is_same_v<std::decay_t<raw>, absl::Status>) {
        absl::Status st = fn();
        p.record(st);
        return st;
      } else if constexpr (is_status_or<std::decay_t<raw>>::value) {
        result r = fn();
        if (!r.ok()) {
          p.record(r.status());
        } else if constexpr (std::is_same_v<std::decay_t<Classify>, no_classifier>) {
          p.record_success();
        } else {
          p.record(classify(*r));
        }
        return r;
      } else {
        result r(fn());
        if constexpr (std::is_same_v<std::decay_t<Classify>, no_classifier>) {
          p.record_success();
        } else {
          p.record(classify(*r));
        }
        return r;
      }
#if defined(__cpp_exceptions)
    } catch (...) {
      p.record(core_->classify(std::current_exception()));
      throw;
    }
#endif
  }

  // Returns the current state. Moves open to half-open once the open duration has passed, and
  // half-open to open once max_half_open_duration has passed (reading the clock only then).
  breaker_state state() const noexcept {
    core& c = *core_;
    const std::uint64_t w = c.word.load(std::memory_order_acquire);
    const breaker_state s = detail::breaker_state_of(w);
    if (s != breaker_state::open && s != breaker_state::half_open) return s;
    c.refresh();
    c.deliver();
    return detail::breaker_state_of(c.word.load(std::memory_order_acquire));
  }

  // Returns whether the slow-start ramp still limits admissions (the flag is cleared by the first
  // call after the ramp has ended).
  bool ramping() const noexcept {
    // Acquire: as try_acquire.
    return (core_->word.load(std::memory_order_acquire) & detail::breaker_ramp_bit) != 0;
  }

  // Returns a snapshot of the closed-state window (see health_recorder::snapshot for its cost).
  health_snapshot window() const noexcept { return core_->window.snapshot(); }

  // Returns the counters and the window. Cost O(stripes) plus a window snapshot; takes the lock.
  breaker_metrics metrics() const {
    core& c = *core_;
    breaker_metrics m;
    for (std::size_t i = 0; i < c.stripe_count; ++i) {
      const detail::breaker_counters& s = c.counters[i].value;
      // Relaxed: monotonic statistics.
      m.successful_calls += s.success.load(std::memory_order_relaxed);
      m.failed_calls += s.failure.load(std::memory_order_relaxed);
      m.ignored_calls += s.ignored.load(std::memory_order_relaxed);
      m.slow_calls += s.slow.load(std::memory_order_relaxed);
      m.rejected_calls += s.rejected.load(std::memory_order_relaxed);
    }
    m.window = c.window.snapshot();
    detail::mutex_lock lock(c.mu);
    m.state = detail::breaker_state_of(c.word.load(std::memory_order_relaxed));
    for (std::size_t i = 0; i < breaker_state_count; ++i) m.transitions[i] = c.transitions[i];
    m.consecutive_trips = c.trips;
    return m;
  }

  // Registers `l` to be told about every later transition. Must not be called from a listener.
  void add_listener(listener l) {
    detail::mutex_lock lock(core_->listeners_mu);
    core_->listeners.push_back(std::move(l));
  }

  // Moves to forced_open: every call is rejected until reset().
  void force_open() {
    core_->operator_transition(breaker_state::forced_open);
    core_->deliver();
  }

  // Moves to disabled: every call passes, nothing is judged, until reset().
  void disable() {
    core_->operator_transition(breaker_state::disabled);
    core_->deliver();
  }

  // Moves to closed (from any state) with an empty window, no ramp, and the open duration reset
  // to its base.
  void reset() {
    core_->operator_transition(breaker_state::closed);
    core_->deliver();
  }

  // Returns the options the breaker was built with.
  const circuit_breaker_options& options() const noexcept { return core_->opts; }

  // Returns the breaker's clock.
  const Clock& clock() const noexcept { return core_->clock; }

 private:
  struct valid_tag {};
  struct no_classifier {};

  template <class T>
  struct is_status_or : std::false_type {};
  template <class T>
  struct is_status_or<absl::StatusOr<T>> : std::true_type {};

  template <class Raw, class = void>
  struct result_of {
    using type = absl::StatusOr<std::decay_t<Raw>>;
  };
  template <class Raw>
  struct result_of<Raw, std::enable_if_t<std::is_void_v<Raw>>> {
    using type = absl::Status;
  };
  template <class Raw>
  struct result_of<Raw, std::enable_if_t<std::is_same_v<std::decay_t<Raw>, absl::Status>>> {
    using type = absl::Status;
  };
  template <class Raw>
  struct result_of<Raw, std::enable_if_t<is_status_or<std::decay_t<Raw>>::value>> {
    using type = std::decay_t<Raw>;
  };
  template <class Raw>
  using result_of_t = typename result_of<Raw>::type;

  static circuit_breaker_options checked(circuit_breaker_options opts) {
    if (absl::Status st = validate(opts); !st.ok()) {
      throw std::invalid_argument(std::string(st.message()));
    }
    return opts;
  }

  circuit_breaker(circuit_breaker_options opts, Clock clock, valid_tag)
      : core_(std::make_unique<core>(std::move(opts), clock)) {}

  // Everything shared by the breaker and its permits; heap-allocated so both stay put.
  struct core {
    core(circuit_breaker_options o, Clock c)
        : opts(std::move(o)),
          clock(c),
          window(opts.window, c),
          slow_on(opts.slow_call_duration.count() > 0),
          time_window(opts.window.kind == health_recorder_options::window_kind::time_based),
          slow_ns(opts.slow_call_duration.count()),
          min_calls(time_window ? opts.minimum_calls
                                : std::min(opts.minimum_calls, opts.window.window_size)),
          stripe_count(window.options().stripes),
          stripe_mask(stripe_count - 1),
          counters(std::make_unique<detail::padded<detail::breaker_counters>[]>(stripe_count)) {
      detail::mutex_lock lock(mu);
      closed_since = clock.now();
    }

    // ---- read by every call (written only on transitions) ----
    // The state word (see detail::breaker_state_of). Written with release under `mu` (and the
    // ramp bit cleared by CAS outside it); read with acquire.
    alignas(detail::cache_line_size) std::atomic<std::uint64_t> word{0};
    // While open: when probes may start (ns on the clock). Written under `mu` before `word`.
    std::atomic<std::int64_t> open_until_ns{0};
    // While ramping: when the ramp started (ns). Written under `mu` before `word`.
    std::atomic<std::int64_t> ramp_start_ns{0};
    const circuit_breaker_options opts;
    Clock clock;
    health_recorder<Clock> window;
    const bool slow_on;
    const bool time_window;
    const std::int64_t slow_ns;
    const std::size_t min_calls;
    const std::size_t stripe_count;
    const std::size_t stripe_mask;
    const std::unique_ptr<detail::padded<detail::breaker_counters>[]> counters;

    // ---- transitions (slow path) ----
    detail::mutex mu;
    std::uint32_t probes_out ABSL_GUARDED_BY(mu) = 0;
    std::uint32_t probe_results ABSL_GUARDED_BY(mu) = 0;
    std::uint32_t probe_failures ABSL_GUARDED_BY(mu) = 0;
    std::uint32_t probe_slow ABSL_GUARDED_BY(mu) = 0;
    std::int64_t half_open_since_ns ABSL_GUARDED_BY(mu) = 0;
    // Mirrors "probes_out + probe_results >= half_open_probes" for the lock-free refusal in
    // try_acquire, and when half-open must end (0: never). Written under `mu` (before `word` on a
    // transition); read relaxed after the acquire load of `word`.
    std::atomic<bool> probes_full{false};
    std::atomic<std::int64_t> half_open_deadline_ns{0};
    time_point closed_since ABSL_GUARDED_BY(mu){};
    std::uint32_t trips ABSL_GUARDED_BY(mu) = 0;
    std::uint64_t transitions[breaker_state_count] ABSL_GUARDED_BY(mu) = {};
    std::deque<transition> pending ABSL_GUARDED_BY(mu);
    bool delivering ABSL_GUARDED_BY(mu) = false;
    // Whether `pending` is non-empty, so that deliver() skips the lock when nothing waits. Written
    // under `mu`; acquire/release so a deliverer that sees true also sees the queued events (it
    // then takes `mu` anyway).
    std::atomic<bool> events_waiting{false};

    detail::mutex listeners_mu;
    std::vector<listener> listeners ABSL_GUARDED_BY(listeners_mu);

    detail::breaker_counters& my_counters() noexcept {
      return counters[detail::stripe_hint() & stripe_mask].value;
    }

    void count_rejection() noexcept { detail::striped_add(my_counters().rejected); }

    call_outcome classify(const absl::Status& st) const noexcept {
      if (st.ok()) return call_outcome::success;
      if (opts.classify_status) return opts.classify_status(st);
      return default_status_classifier(st);
    }

    call_outcome classify(std::exception_ptr e) const noexcept {
      if (opts.classify_exception) {
#if defined(__cpp_exceptions)
        try {
          return opts.classify_exception(std::move(e));
        } catch (...) {
          return call_outcome::failure;
        }
#else
        return opts.classify_exception(std::move(e));
#endif
      }
      return call_outcome::failure;
    }

    // Decides whether a call is admitted while ramping; clears the ramp bit once it is over.
    bool ramp_admits(std::uint64_t w) noexcept {
      const std::int64_t now = detail::breaker_ns<Clock>(clock.now());
      const std::int64_t elapsed = now - ramp_start_ns.load(std::memory_order_relaxed);
      const std::int64_t total = opts.slow_start_duration.count();
      if (elapsed >= total) {
        std::uint64_t expected = w;
        // Release: keeps the word's publication order; a failed CAS means a transition won.
        word.compare_exchange_strong(expected, w & ~detail::breaker_ramp_bit,
                                     std::memory_order_release, std::memory_order_relaxed);
        return true;
      }
      const double progress =
          elapsed <= 0 ? 0.0 : static_cast<double>(elapsed) / static_cast<double>(total);
      const double fraction =
          opts.slow_start_initial_fraction + (1.0 - opts.slow_start_initial_fraction) * progress;
      return detail::random_unit() < fraction;
    }

    // Handles a permit's outcome.
    void complete(typename permit::kind k, std::uint64_t gen, time_point start,
                  call_outcome outcome, bool measured, std::chrono::nanoseconds elapsed) noexcept {
      detail::breaker_counters& ctr = my_counters();
      time_point end{};
      bool slow = false;
      if (slow_on && outcome != call_outcome::ignored) {
        if (!measured) {
          end = clock.now();
          elapsed = std::chrono::duration_cast<std::chrono::nanoseconds>(end - start);
        }
        slow = elapsed.count() >= slow_ns;
      }
      // Monotonic statistics on the thread's stripe (relaxed, see striped_add).
      switch (outcome) {
        case call_outcome::success:
          detail::striped_add(ctr.success);
          break;
        case call_outcome::failure:
          detail::striped_add(ctr.failure);
          break;
        case call_outcome::ignored:
          detail::striped_add(ctr.ignored);
          break;
      }
      if (slow) detail::striped_add(ctr.slow);
      if (k == permit::kind::disabled) return;
      if (k == permit::kind::probe) {
        probe_done(gen, outcome, slow);
        deliver();
        return;
      }
      if (outcome == call_outcome::ignored) return;
      // Relaxed: a stale read only lets one late outcome into a window that is being reset,
      // which a window may absorb; the transition itself is decided under `mu`.
      const std::uint64_t w = word.load(std::memory_order_relaxed);
      if (detail::breaker_gen_of(w) != gen) return;  // issued before a transition: not ours
      if (time_window && end == time_point{}) end = clock.now();
      window.record_at(outcome, slow, end);
      if (outcome == call_outcome::failure || slow) {
        maybe_trip(gen, end);
        deliver();
      }
    }

    bool exceeds(const health_snapshot& s) const noexcept {
      return s.failure_rate >= opts.failure_rate_threshold ||
             (slow_on && s.slow_call_rate >= opts.slow_call_rate_threshold);
    }

    void maybe_trip(std::uint64_t gen, time_point end) noexcept {
      const health_snapshot s = time_window ? window.snapshot_at(end) : window.snapshot();
      if (s.calls < min_calls || !exceeds(s)) return;
      detail::mutex_lock lock(mu);
      const std::uint64_t w = word.load(std::memory_order_relaxed);
      if (detail::breaker_gen_of(w) != gen ||
          detail::breaker_state_of(w) != breaker_state::closed) {
        return;  // someone else already moved it
      }
      to_open(breaker_state::closed, clock.now(), s);
    }

    void probe_done(std::uint64_t gen, call_outcome outcome, bool slow) noexcept {
      detail::mutex_lock lock(mu);
      const std::uint64_t w = word.load(std::memory_order_relaxed);
      if (detail::breaker_gen_of(w) != gen ||
          detail::breaker_state_of(w) != breaker_state::half_open) {
        return;  // a stale probe: half-open already ended
      }
      --probes_out;
      if (outcome == call_outcome::ignored) {
        update_probes_full();
        return;  // the slot is free for another probe
      }
      ++probe_results;
      if (outcome == call_outcome::failure) ++probe_failures;
      if (slow) ++probe_slow;
      const double n = static_cast<double>(opts.half_open_probes);
      health_snapshot s;
      s.calls = probe_results;
      s.failures = probe_failures;
      s.slow_calls = probe_slow;
      s.failure_rate = static_cast<double>(probe_failures) / static_cast<double>(probe_results);
      s.slow_call_rate = static_cast<double>(probe_slow) / static_cast<double>(probe_results);
      // Judged against all N probes, so the decision can be taken as soon as it is certain.
      const bool failed =
          static_cast<double>(probe_failures) >= opts.failure_rate_threshold * n ||
          (slow_on && static_cast<double>(probe_slow) >= opts.slow_call_rate_threshold * n);
      if (failed) {
        to_open(breaker_state::half_open, clock.now(), s);
      } else if (probe_results >= opts.half_open_probes) {
        to_closed(breaker_state::half_open, clock.now(), s, /*ramp=*/true);
      }
    }

    // The locked part of try_acquire: open -> half-open, and handing out probe permits.
    std::optional<acquire_result> acquire_slow() noexcept {
      const time_point now = clock.now();
      const std::int64_t now_ns = detail::breaker_ns<Clock>(now);
      detail::mutex_lock lock(mu);
      const std::uint64_t w = word.load(std::memory_order_relaxed);
      switch (detail::breaker_state_of(w)) {
        case breaker_state::open: {
          const std::int64_t until = open_until_ns.load(std::memory_order_relaxed);
          if (now_ns < until) {
            count_rejection();
            return acquire_result(
                breaker_rejection{breaker_state::open, std::chrono::nanoseconds(until - now_ns)});
          }
          to_half_open(now);
          break;
        }
        case breaker_state::half_open:
          if (half_open_expired(now_ns)) {
            to_open(breaker_state::half_open, now, probe_snapshot());
            count_rejection();
            return acquire_result(breaker_rejection{
                breaker_state::open,
                std::chrono::nanoseconds(open_until_ns.load(std::memory_order_relaxed) - now_ns)});
          }
          break;
        default:
          return std::nullopt;  // closed, disabled or forced open: the fast path decides
      }
      if (probes_out + probe_results >= opts.half_open_probes) {
        count_rejection();
        return acquire_result(breaker_rejection{breaker_state::half_open, {}});
      }
      ++probes_out;
      update_probes_full();
      const std::uint64_t cur = word.load(std::memory_order_relaxed);
      return acquire_result(permit(this, detail::breaker_gen_of(cur), slow_on ? now : time_point{},
                                   permit::kind::probe));
    }

    void update_probes_full() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      probes_full.store(probes_out + probe_results >= opts.half_open_probes,
                        std::memory_order_relaxed);
    }

    bool half_open_expired(std::int64_t now_ns) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      return opts.max_half_open_duration.count() > 0 &&
             now_ns - half_open_since_ns >= opts.max_half_open_duration.count();
    }

    health_snapshot probe_snapshot() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      health_snapshot s;
      s.calls = probe_results;
      s.failures = probe_failures;
      s.slow_calls = probe_slow;
      if (probe_results != 0) {
        s.failure_rate = static_cast<double>(probe_failures) / static_cast<double>(probe_results);
        s.slow_call_rate = static_cast<double>(probe_slow) / static_cast<double>(probe_results);
      }
      return s;
    }

    // Applies time-driven transitions (open -> half-open, half-open timeout -> open).
    void refresh() noexcept {
      const time_point now = clock.now();
      const std::int64_t now_ns = detail::breaker_ns<Clock>(now);
      detail::mutex_lock lock(mu);
      const std::uint64_t w = word.load(std::memory_order_relaxed);
      const breaker_state s = detail::breaker_state_of(w);
      if (s == breaker_state::open && now_ns >= open_until_ns.load(std::memory_order_relaxed)) {
        to_half_open(now);
      } else if (s == breaker_state::half_open && half_open_expired(now_ns)) {
        to_open(breaker_state::half_open, now, probe_snapshot());
      }
    }

    // Publishes a new state (and ramp bit) with a fresh generation.
    void publish(breaker_state to, bool ramp) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      const std::uint64_t w = word.load(std::memory_order_relaxed);
      const std::uint64_t next = ((detail::breaker_gen_of(w) + 1) << 8) |
                                 (ramp ? detail::breaker_ramp_bit : 0) |
                                 static_cast<std::uint64_t>(to);
      // Release: makes open_until_ns / ramp_start_ns (written before) visible to the fast path's
      // acquire load. A concurrent ramp-clearing CAS fails against the new generation.
      word.store(next, std::memory_order_release);
      ++transitions[static_cast<std::size_t>(to)];
    }

    void enqueue(breaker_state from, breaker_state to, time_point at,
                 std::chrono::nanoseconds open_for, const health_snapshot& s)
        ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      transition t;
      t.from = from;
      t.to = to;
      t.at = at;
      t.open_for = open_for;
      t.consecutive_trips = trips;
      t.window = s;
      pending.push_back(t);
      events_waiting.store(true, std::memory_order_release);
    }

    std::chrono::nanoseconds next_open_duration(breaker_state from, time_point now)
        ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      if (from == breaker_state::closed && now - closed_since >= opts.reset_open_duration_after) {
        trips = 0;  // it had been healthy long enough: start from the base again
      }
      double d = static_cast<double>(opts.open_duration.count()) *
                 std::pow(opts.open_duration_multiplier, static_cast<double>(trips));
      const double cap = static_cast<double>(opts.max_open_duration.count());
      d = std::min(d, cap);
      if (opts.open_duration_jitter > 0.0) {
        d *= 1.0 + opts.open_duration_jitter * (2.0 * detail::random_unit() - 1.0);
        d = std::min(d, cap);
      }
      ++trips;
      // 2^63 as a double: a duration this long (max_open_duration = nanoseconds::max(), "no cap")
      // does not convert to int64 (undefined; x86 gives INT64_MIN, an open period in the past).
      constexpr double limit = 9223372036854775808.0;
      if (d >= limit) return std::chrono::nanoseconds::max();
      return std::chrono::nanoseconds(static_cast<std::int64_t>(std::max(d, 1.0)));
    }

    void to_open(breaker_state from, time_point now, const health_snapshot& s)
        ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      const std::chrono::nanoseconds d = next_open_duration(from, now);
      open_until_ns.store(detail::breaker_add_ns(detail::breaker_ns<Clock>(now), d.count()),
                          std::memory_order_relaxed);
      publish(breaker_state::open, false);
      enqueue(from, breaker_state::open, now, d, s);
    }

    void to_half_open(time_point now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      probes_out = probe_results = probe_failures = probe_slow = 0;
      half_open_since_ns = detail::breaker_ns<Clock>(now);
      probes_full.store(false, std::memory_order_relaxed);
      half_open_deadline_ns.store(
          opts.max_half_open_duration.count() > 0
              ? detail::breaker_add_ns(half_open_since_ns, opts.max_half_open_duration.count())
              : 0,
          std::memory_order_relaxed);
      publish(breaker_state::half_open, false);
      enqueue(breaker_state::open, breaker_state::half_open, now, {}, {});
    }

    void to_closed(breaker_state from, time_point now, const health_snapshot& s, bool ramp)
        ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      window.reset();
      closed_since = now;
      const bool ramping = ramp && opts.slow_start_duration.count() > 0;
      if (ramping) {
        ramp_start_ns.store(detail::breaker_ns<Clock>(now), std::memory_order_relaxed);
      }
      publish(breaker_state::closed, ramping);
      enqueue(from, breaker_state::closed, now, {}, s);
    }

    void operator_transition(breaker_state to) {
      const time_point now = clock.now();
      detail::mutex_lock lock(mu);
      const breaker_state from = detail::breaker_state_of(word.load(std::memory_order_relaxed));
      if (to == breaker_state::closed) {
        trips = 0;
        to_closed(from, now, {}, /*ramp=*/false);
      } else {
        publish(to, false);
        enqueue(from, to, now, {}, {});
      }
    }

    // Delivers queued transitions to the listeners, in order, outside `mu`. Only one thread
    // delivers at a time; others leave their events to it.
    void deliver() noexcept {
      if (!events_waiting.load(std::memory_order_acquire)) return;
      {
        detail::mutex_lock lock(mu);
        if (delivering || pending.empty()) return;
        delivering = true;
      }
      for (;;) {
        transition t;
        {
          detail::mutex_lock lock(mu);
          if (pending.empty()) {
            delivering = false;
            return;
          }
          t = pending.front();
          pending.pop_front();
          if (pending.empty()) events_waiting.store(false, std::memory_order_release);
        }
        detail::mutex_lock lock(listeners_mu);
        for (const listener& l : listeners) {
#if defined(__cpp_exceptions)
          try {
            l(t);
          } catch (...) {
            // Swallowed: a listener's failure must not break the breaker (documented).
          }
#else
          l(t);
#endif
        }
      }
    }
  };

  std::unique_ptr<core> core_;
};

}  // namespace sluice
