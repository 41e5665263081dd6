// sluice/pool.hpp
//
// `sluice::pool<Connection>` keeps a bounded set of connections (database sessions, RPC channels,
// anything costly to open) open and lends them out as RAII leases. It follows HikariCP's design:
// lock-free slots claimed with one CAS on the fast path, with a per-thread hint so a thread reuses
// the connection it returned last (its cache line stays local: acquire/release scales across
// threads), a bounded FIFO queue of waiters with exact deadlines when every connection is leased,
// jittered maximum lifetimes, keep-alive checks of idle connections, a validation bypass for
// connections used moments ago, and leak detection that reports where a lease held too long was
// acquired.
//
// The user supplies a `pool_factory`: how to create, validate (ping), reset and close a connection.
// Creation runs on the thread that needs the connection (the acquiring thread, or the thread
// calling `maintain()` for min-idle refills), outside every pool lock, and receives the caller's
// deadline: a factory must give up by it (the pool cannot interrupt a blocked connect, but no
// other caller waits on it: waiters only wait on their own deadlines).
//
// Creation and validation may instead be asynchronous (`async_create`, `async_validate`: start the
// I/O, call back when done, on any thread) for connections driven by an event loop. Then
// `sluice::asio::async_acquire` never blocks a thread, and `maintain()` starts refills and
// keep-alive pings and returns (their slots stay reserved until the callbacks run; refills count
// as `pending_creates`). Outage handling is the same for both kinds. A synchronous `acquire`
// blocks on the callback: do not call it on the thread that runs the factory's I/O.
// This header does not depend on Asio: the callbacks are plain absl::AnyInvocable.
//
// Outages: when `create` fails, the backend is known down. Callers that would need a new
// connection then fail fast with Unavailable (and the cause) instead of each waiting out its
// timeout, and reconnects are paced: one probe at a time, after an exponential, jittered backoff
// (no thundering herd of connects). The first successful create clears the state.
//
// Maintenance (idle eviction, max lifetime, keep-alive validation, min-idle refill, leak
// detection, reconnect probes for queued waiters) happens in `maintain()`, which the application
// calls periodically: from a test with a manual clock, from `start_maintenance(interval)` (a
// background thread), or from an Asio timer (see sluice/asio/pool.hpp).
//
// Thread safety: all member functions of `pool` may be called concurrently. A `pool_lease` is
//   owned by one thread at a time (it may move between threads). Leases may outlive the pool
//   object: the shared state lives until the last lease is gone, and a lease returned to a
//   destroyed or closed pool closes its connection.
// Time: read from the injected clock (default std::chrono::steady_clock): once per uncontended
//   acquire + release (on release: idle time and max lifetime), plus once on acquire when a
//   `validate` function is set (the bypass window) or leak detection is on. Max lifetime is
//   enforced on return and by `maintain()`, as HikariCP does. For the cheapest fast path use
//   sluice::coarse_clock (~5 ns a read instead of ~24 ns; 1-4 ms resolution is plenty for
//   lifetimes and idle timeouts of minutes).
// Errors: `acquire` returns absl::StatusOr: ResourceExhausted when the waiter queue is full (the
//   message carries size, idle, in_use and waiters at that moment), DeadlineExceeded when no
//   connection came in time, Unavailable when the pool is closed or the factory failed / the
//   backend is down (the message carries the factory's status). Factory callbacks may return
//   errors; they must not throw.
// Performance: an uncontended acquire + release is three atomic RMWs on the slot's own cache line
//   plus one clock read (bench/pool_bench.cpp: BM_pool_acquire_release); it neither allocates
//   nor locks.
//
// Example:
//   sluice::pool_factory<db_conn> factory{
//       .create = [](auto deadline) -> absl::StatusOr<db_conn> {
//         return db_conn::open(url, deadline);
//       },
//       .validate = [](db_conn& c) { return c.ping(); },
//   };
//   auto pool = sluice::pool<db_conn>::make(std::move(factory), {.max_size = 16}).value();
//   if (auto lease = pool.acquire(std::chrono::milliseconds(200)); lease.ok()) {
//     if (!(*lease)->query("...").ok()) lease->mark_broken();   // discarded, not reused
//   }                                                          // returned here
//
// With an event-loop driver, the factory starts the I/O and calls back (used through
// sluice::asio::async_acquire, no thread waits; sluice/redis/pool.hpp is a complete example):
//   factory.async_create = [ex](auto deadline,
//                               sluice::pool_callback<absl::StatusOr<db_conn>> done) {
//     db_conn::async_open(ex, url, deadline, [done = std::move(done)](auto result) mutable {
//       std::move(done)(std::move(result));  // on any thread
//     });
//   };
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "sluice/detail/cache_line.hpp"
#include "sluice/detail/clock.hpp"
#include "sluice/detail/mutex.hpp"
#include "sluice/detail/random.hpp"

namespace sluice {

// Where a lease was acquired, for leak reports. `current()` as a default argument captures the
// caller's file, line and function (std::source_location is not available with clang 14 on
// libstdc++, so the compiler builtins are used directly).
struct acquire_site {
  const char* file = "";
  const char* function = "";
  std::uint_least32_t line = 0;

