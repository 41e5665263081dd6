// sluice/rate_limit.hpp
//
// The result every sluice rate limiter returns (`sluice::rate_limit_result`), and the helpers that
// turn it into the HTTP headers a server sends with a 429: `RateLimit-Limit`,
// `RateLimit-Remaining`, `RateLimit-Reset` (draft-ietf-httpapi-ratelimit-headers) and
// `Retry-After` (RFC 9110, delay-seconds form).
//
// Thread safety: value types and pure functions; use them from any thread.
// Time: durations only; no clock is read here.
// Errors: a refusal is a value (`allowed == false`), never an exception; `to_status()` maps it to
//         absl::StatusCode::kResourceExhausted (and an impossible request, n > burst, to
//         kInvalidArgument) for callers that want a Status.
//
// Example:
//   auto r = limiter.try_acquire();
//   if (!r) {
//     response.status = 429;
//     response.set("Retry-After", sluice::retry_after_value(r).view());
//   }
//   response.set("RateLimit-Remaining", sluice::ratelimit_remaining_value(r).view());
#pragma once

#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace sluice {

// The decision of a rate limiter for one request of n units.
struct rate_limit_result {
  // Whether the request was admitted (and its units charged).
  bool allowed = false;
  // The most units the limiter admits at once from full (its burst): RateLimit-Limit.
  std::uint64_t limit = 0;
  // The units that could still pass right now after this decision: RateLimit-Remaining.
  std::uint64_t remaining = 0;
  // Zero when admitted; otherwise how long until the same request would pass. `never()` when it
  // can never pass (n exceeds the burst).
  std::chrono::nanoseconds retry_after{0};
  // How long until the limiter is completely full (idle) again: RateLimit-Reset.
  std::chrono::nanoseconds reset_after{0};

  // Returns the retry_after value meaning "never" (the request is larger than the burst).
  static constexpr std::chrono::nanoseconds never() noexcept {
    return std::chrono::nanoseconds::max();
  }

  // Returns `allowed`, so `if (auto r = limiter.try_acquire())` reads naturally.
  constexpr explicit operator bool() const noexcept { return allowed; }

  // Returns OK when admitted, ResourceExhausted when limited, InvalidArgument when the request
  // can never pass. Allocates only for a refusal (the message).
  absl::Status to_status() const {
    if (allowed) return absl::OkStatus();
    if (retry_after == never()) {
      return absl::InvalidArgumentError(std::string("rate limit: request exceeds the burst"));
    }
    return absl::ResourceExhaustedError(std::string("rate limited; retry after ") +
                                        std::to_string(retry_after.count()) + " ns");
  }
};

// How fast a limiter refills and how much it lets through at once: `rate` units every `period`,
// up to `burst` units at once from a full limiter. Shared by gcra_limiter, token_bucket and the
// keyed limiter's per-key overrides.
struct rate_limit_options {
  // Units admitted per `period` at the sustained rate. No usable default: a quota is a policy
  // decision, so 0 is rejected by `validate()`.
  std::uint64_t rate = 0;
  // The period `rate` is counted over. One second: the unit quotas are usually stated in.
  std::chrono::nanoseconds period = std::chrono::seconds(1);
  // Units admitted at once from a full (idle) limiter. One: strict pacing with no bursts, the safe
  // choice until the caller decides how much burst its clients need.
  std::uint64_t burst = 1;

  // Returns the time per unit at the sustained rate (period / rate, rounded down to whole
  // nanoseconds; so the effective rate may be a hair above `rate` when it does not divide).
  constexpr std::chrono::nanoseconds emission_interval() const noexcept {
    return rate == 0 ? std::chrono::nanoseconds(0)
                     : std::chrono::nanoseconds(period.count() / static_cast<std::int64_t>(rate));
  }

  // Returns OK, or InvalidArgument when rate is 0, period is not positive, the rate is above one
  // unit per nanosecond, burst is 0, or burst * emission_interval does not fit in 2^61 ns (~73
  // years).
  absl::Status validate() const {
    if (rate == 0) return absl::InvalidArgumentError(std::string("rate limit: rate must be >= 1"));
    if (period.count() <= 0) {
      return absl::InvalidArgumentError(std::string("rate limit: period must be positive"));
    }
    if (rate > static_cast<std::uint64_t>(period.count())) {
      return absl::InvalidArgumentError(
          std::string("rate limit: rate above one unit per nanosecond"));
    }
    if (burst == 0)
      return absl::InvalidArgumentError(std::string("rate limit: burst must be >= 1"));
    const auto t = static_cast<std::uint64_t>(emission_interval().count());
    if (burst > (std::uint64_t{1} << 61) / t) {
      return absl::InvalidArgumentError(std::string("rate limit: burst * interval too large"));
    }
    return absl::OkStatus();
  }
};

// A short header value built without allocating: a decimal number in a small buffer.
struct header_value {
  char data[24] = {};
  std::size_t size = 0;

  // Returns the value as a string_view into this object.
  std::string_view view() const noexcept { return std::string_view(data, size); }
  // Returns the value as a std::string (allocates).
  std::string str() const { return std::string(data, size); }
};

namespace rate_limit_detail {
inline header_value format_uint(std::uint64_t v) noexcept {
  header_value h;
  const auto res = std::to_chars(h.data, h.data + sizeof(h.data), v);
  h.size = static_cast<std::size_t>(res.ptr - h.data);
  return h;
}
// Whole seconds, rounded up so a client waiting that long is never early; a partial second is 1.
inline std::uint64_t ceil_seconds(std::chrono::nanoseconds d) noexcept {
  if (d.count() <= 0) return 0;
  constexpr std::int64_t ns_per_s = 1'000'000'000;
  return static_cast<std::uint64_t>(d.count() / ns_per_s + (d.count() % ns_per_s != 0 ? 1 : 0));
}
}  // namespace rate_limit_detail

// Returns the RateLimit-Limit value: the burst, e.g. "100".
inline header_value ratelimit_limit_value(const rate_limit_result& r) noexcept {
  return rate_limit_detail::format_uint(r.limit);
}

// Returns the RateLimit-Remaining value, e.g. "42".
inline header_value ratelimit_remaining_value(const rate_limit_result& r) noexcept {
  return rate_limit_detail::format_uint(r.remaining);
}

// Returns the RateLimit-Reset value: whole seconds (rounded up) until the limiter is full again.
inline header_value ratelimit_reset_value(const rate_limit_result& r) noexcept {
  return rate_limit_detail::format_uint(rate_limit_detail::ceil_seconds(r.reset_after));
}

// Returns the Retry-After value: whole seconds (rounded up, at least 1 for a refusal) until the
// request would pass. For an admitted request it is "0"; for one that can never pass (n > burst)
// it is the reset time, after which a smaller request will pass.
inline header_value retry_after_value(const rate_limit_result& r) noexcept {
  if (r.allowed) return rate_limit_detail::format_uint(0);
  const auto d = r.retry_after == rate_limit_result::never() ? r.reset_after : r.retry_after;
  const std::uint64_t s = rate_limit_detail::ceil_seconds(d);
  return rate_limit_detail::format_uint(s == 0 ? 1 : s);
}

}  // namespace sluice
