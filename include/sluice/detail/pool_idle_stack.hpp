// sluice/detail/pool_idle_stack.hpp
//
// Internal; not part of the public API. The lock-free stack of idle connection slots that makes a
// pool's uncontended acquire + release a pair of compare-and-swaps instead of a mutex round trip.
//
// The stack holds slot indices (not pointers) into an array the pool owns. Its head is one 64-bit
// word: the top index (21 bits), the number of entries (21 bits, so `size()` is exact and free) and
// a tag (22 bits) bumped by every operation against ABA. Each slot carries its `next` link.
//
// Thread safety: `push`, `pop` and `size` may be called concurrently.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace sluice::detail {

class pool_idle_stack {
 public:
  // The index that means "no slot".
  static constexpr std::uint32_t nil = (1u << 21) - 1;
  // The largest number of slots the stack can index.
  static constexpr std::size_t max_slots = nil;

  // Creates an empty stack over `slots` slot indices [0, slots).
  explicit pool_idle_stack(std::size_t slots)
      : next_(std::make_unique<std::atomic<std::uint32_t>[]>(slots)) {
    for (std::size_t i = 0; i < slots; ++i) next_[i].store(nil, std::memory_order_relaxed);
  }

  // Pushes `index` (a slot the caller owns) on top. Seq_cst on the successful CAS: the pool pairs
  // it with a seq_cst read of its waiter count so that either this push sees a waiter that just
  // queued or that waiter's pop sees this slot (the store-buffering pattern needs seq_cst on both
  // sides). It also releases the caller's writes to the slot to whoever pops it.
  void push(std::uint32_t index) noexcept {
    std::uint64_t head = head_.load(std::memory_order_relaxed);
    for (;;) {
      next_[index].store(top(head), std::memory_order_relaxed);
      const std::uint64_t desired = make(index, count(head) + 1, tag(head) + 1);
      if (head_.compare_exchange_weak(head, desired, std::memory_order_seq_cst,
                                      std::memory_order_relaxed)) {
        return;
      }
    }
  }

  // Pops the top slot and returns its index, or `nil` when empty. Seq_cst load and CAS: see
  // `push`; the acquire half makes the pusher's writes to the slot visible to the caller.
  std::uint32_t pop() noexcept {
    std::uint64_t head = head_.load(std::memory_order_seq_cst);
    for (;;) {
      const std::uint32_t index = top(head);
      if (index == nil) return nil;
      // Relaxed is enough: if another thread popped and re-pushed `index` meanwhile, the tag in
      // the head changed and the CAS below fails, discarding this possibly stale link.
      const std::uint32_t next = next_[index].load(std::memory_order_relaxed);
      const std::uint64_t desired = make(next, count(head) - 1, tag(head) + 1);
      if (head_.compare_exchange_weak(head, desired, std::memory_order_seq_cst,
                                      std::memory_order_seq_cst)) {
        return index;
      }
    }
  }

  // Returns the number of slots on the stack (a snapshot). Relaxed: a statistic.
  std::size_t size() const noexcept { return count(head_.load(std::memory_order_relaxed)); }

 private:
  static constexpr std::uint32_t top(std::uint64_t h) noexcept {
    return static_cast<std::uint32_t>(h & nil);
  }
  static constexpr std::uint32_t count(std::uint64_t h) noexcept {
    return static_cast<std::uint32_t>((h >> 21) & nil);
  }
  static constexpr std::uint64_t tag(std::uint64_t h) noexcept { return h >> 42; }
  static constexpr std::uint64_t make(std::uint32_t index, std::uint32_t n,
                                      std::uint64_t t) noexcept {
    return static_cast<std::uint64_t>(index) | (static_cast<std::uint64_t>(n & nil) << 21) |
           ((t & ((std::uint64_t{1} << 22) - 1)) << 42);
  }

  std::atomic<std::uint64_t> head_{make(nil, 0, 0)};
  std::unique_ptr<std::atomic<std::uint32_t>[]> next_;
};

}  // namespace sluice::detail
