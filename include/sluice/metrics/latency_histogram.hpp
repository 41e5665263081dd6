// sluice/metrics/latency_histogram.hpp
//
// `sluice::metrics::latency_histogram` records durations into log-linear buckets (as
// HdrHistogram does) and reports percentiles (p50, p90, p99, p99.9) with a bounded relative error,
// whatever the range of the values: no bucket bounds to choose up front.
//
// Buckets: values below 2^(precision_bits + 1) nanoseconds get one bucket each; above, every
// power-of-two range [2^e, 2^(e+1)) is split into 2^precision_bits equal buckets. A reported
// percentile is the upper edge of its bucket, so it lies in [true value, true value x (1 +
// 2^-precision_bits)): with the default 4 bits, at most 6.25% high, never low. Values above
// `options::max` land in the top bucket (their exact value still goes into the sum).
//
// Like `histogram`, `observe()` is lock-free, allocation-free and writes only the caller's own row
// (the bucket index is a count-leading-zeros and two shifts). The registry renders a latency
// histogram as a Prometheus `summary` in seconds: `name{quantile="0.5"}` .. `{quantile="0.999"}`,
// `name_sum`, `name_count`. Percentiles are over every observation since creation.
//
// Thread safety: all member functions may be called concurrently.
// Time: none; callers measure with whatever clock they use and pass the duration.
// Errors: `validate` returns InvalidArgument for unusable options; the registry calls it.
// Memory: (stripes + 4) x (buckets + 1) x 8 bytes, rounded to cache lines; the defaults (4 bits,
// max 2^40 - 1 ns, 8 stripes on a 2-core machine) take 592 buckets, about 57 KiB. Fewer stripes or
// bits shrink it.
//
// Example:
//   auto latency = registry.add_latency_histogram("db_query_seconds", "Query latency.");
//   const auto start = std::chrono::steady_clock::now();
//   run_query();
//   if (latency.ok()) (*latency)->observe(std::chrono::steady_clock::now() - start);
//   double p99 = (*latency)->read().quantile(0.99);  // in seconds
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <cassert>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"

#include "sluice/detail/cache_line.hpp"
#include "sluice/detail/metrics_cells.hpp"

namespace sluice::metrics {

// How a `latency_histogram` buckets its values.
struct latency_histogram_options {
  // Sub-buckets per power of two, as a power of two: 4 gives 16, a relative error below 6.25%,
  // plenty to tell a p99 of 40 ms from one of 45 ms. Valid: 1..10.
  int precision_bits = 4;
  // Largest value kept apart; larger ones share the top bucket. 2^40 - 1 ns (about 18 minutes)
  // exceeds any sensible request timeout while keeping the bucket count (592) small.
  std::chrono::nanoseconds max{(std::chrono::nanoseconds::rep{1} << 40) - 1};
  // Exclusive rows (1..64); 0 picks detail::metrics_default_stripes() (2x hardware threads, >= 8).
  std::size_t stripes = 0;
};

class alignas(detail::cache_line_size) latency_histogram {
 public:
  // See latency_histogram_options.
  using options = latency_histogram_options;

  // What `read()` returns: a copy of the histogram at one moment.
  struct snapshot {
    int precision_bits = 0;
    std::vector<std::uint64_t> counts;  // Per bucket (see bucket_upper_ns).
    std::uint64_t count = 0;            // Number of observations (sum of `counts`).
    std::uint64_t sum_ns = 0;           // Sum of the observed durations, in nanoseconds.

    // Returns the q-quantile (0 <= q <= 1) in seconds: the upper edge of the bucket holding the
    // observation of rank ceil(q x count) (at least 1). NaN when there are no observations.
    double quantile(double q) const noexcept {
      if (count == 0) return std::numeric_limits<double>::quiet_NaN();
      q = std::clamp(q, 0.0, 1.0);
      auto rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(count)));
      rank = std::clamp<std::uint64_t>(rank, 1, count);
      std::uint64_t seen = 0;
      for (std::size_t i = 0; i < counts.size(); ++i) {
        seen += counts[i];
        if (seen >= rank) return static_cast<double>(bucket_upper_ns(precision_bits, i)) * 1e-9;
      }
      return static_cast<double>(bucket_upper_ns(precision_bits, counts.size() - 1)) * 1e-9;
    }

