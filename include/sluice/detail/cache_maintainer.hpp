// sluice/detail/cache_maintainer.hpp
//
// Internal; not part of the public API. The process-wide thread that replays the caches' read
// buffers into their eviction policies (cache_options::maintenance = background). It exists so a
// get() only notes its hit in a per-thread buffer and returns: the policy's work for that hit (a
// frequency-sketch update and an LRU move, each a cache miss over a large cache) runs here, as
// Caffeine runs it on its executor, instead of on the reader every 16th hit.
//
// A cache asks for a pass with schedule() when one of its buffers is half full; the thread drains
// every shard the cache marked (cache_maintainable::maintain()), one cache at a time, in the order
// asked. After a pass with nothing left to do it polls briefly (yielding the CPU) before it
// sleeps, so a steady stream of passes costs the readers no wake-up system call; a reader that
// finds it asleep wakes it.
//
// The thread starts with the first cache that registers and stops (joined) when the last one
// unregisters. The queue is intrusive (a link in each cache): scheduling never allocates.
//
// Thread safety: all member functions may be called concurrently.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <thread>
#include <utility>

#include "sluice/detail/mutex.hpp"

namespace sluice::detail {

class cache_maintainable {
 public:
  // Replays what the cache's readers buffered. Called on the maintainer's thread, without any of
  // the maintainer's locks.
  virtual void maintain() = 0;

  // True from a schedule() until the maintainer starts the pass it asked for (so a busy cache
  // asks once per pass, not once per full buffer). seq_cst: see cache::request_maintenance.
  std::atomic<bool> maintenance_queued{false};

 protected:
  ~cache_maintainable() = default;

 private:
  friend class cache_maintainer;
  // The next cache in the maintainer's queue, whether this one is in it, and whether it is
  // registered (all under the maintainer's lock).
  cache_maintainable* next_queued_ = nullptr;
  bool in_queue_ = false;
  // Between add() and remove(): only then may it be queued.
  bool registered_ = false;
};

class cache_maintainer {
 public:
  // Rounds of std::this_thread::yield() the idle thread polls for new work before it sleeps:
  // ~50-100 us, longer than the gap between the passes of a cache under steady load (so those
  // never pay a wake-up), short enough that an idle process does not spin measurably.
  static constexpr int idle_polls = 128;

  // Returns the process's maintainer (never destroyed: caches of static storage duration may
  // still unregister during exit).
  static cache_maintainer& instance() {
    static cache_maintainer* const maintainer = new cache_maintainer();
    return *maintainer;
  }

  cache_maintainer(const cache_maintainer&) = delete;
  cache_maintainer& operator=(const cache_maintainer&) = delete;

  // Registers `c`, starting the thread if it is not running. Returns false when no thread can
  // be started (the cache then replays its buffers itself); `c` is registered anyway.
  bool add(cache_maintainable* c) ABSL_LOCKS_EXCLUDED(mu_) {
    detail::mutex_lock lock(mu_);
    ++users_;
    c->registered_ = true;
    return start_locked();
  }

  // Unregisters `c`: waits for a pass in progress, then drops its queued pass; with the last
  // cache, stops and joins the thread. `c`'s readers must have stopped (nothing queues it again).
  void remove(cache_maintainable* c) ABSL_LOCKS_EXCLUDED(mu_) {
    std::thread to_join;
    {
      detail::mutex_lock lock(mu_);
      // First wait for its pass: a pass may queue the cache again (see cache::maintain()).
      while (running_ == c) cv_.wait(mu_);
      c->registered_ = false;
      if (c->in_queue_) {
        cache_maintainable** link = &head_;
        while (*link != c) link = &(*link)->next_queued_;
        *link = c->next_queued_;
        if (tail_ == c) tail_ = head_ == nullptr ? nullptr : find_tail();
        c->in_queue_ = false;
        c->next_queued_ = nullptr;
      }
      if (--users_ == 0 && thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) {
        ++generation_;
        to_join = std::move(thread_);
        cv_.notify_all();
      }
    }
    if (to_join.joinable()) to_join.join();
  }

