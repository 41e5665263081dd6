// sluice/metrics/gauge.hpp
//
// `sluice::metrics::gauge` holds a value that goes up and down (a queue depth, a temperature, the
// time of the last success): one double on its own cache line, set or adjusted lock-free.
//
// Unlike `counter`, a gauge is not striped: `set()` must replace the value seen by every thread,
// which a sum of per-thread cells cannot do atomically. The cache line is the gauge's alone, so
// only threads updating this very gauge contend. For a figure many threads adjust at a high rate,
// prefer two counters (added and removed) or publish the figure at scrape time with a collector
// (`registry::add_collector`), which costs the hot path nothing.
//
// Thread safety: all member functions may be called concurrently.
// Time: none.
// Errors: none; every member is noexcept.
//
// Example:
//   auto depth = registry.add_gauge("jobs_queued", "Jobs waiting for a worker.");
//   if (depth.ok()) (*depth)->set(static_cast<double>(queue.size()));
#pragma once

#include <atomic>

#include "sluice/detail/cache_line.hpp"

namespace sluice::metrics {

class alignas(detail::cache_line_size) gauge {
 public:
  // Creates a gauge at 0.
  gauge() = default;

  gauge(const gauge&) = delete;
  gauge& operator=(const gauge&) = delete;

  // Replaces the value.
  void set(double v) noexcept {
    // Relaxed: the gauge is read on its own at scrape time; it publishes no other memory.
    value_.value.store(v, std::memory_order_relaxed);
  }

  // Adds `delta` (may be negative). Lock-free: a compare-exchange loop.
  void add(double delta) noexcept {
    // Relaxed: as set(); the CAS makes concurrent adds exact.
    double old = value_.value.load(std::memory_order_relaxed);
    while (!value_.value.compare_exchange_weak(old, old + delta, std::memory_order_relaxed,
                                               std::memory_order_relaxed)) {
    }
  }

  // Adds 1.
  void inc() noexcept { add(1.0); }
  // Subtracts 1.
  void dec() noexcept { add(-1.0); }

  // Returns the current value.
  double value() const noexcept {
    // Relaxed: see set().
    return value_.value.load(std::memory_order_relaxed);
  }

 private:
  detail::padded<std::atomic<double>> value_;  // Zero: padded value-initialises.
};

}  // namespace sluice::metrics