  // Returns the site of the call this is a default argument of.
  static constexpr acquire_site current(const char* file = __builtin_FILE(),
                                        const char* function = __builtin_FUNCTION(),
                                        std::uint_least32_t line = __builtin_LINE()) noexcept {
    return {file, function, line};
  }
};

// Delivers the result of an asynchronous factory call (see `pool_factory::async_create`). Call it
// exactly once, from any thread; if it is destroyed without being called (e.g. its I/O context was
// shut down), the pool treats that as a Cancelled failure, so no acquire can hang on it.
template <class T>
using pool_callback = absl::AnyInvocable<void(T) &&>;

// How a pool opens, checks, cleans and closes connections, synchronously or asynchronously.
// Exactly one of `create` and `async_create` is required; at most one of `validate` and
// `async_validate` may be set (`pool::make` checks both).
//
// The asynchronous hooks are for connections whose I/O runs on an event loop (Asio, a driver's
// own loop): they start the work and return at once, then call the callback when it is done, on
// any thread. `sluice::asio::async_acquire` then never blocks a thread on a connect or a ping, and
// `maintain()` starts min-idle refills and keep-alive pings and returns (each finishes in its
// callback; its slot stays reserved meanwhile). A synchronous `acquire` on a pool with only
// asynchronous hooks blocks its thread until the callback runs: never call it (nor `try_acquire`,
// which may validate) from the thread that must run the factory's I/O, or it waits forever.
template <class Connection, class Clock = std::chrono::steady_clock>
struct pool_factory {
  // Opens a connection; must give up by `deadline` (a hung connect blocks its caller only).
  std::function<absl::StatusOr<Connection>(typename Clock::time_point deadline)> create;
  // Checks that a connection still works (a ping). Empty: connections are always valid.
  std::function<absl::Status(Connection&)> validate;
  // Cleans a returned connection (roll back, reset session state); an error discards it.
  // Empty: nothing to reset.
  std::function<absl::Status(Connection&)> reset;
  // Closes a connection the pool discards. Empty: the Connection's destructor closes it.
  std::function<void(Connection&)> close;
  // Starts opening a connection and returns; calls `done` with it (or the error) once finished,
  // by `deadline`, on any thread (inline is allowed). Replaces `create`.
  std::function<void(typename Clock::time_point deadline,
                     pool_callback<absl::StatusOr<Connection>> done)>
      async_create;
  // Starts checking a connection and returns; calls `done` with the result once finished, on any
  // thread (inline is allowed). The connection stays untouched by the pool until then. Bound the
  // check with a timeout: a slot stays reserved until it completes. Replaces `validate`.
  std::function<void(Connection&, pool_callback<absl::Status> done)> async_validate;
};

// What happened, for metrics and logs (see `pool_options::on_event`).
enum class pool_event_kind {
  created,          // a connection was opened
  create_failed,    // the factory failed; `status` says why
  closed,           // a connection was closed; `reason` says why
  leak_detected,    // a lease has been held longer than the threshold; `site`, `held_for`
  backend_down,     // the first create failure after a healthy period
  backend_up,       // the first create success after an outage
  acquire_timeout,  // an acquire gave up at its deadline
  exhausted,        // an acquire was refused because the waiter queue was full
};

// Why a connection was closed.
enum class pool_close_reason {
  broken,             // the lease was marked broken
  reset_failed,       // `factory.reset` failed on return
  validation_failed,  // `factory.validate` failed on checkout or keep-alive
  expired,            // it reached its (jittered) max lifetime
  idle_timeout,       // it sat idle longer than idle_timeout above min_idle
  pool_closed,        // the pool was closed
};

// One event. Fields not relevant to `kind` are left at their defaults.
struct pool_event {
  pool_event_kind kind = pool_event_kind::created;
  pool_close_reason reason = pool_close_reason::broken;
  absl::Status status{};
  std::chrono::nanoseconds held_for{0};
  acquire_site site{};
};

// A snapshot of a pool's gauges and counters. Gauges are read without a lock, so under concurrent
// use they may be a few operations apart from each other.
struct pool_stats {
  std::size_t size = 0;             // open connections plus connects in progress
  std::size_t idle = 0;             // connections ready to lend
  std::size_t in_use = 0;           // leased connections
  std::size_t pending_creates = 0;  // connects in progress
  std::size_t waiters = 0;          // callers queued for a connection
  std::uint64_t acquired = 0;       // successful acquires
  std::uint64_t created = 0;        // connections opened
  std::uint64_t closed = 0;         // connections closed
  std::uint64_t create_failures = 0;
  std::uint64_t validation_failures = 0;
  std::uint64_t timeouts = 0;   // acquires that hit their deadline
  std::uint64_t exhausted = 0;  // acquires refused with a full waiter queue
  std::uint64_t leaks = 0;      // leases reported as leaked
  bool backend_down = false;    // the last create failed and none has succeeded since
};

// Returns "size=.. idle=.. in_use=.. waiters=..", the form error messages carry.
inline std::string to_string(const pool_stats& s) {
  return "size=" + std::to_string(s.size) + " idle=" + std::to_string(s.idle) +
         " in_use=" + std::to_string(s.in_use) + " waiters=" + std::to_string(s.waiters);
}

// Knobs, named and defaulted after HikariCP's where it has one.
struct pool_options {
  // Most connections open at once (leased + idle + connecting). 10 as HikariCP: a database
  // rarely serves more concurrent queries usefully than a few per core.
  std::size_t max_size = 10;
  // Idle connections `maintain()` keeps ready (and never evicts for idleness). 0, unlike
  // HikariCP's max_size: a pool created at start-up does not connect before it is used; set it to
  // max_size for a fixed-size pool.
  std::size_t min_idle = 0;
  // How long `acquire()` without an argument waits. 30 s as HikariCP's connectionTimeout.
  std::chrono::nanoseconds acquire_timeout = std::chrono::seconds(30);
  // Idle time after which `maintain()` closes a connection above min_idle; 0 never. 10 min as
  // HikariCP: long enough to ride out traffic dips, short enough to give back server resources.
  std::chrono::nanoseconds idle_timeout = std::chrono::minutes(10);
  // Age after which a connection is closed (when idle or on return); 0 never. 30 min as HikariCP:
  // shorter than typical server and middlebox connection limits.
  std::chrono::nanoseconds max_lifetime = std::chrono::minutes(30);
  // Fraction of max_lifetime subtracted at random per connection so they do not all expire
  // together. 0.025 as HikariCP's 2.5 % variance.
  double max_lifetime_jitter = 0.025;
  // Idle time after which `maintain()` validates a connection to keep it (and the middleboxes on
  // its path) alive; 0 never. 2 min as HikariCP 5: under common 5-15 min NAT/firewall timeouts.
  std::chrono::nanoseconds keepalive_interval = std::chrono::minutes(2);
  // A connection used within this window is lent without validation. 500 ms as HikariCP's
  // aliveBypassWindowMs: a ping per checkout would double the round trips of a busy pool.
  std::chrono::nanoseconds validation_bypass = std::chrono::milliseconds(500);
  // Most callers queued for a connection; more are refused with ResourceExhausted. 1024: enough
  // for bursts, bounded so an overloaded service sheds load instead of queueing without end.
  std::size_t max_waiters = 1024;
  // A lease held longer than this is reported once (event `leak_detected`) by `maintain()`;
  // 0 disables tracking (the default, as HikariCP: it costs two stores per acquire).
  std::chrono::nanoseconds leak_detection_threshold = std::chrono::nanoseconds(0);
  // First pause between reconnect probes after a create failure. 100 ms: a restart-blip is
  // retried almost at once.
  std::chrono::nanoseconds reconnect_backoff_initial = std::chrono::milliseconds(100);
  // Longest pause between probes (the backoff doubles up to it). 10 s: a long outage costs one
  // connect attempt per 10 s per pool, and recovery is noticed within 10 s.
  std::chrono::nanoseconds reconnect_backoff_max = std::chrono::seconds(10);
  // Random spread of each backoff (+-20 %) so that many pools do not reconnect in lockstep.
  double reconnect_backoff_jitter = 0.2;
  // Receives events for metrics and logs; called on the thread that caused the event, never with
  // a pool lock held. Must not throw. Empty: no events.
  std::function<void(const pool_event&)> on_event{};
};

// What one `maintain()` pass did.
struct pool_maintenance_report {
  std::size_t evicted_idle = 0;       // closed for idle_timeout
  std::size_t expired = 0;            // closed for max_lifetime
  std::size_t keepalive_checked = 0;  // validated because idle past keepalive_interval
  std::size_t keepalive_failed = 0;   // ... and closed because a synchronous validation failed
  std::size_t created = 0;            // opened (synchronously) to restore min_idle
  std::size_t leaks_reported = 0;     // leases newly reported as leaked
  std::size_t pending = 0;  // asynchronous connects and keep-alive checks started, still running
};

template <class Connection, class Clock>
class pool;
template <class Connection, class Clock>
class pool_lease;

namespace detail {

// The most slots (connections) a pool may have.
inline constexpr std::uint32_t pool_max_slots = 1u << 20;

// What a queued waiter is woken with.
enum class pool_wake {
  handed,  // an idle connection (slot `index`) now belongs to the waiter
  create,  // slot `index` is reserved for the waiter to open a connection in
  failed,  // the wait is over with `status` (pool closed, backend down)
};

// A caller queued for a connection: an intrusive FIFO node. The pool calls `on_wake` with its
// lock held, after unlinking the node; the node must stay valid while queued.
class pool_waiter {
 public:
  virtual void on_wake(pool_wake kind, std::uint32_t index, const absl::Status& status) = 0;

 protected:
  ~pool_waiter() = default;

 private:
  template <class C, class K>
  friend class pool_core;
  pool_waiter* prev_ = nullptr;
  pool_waiter* next_ = nullptr;
  bool queued_ = false;
};

// The outcome of one acquisition attempt (see `pool_core::step_locked`).
struct pool_step {
  enum kind_t { got, create, failed, enqueued } kind = failed;
  std::uint32_t index = 0;
  absl::Status status{};
};

// Wraps the callback given to an asynchronous factory hook: calls `f` with a Cancelled status if
// destroyed uncalled (the factory lost it), so every started operation finishes exactly once.
template <class T, class F>
class pool_once {
 public:
  explicit pool_once(F f) : f_(std::move(f)) {}
  pool_once(pool_once&& other) noexcept
      : f_(std::move(other.f_)), armed_(std::exchange(other.armed_, false)) {}
  pool_once& operator=(pool_once&&) = delete;
  pool_once(const pool_once&) = delete;
  pool_once& operator=(const pool_once&) = delete;
  ~pool_once() {
    if (armed_) {
      armed_ = false;
      std::move(f_)(T(absl::CancelledError("sluice::pool: the factory dropped its callback")));
    }
  }
  void operator()(T value) && {
    armed_ = false;
    std::move(f_)(std::move(value));
  }

