// sluice/detail/breaker_stripe.hpp
//
// Internal; not part of the public API. Contention-adaptive striping for the circuit breaker's and
// the health recorder's per-thread counters: a thread starts on the stripe `thread_stripe()` gives
// it and moves to another (pseudo-random) one whenever an update on its stripe meets another
// thread's, as java.util.concurrent.atomic.LongAdder does. Sequential stripe numbers collide as
// soon as threads come and go (a thread pool, a benchmark harness); this keeps two busy threads off
// one cache line after a handful of collisions.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "sluice/detail/cache_line.hpp"
#include "sluice/detail/random.hpp"

namespace sluice::detail {

// Returns the calling thread's current stripe hint (reduce it modulo a power of two).
inline std::size_t& stripe_hint() noexcept {
  thread_local std::size_t hint = thread_stripe();
  return hint;
}

// Moves the calling thread to another stripe after a collision. The thread-local's address salts
// the sequence so that two colliding threads do not move in lockstep.
inline void stripe_rehash() noexcept {
  std::size_t& hint = stripe_hint();
  hint = static_cast<std::size_t>(
      mix64(static_cast<std::uint64_t>(hint) ^ reinterpret_cast<std::uintptr_t>(&hint)));
}

// Adds `d` to a striped counter, detecting contention: an uncontended CAS costs what a fetch_add
// costs; a failed one means another thread is on this stripe, so the update falls back to
// fetch_add and the thread moves. Relaxed: the counters are statistics that publish nothing.
inline void striped_add(std::atomic<std::uint64_t>& counter, std::uint64_t d = 1) noexcept {
  std::uint64_t v = counter.load(std::memory_order_relaxed);
  if (counter.compare_exchange_strong(v, v + d, std::memory_order_relaxed)) return;
  counter.fetch_add(d, std::memory_order_relaxed);
  stripe_rehash();
}

}  // namespace sluice::detail
