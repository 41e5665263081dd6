// sluice/metrics/counter.hpp
//
// `sluice::metrics::counter` counts events: a monotonically increasing 64-bit integer whose
// increment is lock-free, allocation-free and touches no cache line another thread writes.
//
// Each thread adds into its own cache-line-sized cell, of which it is the only writer, so an
// increment is a plain load and store with no locked instruction; `value()` sums the cells. Threads
// beyond the counter's `stripes` exclusive cells share four more cells, updated with atomic
// read-modify-writes: still exact, just slower (see <sluice/detail/metrics_cells.hpp>).
//
// Counters are usually created through a `sluice::metrics::registry` (which names them, validates
// the name and renders them for Prometheus); a free-standing counter works too.
//
// Thread safety: all member functions may be called concurrently.
// Time: none.
// Errors: none; every member is noexcept (the constructor allocates and may throw bad_alloc).
// Memory: (stripes + 4) x 64 bytes (12 cells, 768 bytes, by default on a 2-core machine).
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
  // Creates a counter at zero with `stripes` exclusive cells (1..64; 0 picks
  // `detail::metrics_default_stripes()`: 2x the hardware threads, at least 8).
  explicit counter(std::size_t stripes = 0) : cells_(stripes, 1) {}

  counter(const counter&) = delete;
  counter& operator=(const counter&) = delete;

  // Adds `n` (default 1). Lock-free, no allocation: on the thread's own row, a relaxed load and
  // store (no locked instruction); on a shared row, one relaxed atomic add. See
  // detail::striped_words::add for why relaxed order suffices.
  void inc(std::uint64_t n = 1) noexcept {
    const auto row = cells_.local();
    detail::striped_words::add(row.words[0], n, row.exclusive);
  }

  // Returns the current total. Complexity: O(stripes). Concurrent increments may or may not be
  // included; once every incrementing thread has been joined, the total is exact.
  std::uint64_t value() const noexcept { return cells_.sum(0); }

 private:
  detail::striped_words cells_;
};

}  // namespace sluice::metrics