 private:
  F f_;
  bool armed_ = true;
};

// Returns `f` as a pool_callback<T> that reports a dropped call (see pool_once).
template <class T, class F>
pool_callback<T> make_pool_callback(F f) {
  return pool_callback<T>(pool_once<T, F>(std::move(f)));
}

// A value a thread waits for while an asynchronous factory hook produces it (a synchronous
// acquire on a pool with asynchronous hooks). Shared with the callback, which may outlive the
// wait by a few instructions.
template <class T>
class pool_blocking_result {
 public:
  void set(T value) {
    mutex_lock lock(mu_);
    value_.emplace(std::move(value));
    cv_.notify_all();
  }
  T wait() {
    mutex_lock lock(mu_);
    while (!value_.has_value()) cv_.wait(mu_);
    return std::move(*value_);
  }

 private:
  mutex mu_;
  cond_var cv_;
  std::optional<T> value_ ABSL_GUARDED_BY(mu_);
};

// The calling thread's affinity hint: the pool and slot it returned a connection to last. The
// next acquire on that pool tries that slot first, so a thread that acquires and releases in a
// loop keeps hitting one slot's cache line and never touches lines other threads write
// (HikariCP's thread-local connection list, reduced to one entry).
struct pool_thread_hint {
  const void* core = nullptr;
  std::uint32_t index = 0;
};
inline pool_thread_hint& thread_hint() noexcept {
  thread_local pool_thread_hint hint;
  return hint;
}

// Internal; the shared state behind `pool`, its leases and the Asio adapter.
//
// Each connection lives in a slot whose atomic word holds its state (empty, idle, leased,
// reserved) in the low two bits and, above them, the number of threads still inside the pool
// after publishing the slot as idle (a "bracket"). Idle slots are claimed with one CAS; a
// returning lease publishes its slot with one RMW and closes its bracket with another, both on
// the slot's own cache line. There is no per-lease reference count on a shared line: the state
// is freed by whoever finds it orphaned (pool handle gone) with no connection left and no
// asynchronous operation pending, after waiting for every open bracket to close.
template <class Connection, class Clock>
class pool_core {
 public:
  using time_point = typename Clock::time_point;
  using lease_type = pool_lease<Connection, Clock>;
  static constexpr std::uint32_t nil = pool_max_slots;
  // The state of a slot handed to a waiter or reserved for a connect (see checkout, lend).
  static constexpr std::uint32_t reserved_state = 3;

  pool_core(pool_factory<Connection, Clock> factory, pool_options options, Clock clock)
      : factory_(std::move(factory)),
        options_(std::move(options)),
        clock_(std::move(clock)),
        slots_(std::make_unique<slot[]>(options_.max_size)),
        validates_(static_cast<bool>(factory_.validate) ||
                   static_cast<bool>(factory_.async_validate)),
        async_create_(!factory_.create && static_cast<bool>(factory_.async_create)),
        async_validate_(!factory_.validate && static_cast<bool>(factory_.async_validate)),
        backoff_(options_.reconnect_backoff_initial) {
    free_.reserve(options_.max_size);
    for (std::size_t i = options_.max_size; i > 0; --i) {
      free_.push_back(static_cast<std::uint32_t>(i - 1));
    }
  }

  Clock& clock() noexcept { return clock_; }
  const pool_options& options() const noexcept { return options_; }
  // Whether the factory opens / checks connections asynchronously.
  bool async_create() const noexcept { return async_create_; }
  bool async_validate() const noexcept { return async_validate_; }

  // Tries the lock-free fast path: an idle connection when nobody is queued (the thread's hint
  // slot first, then a scan). Returns false when the slow path is needed.
  bool try_fast(lease_type& out, const acquire_site& site) {
    // Seq_cst: pairs with a waiter's seq_cst store of the count (store-buffering: either this
    // load sees the waiter, or the waiter's scan sees the slot a releaser published).
    while (waiters_.load(std::memory_order_seq_cst) == 0 &&
           (flags_.load(std::memory_order_relaxed) & closed_flag) == 0) {
      const std::uint32_t index = claim_any(leased);
      if (index == nil) return false;
      if (checkout(index, site, out, leased)) return true;
    }
    return false;
  }

  // Runs one attempt with the lock held: an idle connection (reserved for the caller), a
  // reserved slot to create in, a failure, or `w` queued.
  pool_step step_locked(pool_waiter* w, time_point now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    pool_step s;
    if (closed()) {
      s.status = absl::UnavailableError("sluice::pool: closed");
      return s;
    }
    if (waiter_count_ == 0) {
      s.index = claim_any(reserved);
      if (s.index != nil) {
        s.kind = pool_step::got;
        return s;
      }
    }
    if (size_.load(std::memory_order_relaxed) < options_.max_size) {
      if (!down_ || (now >= next_attempt_ && !probe_in_flight_)) {
        s.kind = pool_step::create;
        s.index = reserve_locked();
        return s;
      }
      s.status = absl::UnavailableError(
          "sluice::pool: backend down, next connect attempt in " +
          std::to_string(
              std::chrono::duration_cast<std::chrono::milliseconds>(next_attempt_ - now).count()) +
          " ms: " + last_error_.ToString());
      return s;
    }
    if (waiter_count_ >= options_.max_waiters || w == nullptr) {
      exhausted_.fetch_add(1, std::memory_order_relaxed);
      s.status =
          absl::ResourceExhaustedError("sluice::pool: exhausted (" + to_string(stats()) + ")");
      pending_event_ = pool_event_kind::exhausted;
      return s;
    }
    enqueue_locked(w);
    // A release may have published a slot just before our count became visible; look again.
    s.index = claim_any(reserved);
    if (s.index != nil) {
      dequeue_locked(w);
      s.kind = pool_step::got;
      return s;
    }
    s.kind = pool_step::enqueued;
    return s;
  }

  // Removes `w` from the queue if it is still queued; returns whether it was.
  bool cancel_locked(pool_waiter* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!w->queued_) return false;
    dequeue_locked(w);
    return true;
  }

  // Emits the event a failed step left behind (exhausted); call after unlocking.
  void flush_pending_event() {
    std::optional<pool_event_kind> kind;
    {
      mutex_lock lock(mu_);
      kind.swap(pending_event_);
    }
    if (kind) emit({.kind = *kind});
  }

  // Counts and reports an acquire that hit its deadline; returns the DeadlineExceeded status.
  absl::Status timed_out(std::chrono::nanoseconds waited) {
    timeouts_.fetch_add(1, std::memory_order_relaxed);
    emit({.kind = pool_event_kind::acquire_timeout});
    return absl::DeadlineExceededError(
        "sluice::pool: no connection within " +
        std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(waited).count()) +
        " ms (" + to_string(stats()) + ")");
  }

  // Makes the slot the caller claimed (in state `state`: leased or reserved) a lease if it is
  // still valid: validated unless used within the bypass window. Otherwise closes it and returns
  // false. (Max lifetime is enforced on return and by maintain(), as HikariCP does, so that this
  // path reads the clock only when there is a validation to bypass.)
  bool checkout(std::uint32_t index, const acquire_site& site, lease_type& out,
                std::uint32_t state) {
    slot& s = slots_[index];
    if (validates_) {
      const time_point now = clock_.now();
      if (now - s.last_used >= options_.validation_bypass) {
        if (!validate_blocking(*s.conn).ok()) {
          fail_validation(index);
          return false;
        }
        s.last_used = now;
      }
    }
    lend(index, site, out, state);
    return true;
  }

  // Returns whether slot `index` (owned by the caller) must be validated before it is lent.
  bool validation_due(std::uint32_t index, time_point now) const noexcept {
    return validates_ && now - slots_[index].last_used >= options_.validation_bypass;
  }

