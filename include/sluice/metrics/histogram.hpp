// sluice/metrics/histogram.hpp
//
// `sluice::metrics::histogram` counts observations into fixed buckets chosen up front (the
// Prometheus histogram: `_bucket{le="..."}`, `_sum`, `_count`), with a lock-free, allocation-free
// `observe()` that touches no cache line another thread writes.
//
// Each thread adds into its own row of cache lines (a count and a partial sum per bucket), of which
// it is the only writer: no locked instruction on the update path. `read()` sums the rows.
// Threads beyond the `stripes` exclusive rows share four more rows with atomic read-modify-writes.
// The total count is the sum of the buckets, so the rendered `+Inf` bucket always equals `_count`.
//
// For latencies whose range is not known in advance, or when percentiles matter more than a few
// fixed thresholds, use `sluice::metrics::latency_histogram`.
//
// Thread safety: all member functions may be called concurrently.
// Time: none; callers observe whatever they measured.
// Errors: `validate_bounds` returns InvalidArgument for unusable bounds; the registry calls it.
// Memory: (stripes + 4) x ceil((bounds + 1) x 16 / 64) x 64 bytes (12 x 192 = 2.25 KiB for 11
// bounds by default on a 2-core machine).
//
// Example:
//   auto latency = registry.add_histogram("http_request_duration_seconds", "Request latency.",
//                                         sluice::metrics::histogram::default_bounds());
//   if (latency.ok()) (*latency)->observe(0.042);
#pragma once

#include <algorithm>
#include <atomic>
#include <cassert>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
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

  // Creates an empty histogram with the given upper bounds and `stripes` exclusive rows (1..64;
  // 0 picks detail::metrics_default_stripes()). Precondition:
  // `validate_bounds(bounds).ok()`; a trailing +Inf is dropped (the +Inf bucket always exists).
  explicit histogram(std::span<const double> bounds, std::size_t stripes = 0)
      : bound_count_(drop_inf(bounds)),
        bounds_(padded_bounds(bounds.first(bound_count_))),
        cells_(stripes, 2 * (bound_count_ + 1)) {
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
  // sum. Lock-free, no allocation: a branch-free bucket search over read-only bounds, then two
  // relaxed load/store pairs on one line of the caller's own row (an atomic add and a
  // compare-exchange on a shared row).
  // See detail::striped_words::add for why relaxed order suffices.
  void observe(double v) noexcept {
    const std::size_t bucket = bucket_of(v);
    const auto row = cells_.local();
    detail::striped_words::add(row.words[2 * bucket], 1, row.exclusive);
    detail::striped_words::add_double(row.words[2 * bucket + 1], v, row.exclusive);
  }

  // Returns the bucket index `v` falls in: 0 .. bounds().size() (the last is +Inf).
  std::size_t bucket_of(double v) const noexcept {
    const std::size_t n = bounds().size();
    const double* b = bounds_.data();
    if (n <= small_bounds) {
      // Branch-free over a fixed 16 entries (the bounds, then +Inf padding): the bounds ascend, so
      // the count of bounds below v is the index. `!(v <= bound)` rather than `v > bound` so that
      // NaN counts past every bound (+Inf).
      return std::min(count_below(v, b), n);
    }
    if (std::isnan(v)) return n;
    return static_cast<std::size_t>(std::lower_bound(b, b + n, v) - b);
  }

  // Returns the upper bounds (without +Inf).
  std::span<const double> bounds() const noexcept { return {bounds_.data(), bound_count_}; }

  // Returns a copy of the counts and sum. Complexity: O(stripes x buckets); allocates. Concurrent
  // observations may be partly included (the sum may then lag or lead the count slightly); once
  // every observing thread has been joined, the snapshot is exact.
  snapshot read() const {
    snapshot s;
    s.bounds.assign(bounds().begin(), bounds().end());
    s.counts.resize(bound_count_ + 1);
    for (std::size_t i = 0; i < s.counts.size(); ++i) {
      s.counts[i] = cells_.sum(2 * i);
      s.count += s.counts[i];
      s.sum += cells_.sum_double(2 * i + 1);
    }
    return s;
  }

 private:
  static std::size_t drop_inf(std::span<const double> bounds) noexcept {
    return !bounds.empty() && std::isinf(bounds.back()) && bounds.back() > 0 ? bounds.size() - 1
                                                                             : bounds.size();
  }

  // Returns how many of the 16 entries at `b` (16-byte aligned) are below `v`; NaN counts all.
  static std::size_t count_below(double v, const double* b) noexcept {
#if defined(__SSE2__)
    // Two bounds per compare, two accumulators: about ten instructions and no long dependency
    // chain (a scalar loop serialises sixteen flag-carrying adds). cmpnle is `!(v <= bound)`,
    // true for NaN; each true lane is all ones, i.e. -1, hence the subtraction.
    const __m128d x = _mm_set1_pd(v);
    __m128i even = _mm_setzero_si128();
    __m128i odd = _mm_setzero_si128();
    for (std::size_t k = 0; k < small_bounds; k += 4) {
      even = _mm_sub_epi64(even, _mm_castpd_si128(_mm_cmpnle_pd(x, _mm_load_pd(b + k))));
      odd = _mm_sub_epi64(odd, _mm_castpd_si128(_mm_cmpnle_pd(x, _mm_load_pd(b + k + 2))));
    }
    const __m128i sum = _mm_add_epi64(even, odd);
    return static_cast<std::size_t>(
        _mm_cvtsi128_si64(_mm_add_epi64(sum, _mm_unpackhi_epi64(sum, sum))));
#else
    std::size_t i = 0;
    for (std::size_t k = 0; k < small_bounds; ++k) i += static_cast<std::size_t>(!(v <= b[k]));
    return i;
#endif
  }

  // Returns the bounds followed by +Inf up to `small_bounds` entries (the branch-free search reads
  // that many).
  static std::vector<double> padded_bounds(std::span<const double> bounds) {
    std::vector<double> out(bounds.begin(), bounds.end());
    if (out.size() < small_bounds)
      out.resize(small_bounds, std::numeric_limits<double>::infinity());
    return out;
  }

  static constexpr std::size_t small_bounds = 16;
  std::size_t bound_count_;
  detail::line_array<double> bounds_;  // The bounds, padded with +Inf to at least 16 entries.
  // Per row, for each bucket i: [2i] its count, [2i + 1] the sum of its values (double bits). A
  // bucket's count and sum share a line, and back-to-back observations into different buckets
  // do not wait on one another's sum.
  detail::striped_words cells_;
};

}  // namespace sluice::metrics
