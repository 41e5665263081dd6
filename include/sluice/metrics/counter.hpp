// sluice/metrics/counter.hpp
//
// `sluice::metrics::counter` counts events: a monotonically increasing 64-bit integer whose
// increment is lock-free, allocation-free and touches no cache line another thread writes.
//
// Each thread adds into its own stripe (a cache-line-sized cell picked with
// `detail::thread_stripe()`); `value()` sums the stripes. Increments stay exact when threads share a
// stripe (they are atomic read-modify-writes), they just get slower.
//
// Counters are usually created through a `sluice::metrics::registry` (which names them, validates
// the name and renders them for Prometheus); a free-standing counter works too.
//
// Thread safety: all member functions may be called concurrently.
// Time: none.
// Errors: none; every member is noexcept (the constructor allocates and may throw bad_alloc).
// Memory: stripes x 64 bytes (16 stripes = 1 KiB by default on small machines).
//
// Example:
//   auto requests = registry.add_counter("http_requests_total", "Requests served.");
//   if (requests.ok()) (*requests)->inc();
#pragma once

#include <cstddef>
#include <cstdint>

#include "sluice/detail/cache_line.hpp"
#include "sluice/detail/metrics_cells.hpp"

namespace sluice::metrics {

class alignas(detail::cache_line_size) counter {
 public:
  // Creates a counter at zero with `stripes` cells (rounded up to a power of two; 0 picks
  // `detail::metrics_default_stripes()`, which is 2x the hardware threads, at least 16).
  explicit counter(std::size_t stripes = 0) : cells_(stripes, 1) {}

  counter(const counter&) = delete;
  counter& operator=(const counter&) = delete;

  // Adds `n` (default 1). Lock-free, no allocation, about one uncontended atomic add.
  void inc(std::uint64_t n = 1) noexcept {
    // Relaxed: the count is a statistic read on its own at scrape time; it orders nothing else.
    // The read-modify-write keeps it exact when two threads share a stripe.
    cells_.local_row()[0].fetch_add(n, std::memory_order_relaxed);
  }

  // Returns the current total. Complexity: O(stripes). Concurrent increments may or may not be
  // included; once every incrementing thread has been joined, the total is exact.
  std::uint64_t value() const noexcept { return cells_.sum(0); }

 private:
  detail::striped_words cells_;
};

}  // namespace sluice::metrics