  // Records that slot `index` (owned by the caller) passed a checkout validation at `now`.
  void mark_validated(std::uint32_t index, time_point now) noexcept {
    slots_[index].last_used = now;
  }

  // Counts a failed validation and closes slot `index` (owned by the caller).
  void fail_validation(std::uint32_t index) {
    validation_failures_.fetch_add(1, std::memory_order_relaxed);
    destroy(index, pool_close_reason::validation_failed);
  }

  // Starts the asynchronous validation of slot `index` (owned by the caller, reserved); calls
  // `on_done(status)` on the factory's thread. The caller keeps an async_ref meanwhile.
  template <class F>
  void start_validate(std::uint32_t index, F on_done) {
    factory_.async_validate(*slots_[index].conn,
                            make_pool_callback<absl::Status>(std::move(on_done)));
  }

  // Starts opening a connection in reserved slot `index` with the asynchronous hook; when it is
  // done (on the factory's thread, or here if `deadline` already passed) finishes as create_in
  // does and calls `on_done(status)`. The caller keeps an async_ref meanwhile.
  template <class F>
  void start_create(std::uint32_t index, time_point deadline, F on_done) {
    if (!(clock_.now() < deadline)) {
      on_done(finish_create(index, absl::DeadlineExceededError("sluice::pool: deadline passed"),
                            deadline));
      return;
    }
    factory_.async_create(deadline, make_pool_callback<absl::StatusOr<Connection>>(
                                        [this, index, deadline, f = std::move(on_done)](
                                            absl::StatusOr<Connection> made) mutable {
                                          f(finish_create(index, std::move(made), deadline));
                                        }));
  }

  // Publishes slot `index` (owned by the caller, reserved) as idle.
  void publish_reserved(std::uint32_t index) { publish_idle(index, reserved); }

  // Gives back slot `index`, reserved for a connect that will not be made (its acquirer was
  // dropped before it ran), and lets queued waiters have the capacity. Takes mu_.
  void cancel_create(std::uint32_t index) {
    mutex_lock lock(mu_);
    creating_.fetch_sub(1, std::memory_order_relaxed);
    release_slot_locked(index);
    probe_in_flight_ = false;
    dispatch_locked(clock_.now());
    drained_cv_.notify_all();
  }

  // Opens a connection in reserved slot `index` (no lock held). On success the slot (still
  // reserved) belongs to the caller; on failure the reservation is given back and the backend
  // marked down.
  absl::Status create_in(std::uint32_t index, time_point deadline) {
    absl::StatusOr<Connection> made = absl::DeadlineExceededError("sluice::pool: deadline passed");
    if (clock_.now() < deadline) made = create_blocking(deadline);
    return finish_create(index, std::move(made), deadline);
  }

  // Completes a connect into reserved slot `index`: stores the connection, or gives the slot back
  // and marks the backend down (failing queued waiters, pacing the next attempt).
  absl::Status finish_create(std::uint32_t index, absl::StatusOr<Connection> made,
                             time_point deadline) {
    const time_point now = clock_.now();
    if (made.ok()) {
      slot& s = slots_[index];
      s.conn.emplace(std::move(*made));
      s.last_used = now;
      s.last_checked = now;
      s.expires = expiry_for(now);
      bool came_back = false;
      {
        mutex_lock lock(mu_);
        creating_.fetch_sub(1, std::memory_order_relaxed);
        probe_in_flight_ = false;
        if (down_) {
          down_ = false;
          came_back = true;
          backoff_ = options_.reconnect_backoff_initial;
        }
        down_flag_.store(false, std::memory_order_relaxed);
      }
      created_.fetch_add(1, std::memory_order_relaxed);
      if (came_back) emit({.kind = pool_event_kind::backend_up});
      emit({.kind = pool_event_kind::created});
      if (closed()) {
        destroy(index, pool_close_reason::pool_closed);
        return absl::UnavailableError("sluice::pool: closed");
      }
      return absl::OkStatus();
    }
    const absl::Status cause = made.status();
    create_failures_.fetch_add(1, std::memory_order_relaxed);
    bool went_down = false;
    {
      mutex_lock lock(mu_);
      creating_.fetch_sub(1, std::memory_order_relaxed);
      release_slot_locked(index);
      probe_in_flight_ = false;
      went_down = !down_;
      down_ = true;
      down_flag_.store(true, std::memory_order_relaxed);
      last_error_ = cause;
      next_attempt_ = now + std::chrono::duration_cast<typename Clock::duration>(
                                detail::jitter(backoff_, options_.reconnect_backoff_jitter));
      backoff_ = std::min<std::chrono::nanoseconds>(backoff_ * 2, options_.reconnect_backoff_max);
      // The backend is down: nobody queued can be served by a connect; fail them now rather than
      // at their deadlines.
      fail_all_locked(absl::UnavailableError("sluice::pool: backend down: " + cause.ToString()));
      drained_cv_.notify_all();
    }
    emit({.kind = pool_event_kind::create_failed, .status = cause});
    if (went_down) emit({.kind = pool_event_kind::backend_down, .status = cause});
    if (cause.code() == absl::StatusCode::kDeadlineExceeded && now >= deadline) {
      return absl::DeadlineExceededError("sluice::pool: connect did not finish by the deadline: " +
                                         cause.ToString());
    }
    return absl::UnavailableError("sluice::pool: connection factory failed: " + cause.ToString());
  }

