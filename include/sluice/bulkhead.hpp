// sluice/bulkhead.hpp
//
// `sluice::bulkhead` caps how many calls to one dependency run at the same time, so a slow
// dependency cannot tie up every thread of the caller. A call holds a slot for its duration as an
// RAII `bulkhead::permit`. When all slots are taken, a call either fails fast or, if the bulkhead
// has a wait queue, waits in FIFO order until a slot frees, its deadline passes or the queue is
// full.
//
//   try_acquire()           never waits: a permit or bulkhead_full
//   acquire(deadline)       waits in the queue (if any) until the deadline
//   execute(fn, deadline)   acquire, run, release
//
// Fairness: slots freed while callers wait are handed directly to the oldest waiter, so a newcomer
// never overtakes the queue.
//
// Thread safety: all member functions may be called concurrently; a permit may be released on a
//                different thread than the one that acquired it. The bulkhead must outlive its
//                permits.
// Time: waits are judged on the injected clock (default steady_clock) through
//       `sluice::detail::wait_until`, so `sluice::testing::manual_clock` tests are exact.
// Errors: rejections are returned, never thrown, and never allocate: `bulkhead_rejection::full`
//         and `queue_full` (ResourceExhausted), `deadline_exceeded` (DeadlineExceeded).
// Performance: while nobody waits, acquire and release are one atomic CAS / decrement (lock-free,
//         with or without a queue). Waiting, and releasing while callers wait, take the mutex.
//
// Example:
//   sluice::bulkhead db_slots({.max_concurrent = 8, .max_queue = 32});
//   auto acquired = db_slots.acquire(sluice::deadline<>::after(clock, 50ms));
//   if (!acquired) return acquired.status();   // ResourceExhausted or DeadlineExceeded
//   run_query();                              // the permit is released at scope exit
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "sluice/deadline.hpp"
#include "sluice/detail/clock.hpp"
#include "sluice/detail/mutex.hpp"
#include "sluice/policy.hpp"

namespace sluice {

struct bulkhead_options {
  // Calls allowed to run at once. 16: a modest share of a typical thread pool; size it to what
  // the dependency can serve concurrently.
  std::size_t max_concurrent = 16;
  // Callers allowed to wait for a slot. 0 (no queue): failing fast is the safe default under
  // overload, since queued callers add latency and hold their own resources.
  std::size_t max_queue = 0;
};

// Why a bulkhead refused a slot.
enum class bulkhead_rejection : std::uint8_t {
  none = 0,
  full,               // every slot taken and no queue (ResourceExhausted)
  queue_full,         // every slot taken and the queue full (ResourceExhausted)
  deadline_exceeded,  // the deadline passed while waiting, or before (DeadlineExceeded)
};

template <class Clock = std::chrono::steady_clock>
class bulkhead {
 public:
  using clock_type = Clock;

  // A held slot; releases it when destroyed or `release()`d. Movable, not copyable.
  class permit {
   public:
    permit() noexcept = default;
    permit(permit&& other) noexcept : owner_(std::exchange(other.owner_, nullptr)) {}
    permit& operator=(permit&& other) noexcept {
      if (this != &other) {
        release();
        owner_ = std::exchange(other.owner_, nullptr);
      }
      return *this;
    }
    permit(const permit&) = delete;
    permit& operator=(const permit&) = delete;
    ~permit() { release(); }

    // Returns whether this permit holds a slot.
    explicit operator bool() const noexcept { return owner_ != nullptr; }

    // Gives the slot back (to the oldest waiter if any). Idempotent.
    void release() noexcept {
      if (owner_ != nullptr) std::exchange(owner_, nullptr)->release_slot();
    }

   private:
    friend class bulkhead;
    explicit permit(bulkhead* owner) noexcept : owner_(owner) {}
    bulkhead* owner_ = nullptr;
  };

  // The result of an acquisition: a permit or the reason it was refused.
  class acquire_result {
   public:
    // Returns whether a permit was obtained.
    explicit operator bool() const noexcept { return static_cast<bool>(permit_); }
    // Returns the permit (empty when refused).
    permit& get() noexcept { return permit_; }
    // Moves the permit out.
    permit take() noexcept { return std::move(permit_); }
    // Returns why it was refused (`none` when it was not).
    bulkhead_rejection rejection() const noexcept { return rejection_; }
    // Returns OK, ResourceExhausted or DeadlineExceeded. Allocates a message when refused.
    absl::Status status() const {
      switch (rejection_) {
        case bulkhead_rejection::none:
          return absl::OkStatus();
        case bulkhead_rejection::full:
          return absl::ResourceExhaustedError("sluice: bulkhead full");
        case bulkhead_rejection::queue_full:
          return absl::ResourceExhaustedError("sluice: bulkhead queue full");
        case bulkhead_rejection::deadline_exceeded:
          return absl::DeadlineExceededError("sluice: deadline passed waiting for the bulkhead");
      }
      return absl::UnknownError("sluice: bulkhead");
    }

