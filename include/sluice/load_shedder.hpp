// sluice/load_shedder.hpp
//
// `sluice::load_shedder` makes one admission decision per request from everything that says the
// server is too busy: its request queue (depth and the age of the oldest entry), its concurrency
// limiter (fixed or adaptive) and its rate limiter. The answer maps directly to HTTP:
//
//   admitted                      -> process the request (holding the concurrency permit)
//   rate_limited                  -> 429 Too Many Requests, Retry-After from the rate limiter
//   overloaded / queue_full /
//   queue_delay                   -> 503 Service Unavailable, Retry-After = overload_retry_after
//
// Checks run cheapest and side-effect-free first: the queue (nothing to undo), then the
// concurrency permit (given back if the next check fails), then the rate limiter last, so a
// request refused for overload never spends a rate-limit token.
//
// Either limiter may be absent (nullptr). The shedder holds non-owning pointers: the limiters must
// outlive it.
//
// Thread safety: `admit()` may be called concurrently (it is as thread-safe as the limiters,
//   which all are). An `admission` is used by one thread at a time.
// Time: none of its own; the limiters read their clocks; the queue state is the caller's.
// Errors: refusals are values; `admission::status()` maps them to ResourceExhausted (429) or
//   Unavailable (503). Nothing throws; admission allocates nothing.
//
// Example:
//   sluice::load_shedder shedder(&rate, &inflight, {.max_queue_delay = 50ms});
//   auto a = shedder.admit({.depth = queue.size(), .capacity = 1024, .oldest_wait = age});
//   if (!a) return reply(a.http_status(), "Retry-After", a.retry_after_value().view());
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"

#include "sluice/adaptive_limiter.hpp"
#include "sluice/concurrency_limiter.hpp"
#include "sluice/gcra_limiter.hpp"
#include "sluice/rate_limit.hpp"

namespace sluice {

// Why a request was refused.
enum class shed_reason : std::uint8_t {
  none,          // admitted
  queue_full,    // the request queue is at capacity                      (503)
  queue_delay,   // the oldest queued request has waited too long          (503)
  overloaded,    // the concurrency limiter is at its cap                  (503)
  rate_limited,  // the rate limiter refused                               (429)
};

// The server's request queue as the caller sees it now.
struct queue_state {
  std::size_t depth = 0;                    // requests waiting
  std::size_t capacity = 0;                 // the queue's bound; 0: unbounded / not checked
  std::chrono::nanoseconds oldest_wait{0};  // how long the oldest waiting request has waited
};

struct load_shedder_options {
  // Refuse when the oldest queued request has waited longer than this (CoDel's idea: a standing
  // queue means more work arrives than leaves). 0: off, since the right value is a fraction of
  // the clients' own timeout, which only the service knows.
  std::chrono::nanoseconds max_queue_delay{0};
  // Retry-After sent with a 503. One second: long enough for a burst to drain, short enough that
  // well-behaved clients come back promptly.
  std::chrono::nanoseconds overload_retry_after = std::chrono::seconds(1);
};

// The decision for one request; holds the concurrency permit when admitted. Movable.
template <class Permit>
class admission {
 public:
  // Returns whether the request may proceed.
  bool admitted() const noexcept { return reason_ == shed_reason::none; }
  explicit operator bool() const noexcept { return admitted(); }
  // Returns why it was refused (none when admitted).
  shed_reason reason() const noexcept { return reason_; }
  // Returns 200 when admitted, 429 when rate limited, 503 otherwise.
  int http_status() const noexcept {
    return admitted() ? 200 : reason_ == shed_reason::rate_limited ? 429 : 503;
  }
  // Returns how long the client should wait before retrying (0 when admitted).
  std::chrono::nanoseconds retry_after() const noexcept { return retry_after_; }
  // Returns the Retry-After header value: whole seconds rounded up, at least 1 for a refusal.
  header_value retry_after_value() const noexcept {
    rate_limit_result r;
    r.allowed = admitted();
    r.retry_after = retry_after_;
    r.reset_after = retry_after_;
    return sluice::retry_after_value(r);
  }
  // Returns the rate limiter's result when it was consulted (for the RateLimit-* headers).
  const std::optional<rate_limit_result>& rate() const noexcept { return rate_; }
  // Returns the concurrency permit (empty when refused or when no concurrency limiter is used).
  // Keep it alive while the request is processed; for an adaptive limiter record the outcome on it.
  std::optional<Permit>& permit() noexcept { return permit_; }
  // Returns OK, ResourceExhausted (rate limited) or Unavailable (overloaded). Allocates for a
  // refusal (the message).
  absl::Status status() const {
    switch (reason_) {
      case shed_reason::none:
        return absl::OkStatus();
      case shed_reason::rate_limited:
        return absl::ResourceExhaustedError(std::string("load shed: rate limited"));
      case shed_reason::queue_full:
        return absl::UnavailableError(std::string("load shed: queue full"));
      case shed_reason::queue_delay:
        return absl::UnavailableError(std::string("load shed: queue delay too long"));
      case shed_reason::overloaded:
        return absl::UnavailableError(std::string("load shed: too many requests in flight"));
    }
    return absl::UnknownError(std::string("load shed"));
  }