  // Stamps slot `index` (owned by the caller in state `state`) as leased into `out`.
  void lend(std::uint32_t index, const acquire_site& site, lease_type& out, std::uint32_t state) {
    slot& s = slots_[index];
    if (state != leased) {
      // Relaxed: the owner changes its own slot's state; nobody else may claim a reserved slot.
      s.word.fetch_add(leased - state, std::memory_order_relaxed);
    }
    if (options_.leak_detection_threshold.count() > 0) {
      // Relaxed: the leak scan reads these as a best-effort report; `leased_ns` is stored last
      // with release so a scan that sees it non-zero sees this lease's site.
      s.file.store(site.file, std::memory_order_relaxed);
      s.function.store(site.function, std::memory_order_relaxed);
      s.line.store(site.line, std::memory_order_relaxed);
      s.leak_reported.store(false, std::memory_order_relaxed);
      s.leased_ns.store(to_ns(clock_.now()), std::memory_order_release);
    }
    // Relaxed load + store, not an RMW: only the slot's owner writes the count; stats() reads it.
    s.acquired.store(s.acquired.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    out.reset_to(this, index);
  }

  Connection& connection(std::uint32_t index) noexcept { return *slots_[index].conn; }

  // Takes a connection back from a lease (or discards it when `broken`). The last access to the
  // state of an orphaned pool frees it.
  void give_back(std::uint32_t index, bool broken) {
    slot& s = slots_[index];
    if (options_.leak_detection_threshold.count() > 0) {
      s.leased_ns.store(0, std::memory_order_relaxed);
    }
    pool_close_reason reason = pool_close_reason::broken;
    if (!broken && factory_.reset && !factory_.reset(*s.conn).ok()) {
      broken = true;
      reason = pool_close_reason::reset_failed;
    }
    const time_point now = clock_.now();
    if (!broken && now >= s.expires) {
      broken = true;
      reason = pool_close_reason::expired;
    }
    if (broken) {
      // Relaxed: opens our bracket on a slot we own; the destroy below publishes under mu_.
      s.word.fetch_add(bracket, std::memory_order_relaxed);
      destroy(index, reason);
    } else {
      s.last_used = now;
      pool_thread_hint& hint = thread_hint();
      hint.core = this;
      hint.index = index;
      publish_idle_open(index, leased);
    }
    const bool last = orphan_check();
    // Release: our accesses to the pool happen before a freeing thread sees the bracket closed.
    s.word.fetch_sub(bracket, std::memory_order_release);
    if (last) free_now();
  }

  // Closes the connection in slot `index` (owned by the caller) and frees the slot.
  void destroy(std::uint32_t index, pool_close_reason reason) {
    slot& s = slots_[index];
    if (factory_.close) factory_.close(*s.conn);
    s.conn.reset();
    closed_count_.fetch_add(1, std::memory_order_relaxed);
    emit({.kind = pool_event_kind::closed, .reason = reason});
    mutex_lock lock(mu_);
    release_slot_locked(index);
    dispatch_locked(clock_.now());
    drained_cv_.notify_all();
  }

  // Stops lending, fails every waiter, closes idle connections and waits until `deadline` for
  // leased ones to come back (they are closed on return).
  absl::Status close(time_point deadline) {
    // Seq_cst: pairs with a releaser's seq_cst publish + flags load (see give_back).
    flags_.fetch_or(closed_flag, std::memory_order_seq_cst);
    {
      mutex_lock lock(mu_);
      fail_all_locked(absl::UnavailableError("sluice::pool: closed"));
    }
    drain_idle();
    mutex_lock lock(mu_);
    const bool drained = detail::wait_until(clock_, drained_cv_, mu_, deadline, [&] {
      return size_.load(std::memory_order_relaxed) == 0;
    });
    if (drained) return absl::OkStatus();
    return absl::DeadlineExceededError("sluice::pool: close deadline passed with " +
                                       std::to_string(size_.load(std::memory_order_relaxed)) +
                                       " connection(s) still out");
  }

  // Called by the pool handle's destructor after close(): the state is freed now if nothing uses
  // it, else by the last lease returned or asynchronous operation finished.
  void orphan() {
    flags_.fetch_or(orphaned_flag, std::memory_order_seq_cst);
    if (orphan_check()) free_now();
  }

  // Counts an asynchronous operation that uses the state (sluice::asio).
  void async_ref() {
    mutex_lock lock(mu_);
    ++async_refs_;
  }
  // Uncounts it; may free an orphaned state. The caller must not touch the pool afterwards.
  void async_unref() {
    bool last = false;
    {
      mutex_lock lock(mu_);
      --async_refs_;
      last = last_user_locked();
    }
    if (last) free_now();
  }

  bool closed() const noexcept {
    // Seq_cst: see close(); also a cheap read on the fast path (x86: a plain load).
    return (flags_.load(std::memory_order_seq_cst) & closed_flag) != 0;
  }

  // One maintenance pass; see pool::maintain.
  pool_maintenance_report maintain() {
    pool_maintenance_report report;
    const time_point now = clock_.now();
    std::size_t live = size_.load(std::memory_order_relaxed);
    for (std::uint32_t i = 0; i < options_.max_size; ++i) {
      if (!claim(i, reserved)) continue;
      slot& s = slots_[i];
      if (now >= s.expires) {
        destroy(i, pool_close_reason::expired);
        ++report.expired;
        --live;
      } else if (options_.idle_timeout.count() > 0 && now - s.last_used >= options_.idle_timeout &&
                 live > options_.min_idle) {
        destroy(i, pool_close_reason::idle_timeout);
        ++report.evicted_idle;
        --live;
      } else if (options_.keepalive_interval.count() > 0 && validates_ &&
                 now - std::max(s.last_used, s.last_checked) >= options_.keepalive_interval) {
        ++report.keepalive_checked;
        if (async_validate_) {
          // The slot stays reserved until the ping answers; the callback keeps or closes it.
          ++report.pending;
          async_ref();
          pinging_.fetch_add(1, std::memory_order_relaxed);
          start_validate(i, [this, i](const absl::Status& st) {
            if (st.ok()) {
              slots_[i].last_checked = clock_.now();
              publish_idle(i, reserved);
            } else {
              fail_validation(i);
            }
            pinging_.fetch_sub(1, std::memory_order_relaxed);
            async_unref();
          });
        } else if (factory_.validate(*s.conn).ok()) {
          s.last_checked = clock_.now();
          publish_idle(i, reserved);
        } else {
          validation_failures_.fetch_add(1, std::memory_order_relaxed);
          ++report.keepalive_failed;
          destroy(i, pool_close_reason::validation_failed);
          --live;
        }
      } else {
        publish_idle(i, reserved);
      }
    }
    // Refill to min_idle, one connect at a time (paced while the backend is down). Asynchronous
    // connects are started together, each counted as pending until its callback runs; an idle
    // connection reserved for an asynchronous keep-alive ping still counts as idle.
    while (!closed() && idle_count() + creating_.load(std::memory_order_relaxed) +
                                pinging_.load(std::memory_order_relaxed) <
                            options_.min_idle) {
      std::uint32_t index = nil;
      {
        mutex_lock lock(mu_);
        const time_point t = clock_.now();
        if (size_.load(std::memory_order_relaxed) >= options_.max_size) break;
        if (down_ && (t < next_attempt_ || probe_in_flight_)) break;
        index = reserve_locked();
      }
      const time_point deadline =
          clock_.now() +
          std::chrono::duration_cast<typename Clock::duration>(options_.acquire_timeout);
      if (async_create_) {
        ++report.pending;
        async_ref();
        start_create(index, deadline, [this, index](const absl::Status& st) {
          if (st.ok()) publish_idle(index, reserved);
          async_unref();
        });
        continue;
      }
      if (!create_in(index, deadline).ok()) break;
      ++report.created;
      publish_idle(index, reserved);
    }
    // Leak detection.
    if (options_.leak_detection_threshold.count() > 0) {
      const std::int64_t now_ns = to_ns(clock_.now());
      for (std::size_t i = 0; i < options_.max_size; ++i) {
        slot& s = slots_[i];
        // Acquire: pairs with the release store in `lend`, so the site fields are this lease's.
        const std::int64_t at = s.leased_ns.load(std::memory_order_acquire);
        if (at == 0 || now_ns - at < options_.leak_detection_threshold.count()) continue;
        if (s.leak_reported.exchange(true, std::memory_order_relaxed)) continue;
        leaks_.fetch_add(1, std::memory_order_relaxed);
        ++report.leaks_reported;
        emit({.kind = pool_event_kind::leak_detected,
              .held_for = std::chrono::nanoseconds(now_ns - at),
              .site = {s.file.load(std::memory_order_relaxed),
                       s.function.load(std::memory_order_relaxed),
                       s.line.load(std::memory_order_relaxed)}});
      }
    }
    // Reconnect probes on behalf of queued waiters, and anything else now servable.
    {
      mutex_lock lock(mu_);
      dispatch_locked(clock_.now());
    }
    return report;
  }

  pool_stats stats() const noexcept {
    pool_stats st;
    st.size = size_.load(std::memory_order_relaxed);
    st.idle = idle_count();
    st.pending_creates = creating_.load(std::memory_order_relaxed);
    std::size_t leased_now = 0;
    for (std::size_t i = 0; i < options_.max_size; ++i) {
      if ((slots_[i].word.load(std::memory_order_relaxed) & state_mask) == leased) ++leased_now;
    }
    st.in_use = leased_now;
    st.waiters = waiters_.load(std::memory_order_relaxed);
    for (std::size_t i = 0; i < options_.max_size; ++i) {
      st.acquired += slots_[i].acquired.load(std::memory_order_relaxed);
    }
    st.created = created_.load(std::memory_order_relaxed);
    st.closed = closed_count_.load(std::memory_order_relaxed);
    st.create_failures = create_failures_.load(std::memory_order_relaxed);
    st.validation_failures = validation_failures_.load(std::memory_order_relaxed);
    st.timeouts = timeouts_.load(std::memory_order_relaxed);
    st.exhausted = exhausted_.load(std::memory_order_relaxed);
    st.leaks = leaks_.load(std::memory_order_relaxed);
    st.backend_down = down_flag_.load(std::memory_order_relaxed);
    return st;
  }

  // The lock protecting the waiter queue, slot reservations and the outage state.
  mutex& mu() ABSL_LOCK_RETURNED(mu_) { return mu_; }

  // Emits `e` to the user's callback, if any.
  void emit(const pool_event& e) const {
    if (options_.on_event) options_.on_event(e);
  }

 private:
  // Slot states (low two bits of the word) and one bracket (the rest).
  static constexpr std::uint32_t empty = 0, idle = 1, leased = 2, reserved = reserved_state;
  static constexpr std::uint32_t state_mask = 3, bracket = 4;
  static constexpr std::uint8_t closed_flag = 1, orphaned_flag = 2;

  struct alignas(cache_line_size) slot {
    // State and brackets; see the class comment.
    std::atomic<std::uint32_t> word{empty};
    // Leases made from this slot (written by the owner only).
    std::atomic<std::uint64_t> acquired{0};
    // Owned by whoever holds the slot (leased, reserved): no lock needed. Ownership moves with
    // the seq_cst publish (release) and claim (acquire) of `word`.
    std::optional<Connection> conn;
    time_point expires{};
    time_point last_used{};
    time_point last_checked{};
    // Leak tracking, read by `maintain()` while the owner may write them.
    std::atomic<std::int64_t> leased_ns{0};
    std::atomic<const char*> file{nullptr};
    std::atomic<const char*> function{nullptr};
    std::atomic<std::uint_least32_t> line{0};
    std::atomic<bool> leak_reported{false};
  };

  // Opens a connection with the synchronous hook, or blocks on the asynchronous one.
  absl::StatusOr<Connection> create_blocking(time_point deadline) {
    if (factory_.create) return factory_.create(deadline);
    auto result = std::make_shared<pool_blocking_result<absl::StatusOr<Connection>>>();
    factory_.async_create(
        deadline, make_pool_callback<absl::StatusOr<Connection>>(
                      [result](absl::StatusOr<Connection> made) { result->set(std::move(made)); }));
    return result->wait();
  }

  // Checks a connection with the synchronous hook, or blocks on the asynchronous one.
  absl::Status validate_blocking(Connection& c) {
    if (factory_.validate) return factory_.validate(c);
    auto result = std::make_shared<pool_blocking_result<absl::Status>>();
    factory_.async_validate(c, make_pool_callback<absl::Status>(
                                   [result](absl::Status st) { result->set(std::move(st)); }));
    return result->wait();
  }

  static std::int64_t to_ns(time_point t) noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  }

