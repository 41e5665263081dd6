// sluice/cache/sweeper.hpp
//
// `sluice::cache_sweeper` is the one background thread of a process that removes expired entries
// from every `sluice::cache` (see <sluice/cache.hpp>). Caches register themselves when constructed
// with `cache_options::background_sweep` (the default) and unregister in their destructor; the
// thread starts with the first registration and stops (and is joined) when the last cache goes,
// so a program with no cache has no thread and a program that destroys its caches exits cleanly.
//
// Every tick (`tick_interval`, 50 ms) the thread asks each cache to sweep; a cache sweeps its
// shards one at a time, taking each shard's lock for a bounded batch of entries, so a reader never
// waits behind a long sweep. Work left over (a burst of millions of expiries) continues next tick.
//
// Thread safety: all member functions may be called concurrently.
// Time: the tick is real time (the sweeper only drives caches; each cache judges expiry on its own
//       clock, so a cache on a manual clock expires entries when its clock is advanced and then
//       the next tick sweeps them).
// Errors: none. If the thread cannot be started (std::system_error), registration still succeeds
//         and caches keep working; expired entries are then removed on writes and by cleanup().
//
// Example: nothing to do; a cache uses it unless told not to:
//   sluice::cache<std::string, int> c({.max_entries = 1000, .expire_after_write = 30s});
//   ... expired entries disappear within about a tick of their expiry ...
#pragma once

#include <chrono>
#include <cstdint>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "sluice/detail/mutex.hpp"

namespace sluice {

namespace detail {

// What the sweeper calls on a registered cache. Internal.
class cache_sweepable {
 public:
  // Removes up to about `budget` expired entries; returns whether nothing is left to do.
  virtual bool sweep_some(std::uint64_t budget) = 0;

 protected:
  ~cache_sweepable() = default;
};

}  // namespace detail

class cache_sweeper {
 public:
  // How often the thread wakes: often enough that an expired entry lingers for at most ~0.1 s
  // beyond the wheel's 67 ms resolution, rarely enough to cost nothing measurable when idle.
  static constexpr std::chrono::milliseconds tick_interval{50};
  // How many entries one tick may visit in one cache: a bound on the work per tick, so a burst of
  // expiries is spread over ticks instead of stalling the thread (each shard lock is held for at
  // most cache::sweep_batch entries of that).
  static constexpr std::uint64_t tick_budget = 65536;

  // Returns the process's sweeper (never destroyed, so caches with static storage duration can
  // still unregister during exit).
  static cache_sweeper& instance() {
    static cache_sweeper* const sweeper = new cache_sweeper();
    return *sweeper;
  }

  cache_sweeper(const cache_sweeper&) = delete;
  cache_sweeper& operator=(const cache_sweeper&) = delete;

  // Registers `c`, starting the thread if it is not running. Takes the registry lock.
  void add(detail::cache_sweepable* c) ABSL_LOCKS_EXCLUDED(mu_) {
    detail::mutex_lock lock(mu_);
    clients_.push_back(c);
    if (!thread_.joinable()) {
      const std::uint64_t generation = generation_;
      try {
        thread_ = std::thread([this, generation] { run(generation); });
      } catch (const std::system_error&) {
        // No thread: caches still expire entries lazily (writes, cleanup()).
      }
    }
  }

  // Unregisters `c`, first waiting for a sweep of `c` in progress to finish; stops and joins the
  // thread when `c` was the last cache. Must not be called from a removal listener of `c`
  // running on the sweeper thread.
  void remove(detail::cache_sweepable* c) ABSL_LOCKS_EXCLUDED(mu_) {
    std::thread to_join;
    {
      detail::mutex_lock lock(mu_);
      while (sweeping_ == c) cv_.wait(mu_);
      for (std::size_t i = 0; i < clients_.size(); ++i) {
        if (clients_[i] == c) {
          clients_.erase(clients_.begin() + static_cast<std::ptrdiff_t>(i));
          break;
        }
      }
      if (clients_.empty() && thread_.joinable() &&
          thread_.get_id() != std::this_thread::get_id()) {
        ++generation_;
        to_join = std::move(thread_);
        cv_.notify_all();
      }
    }
    if (to_join.joinable()) to_join.join();
  }

  // Returns whether the background thread is running.
  bool running() const ABSL_LOCKS_EXCLUDED(mu_) {
    detail::mutex_lock lock(mu_);
    return thread_.joinable();
  }

  // Returns how many ticks the thread has completed since the process started.
  std::uint64_t ticks() const ABSL_LOCKS_EXCLUDED(mu_) {
    detail::mutex_lock lock(mu_);
    return ticks_;
  }

 private:
  cache_sweeper() = default;

  void run(std::uint64_t generation) ABSL_LOCKS_EXCLUDED(mu_) {
    detail::mutex_lock lock(mu_);
    while (generation_ == generation) {
      // Sweep each cache with the registry unlocked, so registering never waits for a sweep;
      // `sweeping_` makes remove() wait for the one cache being swept.
      for (std::size_t i = 0; i < clients_.size() && generation_ == generation; ++i) {
        detail::cache_sweepable* c = clients_[i];
        sweeping_ = c;
        mu_.unlock();
        c->sweep_some(tick_budget);
        mu_.lock();
        sweeping_ = nullptr;
        cv_.notify_all();
      }
      ++ticks_;
      cv_.notify_all();
      if (generation_ != generation) break;
      cv_.wait_for(mu_, tick_interval);
    }
  }

  mutable detail::mutex mu_;
  detail::cond_var cv_;
  std::vector<detail::cache_sweepable*> clients_ ABSL_GUARDED_BY(mu_);
  detail::cache_sweepable* sweeping_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::thread thread_ ABSL_GUARDED_BY(mu_);
  std::uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  std::uint64_t ticks_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace sluice