    // Returns the sum of the observations in seconds.
    double sum_seconds() const noexcept { return static_cast<double>(sum_ns) * 1e-9; }
  };

  // Creates an empty histogram. Precondition: `validate(opts).ok()`.
  explicit latency_histogram(const options& opts = {})
      : bits_(opts.precision_bits),
        max_ns_(static_cast<std::uint64_t>(std::max<std::int64_t>(opts.max.count(), 1))),
        buckets_(bucket_index(bits_, max_ns_) + 1),
        cells_(opts.stripes, buckets_ + 1) {
    assert(validate(opts).ok());
  }

  latency_histogram(const latency_histogram&) = delete;
  latency_histogram& operator=(const latency_histogram&) = delete;

  // Returns OK if `opts` is usable, else InvalidArgument.
  static absl::Status validate(const options& opts) {
    if (opts.precision_bits < 1 || opts.precision_bits > 10) {
      return absl::InvalidArgumentError("latency_histogram precision_bits must be in 1..10, got " +
                                        std::to_string(opts.precision_bits));
    }
    if (opts.max.count() < 1) {
      return absl::InvalidArgumentError("latency_histogram max must be positive");
    }
    return absl::OkStatus();
  }

  // Records a duration (negative ones count as 0). Lock-free, no allocation.
  template <class Rep, class Period>
  void observe(std::chrono::duration<Rep, Period> d) noexcept {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
    observe_ns(ns < 0 ? 0 : static_cast<std::uint64_t>(ns));
  }

  // Records a duration given in nanoseconds. Lock-free, no allocation.
  void observe_ns(std::uint64_t ns) noexcept {
    const std::size_t bucket = bucket_index(bits_, std::min(ns, max_ns_));
    const auto row = cells_.local();
    // Relaxed order: see detail::striped_words::add.
    detail::striped_words::add(row.words[1 + bucket], 1, row.exclusive);
    detail::striped_words::add(row.words[0], ns, row.exclusive);
  }

  // Returns a copy of the counts. Complexity: O(stripes x buckets); allocates. Observations made
  // concurrently may be partly included; after the observing threads are joined it is exact.
  snapshot read() const {
    snapshot s;
    s.precision_bits = bits_;
    s.counts.resize(buckets_);
    for (std::size_t i = 0; i < buckets_; ++i) {
      s.counts[i] = cells_.sum(1 + i);
      s.count += s.counts[i];
    }
    s.sum_ns = cells_.sum(0);
    return s;
  }

  // Returns the number of buckets.
  std::size_t bucket_count() const noexcept { return buckets_; }

  // Returns the bucket of `ns` for `bits` of precision (no clamping to a maximum).
  static std::size_t bucket_index(int bits, std::uint64_t ns) noexcept {
    const auto b = static_cast<unsigned>(bits);
    if (ns < (std::uint64_t{2} << b)) return static_cast<std::size_t>(ns);
    const unsigned shift = static_cast<unsigned>(std::bit_width(ns)) - 1 - b;
    return static_cast<std::size_t>((std::uint64_t{shift} << b) + (ns >> shift));
  }

  // Returns the largest value (in ns) bucket `i` holds, for `bits` of precision.
  static std::uint64_t bucket_upper_ns(int bits, std::size_t i) noexcept {
    const auto b = static_cast<unsigned>(bits);
    const std::uint64_t index = i;
    const unsigned shift = (index >> b) <= 1 ? 0u : static_cast<unsigned>((index >> b) - 1);
    const std::uint64_t top = index - (std::uint64_t{shift} << b);
    return ((top + 1) << shift) - 1;
  }

 private:
  int bits_;
  std::uint64_t max_ns_;
  std::size_t buckets_;
  detail::striped_words cells_;  // Per row: [0] sum in ns, [1 + i] count of bucket i.
};

}  // namespace sluice::metrics
