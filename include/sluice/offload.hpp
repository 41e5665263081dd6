// sluice/offload.hpp
//
// `sluice::offload_executor` runs CPU-heavy or blocking work on a fixed set of worker threads,
// off an event loop, with a bounded queue: when the queue is full a submission is rejected with
// ResourceExhausted (or, by policy, waits for room until a deadline), tasks may carry a priority
// (high before normal before low) and a deadline (a task still queued at its deadline is not run;
// its caller learns DeadlineExceeded), and results and exceptions travel back to the caller.
// Shutdown stops accepting, then drains or cancels the queue by policy, and joins the workers.
//
// From an Asio coroutine use `co_await sluice::asio::offload(executor, fn, token)` (see
// sluice/asio/offload.hpp): fn runs here, the coroutine resumes on its own executor.
//
// Three ways to submit:
//   execute(fn)   fire and forget; an exception from fn is caught and counted (stats().failed).
//   submit(fn)    returns std::future<R>; fn's exception, or an `offload_error` carrying the
//                 status of a dropped task, is rethrown by future::get().
//   enqueue(task) the primitive the others are built on: task(const absl::Status&) is called
//                 exactly once, with OK on a worker when it is its turn, or with
//                 DeadlineExceeded (expired in the queue) / Cancelled (shutdown with
//                 offload_shutdown::cancel) when it is dropped instead.
//
// Design for throughput: one mutex-protected ring per priority; a worker takes a batch of tasks
// per lock acquisition (up to its fair share of the queue, at most 32). A worker that runs out of
// work first "searches" (spins on a flag written only when the queue turns non-empty, with pause
// instructions and an occasional yield) before it sleeps; while a worker searches, submitters
// wake nobody, so a steady stream of tasks costs no futex call per task. Sleeping workers are
// woken one at a time, never all. Callables up to 48 bytes are stored inline: submitting a small
// lambda does not allocate.
//
// Thread safety: all member functions may be called concurrently, except that `shutdown` must not
//   be called from a worker thread (it joins them).
// Time: deadlines and queue waits are judged on the injected clock (default steady_clock); the
//   clock is read for a task only if it has a deadline, and for 1 task in
//   `options.latency_sample_every` to measure queue wait.
// Errors: submissions return absl::Status: ResourceExhausted (queue full, reject policy),
//   DeadlineExceeded (no room before the deadline, wait policy), Cancelled (shut down),
//   InvalidArgument (empty task).
//
// Example:
//   sluice::offload_executor pool({.threads = 4, .queue_capacity = 1024});
//   auto hashed = pool.submit([&] { return bcrypt(password); });   // StatusOr<std::future<...>>
//   if (!hashed.ok()) return reply_503();
//   use(hashed->get());
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "sluice/detail/cache_line.hpp"
#include "sluice/detail/clock.hpp"
#include "sluice/detail/mutex.hpp"
#include "sluice/detail/offload_task.hpp"

namespace sluice {

// Queue priority of a task: a worker always takes higher priorities first (strict priority;
// FIFO within a priority).
enum class offload_priority : std::uint8_t { high = 0, normal = 1, low = 2 };

// What a submission does when the queue is full.
enum class offload_full_policy : std::uint8_t {
  reject,  // fail at once with ResourceExhausted (load shedding; never blocks the caller)
  wait,    // block until there is room or the task's enqueue deadline passes (blocked submitters
           // are woken when the queue has drained to half its capacity, not per free slot)
};

// What `shutdown` does with tasks still queued.
enum class offload_shutdown : std::uint8_t {
  drain,   // run them all, then stop
  cancel,  // drop them (their callers get Cancelled), finish only running tasks
};

// The exception `submit`'s future throws for a task that was dropped without running.
class offload_error : public std::runtime_error {
 public:
  explicit offload_error(absl::Status status)
      : std::runtime_error(status.ToString()), status_(std::move(status)) {}
  // Returns why the task did not run (DeadlineExceeded or Cancelled).
  const absl::Status& status() const noexcept { return status_; }

