// sluice/retry_budget.hpp
//
// Retry budgets: a limit on retries shared by every call to one dependency, so that retries cannot
// multiply the load on a dependency that is already failing (the "retry storm"). Two kinds:
//
//   sluice::token_bucket_retry_budget   gRPC's retry throttling (gRFC A6): a bucket of
//       `max_tokens`; every retryable failure takes one token, every success returns
//       `token_ratio`; retries are allowed only while the bucket holds more than `threshold`.
//       Lock-free (one atomic word). Not time based.
//   sluice::ratio_retry_budget<Clock>   Finagle/Linkerd's budget: over a sliding window of `ttl`,
//       retries may be at most `ratio` of the calls, plus a floor of `min_retries_per_second`
//       so that a quiet client can still retry. Refills as old calls leave the window.
//
// Both expose the interface `sluice::retry` uses (any type with these members works):
//   void record_call();       a new logical call started (counts the traffic)
//   void record_success();    an attempt succeeded, or failed in a way that is not retried
//   void record_failure();    an attempt failed with a retryable error
//   bool try_retry();         asks for (and, for the ratio budget, takes) one retry
//
// Thread safety: all member functions may be called concurrently; share one budget between all
//                retry policies that call the same dependency.
// Time: the token bucket ignores time; the ratio budget reads its clock (default steady_clock).
// Errors: none; a refused retry is `try_retry() == false` and the retry policy reports
//         `sluice::reason::budget_exhausted`.
//
// Example:
//   sluice::token_bucket_retry_budget budget({.max_tokens = 10, .token_ratio = 0.1});
//   auto retry = sluice::retry(sluice::retry_options{.max_attempts = 4}, budget);
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "sluice/detail/mutex.hpp"

namespace sluice {

// The budget a retry without one uses: every retry is allowed.
struct no_retry_budget {
  // Does nothing.
  void record_call() noexcept {}
  // Does nothing.
  void record_success() noexcept {}
  // Does nothing.
  void record_failure() noexcept {}
  // Returns true: no limit.
  bool try_retry() noexcept { return true; }
};

struct token_bucket_retry_budget_options {
  // Bucket size. 10, the value in gRFC A6's example: ten failures in a row with no success stop
  // retries (once the bucket is at or below half), yet a short burst of failures still retries.
  double max_tokens = 10.0;
  // Tokens a success returns. 0.1: a failure costs as much as ten successes earn, so retries stay
  // under about 10% of traffic while the dependency is unhealthy (gRFC A6's example).
  double token_ratio = 0.1;
  // Retries are allowed while tokens > threshold. Negative means max_tokens / 2, gRPC's rule.
  double threshold = -1.0;
};

// gRPC-style retry throttling; see the top of this header.
class token_bucket_retry_budget {
 public:
  // Creates a full bucket. Options are clamped: max_tokens >= 1, ratio in (0, max_tokens].
  explicit token_bucket_retry_budget(token_bucket_retry_budget_options opts = {}) noexcept
      : max_milli_(to_milli(std::max(1.0, opts.max_tokens))),
        ratio_milli_(std::clamp<std::int64_t>(to_milli(opts.token_ratio), 1, max_milli_)),
        threshold_milli_(opts.threshold < 0 ? max_milli_ / 2
                                            : std::min(to_milli(opts.threshold), max_milli_)),
        milli_tokens_(max_milli_) {}

  // Does nothing: the bucket counts outcomes, not calls.
  void record_call() noexcept {}

  // Returns `token_ratio` tokens, up to `max_tokens`. Lock-free.
  void record_success() noexcept { add(ratio_milli_); }

  // Takes one token, down to zero. Lock-free.
  void record_failure() noexcept { add(-1000); }

  // Returns whether the bucket holds more than the threshold. Takes nothing: gRPC charges the
  // failure, not the retry.
  bool try_retry() noexcept {
    // Relaxed is enough: the decision needs a recent value, not ordering with other memory.
    return milli_tokens_.load(std::memory_order_relaxed) > threshold_milli_;
  }

  // Returns the tokens in the bucket (with gRPC's three decimals of precision).
  double tokens() const noexcept {
    return static_cast<double>(milli_tokens_.load(std::memory_order_relaxed)) / 1000.0;
  }

 private:
  static std::int64_t to_milli(double v) noexcept {
    return static_cast<std::int64_t>(v * 1000.0 + 0.5);
  }