   private:
    friend class bulkhead;
    acquire_result(permit p) noexcept : permit_(std::move(p)) {}
    acquire_result(bulkhead_rejection r) noexcept : rejection_(r) {}
    permit permit_;
    bulkhead_rejection rejection_ = bulkhead_rejection::none;
  };

  // Creates a bulkhead; `max_concurrent` is at least 1.
  explicit bulkhead(bulkhead_options opts = {}, Clock clock = Clock())
      : max_concurrent_(std::max<std::size_t>(1, opts.max_concurrent)),
        max_queue_(opts.max_queue),
        clock_(clock) {}

  bulkhead(const bulkhead&) = delete;
  bulkhead& operator=(const bulkhead&) = delete;

  // Takes a free slot without waiting; refuses with `full` when none is free or callers are
  // queued (so it never overtakes them). Lock-free.
  [[nodiscard]] acquire_result try_acquire() noexcept {
    if (try_take()) return permit(this);
    return bulkhead_rejection::full;
  }

  // Takes a slot, waiting in FIFO order (if the bulkhead has a queue) until `d`. Refuses with
  // `full` (no queue), `queue_full` or `deadline_exceeded`. Lock-free unless it has to wait.
  [[nodiscard]] acquire_result acquire(sluice::deadline<Clock> d = {}) ABSL_LOCKS_EXCLUDED(mu_) {
    if (d.expired(clock_)) return bulkhead_rejection::deadline_exceeded;
    if (try_take()) return permit(this);
    if (max_queue_ == 0) return bulkhead_rejection::full;
    detail::mutex_lock lock(mu_);
    if (queued_ >= max_queue_) return bulkhead_rejection::queue_full;
    waiter self;
    enqueue(&self);
    // A release that decremented in_use_ before seeing our waiting_ increment will not hand us
    // its slot (see release_slot): look for a free slot now that we are visible, if we are first.
    if (head_ == &self && take_free()) {
      unlink(&self);
      return permit(this);
    }
    if (d.is_infinite()) {
      while (!self.granted) cv_.wait(mu_);
    } else {
      detail::wait_until(clock_, cv_, mu_, d.time(), [&] { return self.granted; });
    }
    if (self.granted) return permit(this);  // the releaser counted the slot for us
    unlink(&self);
    return bulkhead_rejection::deadline_exceeded;
  }

  // Runs `fn` (taking nothing or a `call_context<Clock>&`) while holding a slot acquired by `d`.
  // Returns its normalised result, or ResourceExhausted / DeadlineExceeded when refused.
  template <class F>
  [[nodiscard]] auto execute(F&& fn, sluice::deadline<Clock> d = {}) {
    call_context<Clock> ctx(clock_, d);
    auto r = run(ctx, [&] { return invoke_callable(fn, ctx); });
    if (ctx.rejected() && !status_of(r).ok()) r = decltype(r)(to_status(ctx.reason()));
    return r;
  }

  // Pipeline stage: acquires by the context's deadline, runs `next`, releases.
  using sluice_policy = void;
  template <class Ctx, class Next>
  auto run(Ctx& ctx, Next&& next) -> std::invoke_result_t<Next&> {
    using R = std::invoke_result_t<Next&>;
    acquire_result a = acquire(ctx.deadline());
    if (!a) {
      return reject<R>(ctx, a.rejection() == bulkhead_rejection::deadline_exceeded
                                ? reason::deadline_exceeded
                                : reason::bulkhead_full);
    }
    return next();
  }

  // Returns the slots in use (a snapshot; relaxed: a statistic, not a synchronisation point).
  std::size_t in_use() const noexcept { return in_use_.load(std::memory_order_relaxed); }
  // Returns the callers waiting (a snapshot). Takes the mutex.
  std::size_t queued() const ABSL_LOCKS_EXCLUDED(mu_) {
    detail::mutex_lock lock(mu_);
    return queued_;
  }
  // Returns the maximum number of concurrent calls.
  std::size_t max_concurrent() const noexcept { return max_concurrent_; }
  // Returns the clock.
  const Clock& clock() const noexcept { return clock_; }