 private:
  absl::Status status_;
};

// Executor options.
struct offload_options {
  // Worker threads; 0 means std::thread::hardware_concurrency(). 0 by default: CPU work scales
  // with cores; size it explicitly for blocking work.
  std::size_t threads = 0;
  // Most queued (not yet running) tasks over all priorities. 4096: room for bursts of small tasks
  // while bounding the memory and the queueing delay an overload can build up.
  std::size_t queue_capacity = 4096;
  // Policy for a full queue. reject by default: a service should shed load, not block its loop.
  offload_full_policy full_policy = offload_full_policy::reject;
  // Measure the queue wait of one task in this many (rounded up to a power of two). 64: the
  // percentiles converge within a few thousand tasks while reading the clock for under 2 % of
  // them. 1 measures every task.
  std::size_t latency_sample_every = 64;
};

// A snapshot of gauges and counters.
struct offload_stats {
  std::size_t threads = 0;
  std::size_t queue_depth = 0;                 // queued, not yet running
  std::size_t active = 0;                      // workers running tasks now
  std::uint64_t submitted = 0;                 // accepted into the queue
  std::uint64_t completed = 0;                 // ran (including those that threw)
  std::uint64_t failed = 0;                    // execute() tasks that threw
  std::uint64_t rejected = 0;                  // refused: queue full
  std::uint64_t expired = 0;                   // dropped: deadline passed while queued
  std::uint64_t cancelled = 0;                 // dropped: shutdown(cancel)
  std::chrono::nanoseconds queue_wait_p50{0};  // sampled submit-to-start latency
  std::chrono::nanoseconds queue_wait_p99{0};
  std::uint64_t queue_wait_samples = 0;
};

namespace detail {

// Internal; a lock-free histogram of durations: 4 sub-buckets per power of two of nanoseconds
// (about 19 % resolution), enough for p50/p99 of queueing delays from 1 ns to centuries.
class offload_histogram {
 public:
  void record(std::chrono::nanoseconds d) noexcept {
    const auto ns = static_cast<std::uint64_t>(std::max<std::int64_t>(d.count(), 0));
    // Relaxed: independent counters, read only for statistics.
    buckets_[index(ns)].fetch_add(1, std::memory_order_relaxed);
  }
  std::uint64_t count() const noexcept {
    std::uint64_t n = 0;
    for (const auto& b : buckets_) n += b.load(std::memory_order_relaxed);
    return n;
  }
  // Returns the upper bound of the bucket holding quantile q in [0, 1].
  std::chrono::nanoseconds quantile(double q) const noexcept {
    const std::uint64_t n = count();
    if (n == 0) return std::chrono::nanoseconds(0);
    const auto rank = static_cast<std::uint64_t>(q * static_cast<double>(n - 1)) + 1;
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < buckets; ++i) {
      seen += buckets_[i].load(std::memory_order_relaxed);
      if (seen >= rank) return std::chrono::nanoseconds(static_cast<std::int64_t>(upper(i)));
    }
    return std::chrono::nanoseconds(static_cast<std::int64_t>(upper(buckets - 1)));
  }

 private:
  static constexpr std::size_t buckets = 64 * 4;
  static std::size_t index(std::uint64_t ns) noexcept {
    if (ns < 4) return static_cast<std::size_t>(ns);
    const auto log = static_cast<std::size_t>(std::bit_width(ns) - 1);  // >= 2
    const auto sub = static_cast<std::size_t>((ns >> (log - 2)) & 3);
    return std::min(buckets - 1, log * 4 + sub);
  }
  static std::uint64_t upper(std::size_t i) noexcept {
    if (i < 4) return i;
    const std::size_t log = i / 4, sub = i % 4;
    if (log >= 62) return ~std::uint64_t{0} >> 1;
    return ((std::uint64_t{4} + sub + 1) << (log - 2)) - 1;
  }
  std::array<std::atomic<std::uint64_t>, buckets> buckets_{};
};

}  // namespace detail

