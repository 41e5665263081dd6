// sluice/detail/metrics_cells.hpp
//
// Internal; not part of the public API. The per-thread storage behind sluice's metrics: each
// updating thread adds into "its" row of atomic words, each row on cache lines of its own, and a
// scrape sums the rows. This is what keeps counter increments and histogram observations free of
// locks and of cache lines shared with other writers.
//
// Rows come in two kinds:
//   - exclusive rows, one per *metrics slot*. A thread takes a process-wide slot (0..63, lowest
//     free) the first time it updates any metric and gives it back when it exits. While it holds
//     slot s, it is the only writer of row s of every metric, so it updates with a plain atomic
//     load and store: no locked instruction. A slot handed to a new thread was released with a
//     release operation and taken with an acquire one, so the new owner continues from the last
//     value the old one wrote.
//   - a few shared rows for threads without an exclusive row (more live updating threads than the
//     metric's exclusive rows, or than 64); they pick one with `thread_stripe()` and update it
//     with atomic read-modify-writes, exact however many threads share it.
//
// Caveat of the exclusive rows: an update is not async-signal-safe. A signal handler that updates
// a metric while the thread it interrupted is updating the same metric may lose one of the two
// updates: do not update metrics from signal handlers.
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

// The most metrics slots (bits of one 64-bit word).
inline constexpr std::uint32_t max_metrics_slots = 64;
// A thread that has not asked for a slot yet.
inline constexpr std::uint32_t metrics_slot_unassigned = 0xFFFFFFFEu;
// A thread that found every slot taken (or is exiting): it uses the shared rows.
inline constexpr std::uint32_t metrics_slot_none = 0xFFFFFFFFu;

// The calling thread's slot. Constant-initialised and trivially destructible, so reading it is a
// single thread-local load, valid even during the thread's own exit.
inline thread_local std::uint32_t metrics_thread_slot = metrics_slot_unassigned;

// Returns the process-wide bitmap of slots held by live threads.
inline std::atomic<std::uint64_t>& metrics_slot_bitmap() noexcept {
  static std::atomic<std::uint64_t> bits{0};
  return bits;
}

// Gives the calling thread's slot back when the thread exits.
struct metrics_slot_releaser {
  metrics_slot_releaser() = default;
  metrics_slot_releaser(const metrics_slot_releaser&) = delete;
  metrics_slot_releaser& operator=(const metrics_slot_releaser&) = delete;
  ~metrics_slot_releaser() {
    const std::uint32_t slot = metrics_thread_slot;
    // From here on the thread (its remaining thread_local destructors) uses the shared rows.
    metrics_thread_slot = metrics_slot_none;
    if (slot < max_metrics_slots) {
      // Release: every plain store this thread made to its exclusive rows happens-before the
      // acquire that hands the slot to its next owner, which then continues from those values.
      metrics_slot_bitmap().fetch_and(~(std::uint64_t{1} << slot), std::memory_order_release);
    }
  }
};

// Takes the lowest free slot for the calling thread (or none if all 64 are held) and returns it.
// Called once per thread, on its first metric update.
inline std::uint32_t claim_metrics_slot() noexcept {
  // Constructed here, on the first claim; its destructor runs at thread exit.
  thread_local metrics_slot_releaser releaser;
  static_cast<void>(releaser);
  std::atomic<std::uint64_t>& bits = metrics_slot_bitmap();
  // Relaxed first read: only a guess for the CAS, which does the real acquire.
  std::uint64_t held = bits.load(std::memory_order_relaxed);
  for (;;) {
    if (held == ~std::uint64_t{0}) {
      metrics_thread_slot = metrics_slot_none;
      return metrics_slot_none;
    }
    const auto slot = static_cast<std::uint32_t>(std::countr_one(held));
    // Acquire on success: pairs with the release of the slot's previous owner (see above).
    if (bits.compare_exchange_weak(held, held | (std::uint64_t{1} << slot),
                                   std::memory_order_acquire, std::memory_order_relaxed)) {
      metrics_thread_slot = slot;
      return slot;
    }
  }
}

// Returns the calling thread's slot, claiming one on first use.
inline std::uint32_t current_metrics_slot() noexcept {
  const std::uint32_t slot = metrics_thread_slot;
  return slot != metrics_slot_unassigned ? slot : claim_metrics_slot();
}

// Returns the number of exclusive rows metrics use when their options say 0: twice the hardware
// threads, at least 8 and at most 64. Twice the cores because an application usually has a few
// more threads that update metrics (I/O threads, pools, offload workers) than cores; beyond that,
// threads fall back to the shared rows, which stay exact but may contend.
inline std::size_t metrics_default_stripes() noexcept {
  static const std::size_t stripes = [] {
    const std::size_t hw = std::max<std::size_t>(std::thread::hardware_concurrency(), 1);
    return std::clamp<std::size_t>(2 * hw, 8, max_metrics_slots);
  }();
  return stripes;
}

// `exclusive` + `shared_rows` rows of `width` zero-initialised atomic 64-bit words. Each row starts
// on a cache-line boundary and its length is rounded up to whole cache lines, so no two rows share
// a line. Thread safety: `local()` and the readers may be called concurrently.
class striped_words {
 public:
  static constexpr std::size_t words_per_line = cache_line_size / sizeof(std::uint64_t);
  // Four shared rows spread the threads that have no exclusive row over four lines: little
  // memory, and contention only when many more threads than cores update one metric.
  static constexpr std::size_t shared_rows = 4;