  // Claims slot `i` if idle, moving it to `to` (leased or reserved). Seq_cst: the acquire half
  // takes ownership from the publisher; seq_cst orders it against the waiter count (see
  // try_fast).
  bool claim(std::uint32_t i, std::uint32_t to) noexcept {
    std::atomic<std::uint32_t>& word = slots_[i].word;
    std::uint32_t w = word.load(std::memory_order_relaxed);
    while ((w & state_mask) == idle) {
      if (word.compare_exchange_weak(w, (w & ~state_mask) | to, std::memory_order_seq_cst,
                                     std::memory_order_relaxed)) {
        return true;
      }
    }
    return false;
  }

  // Claims any idle slot (the thread's hint first); returns its index or nil.
  std::uint32_t claim_any(std::uint32_t to) noexcept {
    const pool_thread_hint& hint = thread_hint();
    if (hint.core == this && hint.index < options_.max_size && claim(hint.index, to)) {
      return hint.index;
    }
    for (std::uint32_t i = 0; i < options_.max_size; ++i) {
      if (claim(i, to)) return i;
    }
    return nil;
  }

  std::size_t idle_count() const noexcept {
    std::size_t n = 0;
    for (std::size_t i = 0; i < options_.max_size; ++i) {
      if ((slots_[i].word.load(std::memory_order_relaxed) & state_mask) == idle) ++n;
    }
    return n;
  }

  // Publishes slot `index` (owned in state `from`) as idle and opens a bracket, then serves
  // waiters or, if the pool closed meanwhile, closes it. The caller closes the bracket.
  void publish_idle_open(std::uint32_t index, std::uint32_t from) {
    // Seq_cst RMW: releases the owner's writes to the claimer, and orders against the seq_cst
    // loads of flags_ and waiters_ below (store-buffering with close() and a queueing waiter).
    slots_[index].word.fetch_add(idle - from + bracket, std::memory_order_seq_cst);
    if ((flags_.load(std::memory_order_seq_cst) & closed_flag) != 0) {
      if (claim(index, reserved)) destroy(index, pool_close_reason::pool_closed);
    } else if (waiters_.load(std::memory_order_seq_cst) > 0) {
      mutex_lock lock(mu_);
      dispatch_locked(clock_.now());
    }
  }

  // Publishes an owned slot as idle (maintenance, refills): publish_idle_open + close.
  void publish_idle(std::uint32_t index, std::uint32_t from) {
    publish_idle_open(index, from);
    slots_[index].word.fetch_sub(bracket, std::memory_order_release);
  }

  // True for the one caller that finds the orphaned state unused; it must free it.
  bool orphan_check() {
    if ((flags_.load(std::memory_order_seq_cst) & orphaned_flag) == 0) return false;
    mutex_lock lock(mu_);
    return last_user_locked();
  }