// The executor; see the top of this file. Use the alias `offload_executor` for the default clock.
template <class Clock = std::chrono::steady_clock>
class basic_offload_executor {
 public:
  using clock_type = Clock;
  using time_point = typename Clock::time_point;

  // Per-task options.
  struct task_options {
    // Queue priority. normal by default.
    offload_priority priority = offload_priority::normal;
    // The task is dropped (DeadlineExceeded) if it has not started by then. Never by default.
    time_point deadline = time_point::max();
    // With offload_full_policy::wait: how long a submission may block for room (the earlier of
    // this and `deadline`). Never by default: the wait ends at `deadline` or shutdown.
    time_point enqueue_deadline = time_point::max();
  };

  // Starts `options.threads` workers. Throws std::invalid_argument on a zero queue capacity and
  // std::system_error if a thread cannot be started (as std::thread).
  explicit basic_offload_executor(offload_options options = {}, Clock clock = Clock())
      : options_(normalize(options)),
        clock_(std::move(clock)),
        capacity_(options_.queue_capacity),
        sample_mask_(std::bit_ceil(std::max<std::size_t>(options_.latency_sample_every, 1)) - 1) {
    for (auto& r : rings_) r.init(capacity_);
    workers_.reserve(options_.threads);
    for (std::size_t i = 0; i < options_.threads; ++i) {
      workers_.push_back(std::make_unique<worker>());
    }
    for (auto& w : workers_) {
      w->thread = std::thread([this, w = w.get()] { run(*w); });
    }
  }

  basic_offload_executor(const basic_offload_executor&) = delete;
  basic_offload_executor& operator=(const basic_offload_executor&) = delete;

  // Shuts down with offload_shutdown::drain (runs every queued task) and joins.
  ~basic_offload_executor() { shutdown(offload_shutdown::drain); }

  // Queues `task` (callable as void(const absl::Status&)); see the top of this file. Never calls
  // `task` inside this function. Takes the queue lock; allocation-free for callables up to 48
  // bytes. On error `task` is destroyed without being called.
  template <class Task>
  absl::Status enqueue(Task&& task, const task_options& opts = {}) {
    return push(detail::offload_task(std::forward<Task>(task)), opts);
  }

  // Queues `fn()` fire-and-forget. An exception from fn is caught and counted in stats().failed.
  template <class Fn>
  absl::Status execute(Fn&& fn, const task_options& opts = {}) {
    return push(
        detail::offload_task([this, f = std::forward<Fn>(fn)](const absl::Status& fate) mutable {
          if (!fate.ok()) return;
          try {
            f();
          } catch (...) {
            failed_.fetch_add(1, std::memory_order_relaxed);
          }
        }),
        opts);
  }

  // Queues `fn()` and returns a future of its result. future::get() rethrows fn's exception, or
  // throws offload_error(status) if the task was dropped (deadline, shutdown). Allocates the
  // future's shared state.
  template <class Fn, class R = std::invoke_result_t<std::decay_t<Fn>&>>
  absl::StatusOr<std::future<R>> submit(Fn&& fn, const task_options& opts = {}) {
    auto promise = std::make_unique<std::promise<R>>();
    std::future<R> future = promise->get_future();
    absl::Status st = push(detail::offload_task([p = std::move(promise), f = std::forward<Fn>(fn)](
                                                    const absl::Status& fate) mutable {
                             if (!fate.ok()) {
                               p->set_exception(std::make_exception_ptr(offload_error(fate)));
                               return;
                             }
                             try {
                               if constexpr (std::is_void_v<R>) {
                                 f();
                                 p->set_value();
                               } else {
                                 p->set_value(f());
                               }
                             } catch (...) {
                               p->set_exception(std::current_exception());
                             }
                           }),
                           opts);
    if (!st.ok()) return st;
    return future;
  }