 private:
  template <class, class>
  friend class load_shedder;
  shed_reason reason_ = shed_reason::none;
  std::chrono::nanoseconds retry_after_{0};
  std::optional<rate_limit_result> rate_;
  std::optional<Permit> permit_;
};

template <class RateLimiter = gcra_limiter<>, class ConcurrencyLimiter = concurrency_limiter>
class load_shedder {
 public:
  using permit_type = typename ConcurrencyLimiter::permit;
  using admission_type = admission<permit_type>;

  // Creates a shedder over the given limiters (either may be nullptr). Non-owning.
  load_shedder(RateLimiter* rate, ConcurrencyLimiter* concurrency,
               load_shedder_options opts = {}) noexcept
      : rate_(rate), concurrency_(concurrency), opts_(opts) {}

  // Decides one request costing `cost` rate-limit units, at `priority` (used by an adaptive
  // concurrency limiter; ignored by a fixed one). No lock of its own; no allocation.
  admission_type admit(const queue_state& queue = {}, std::uint64_t cost = 1,
                       call_priority priority = call_priority::normal) {
    admission_type a;
    if (queue.capacity != 0 && queue.depth >= queue.capacity) {
      return refuse(std::move(a), shed_reason::queue_full);
    }
    if (opts_.max_queue_delay.count() > 0 && queue.oldest_wait > opts_.max_queue_delay) {
      return refuse(std::move(a), shed_reason::queue_delay);
    }
    if (concurrency_ != nullptr) {
      if constexpr (requires { concurrency_->try_acquire(priority); }) {
        a.permit_ = concurrency_->try_acquire(priority);
      } else {
        a.permit_ = concurrency_->try_acquire();
      }
      if (!a.permit_) return refuse(std::move(a), shed_reason::overloaded);
    }
    if (rate_ != nullptr) {
      a.rate_ = rate_->try_acquire(cost);
      if (!a.rate_->allowed) {
        a.permit_.reset();  // an unused permit: an adaptive limiter counts it as ignored
        a.reason_ = shed_reason::rate_limited;
        a.retry_after_ = a.rate_->retry_after == rate_limit_result::never() ? a.rate_->reset_after
                                                                            : a.rate_->retry_after;
        return a;
      }
    }
    return a;
  }

 private:
  admission_type refuse(admission_type a, shed_reason why) const {
    a.reason_ = why;
    a.retry_after_ = opts_.overload_retry_after;
    return a;
  }

  RateLimiter* rate_;
  ConcurrencyLimiter* concurrency_;
  load_shedder_options opts_;
};

}  // namespace sluice
