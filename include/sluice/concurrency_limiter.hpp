// sluice/concurrency_limiter.hpp
//
// `sluice::concurrency_limiter` caps how many calls are in flight at once (Little's law: with a
// latency L, a cap of N bounds throughput to N / L and, more usefully, bounds the queue a slow
// dependency can build up in this process). A call takes a `permit` with `try_acquire()`; the
// permit gives its slot back when destroyed (RAII) or on `release()`. It never waits: when the cap
// is reached the caller is refused at once (pair it with sluice::bulkhead for a bounded wait
// queue, or with sluice::adaptive_limiter to learn the cap from latency).
//
// Thread safety: all member functions may be called concurrently; a permit is used by one thread
//   at a time and may be released on a different thread than the one that acquired it.
// Time: none.
// Errors: a refusal is an empty std::optional; bad options are InvalidArgument from `create()`.
//   Nothing throws or allocates.
//
// Example:
//   sluice::concurrency_limiter inflight({.limit = 64});
//   auto permit = inflight.try_acquire();
//   if (!permit) return reply_503();
//   ... the call; the permit releases its slot at the end of the scope ...
#pragma once

#include <atomic>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sluice {

class concurrency_limiter {
 public:
  struct options {
    // The most calls in flight at once. No usable default (it depends on the dependency's
    // capacity); 0 is rejected by `create()`.
    std::size_t limit = 0;
  };

  // One admitted call's slot: given back when destroyed or released. Movable, not copyable. The
  // limiter must outlive its permits.
  class permit {
   public:
    permit(permit&& o) noexcept : owner_(std::exchange(o.owner_, nullptr)) {}
    permit& operator=(permit&& o) noexcept {
      if (this != &o) {
        release();
        owner_ = std::exchange(o.owner_, nullptr);
      }
      return *this;
    }
    permit(const permit&) = delete;
    permit& operator=(const permit&) = delete;
    ~permit() { release(); }

    // Gives the slot back now (idempotent).
    void release() noexcept {
      if (owner_ != nullptr) std::exchange(owner_, nullptr)->release_one();
    }

   private:
    friend class concurrency_limiter;
    explicit permit(concurrency_limiter* owner) noexcept : owner_(owner) {}
    concurrency_limiter* owner_;
  };

  // Returns a limiter, or InvalidArgument when limit is 0.
  static absl::StatusOr<std::unique_ptr<concurrency_limiter>> create(const options& opts) {
    if (opts.limit == 0) {
      return absl::InvalidArgumentError(std::string("concurrency_limiter: limit must be >= 1"));
    }
    return std::make_unique<concurrency_limiter>(opts);
  }

  // Creates a limiter. Precondition: limit >= 1 (0 is treated as 1).
  explicit concurrency_limiter(const options& opts) noexcept
      : limit_(opts.limit == 0 ? 1 : opts.limit) {}

  concurrency_limiter(const concurrency_limiter&) = delete;
  concurrency_limiter& operator=(const concurrency_limiter&) = delete;

  // Takes a slot if fewer than `limit` calls are in flight. Lock-free (one CAS loop).
  std::optional<permit> try_acquire() noexcept { return try_acquire_below(limit()); }

  // Takes a slot if fewer than `cap` calls are in flight (cap <= limit: a priority share).
  std::optional<permit> try_acquire_below(std::size_t cap) noexcept {
    // Relaxed: the counter guards no other data; the CAS alone keeps it within the cap.
    std::size_t cur = in_flight_.load(std::memory_order_relaxed);
    do {
      if (cur >= cap) return std::nullopt;
    } while (!in_flight_.compare_exchange_weak(cur, cur + 1, std::memory_order_relaxed,
                                               std::memory_order_relaxed));
    return permit(this);
  }

  // Changes the cap. Calls already in flight above a lowered cap finish normally; new calls are
  // refused until the count drops below it. limit 0 is treated as 1.
  void set_limit(std::size_t limit) noexcept {
    // Relaxed: a racing try_acquire may use the old or the new cap, either is acceptable.
    limit_.store(limit == 0 ? 1 : limit, std::memory_order_relaxed);
  }

  // Returns the cap.
  std::size_t limit() const noexcept { return limit_.load(std::memory_order_relaxed); }

  // Returns the calls in flight now.
  std::size_t in_flight() const noexcept { return in_flight_.load(std::memory_order_relaxed); }

 private:
  void release_one() noexcept { in_flight_.fetch_sub(1, std::memory_order_relaxed); }

  std::atomic<std::size_t> limit_;
  std::atomic<std::size_t> in_flight_{0};
};

}  // namespace sluice
