// sluice/detail/mutex.hpp
//
// Internal; not part of the public API. One small wrapper over the mutex sluice locks with, so
// that every lock in the library carries clang thread-safety annotations and one switch picks the
// implementation.
//
// `detail::mutex` is `absl::Mutex` in normal builds. Under ThreadSanitizer it is `std::mutex`:
// distribution builds of Abseil (Debian's among them) are not compiled with TSan, so the
// synchronisation inside absl::Mutex is invisible to it and every guarded access would be reported
// as a race. `pthread_mutex_t` is intercepted by TSan and keeps the reports meaningful. Define
// SLUICE_USE_STD_MUTEX to force the std implementation elsewhere too.
//
// Thread safety: as a mutex. `cond_var` works with either implementation.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "absl/base/thread_annotations.h"

#if !defined(SLUICE_USE_STD_MUTEX)
#if defined(__SANITIZE_THREAD__)
#define SLUICE_USE_STD_MUTEX 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SLUICE_USE_STD_MUTEX 1
#endif
#endif
#endif

#if !defined(SLUICE_USE_STD_MUTEX)
#include "absl/synchronization/mutex.h"
#endif

namespace sluice::detail {

// An exclusive mutex with thread-safety annotations. Not recursive.
class ABSL_LOCKABLE mutex {
 public:
  mutex() = default;
  mutex(const mutex&) = delete;
  mutex& operator=(const mutex&) = delete;

  // Blocks until the mutex is held by the caller.
  void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
#if defined(SLUICE_USE_STD_MUTEX)
    impl_.lock();
#else
    impl_.Lock();
#endif
  }

  // Releases the mutex; the caller must hold it.
  void unlock() ABSL_UNLOCK_FUNCTION() {
#if defined(SLUICE_USE_STD_MUTEX)
    impl_.unlock();
#else
    impl_.Unlock();
#endif
  }

  // Takes the mutex if it is free and returns whether it did.
  bool try_lock() ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true) {
#if defined(SLUICE_USE_STD_MUTEX)
    return impl_.try_lock();
#else
    return impl_.TryLock();
#endif
  }

 private:
#if defined(SLUICE_USE_STD_MUTEX)
  std::mutex impl_;
#else
  absl::Mutex impl_;
#endif
};

// Holds a `mutex` for the lifetime of the scope.
class ABSL_SCOPED_LOCKABLE mutex_lock {
 public:
  explicit mutex_lock(mutex& mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_.lock(); }
  ~mutex_lock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  mutex_lock(const mutex_lock&) = delete;
  mutex_lock& operator=(const mutex_lock&) = delete;

 private:
  mutex& mu_;
};

// A condition variable for `mutex`. Waits take the held mutex, release it while blocked and hold
// it again on return. Spurious wake-ups happen: callers loop on their condition.
class cond_var {
 public:
  // Blocks until notified (or spuriously woken). The caller must hold `mu`.
  void wait(mutex& mu) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { impl_.wait(mu); }

  // Blocks until notified or `deadline` on steady_clock passes; returns false on timeout.
  bool wait_until(mutex& mu, std::chrono::steady_clock::time_point deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return impl_.wait_until(mu, deadline) == std::cv_status::no_timeout;
  }

  // Blocks until notified or `timeout` of real time passes; returns false on timeout.
  template <class Rep, class Period>
  bool wait_for(mutex& mu, std::chrono::duration<Rep, Period> timeout)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    return impl_.wait_for(mu, timeout) == std::cv_status::no_timeout;
  }

  // Wakes one waiter.
  void notify_one() noexcept { impl_.notify_one(); }
  // Wakes every waiter.
  void notify_all() noexcept { impl_.notify_all(); }

 private:
  std::condition_variable_any impl_;
};

}  // namespace sluice::detail
