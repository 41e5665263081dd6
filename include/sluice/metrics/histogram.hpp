// sluice/metrics/histogram.hpp
//
// `sluice::metrics::histogram` counts observations into fixed buckets chosen up front (the
// Prometheus histogram: `_bucket{le="..."}`, `_sum`, `_count`), with a lock-free, allocation-free
// `observe()` that touches no cache line another thread writes.
//
// Each thread adds into its own stripe: one row of cache lines holding the running sum and one
// counter per bucket. `read()` sums the stripes. The total count is the sum of the buckets, so the
// rendered `+Inf` bucket always equals `_count`.
//
// For latencies whose range is not known in advance, or when percentiles matter more than a few
// fixed thresholds, use `sluice::metrics::latency_histogram`.
//
// Thread safety: all member functions may be called concurrently.
// Time: none; callers observe whatever they measured.
// Errors: `validate_bounds` returns InvalidArgument for unusable bounds; the registry calls it.
// Memory: stripes x ceil((buckets + 2) x 8 / 64) x 64 bytes (16 stripes and 11 bounds: 2 KiB).
//
// Example:
//   auto latency = registry.add_histogram("http_request_duration_seconds", "Request latency.",
//                                         sluice::metrics::histogram::default_bounds());
//   if (latency.ok()) (*latency)->observe(0.042);
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <cassert>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "sluice/detail/cache_line.hpp"
#include "sluice/detail/metrics_cells.hpp"

namespace sluice::metrics {

class alignas(detail::cache_line_size) histogram {
 public:
  // What `read()` returns: a copy of the histogram at one moment (each bucket read once).
  struct snapshot {
    std::vector<double> bounds;         // Upper bounds (inclusive), ascending; +Inf implied.
    std::vector<std::uint64_t> counts;  // Per bucket, not cumulative; bounds.size() + 1 entries.
    double sum = 0;                     // Sum of every observed value.
    std::uint64_t count = 0;            // Number of observations (sum of `counts`).
  };

  // Creates an empty histogram with the given upper bounds and `stripes` rows (rounded up to a
  // power of two; 0 picks detail::metrics_default_stripes()). Precondition:
  // `validate_bounds(bounds).ok()`; a trailing +Inf is dropped (the +Inf bucket always exists).
  explicit histogram(std::span<const double> bounds, std::size_t stripes = 0)
      : bounds_(bounds.data(), drop_inf(bounds)), cells_(stripes, drop_inf(bounds) + 2) {
    assert(validate_bounds(bounds).ok());
  }

  histogram(const histogram&) = delete;
  histogram& operator=(const histogram&) = delete;

  // Returns OK if `bounds` can define buckets: strictly ascending, no NaN, no -Inf; +Inf only as
  // the last element. An empty list is valid (one +Inf bucket). Otherwise InvalidArgument.
  static absl::Status validate_bounds(std::span<const double> bounds) {
    for (std::size_t i = 0; i < bounds.size(); ++i) {
      const double b = bounds[i];
      if (std::isnan(b) || b == -std::numeric_limits<double>::infinity()) {
        return absl::InvalidArgumentError("histogram bound " + std::to_string(i) +
                                          " is NaN or -Inf");
      }
      if (std::isinf(b) && i + 1 != bounds.size()) {
        return absl::InvalidArgumentError("histogram bound +Inf is allowed only last");
      }
      if (i > 0 && !(bounds[i - 1] < b)) {
        return absl::InvalidArgumentError("histogram bounds must be strictly ascending (bound " +
                                          std::to_string(i) + ")");
      }
    }
    return absl::OkStatus();
  }

  // Returns Prometheus' default bounds, for request latencies in seconds:
  // .005 .01 .025 .05 .1 .25 .5 1 2.5 5 10.
  static std::vector<double> default_bounds() {
    return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0};
  }

  // Returns `count` bounds start, start + width, ... (width > 0).
  static std::vector<double> linear_bounds(double start, double width, std::size_t count) {
    std::vector<double> out;
    out.reserve(count);
    for (std::size_t i = 0; i < count; ++i) out.push_back(start + width * static_cast<double>(i));
    return out;
  }

  // Returns `count` bounds start, start * factor, ... (start > 0, factor > 1).
  static std::vector<double> exponential_bounds(double start, double factor, std::size_t count) {
    std::vector<double> out;
    out.reserve(count);
    double b = start;
    for (std::size_t i = 0; i < count; ++i, b *= factor) out.push_back(b);
    return out;
  }

  // Records `v` in the first bucket whose bound is >= v (NaN goes to +Inf) and adds it to the
  // sum. Lock-free, no allocation: a bucket search over read-only bounds, one atomic add and one
  // (normally uncontended) compare-exchange on the caller's own stripe.
  void observe(double v) noexcept {
    const std::size_t bucket = bucket_of(v);
    std::atomic<std::uint64_t>* row = cells_.local_row();
    // Relaxed: the bucket count is a statistic read on its own at scrape time; it orders nothing.
    // The read-modify-write keeps it exact when two threads share a stripe.
    row[1 + bucket].fetch_add(1, std::memory_order_relaxed);
    detail::atomic_add_double(row[0], v);
  }

  // Returns the bucket index `v` falls in: 0 .. bounds().size() (the last is +Inf).
  std::size_t bucket_of(double v) const noexcept {
    const std::size_t n = bounds_.size();
    const double* b = bounds_.data();
    if (n <= 16) {
      // Branch-free: the bounds are ascending, so the number of bounds below v is the index.
      // `!(v <= bound)` rather than `v > bound` so that NaN counts past every bound (+Inf).
      std::size_t i = 0;
      for (std::size_t k = 0; k < n; ++k) i += static_cast<std::size_t>(!(v <= b[k]));
      return i;
    }
    if (std::isnan(v)) return n;
    return static_cast<std::size_t>(std::lower_bound(b, b + n, v) - b);
  }

  // Returns the upper bounds (without +Inf).
  std::span<const double> bounds() const noexcept { return {bounds_.data(), bounds_.size()}; }

  // Returns a copy of the counts and sum. Complexity: O(stripes x buckets); allocates. Concurrent
  // observations may be partly included (the sum may then lag or lead the count slightly); once
  // every observing thread has been joined, the snapshot is exact.
  snapshot read() const {
    snapshot s;
    s.bounds.assign(bounds_.data(), bounds_.data() + bounds_.size());
    s.counts.resize(bounds_.size() + 1);
    for (std::size_t i = 0; i < s.counts.size(); ++i) {
      s.counts[i] = cells_.sum(1 + i);
      s.count += s.counts[i];
    }
    for (std::size_t r = 0; r < cells_.stripes(); ++r) {
      // Relaxed: see observe().
      s.sum += std::bit_cast<double>(cells_.row(r)[0].load(std::memory_order_relaxed));
    }
    return s;
  }

 private:
  static std::size_t drop_inf(std::span<const double> bounds) noexcept {
    return !bounds.empty() && std::isinf(bounds.back()) && bounds.back() > 0 ? bounds.size() - 1
                                                                             : bounds.size();
  }

  detail::line_array<double> bounds_;
  detail::striped_words cells_;  // Per row: [0] sum (double bits), [1 + i] count of bucket i.
};

}  // namespace sluice::metrics