  // Stops accepting work (later submissions fail with Cancelled), then by `policy` runs or drops
  // (Cancelled) the queued tasks, waits for running tasks and joins the workers. Idempotent; must
  // not be called from a worker.
  void shutdown(offload_shutdown policy = offload_shutdown::drain) {
    std::vector<detail::offload_task> dropped;
    {
      detail::mutex_lock lock(mu_);
      stopping_ = true;
      if (policy == offload_shutdown::cancel) {
        for (auto& r : rings_) {
          while (r.size > 0) dropped.push_back(std::move(r.pop().task));
        }
        nonempty_.store(false, std::memory_order_relaxed);
      }
      for (auto& w : workers_) w->signaled = true;
      idle_.clear();
    }
    for (auto& w : workers_) w->cv.notify_one();
    space_cv_.notify_all();
    if (!dropped.empty()) {
      const absl::Status fate = absl::CancelledError("sluice::offload: shut down");
      for (auto& t : dropped) {
        cancelled_.fetch_add(1, std::memory_order_relaxed);
        invoke(t, fate);
      }
    }
    detail::mutex_lock join_lock(join_mu_);
    for (auto& w : workers_) {
      if (w->thread.joinable()) w->thread.join();
    }
  }

  // Returns a snapshot of gauges and counters (the latency percentiles are sampled).
  [[nodiscard]] offload_stats stats() const {
    offload_stats s;
    s.threads = workers_.size();
    {
      detail::mutex_lock lock(mu_);
      s.queue_depth = depth_locked();
    }
    s.active = active_.load(std::memory_order_relaxed);
    s.submitted = submitted_.load(std::memory_order_relaxed);
    for (const auto& w : workers_) s.completed += w->completed.load(std::memory_order_relaxed);
    s.failed = failed_.load(std::memory_order_relaxed);
    s.rejected = rejected_.load(std::memory_order_relaxed);
    s.expired = expired_.load(std::memory_order_relaxed);
    s.cancelled = cancelled_.load(std::memory_order_relaxed);
    s.queue_wait_samples = wait_hist_.count();
    s.queue_wait_p50 = wait_hist_.quantile(0.50);
    s.queue_wait_p99 = wait_hist_.quantile(0.99);
    return s;
  }

  // Returns the number of worker threads.
  [[nodiscard]] std::size_t threads() const noexcept { return workers_.size(); }

  // Returns the injected clock.
  Clock& clock() noexcept { return clock_; }

 private:
  struct entry {
    detail::offload_task task;
    time_point deadline = time_point::max();
    time_point enqueued{};  // set for sampled tasks only
    bool sampled = false;
  };

  // A fixed ring of entries (one per priority).
  struct ring {
    std::unique_ptr<entry[]> items;
    std::size_t mask = 0, head = 0, size = 0;
    void init(std::size_t capacity) {
      const std::size_t n = std::bit_ceil(capacity);
      items = std::make_unique<entry[]>(n);
      mask = n - 1;
    }
    void push(entry&& e) {
      items[(head + size) & mask] = std::move(e);
      ++size;
    }
    entry pop() {
      entry e = std::move(items[head]);
      head = (head + 1) & mask;
      --size;
      return e;
    }
  };

  struct worker {
    detail::cond_var cv;
    bool signaled = false;  // guarded by the executor's mu_
    std::atomic<std::uint64_t> completed{0};
    std::thread thread;
  };

  static constexpr std::size_t max_batch = 32;
  static constexpr int spin_rounds = 2048;
  // Once a searcher sees work it waits this many more rounds (about a microsecond) so that a
  // batch can form instead of one task per lock round trip.
  static constexpr int batch_rounds = 16;