  bool last_user_locked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if ((flags_.load(std::memory_order_relaxed) & orphaned_flag) == 0 || freeing_ ||
        size_.load(std::memory_order_relaxed) != 0 || async_refs_ != 0) {
      return false;
    }
    freeing_ = true;
    return true;
  }

  // Waits for every other thread's bracket to close, then deletes the state.
  void free_now() {
    for (std::size_t i = 0; i < options_.max_size; ++i) {
      // Acquire: pairs with the release that closes a bracket.
      while ((slots_[i].word.load(std::memory_order_acquire) >> 2) != 0) std::this_thread::yield();
    }
    delete this;
  }

  time_point expiry_for(time_point created) const {
    if (options_.max_lifetime.count() <= 0) return time_point::max();
    const double cut = options_.max_lifetime_jitter * detail::random_unit();
    const auto life = std::chrono::nanoseconds(static_cast<std::int64_t>(
        static_cast<double>(options_.max_lifetime.count()) * (1.0 - cut)));
    return created + std::chrono::duration_cast<typename Clock::duration>(life);
  }

  // Sets the state bits of an owned or empty slot, keeping its brackets.
  void set_state(std::uint32_t index, std::uint32_t to) noexcept {
    std::atomic<std::uint32_t>& word = slots_[index].word;
    std::uint32_t w = word.load(std::memory_order_relaxed);
    while (!word.compare_exchange_weak(w, (w & ~state_mask) | to, std::memory_order_acq_rel,
                                       std::memory_order_relaxed)) {
    }
  }

  std::uint32_t reserve_locked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const std::uint32_t index = free_.back();
    free_.pop_back();
    set_state(index, reserved);
    size_.fetch_add(1, std::memory_order_relaxed);
    creating_.fetch_add(1, std::memory_order_relaxed);
    if (down_) probe_in_flight_ = true;
    return index;
  }

  void release_slot_locked(std::uint32_t index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    set_state(index, empty);
    free_.push_back(index);
    size_.fetch_sub(1, std::memory_order_relaxed);
  }

  void enqueue_locked(pool_waiter* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    w->queued_ = true;
    w->next_ = nullptr;
    w->prev_ = tail_;
    if (tail_ != nullptr) {
      tail_->next_ = w;
    } else {
      head_ = w;
    }
    tail_ = w;
    ++waiter_count_;
    // Seq_cst: see try_fast.
    waiters_.store(waiter_count_, std::memory_order_seq_cst);
  }

  void dequeue_locked(pool_waiter* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (w->prev_ != nullptr) {
      w->prev_->next_ = w->next_;
    } else {
      head_ = w->next_;
    }
    if (w->next_ != nullptr) {
      w->next_->prev_ = w->prev_;
    } else {
      tail_ = w->prev_;
    }
    w->prev_ = w->next_ = nullptr;
    w->queued_ = false;
    --waiter_count_;
    waiters_.store(waiter_count_, std::memory_order_seq_cst);
  }

  // Hands idle connections and free capacity to queued waiters, in FIFO order.
  void dispatch_locked(time_point now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    while (head_ != nullptr && !closed()) {
      pool_waiter* w = head_;
      const std::uint32_t index = claim_any(reserved);
      if (index != nil) {
        dequeue_locked(w);
        w->on_wake(pool_wake::handed, index, absl::OkStatus());
        continue;
      }
      if (size_.load(std::memory_order_relaxed) < options_.max_size &&
          (!down_ || (now >= next_attempt_ && !probe_in_flight_))) {
        const std::uint32_t reserved_index = reserve_locked();
        dequeue_locked(w);
        w->on_wake(pool_wake::create, reserved_index, absl::OkStatus());
        continue;
      }
      break;
    }
  }

  void fail_all_locked(const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    while (head_ != nullptr) {
      pool_waiter* w = head_;
      dequeue_locked(w);
      w->on_wake(pool_wake::failed, nil, status);
    }
  }

  void drain_idle() {
    for (std::uint32_t i = 0; i < options_.max_size; ++i) {
      if (claim(i, reserved)) destroy(i, pool_close_reason::pool_closed);
    }
  }

  const pool_factory<Connection, Clock> factory_;
  const pool_options options_;
  Clock clock_;
  std::unique_ptr<slot[]> slots_;
  // Which hooks the factory has (fixed at construction).
  const bool validates_;
  const bool async_create_;
  const bool async_validate_;
  // Read on every acquire and release, written rarely: kept apart from the counters below.
  // closed_flag | orphaned_flag.
  alignas(cache_line_size) std::atomic<std::uint8_t> flags_{0};
  // The number of queued waiters, readable without the lock (written under it).
  std::atomic<std::size_t> waiters_{0};
  // Open connections + connects in progress; written under mu_, read anywhere (relaxed: stats
  // and decisions under mu_ only).
  alignas(cache_line_size) std::atomic<std::size_t> size_{0};
  std::atomic<std::size_t> creating_{0};
  // Idle connections reserved by maintain() for an asynchronous keep-alive ping (relaxed: read by
  // the min-idle refill as an estimate, like creating_).
  std::atomic<std::size_t> pinging_{0};
  std::atomic<bool> down_flag_{false};
  // Counters: relaxed, statistics only.
  std::atomic<std::uint64_t> created_{0}, closed_count_{0}, create_failures_{0},
      validation_failures_{0}, timeouts_{0}, exhausted_{0}, leaks_{0};

  mutex mu_;
  cond_var drained_cv_;
  std::vector<std::uint32_t> free_ ABSL_GUARDED_BY(mu_);
  pool_waiter* head_ ABSL_GUARDED_BY(mu_) = nullptr;
  pool_waiter* tail_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::size_t waiter_count_ ABSL_GUARDED_BY(mu_) = 0;
  std::size_t async_refs_ ABSL_GUARDED_BY(mu_) = 0;
  bool freeing_ ABSL_GUARDED_BY(mu_) = false;
  bool down_ ABSL_GUARDED_BY(mu_) = false;
  bool probe_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  time_point next_attempt_ ABSL_GUARDED_BY(mu_){};
  std::chrono::nanoseconds backoff_ ABSL_GUARDED_BY(mu_);
  absl::Status last_error_ ABSL_GUARDED_BY(mu_);
  std::optional<pool_event_kind> pending_event_ ABSL_GUARDED_BY(mu_);
};

}  // namespace detail

// A connection on loan from a `pool`. Move-only; returns the connection when destroyed or
// `release()`d, or discards it if `mark_broken()` was called. Empty after a move or release, so a
// connection can never be returned twice.
//
// Thread safety: one owner at a time. Lifetime: may outlive the `pool` object (see pool).
template <class Connection, class Clock = std::chrono::steady_clock>
class pool_lease {
 public:
  // Creates an empty lease.
  pool_lease() noexcept = default;
  pool_lease(pool_lease&& other) noexcept
      : core_(std::exchange(other.core_, nullptr)),
        index_(other.index_),
        broken_(std::exchange(other.broken_, false)) {}
  pool_lease& operator=(pool_lease&& other) noexcept {
    if (this != &other) {
      release();
      core_ = std::exchange(other.core_, nullptr);
      index_ = other.index_;
      broken_ = std::exchange(other.broken_, false);
    }
    return *this;
  }
  pool_lease(const pool_lease&) = delete;
  pool_lease& operator=(const pool_lease&) = delete;
  // Returns the connection (see release).
  ~pool_lease() { release(); }

  // Returns whether the lease holds a connection.
  explicit operator bool() const noexcept { return core_ != nullptr; }
  // Returns the connection. Precondition: the lease is not empty.
  Connection& operator*() const noexcept { return core_->connection(index_); }
  Connection* operator->() const noexcept { return &core_->connection(index_); }

  // Marks the connection unusable: it is closed instead of returned.
  void mark_broken() noexcept { broken_ = true; }

  // Returns (or, if broken, closes) the connection now and empties the lease. Runs the factory's
  // `reset` (or `close`); does nothing on an empty lease.
  void release() noexcept {
    if (core_ == nullptr) return;
    auto* core = std::exchange(core_, nullptr);
    core->give_back(index_, std::exchange(broken_, false));
  }

 private:
  friend class detail::pool_core<Connection, Clock>;
  void reset_to(detail::pool_core<Connection, Clock>* core, std::uint32_t index) noexcept {
    release();
    core_ = core;
    index_ = index;
  }

  detail::pool_core<Connection, Clock>* core_ = nullptr;
  std::uint32_t index_ = 0;
  bool broken_ = false;
};

// The pool. Movable handle to shared state; see the top of this file.
template <class Connection, class Clock = std::chrono::steady_clock>
class pool {
 public:
  using connection_type = Connection;
  using clock_type = Clock;
  using time_point = typename Clock::time_point;
  using lease = pool_lease<Connection, Clock>;
  using factory_type = pool_factory<Connection, Clock>;

  // Validates `options` and `factory` and creates a pool; no connection is opened until first
  // use or `maintain()`. InvalidArgument: not exactly one of create / async_create, both validate
  // and async_validate, max_size 0 or above 2^20 - 1,
  // min_idle > max_size, negative durations, jitter outside [0, 1].
  [[nodiscard]] static absl::StatusOr<pool> make(factory_type factory, pool_options options = {},
                                                 Clock clock = Clock()) {
    if (static_cast<bool>(factory.create) == static_cast<bool>(factory.async_create)) {
      return absl::InvalidArgumentError(
          "sluice::pool: set exactly one of factory.create and factory.async_create");
    }
    if (factory.validate && factory.async_validate) {
      return absl::InvalidArgumentError(
          "sluice::pool: set at most one of factory.validate and factory.async_validate");
    }
    if (options.max_size == 0 || options.max_size >= detail::pool_max_slots) {
      return absl::InvalidArgumentError("sluice::pool: max_size must be in [1, 2^20 - 1]");
    }
    if (options.min_idle > options.max_size) {
      return absl::InvalidArgumentError("sluice::pool: min_idle exceeds max_size");
    }
    if (options.acquire_timeout.count() < 0 || options.idle_timeout.count() < 0 ||
        options.max_lifetime.count() < 0 || options.keepalive_interval.count() < 0 ||
        options.validation_bypass.count() < 0 || options.leak_detection_threshold.count() < 0 ||
        options.reconnect_backoff_initial.count() <= 0 ||
        options.reconnect_backoff_max < options.reconnect_backoff_initial) {
      return absl::InvalidArgumentError("sluice::pool: negative or inconsistent duration");
    }
    if (!(options.max_lifetime_jitter >= 0.0 && options.max_lifetime_jitter <= 1.0) ||
        !(options.reconnect_backoff_jitter >= 0.0 && options.reconnect_backoff_jitter <= 1.0)) {
      return absl::InvalidArgumentError("sluice::pool: jitter must be in [0, 1]");
    }
    return pool(new detail::pool_core<Connection, Clock>(std::move(factory), std::move(options),
                                                         std::move(clock)));
  }

