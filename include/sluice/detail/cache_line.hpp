// sluice/detail/cache_line.hpp
//
// Internal; not part of the public API. Padding and striping helpers for lock-free hot paths:
// state that different threads update must not share a cache line, or every update becomes a
// cross-core transfer.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>

namespace sluice::detail {

// 64 bytes: the line size of every x86-64 and most AArch64 cores. Not
// std::hardware_destructive_interference_size, whose value GCC warns may change between compiler
// versions (an ABI hazard in a header-only library).
inline constexpr std::size_t cache_line_size = 64;

// A `T` alone on its own cache line(s).
template <class T>
struct alignas(cache_line_size) padded {
  T value{};
};

// Returns a small, stable number for the calling thread: 0 for the first thread that asks, 1 for
// the next, and so on. Striped structures index their cells with it (modulo their size), so a
// thread keeps hitting the same cell and two threads rarely share one.
inline std::size_t thread_stripe() noexcept {
  // Relaxed is enough: the counter only hands out distinct numbers; nothing is published with it.
  static std::atomic<std::size_t> next{0};
  thread_local const std::size_t mine = next.fetch_add(1, std::memory_order_relaxed);
  return mine;
}

// Returns the smallest power of two >= n (n >= 1).
constexpr std::size_t next_pow2(std::size_t n) noexcept {
  std::size_t p = 1;
  while (p < n) p <<= 1;
  return p;
}

}  // namespace sluice::detail
