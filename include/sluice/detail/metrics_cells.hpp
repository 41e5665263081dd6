// sluice/detail/metrics_cells.hpp
//
// Internal; not part of the public API. The striped storage behind sluice's metrics: every
// updating thread adds into "its" row of atomic words (picked with `thread_stripe()`), each row on
// its own cache lines, and a scrape sums the rows. This is what keeps counter increments and
// histogram observations free of shared cache lines and of locks.
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <new>
#include <thread>

#include "sluice/detail/cache_line.hpp"

namespace sluice::detail {

// Returns the stripe count metrics use when their options say 0: twice the hardware threads,
// rounded up to a power of two, at least 16 and at most 64. Twice the cores (and at least 16) so
// that threads which come and go (thread ids only grow) rarely land on a row another live thread
// uses; at most 64 to bound the memory of a metric (rows x 64 bytes for a counter).
inline std::size_t metrics_default_stripes() noexcept {
  static const std::size_t stripes = [] {
    const std::size_t hw = std::max<std::size_t>(std::thread::hardware_concurrency(), 1);
    return std::clamp<std::size_t>(next_pow2(2 * hw), 16, 64);
  }();
  return stripes;
}

// `stripes` rows of `width` zero-initialised atomic 64-bit words. Each row starts on a cache-line
// boundary and its length is rounded up to whole cache lines, so two rows never share a line.
// Thread safety: `local_row()` and the readers may be called concurrently; the words are atomics.
class striped_words {
 public:
  static constexpr std::size_t words_per_line = cache_line_size / sizeof(std::uint64_t);

  // Allocates the rows; `stripes` is rounded up to a power of two (0 means the default).
  striped_words(std::size_t stripes, std::size_t width)
      : stripes_(next_pow2(stripes == 0 ? metrics_default_stripes() : stripes)),
        stride_((std::max<std::size_t>(width, 1) + words_per_line - 1) / words_per_line *
                words_per_line),
        words_(static_cast<std::atomic<std::uint64_t>*>(
            ::operator new(stripes_ * stride_ * sizeof(std::uint64_t),
                           std::align_val_t{cache_line_size}))) {
    for (std::size_t i = 0; i < stripes_ * stride_; ++i) {
      new (&words_[i]) std::atomic<std::uint64_t>(0);
    }
  }

  ~striped_words() {
    // std::atomic<std::uint64_t> is trivially destructible: only the storage goes back.
    ::operator delete(static_cast<void*>(words_), std::align_val_t{cache_line_size});
  }

  striped_words(const striped_words&) = delete;
  striped_words& operator=(const striped_words&) = delete;

  // Returns the calling thread's row: the one its update path writes to.
  std::atomic<std::uint64_t>* local_row() noexcept {
    return words_ + (thread_stripe() & (stripes_ - 1)) * stride_;
  }

  // Returns row `i` (i < stripes()).
  const std::atomic<std::uint64_t>* row(std::size_t i) const noexcept {
    assert(i < stripes_);
    return words_ + i * stride_;
  }

  // Returns the sum of word `column` over every row (integer wrap-around on overflow).
  // Complexity: O(stripes()).
  std::uint64_t sum(std::size_t column) const noexcept {
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < stripes_; ++i) {
      // Relaxed: a scrape wants each word's latest value, not an ordering against other memory;
      // the words publish nothing but themselves.
      total += words_[i * stride_ + column].load(std::memory_order_relaxed);
    }
    return total;
  }

  // Returns the number of rows (a power of two).
  std::size_t stripes() const noexcept { return stripes_; }
  // Returns the distance between two rows, in words (a multiple of a cache line).
  std::size_t stride() const noexcept { return stride_; }

 private:
  std::size_t stripes_;
  std::size_t stride_;
  std::atomic<std::uint64_t>* words_;
};

// A fixed-size array of `T` (trivially copyable) on cache lines of its own: read-only data of the
// update path (histogram bounds) that must not share a line with memory other threads write.
template <class T>
class line_array {
 public:
  // Copies [first, first + n).
  line_array(const T* first, std::size_t n)
      : size_(n),
        data_(static_cast<T*>(::operator new(
            std::max<std::size_t>((n * sizeof(T) + cache_line_size - 1) / cache_line_size, 1) *
                cache_line_size,
            std::align_val_t{cache_line_size}))) {
    for (std::size_t i = 0; i < n; ++i) new (&data_[i]) T(first[i]);
  }
  ~line_array() { ::operator delete(static_cast<void*>(data_), std::align_val_t{cache_line_size}); }
  line_array(const line_array&) = delete;
  line_array& operator=(const line_array&) = delete;

  // Returns the elements.
  const T* data() const noexcept { return data_; }
  // Returns the number of elements.
  std::size_t size() const noexcept { return size_; }
  // Returns element `i`.
  const T& operator[](std::size_t i) const noexcept { return data_[i]; }

 private:
  std::size_t size_;
  T* data_;
};

// Adds `delta` to the double stored (as its bits) in `word`. A compare-exchange loop: the row is
// normally written by one thread only, so the first attempt succeeds.
inline void atomic_add_double(std::atomic<std::uint64_t>& word, double delta) noexcept {
  // Relaxed throughout: the sum is a statistic read on its own at scrape time; nothing else is
  // published through it. The CAS still makes concurrent adds (two threads sharing a row) exact.
  std::uint64_t old_bits = word.load(std::memory_order_relaxed);
  while (!word.compare_exchange_weak(
      old_bits, std::bit_cast<std::uint64_t>(std::bit_cast<double>(old_bits) + delta),
      std::memory_order_relaxed, std::memory_order_relaxed)) {
  }
}

}  // namespace sluice::detail