  // The row the calling thread writes, and whether it is the row's only writer.
  struct local_row {
    std::atomic<std::uint64_t>* words;
    bool exclusive;
  };

  // Allocates the rows; `exclusive` is clamped to 1..64 (0 means metrics_default_stripes()).
  striped_words(std::size_t exclusive, std::size_t width)
      : exclusive_(std::clamp<std::size_t>(exclusive == 0 ? metrics_default_stripes() : exclusive,
                                           1, max_metrics_slots)),
        stride_((std::max<std::size_t>(width, 1) + words_per_line - 1) / words_per_line *
                words_per_line),
        words_(static_cast<std::atomic<std::uint64_t>*>(::operator new (
            rows() * stride_ * sizeof(std::uint64_t), std::align_val_t{cache_line_size}))) {
    for (std::size_t i = 0; i < rows() * stride_; ++i) {
      new (&words_[i]) std::atomic<std::uint64_t>(0);
    }
  }

  ~striped_words() {
    // std::atomic<std::uint64_t> is trivially destructible: only the storage goes back.
    ::operator delete (static_cast<void*>(words_), std::align_val_t{cache_line_size});
  }

  striped_words(const striped_words&) = delete;
  striped_words& operator=(const striped_words&) = delete;

  // Returns the calling thread's row: its exclusive row if its slot has one, else a shared row.
  local_row local() noexcept {
    const std::uint32_t slot = current_metrics_slot();
    if (slot < exclusive_) return {words_ + slot * stride_, true};
    return {words_ + (exclusive_ + (thread_stripe() & (shared_rows - 1))) * stride_, false};
  }

  // Adds `n` to `word` of a row returned by local().
  static void add(std::atomic<std::uint64_t>& word, std::uint64_t n, bool exclusive) noexcept {
    // Relaxed throughout: the words are statistics read on their own at scrape time; they publish
    // no other memory. An exclusive row has one writer, so load + store loses nothing (and the
    // store is atomic, so a concurrent scrape reads a whole value); a shared row needs the
    // read-modify-write.
    if (exclusive) {
      word.store(word.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    } else {
      word.fetch_add(n, std::memory_order_relaxed);
    }
  }

  // Adds `delta` to the double stored (as its bits) in `word` of a row returned by local().
  static void add_double(std::atomic<std::uint64_t>& word, double delta, bool exclusive) noexcept {
    // Relaxed: as add(). On a shared row, a compare-exchange loop makes concurrent adds exact.
    std::uint64_t old_bits = word.load(std::memory_order_relaxed);
    if (exclusive) {
      word.store(std::bit_cast<std::uint64_t>(std::bit_cast<double>(old_bits) + delta),
                 std::memory_order_relaxed);
      return;
    }
    while (!word.compare_exchange_weak(
        old_bits, std::bit_cast<std::uint64_t>(std::bit_cast<double>(old_bits) + delta),
        std::memory_order_relaxed, std::memory_order_relaxed)) {
    }
  }

  // Returns row `i` (i < rows()).
  const std::atomic<std::uint64_t>* row(std::size_t i) const noexcept {
    assert(i < rows());
    return words_ + i * stride_;
  }

  // Returns the sum of word `column` over every row (integer wrap-around on overflow).
  // Complexity: O(rows()).
  std::uint64_t sum(std::size_t column) const noexcept {
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < rows(); ++i) {
      // Relaxed: a scrape wants each word's latest value, not an ordering against other memory.
      total += words_[i * stride_ + column].load(std::memory_order_relaxed);
    }
    return total;
  }

  // Returns the sum of the doubles stored in word `column` over every row.
  double sum_double(std::size_t column) const noexcept {
    double total = 0;
    for (std::size_t i = 0; i < rows(); ++i) {
      // Relaxed: as sum().
      total += std::bit_cast<double>(words_[i * stride_ + column].load(std::memory_order_relaxed));
    }
    return total;
  }

  // Returns the number of exclusive rows.
  std::size_t exclusive_rows() const noexcept { return exclusive_; }
  // Returns the number of rows, exclusive and shared.
  std::size_t rows() const noexcept { return exclusive_ + shared_rows; }
  // Returns the distance between two rows, in words (a multiple of a cache line).
  std::size_t stride() const noexcept { return stride_; }

 private:
  std::size_t exclusive_;
  std::size_t stride_;
  std::atomic<std::uint64_t>* words_;
};

// A fixed-size array of `T` (trivially copyable) on cache lines of its own: read-only data of the
// update path (histogram bounds) that must not share a line with memory other threads write.
template <class T>
class line_array {
 public:
  // Copies `values`.
  template <class Container>
  explicit line_array(const Container& values) : line_array(values.data(), values.size()) {}

  // Copies [first, first + n).
  line_array(const T* first, std::size_t n)
      : size_(n),
        data_(static_cast<T*>(::operator new (
            std::max<std::size_t>((n * sizeof(T) + cache_line_size - 1) / cache_line_size, 1) *
                cache_line_size,
            std::align_val_t{cache_line_size}))) {
    for (std::size_t i = 0; i < n; ++i) new (&data_[i]) T(first[i]);
  }
  ~line_array() {
    ::operator delete (static_cast<void*>(data_), std::align_val_t{cache_line_size});
  }
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

}  // namespace sluice::detail
