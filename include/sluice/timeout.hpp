// sluice/timeout.hpp
//
// `sluice::timeout` bounds how long the part of a pipeline inside it may take. Synchronous code
// cannot be interrupted, so this timeout is cooperative: it narrows the deadline that the inner
// policies and the callable see (`ctx.deadline()`), so an inner bulkhead stops waiting, an inner
// retry stops retrying and a callable that passes the deadline on (to a socket, a database
// driver, another service) stops in time; and a failure that arrives after the limit is reported
// as `sluice::reason::timeout` (DeadlineExceeded), so an outer retry can try again. A success that
// arrives late is kept: discarding work already done would help nobody.
//
// For a timeout that really cancels the inner operation, use the Asio pipeline
// (sluice/asio/timeout.hpp), where operations support cancellation.
//
// Thread safety: immutable; `run` may be called concurrently.
// Time: read from the injected clock (default std::chrono::steady_clock).
// Errors: a timeout is returned (DeadlineExceeded, reason timeout), never thrown.
//
// Example:
//   auto p = sluice::pipeline(sluice::retry(retry_opts), sluice::timeout(200ms));  // per attempt
//   auto r = p.execute([](sluice::call_context<>& ctx) { return query(ctx.deadline()); });
#pragma once

#include <chrono>
#include <type_traits>

#include "absl/status/status.h"

#include "sluice/deadline.hpp"
#include "sluice/policy.hpp"

namespace sluice {

template <class Clock = std::chrono::steady_clock>
class timeout {
 public:
  using sluice_policy = void;
  using clock_type = Clock;

  // Creates a timeout of `limit` (clamped to >= 0).
  explicit timeout(std::chrono::nanoseconds limit, Clock clock = Clock()) noexcept
      : limit_(limit.count() < 0 ? std::chrono::nanoseconds::zero() : limit), clock_(clock) {}

  // Returns the limit.
  std::chrono::nanoseconds limit() const noexcept { return limit_; }
  // Returns the clock.
  const Clock& clock() const noexcept { return clock_; }

  // Runs `next` with the context's deadline narrowed to now + limit, then restores it.
  template <class Ctx, class Next>
  auto run(Ctx& ctx, Next&& next) -> std::invoke_result_t<Next&> {
    using R = std::invoke_result_t<Next&>;
    const sluice::deadline<Clock> outer = ctx.deadline();
    const sluice::deadline<Clock> inner = outer.within(clock_.now(), limit_);
    const bool ours = inner < outer;  // the timeout, not the caller's deadline, is the limit
    struct restore {
      Ctx& ctx;
      sluice::deadline<Clock> d;
      ~restore() { ctx.set_deadline(d); }
    } guard{ctx, outer};
    ctx.set_deadline(inner);
    R r = next();
    if (ours && !status_of(r).ok() && inner.expired(clock_)) {
      return reject<R>(ctx, reason::timeout);
    }
    return r;
  }

 private:
  std::chrono::nanoseconds limit_;
  Clock clock_;
};

}  // namespace sluice