  pool(pool&& other) noexcept
      : core_(std::exchange(other.core_, nullptr)), maintainer_(std::move(other.maintainer_)) {}
  pool& operator=(pool&& other) noexcept {
    if (this != &other) {
      stop_maintenance();
      drop();
      core_ = std::exchange(other.core_, nullptr);
      maintainer_ = std::move(other.maintainer_);
    }
    return *this;
  }
  pool(const pool&) = delete;
  pool& operator=(const pool&) = delete;
  // Closes the pool without waiting (idle connections closed now, leased ones on return) and
  // drops the handle's reference. No thread may be inside acquire() meanwhile.
  ~pool() {
    stop_maintenance();
    drop();
  }

  // Lends a connection, waiting up to options.acquire_timeout. See `acquire_until`.
  [[nodiscard]] absl::StatusOr<lease> acquire(acquire_site site = acquire_site::current()) {
    return acquire(core_->options().acquire_timeout, site);
  }

  // Lends a connection, waiting up to `timeout`. See `acquire_until`.
  template <class Rep, class Period>
  [[nodiscard]] absl::StatusOr<lease> acquire(std::chrono::duration<Rep, Period> timeout,
                                              acquire_site site = acquire_site::current()) {
    lease out;
    if (core_->try_fast(out, site)) return out;
    return acquire_slow(
        core_->clock().now() + std::chrono::duration_cast<typename Clock::duration>(timeout), site,
        out);
  }

  // Lends a connection: an idle one (lock-free, no allocation), else a new one if below max_size
  // (opened on this thread with `deadline`), else waits in FIFO order until `deadline` on the
  // pool's clock. Errors: see the top of this file. With asynchronous factory hooks it blocks
  // until their callbacks run: never call it on the thread that runs the factory's I/O.
  [[nodiscard]] absl::StatusOr<lease> acquire_until(time_point deadline,
                                                    acquire_site site = acquire_site::current()) {
    lease out;
    if (core_->try_fast(out, site)) return out;
    return acquire_slow(deadline, site, out);
  }

  // Lends an idle connection if one is available right now; never queues or connects. It may
  // validate the connection it found (see validation_bypass), which with `async_validate` blocks
  // until the callback runs (see pool_factory).
  [[nodiscard]] std::optional<lease> try_acquire(acquire_site site = acquire_site::current()) {
    lease out;
    if (core_->try_fast(out, site)) return out;
    return std::nullopt;
  }

  // Runs one maintenance pass: closes idle connections past their lifetime or (above min_idle)
  // their idle timeout, validates those idle past keepalive_interval, opens connections up to
  // min_idle (on this thread, paced while the backend is down), reports leases held past the
  // leak threshold, and starts a reconnect probe for queued waiters when one is due.
  // With asynchronous hooks, refills and keep-alive checks are started here and finish in their
  // callbacks (`report.pending` counts them); the pass itself never waits on I/O.
  // O(idle + max_size). Call it every few seconds (or use start_maintenance).
  pool_maintenance_report maintain() { return core_->maintain(); }

  // Starts a background thread calling `maintain()` every `interval` of the pool's clock until
  // `stop_maintenance()` or destruction. Does nothing if already started.
  void start_maintenance(std::chrono::nanoseconds interval) {
    if (maintainer_) return;
    maintainer_ = std::make_unique<maintainer>();
    // The thread uses the core and the maintainer, never `this`, so the pool handle may move.
    maintainer_->thread = std::thread([core = core_, m = maintainer_.get(), interval] {
      for (;;) {
        {
          detail::mutex_lock lock(m->mu);
          const auto next =
              core->clock().now() + std::chrono::duration_cast<typename Clock::duration>(interval);
          // wait_until calls the predicate with m->mu held; the analysis cannot see through it.
          if (detail::wait_until(core->clock(), m->cv, m->mu, next,
                                 [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return m->stop; })) {
            return;
          }
        }
        core->maintain();
      }
    });
  }

  // Stops and joins the maintenance thread, if any.
  void stop_maintenance() {
    if (!maintainer_) return;
    {
      detail::mutex_lock lock(maintainer_->mu);
      maintainer_->stop = true;
    }
    maintainer_->cv.notify_all();
    maintainer_->thread.join();
    maintainer_.reset();
  }

  // Closes the pool: fails queued waiters and later acquires with Unavailable, closes idle
  // connections, then waits until `deadline` for leased connections to be returned (each is
  // closed on return). Returns OK when all are closed, DeadlineExceeded if some are still out
  // (they will be closed when returned).
  absl::Status close(time_point deadline) { return core_->close(deadline); }

  // Returns a snapshot of gauges and counters.
  [[nodiscard]] pool_stats stats() const noexcept { return core_->stats(); }

  // Returns the options the pool was made with.
  [[nodiscard]] const pool_options& options() const noexcept { return core_->options(); }

  // Internal: the shared state (for sluice::asio).
  detail::pool_core<Connection, Clock>& core() noexcept { return *core_; }

 private:
  struct maintainer {
    detail::mutex mu;
    detail::cond_var cv;
    bool stop ABSL_GUARDED_BY(mu) = false;
    std::thread thread;
  };

  explicit pool(detail::pool_core<Connection, Clock>* core) noexcept : core_(core) {}

  void drop() {
    if (core_ == nullptr) return;
    (void)core_->close(core_->clock().now());
    std::exchange(core_, nullptr)->orphan();
  }

  // A blocked synchronous caller.
  class sync_waiter final : public detail::pool_waiter {
   public:
    void on_wake(detail::pool_wake kind, std::uint32_t index, const absl::Status& status) override {
      kind_ = kind;
      index_ = index;
      status_ = status;
      done_ = true;
      cv_.notify_one();
    }
    detail::cond_var cv_;
    bool done_ = false;
    detail::pool_wake kind_ = detail::pool_wake::failed;
    std::uint32_t index_ = 0;
    absl::Status status_;
  };

  absl::StatusOr<lease> acquire_slow(time_point deadline, const acquire_site& site, lease& out) {
    auto& core = *core_;
    const time_point start = core.clock().now();
    for (;;) {
      detail::pool_step step;
      {
        sync_waiter w;
        detail::mutex_lock lock(core.mu());
        step = core.step_locked(&w, core.clock().now());
        if (step.kind == detail::pool_step::enqueued) {
          const bool woken =
              detail::wait_until(core.clock(), w.cv_, core.mu(), deadline, [&] { return w.done_; });
          if (!woken) {
            core.cancel_locked(&w);
            step.kind = detail::pool_step::failed;
            step.status = absl::DeadlineExceededError("");
          } else if (w.kind_ == detail::pool_wake::handed) {
            step.kind = detail::pool_step::got;
            step.index = w.index_;
          } else if (w.kind_ == detail::pool_wake::create) {
            step.kind = detail::pool_step::create;
            step.index = w.index_;
          } else {
            step.kind = detail::pool_step::failed;
            step.status = w.status_;
          }
        }
      }
      switch (step.kind) {
        case detail::pool_step::got:
          if (core.checkout(step.index, site, out, core.reserved_state)) return std::move(out);
          break;  // unusable: it was closed; try again
        case detail::pool_step::create: {
          absl::Status created = core.create_in(step.index, deadline);
          if (!created.ok()) return created;
          core.lend(step.index, site, out, core.reserved_state);
          return std::move(out);
        }
        case detail::pool_step::failed:
          if (step.status.code() == absl::StatusCode::kDeadlineExceeded &&
              step.status.message().empty()) {
            return core.timed_out(core.clock().now() - start);
          }
          core.flush_pending_event();
          return step.status;
        case detail::pool_step::enqueued:
          break;
      }
      if (core.clock().now() >= deadline) return core.timed_out(core.clock().now() - start);
    }
  }

  detail::pool_core<Connection, Clock>* core_;
  std::unique_ptr<maintainer> maintainer_;
};

}  // namespace sluice
