// sluice/detail/cache_refresher.hpp
//
// Internal; not part of the public API. The default executor of the caches' background reloads
// (refresh-ahead, stale-while-revalidate): one process-wide worker thread with a bounded queue. It
// exists so a burst of refreshes costs one queued task each instead of one thread each, and so a
// backend that stalls cannot make the process spawn threads without bound.
//
// The thread starts with the first refresh submitted while a cache that may refresh is registered
// (so caches that never refresh cost no thread), and stops (and is joined) when the last one
// unregisters, after running what is queued. Reloads run one at a time, in order: a
// loader that blocks delays the other refreshes (never the callers, who are served the current
// value); a cache that needs more supplies its own executor (cache_options::refresh_executor).
//
// Thread safety: all member functions may be called concurrently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <system_error>
#include <thread>
#include <utility>

#include "absl/functional/any_invocable.h"

#include "sluice/detail/mutex.hpp"

namespace sluice::detail {

class cache_refresher {
 public:
  // Reloads waiting at most: 1024 pending reloads is far beyond a healthy backend's backlog; past
  // it a stalled backend would only pile up work, so further refreshes are skipped (the entries
  // keep serving their current values and are refreshed by a later hit).
  static constexpr std::size_t queue_capacity = 1024;

  // Returns the process's refresher (never destroyed, so caches of static storage duration can
  // still unregister during exit).
  static cache_refresher& instance() {
    static cache_refresher* const refresher = new cache_refresher();
    return *refresher;
  }

  cache_refresher(const cache_refresher&) = delete;
  cache_refresher& operator=(const cache_refresher&) = delete;

  // Registers a user (the thread starts with the first submit()).
  void add() ABSL_LOCKS_EXCLUDED(mu_) {
    detail::mutex_lock lock(mu_);
    ++users_;
  }

  // Unregisters a user; with the last one, runs what is queued, then stops and joins the thread.
  // Must not be called from a reload.
  void remove() ABSL_LOCKS_EXCLUDED(mu_) {
    std::thread to_join;
    {
      detail::mutex_lock lock(mu_);
      if (--users_ == 0 && thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) {
        ++generation_;
        to_join = std::move(thread_);
        cv_.notify_all();
      }
    }
    if (to_join.joinable()) to_join.join();
  }

  // Queues `task`, starting the thread if it is not running; returns false (leaving `task`
  // untouched) when the queue is full, no cache is registered or no thread can be started. Never
  // runs the task on the calling thread.
  bool submit(absl::AnyInvocable<void()>&& task) ABSL_LOCKS_EXCLUDED(mu_) {
    detail::mutex_lock lock(mu_);
    if (users_ == 0 || queue_.size() >= queue_capacity) return false;
    if (!thread_.joinable()) {
      const std::uint64_t generation = generation_;
      try {
        thread_ = std::thread([this, generation] { run(generation); });
      } catch (const std::system_error&) {
        return false;  // no thread: the refresh is skipped
      }
    }
    queue_.push_back(std::move(task));
    cv_.notify_one();
    return true;
  }

 private:
  cache_refresher() = default;

  void run(std::uint64_t generation) ABSL_LOCKS_EXCLUDED(mu_) {
    detail::mutex_lock lock(mu_);
    for (;;) {
      while (queue_.empty() && generation_ == generation) cv_.wait(mu_);
      if (queue_.empty()) return;
      absl::AnyInvocable<void()> task = std::move(queue_.front());
      queue_.pop_front();
      mu_.unlock();
      task();
      task = nullptr;
      mu_.lock();
    }
  }

  detail::mutex mu_;
  detail::cond_var cv_;
  std::deque<absl::AnyInvocable<void()>> queue_ ABSL_GUARDED_BY(mu_);
  std::size_t users_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_ ABSL_GUARDED_BY(mu_);
  std::uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace sluice::detail