  void add(std::int64_t delta) noexcept {
    // Relaxed CAS: the counter publishes no other data; only its own value must stay in range.
    std::int64_t cur = milli_tokens_.load(std::memory_order_relaxed);
    std::int64_t next;
    do {
      next = std::clamp<std::int64_t>(cur + delta, 0, max_milli_);
    } while (next != cur &&
             !milli_tokens_.compare_exchange_weak(cur, next, std::memory_order_relaxed));
  }

  const std::int64_t max_milli_;
  const std::int64_t ratio_milli_;
  const std::int64_t threshold_milli_;
  std::atomic<std::int64_t> milli_tokens_;
};

struct ratio_retry_budget_options {
  // Retries allowed per call in the window. 0.2: at most 20% extra load from retries, Finagle's
  // default; enough to ride over sporadic failures, too little to amplify an outage.
  double ratio = 0.2;
  // Retries allowed per second regardless of traffic. 10, Finagle's default: a client with little
  // traffic can still retry its occasional failure.
  double min_retries_per_second = 10.0;
  // The window calls and retries are remembered for. 10 s (Finagle's default): long enough to
  // average over bursts, short enough to recover soon after the dependency does.
  std::chrono::nanoseconds ttl = std::chrono::seconds(10);
  // Buckets the window is divided into; the window slides by ttl / buckets. 10 (1 s each).
  int buckets = 10;
};

// Ratio-of-traffic retry budget with a floor; see the top of this header.
template <class Clock = std::chrono::steady_clock>
class ratio_retry_budget {
 public:
  // Creates an empty window (only the floor is available). Options are clamped to sane values.
  explicit ratio_retry_budget(ratio_retry_budget_options opts = {}, Clock clock = Clock())
      : ratio_(std::max(0.0, opts.ratio)),
        floor_(std::max(0.0, opts.min_retries_per_second) *
               std::chrono::duration<double>(opts.ttl).count()),
        bucket_width_(std::max<std::chrono::nanoseconds::rep>(
            1, opts.ttl.count() / std::max(1, opts.buckets))),
        clock_(clock),
        buckets_(static_cast<std::size_t>(std::max(1, opts.buckets))) {}

  // Counts a call in the current bucket. Takes the budget's mutex.
  void record_call() ABSL_LOCKS_EXCLUDED(mu_) {
    detail::mutex_lock lock(mu_);
    current()->calls += 1;
  }

  // Does nothing: this budget counts calls and retries.
  void record_success() noexcept {}
  // Does nothing: this budget counts calls and retries.
  void record_failure() noexcept {}

  // Takes one retry if retries in the window are below ratio * calls + floor. Takes the mutex;
  // O(buckets).
  bool try_retry() ABSL_LOCKS_EXCLUDED(mu_) {
    detail::mutex_lock lock(mu_);
    bucket* cur = current();
    std::int64_t calls = 0;
    std::int64_t retries = 0;
    for (const bucket& b : buckets_) {
      calls += b.calls;
      retries += b.retries;
    }
    const double allowed = ratio_ * static_cast<double>(calls) + floor_;
    if (static_cast<double>(retries) + 1.0 > allowed) return false;
    cur->retries += 1;
    return true;
  }

  // Returns the retries still available in the current window.
  double available() ABSL_LOCKS_EXCLUDED(mu_) {
    detail::mutex_lock lock(mu_);
    current();
    std::int64_t calls = 0;
    std::int64_t retries = 0;
    for (const bucket& b : buckets_) {
      calls += b.calls;
      retries += b.retries;
    }
    return std::max(0.0,
                    ratio_ * static_cast<double>(calls) + floor_ - static_cast<double>(retries));
  }

 private:
  struct bucket {
    std::int64_t epoch = -1;
    std::int64_t calls = 0;
    std::int64_t retries = 0;
  };

  // Returns the bucket of the current time, clearing buckets that left the window.
  bucket* current() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const std::int64_t epoch =
        std::chrono::duration_cast<std::chrono::nanoseconds>(clock_.now().time_since_epoch())
            .count() /
        bucket_width_;
    const auto n = static_cast<std::int64_t>(buckets_.size());
    for (bucket& b : buckets_) {
      if (b.epoch <= epoch - n) b = bucket{};
    }
    bucket& b = buckets_[static_cast<std::size_t>(epoch % n)];
    if (b.epoch != epoch) b = bucket{epoch, 0, 0};
    return &b;
  }

  const double ratio_;
  const double floor_;
  const std::int64_t bucket_width_;
  Clock clock_;
  detail::mutex mu_;
  std::vector<bucket> buckets_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sluice