  // Queues a pass over `c` (registered; its maintenance_queued set by the caller). Returns false
  // when there is no thread (the caller then replays its buffers itself). Never allocates.
  bool schedule(cache_maintainable* c) ABSL_LOCKS_EXCLUDED(mu_) {
    detail::mutex_lock lock(mu_);
    if (!thread_.joinable() || !c->registered_) return false;
    if (c->in_queue_) return true;
    c->in_queue_ = true;
    c->next_queued_ = nullptr;
    if (tail_ == nullptr) {
      head_ = c;
    } else {
      tail_->next_queued_ = c;
    }
    tail_ = c;
    // Release: the polling thread's acquire load sees the queue change once it takes the lock.
    work_.store(true, std::memory_order_release);
    if (sleeping_) cv_.notify_all();
    return true;
  }

  // Returns whether the thread is running (for tests).
  bool running() const ABSL_LOCKS_EXCLUDED(mu_) {
    detail::mutex_lock lock(mu_);
    return thread_.joinable();
  }

  // Returns how many passes the thread has completed since the process started (for tests).
  std::uint64_t passes() const ABSL_LOCKS_EXCLUDED(mu_) {
    detail::mutex_lock lock(mu_);
    return passes_;
  }

 private:
  cache_maintainer() = default;

  bool start_locked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (thread_.joinable()) return true;
    const std::uint64_t generation = generation_;
    try {
      thread_ = std::thread([this, generation] { run(generation); });
    } catch (...) {
      // std::system_error (no thread) or std::bad_alloc: caches replay their buffers themselves.
      return false;
    }
    return true;
  }

  cache_maintainable* find_tail() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    cache_maintainable* t = head_;
    while (t->next_queued_ != nullptr) t = t->next_queued_;
    return t;
  }

  void run(std::uint64_t generation) ABSL_LOCKS_EXCLUDED(mu_) {
    detail::mutex_lock lock(mu_);
    for (;;) {
      if (head_ == nullptr && generation_ == generation) {
        // Poll a little before sleeping (see idle_polls).
        mu_.unlock();
        for (int i = 0; i < idle_polls && !work_.load(std::memory_order_acquire); ++i) {
          std::this_thread::yield();
        }
        mu_.lock();
        while (head_ == nullptr && generation_ == generation) {
          sleeping_ = true;
          cv_.wait(mu_);
          sleeping_ = false;
        }
      }
      if (generation_ != generation) return;
      cache_maintainable* c = head_;
      head_ = c->next_queued_;
      if (head_ == nullptr) {
        tail_ = nullptr;
        work_.store(false, std::memory_order_relaxed);
      }
      c->next_queued_ = nullptr;
      c->in_queue_ = false;
      running_ = c;
      mu_.unlock();
      // seq_cst: ordered before the pass reads the cache's marks (see the cache's side).
      c->maintenance_queued.store(false, std::memory_order_seq_cst);
      c->maintain();
      mu_.lock();
      running_ = nullptr;
      ++passes_;
      cv_.notify_all();
    }
  }

  mutable detail::mutex mu_;
  detail::cond_var cv_;
  // The queue of caches that asked for a pass (intrusive, oldest first).
  cache_maintainable* head_ ABSL_GUARDED_BY(mu_) = nullptr;
  cache_maintainable* tail_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::uint64_t passes_ ABSL_GUARDED_BY(mu_) = 0;
  // The cache whose pass is running (remove() waits for it).
  cache_maintainable* running_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::size_t users_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_ ABSL_GUARDED_BY(mu_);
  std::uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  // Whether the thread waits on cv_ (schedule() wakes it only then).
  bool sleeping_ ABSL_GUARDED_BY(mu_) = false;
  // Whether the queue may be non-empty: what the idle thread polls without the lock.
  std::atomic<bool> work_{false};
};

}  // namespace sluice::detail