  // Waits a moment in a spin loop: a pause instruction (cheap, and it leaves the core's other
  // hyperthread its resources), with a yield to the scheduler every 64 rounds so a spinning worker
  // never starves a thread that shares its core.
  static void cpu_relax(int round) noexcept {
#if defined(__x86_64__) || defined(__i386__)
    if ((round & 63) != 63) {
      __builtin_ia32_pause();
      return;
    }
#else
    (void)round;
#endif
    std::this_thread::yield();
  }

  static offload_options normalize(offload_options o) {
    if (o.threads == 0) o.threads = std::max(1u, std::thread::hardware_concurrency());
    if (o.queue_capacity == 0) throw std::invalid_argument("sluice::offload: queue_capacity 0");
    return o;
  }

  void invoke(detail::offload_task& t, const absl::Status& fate) {
    try {
      t(fate);
    } catch (...) {
      // An enqueue() task threw: count it; a worker must survive its tasks.
      failed_.fetch_add(1, std::memory_order_relaxed);
    }
  }

  absl::Status push(detail::offload_task task, const task_options& opts) {
    if (!task) return absl::InvalidArgumentError("sluice::offload: empty task");
    worker* wake = nullptr;
    {
      detail::mutex_lock lock(mu_);
      if (stopping_) return absl::CancelledError("sluice::offload: shut down");
      if (depth_locked() >= capacity_) {
        if (options_.full_policy == offload_full_policy::reject) {
          rejected_.fetch_add(1, std::memory_order_relaxed);
          return absl::ResourceExhaustedError(
              "sluice::offload: queue full (depth=" + std::to_string(depth_locked()) + ")");
        }
        const time_point until = std::min(opts.deadline, opts.enqueue_deadline);
        ++space_waiters_;
        // wait_until calls the predicate with mu_ held; the analysis cannot see through it.
        const bool room =
            detail::wait_until(clock_, space_cv_, mu_, until, [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
              return stopping_ || depth_locked() < capacity_;
            });
        --space_waiters_;
        if (stopping_) return absl::CancelledError("sluice::offload: shut down");
        if (!room) {
          rejected_.fetch_add(1, std::memory_order_relaxed);
          return absl::DeadlineExceededError(
              "sluice::offload: no room in the queue by the deadline");
        }
      }
      entry e;
      e.task = std::move(task);
      e.deadline = opts.deadline;
      if ((seq_++ & sample_mask_) == 0) {
        e.sampled = true;
        e.enqueued = clock_.now();
      }
      rings_[static_cast<std::size_t>(opts.priority)].push(std::move(e));
      // Written on the empty -> non-empty transition only: searchers poll this line, and a store
      // per task would bounce it between the submitter and every searching worker.
      if (!nonempty_.load(std::memory_order_relaxed)) {
        nonempty_.store(true, std::memory_order_relaxed);
      }
      // A searching worker will find the task; otherwise wake a sleeping one.
      if (searching_ == 0 && !idle_.empty()) {
        wake = idle_.back();
        idle_.pop_back();
        wake->signaled = true;
      }
    }
    submitted_.fetch_add(1, std::memory_order_relaxed);
    if (wake != nullptr) wake->cv.notify_one();
    return absl::OkStatus();
  }