 private:
  // A caller waiting for a slot: a node of an intrusive FIFO list on the waiter's stack, so that
  // waiting allocates nothing.
  struct waiter {
    waiter* prev = nullptr;
    waiter* next = nullptr;
    bool granted = false;
  };

  void enqueue(waiter* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    w->prev = tail_;
    if (tail_ != nullptr) {
      tail_->next = w;
    } else {
      head_ = w;
    }
    tail_ = w;
    ++queued_;
    // seq_cst: the store half of the Dekker pair with release_slot (see there).
    waiting_.fetch_add(1, std::memory_order_seq_cst);
  }

  void unlink(waiter* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (w->prev != nullptr) {
      w->prev->next = w->next;
    } else {
      head_ = w->next;
    }
    if (w->next != nullptr) {
      w->next->prev = w->prev;
    } else {
      tail_ = w->prev;
    }
    --queued_;
    waiting_.fetch_sub(1, std::memory_order_seq_cst);
  }

  // Takes a free slot if nobody is waiting (so a newcomer never overtakes the queue).
  bool try_take() noexcept { return waiting_.load(std::memory_order_seq_cst) == 0 && take_free(); }

  // Takes a free slot regardless of waiters. seq_cst on success: it pairs with the release's
  // decrement (the previous holder's work happens-before ours) and takes part in the Dekker
  // protocol of release_slot. Relaxed on failure: nothing was taken.
  bool take_free() noexcept {
    std::size_t cur = in_use_.load(std::memory_order_relaxed);
    do {
      if (cur >= max_concurrent_) return false;
    } while (!in_use_.compare_exchange_weak(cur, cur + 1, std::memory_order_seq_cst,
                                            std::memory_order_relaxed));
    return true;
  }

  // Gives a slot back. Lock-free when nobody waits. When callers wait, re-takes a free slot
  // under the mutex and hands it to the oldest waiter.
  //
  // Why no waiter is forgotten: the releaser decrements in_use_ and then reads waiting_; a waiter
  // increments waiting_ and then (as head) looks for a free slot, all seq_cst. In the single total
  // order either the releaser sees the waiter (and hands a slot over below) or the waiter sees
  // the freed slot (and takes it in `acquire`).
  void release_slot() noexcept ABSL_LOCKS_EXCLUDED(mu_) {
    in_use_.fetch_sub(1, std::memory_order_seq_cst);
    if (waiting_.load(std::memory_order_seq_cst) == 0) return;
    detail::mutex_lock lock(mu_);
    waiter* w = head_;
    // The freed slot may already be gone (to the head itself or a newcomer that raced the
    // waiter's enqueue): then the next release serves the head.
    if (w == nullptr || !take_free()) return;
    unlink(w);
    w->granted = true;  // hand the re-taken slot over
    // Notified with the lock held: once unlocked, the granted waiter may return, release and
    // destroy the bulkhead (and this condition variable) before a later notify would run.
    cv_.notify_all();
  }

  const std::size_t max_concurrent_;
  const std::size_t max_queue_;
  Clock clock_;
  // Slots in use, and callers queued (written under mu_, read lock-free): the two words of the
  // lock-free fast path; see release_slot for their ordering.
  std::atomic<std::size_t> in_use_{0};
  std::atomic<std::size_t> waiting_{0};
  mutable detail::mutex mu_;
  detail::cond_var cv_;
  waiter* head_ ABSL_GUARDED_BY(mu_) = nullptr;
  waiter* tail_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::size_t queued_ ABSL_GUARDED_BY(mu_) = 0;
};

// A pipeline stage that uses a bulkhead owned elsewhere (shared by several pipelines).
template <class Clock>
class bulkhead_ref {
 public:
  using sluice_policy = void;
  using clock_type = Clock;

  // Refers to `b`, which must outlive this object.
  explicit bulkhead_ref(bulkhead<Clock>& b) noexcept : b_(&b) {}

  // Runs `next` inside the referenced bulkhead.
  template <class Ctx, class Next>
  auto run(Ctx& ctx, Next&& next) -> std::invoke_result_t<Next&> {
    return b_->run(ctx, std::forward<Next>(next));
  }

  // Returns the referenced bulkhead's clock.
  const Clock& clock() const noexcept { return b_->clock(); }
  // Returns the referenced bulkhead.
  bulkhead<Clock>& get() const noexcept { return *b_; }

 private:
  bulkhead<Clock>* b_;
};

}  // namespace sluice