  std::size_t depth_locked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return rings_[0].size + rings_[1].size + rings_[2].size;
  }

  void run(worker& self) {
    std::array<entry, max_batch> batch;
    std::size_t n = 0;
    bool wake_submitters = false;
    detail::mutex_lock lock(mu_);
    for (;;) {
      if (n > 0) active_.fetch_sub(1, std::memory_order_relaxed);
      if (depth_locked() == 0 && !stopping_) {
        // Search before sleeping: while a worker searches, submitters wake nobody (no futex
        // call per task); the searcher spins, yielding the core, until work shows up. With tiny
        // tasks the next one usually arrives within microseconds, far less than a sleep + wake.
        ++searching_;
        mu_.unlock();
        // Once work shows up, give it a few more rounds to grow into a batch: taking tasks one
        // lock round-trip each is what makes a nearly empty queue slow.
        for (int i = 0, extra = 0; i < spin_rounds; ++i) {
          if (nonempty_.load(std::memory_order_relaxed) && ++extra > batch_rounds) break;
          cpu_relax(i);
        }
        mu_.lock();
        --searching_;
      }
      while (depth_locked() == 0) {
        if (stopping_) return;
        // Decided under mu_: a submitter that pushes after this sees us in idle_ and no
        // searcher, so it wakes us; one that pushed before, we have seen above.
        self.signaled = false;
        idle_.push_back(&self);
        while (!self.signaled) self.cv.wait(mu_);
      }
      // A fair share of the queue, so that other workers get some too.
      const std::size_t share =
          std::clamp<std::size_t>(depth_locked() / workers_.size(), 1, max_batch);
      n = 0;
      for (auto& r : rings_) {
        while (n < share && r.size > 0) batch[n++] = r.pop();
      }
      if (depth_locked() == 0) nonempty_.store(false, std::memory_order_relaxed);
      active_.fetch_add(1, std::memory_order_relaxed);
      wake_submitters = space_waiters_ > 0 && depth_locked() <= capacity_ / 2;
      // More work than this batch, nobody searching and a sleeping colleague: wake it too.
      if (depth_locked() > 0 && searching_ == 0 && !idle_.empty()) wake_one_locked();
      mu_.unlock();
      if (wake_submitters) space_cv_.notify_all();
      execute_batch(self, batch.data(), n);
      mu_.lock();
    }
  }

  // Wakes the most recently idle worker (its cache is warmest).
  void wake_one_locked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    worker* w = idle_.back();
    idle_.pop_back();
    w->signaled = true;
    w->cv.notify_one();
  }

  void execute_batch(worker& self, entry* batch, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      entry& e = batch[i];
      if (e.deadline != time_point::max() || e.sampled) {
        const time_point now = clock_.now();
        if (now >= e.deadline) {
          expired_.fetch_add(1, std::memory_order_relaxed);
          invoke(e.task, absl::DeadlineExceededError(
                             "sluice::offload: deadline passed while the task was queued"));
          continue;
        }
        if (e.sampled) {
          wait_hist_.record(std::chrono::duration_cast<std::chrono::nanoseconds>(now - e.enqueued));
        }
      }
      invoke(e.task, absl::OkStatus());
    }
    // Relaxed: a statistic; per worker so workers do not share the line.
    self.completed.fetch_add(n, std::memory_order_relaxed);
  }

  const offload_options options_;
  Clock clock_;
  const std::size_t capacity_;
  const std::uint64_t sample_mask_;

  // Whether the queue has tasks: a hint for searching workers (relaxed: they confirm under mu_).
  alignas(detail::cache_line_size) std::atomic<bool> nonempty_{false};
  // Relaxed statistics.
  alignas(detail::cache_line_size) std::atomic<std::size_t> active_{0};
  std::atomic<std::uint64_t> submitted_{0}, failed_{0}, rejected_{0}, expired_{0}, cancelled_{0};
  detail::offload_histogram wait_hist_;

  mutable detail::mutex mu_;
  detail::cond_var space_cv_;
  std::array<ring, 3> rings_ ABSL_GUARDED_BY(mu_);
  std::vector<worker*> idle_ ABSL_GUARDED_BY(mu_);
  std::size_t space_waiters_ ABSL_GUARDED_BY(mu_) = 0;
  std::size_t searching_ ABSL_GUARDED_BY(mu_) = 0;  // workers spinning for work
  std::uint64_t seq_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  detail::mutex join_mu_;
  std::vector<std::unique_ptr<worker>> workers_;  // fixed after construction
};

// The executor on std::chrono::steady_clock.
using offload_executor = basic_offload_executor<>;

}  // namespace sluice
