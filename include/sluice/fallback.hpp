// sluice/fallback.hpp
//
// `sluice::fallback` supplies a substitute result when a call fails or is refused: a fixed value
// (cached data, a default), or a function that computes one from the failure. Which failures it
// covers is selectable by reason: the callable's own failures, an open breaker, a full bulkhead,
// an exhausted retry budget, a passed deadline, a timeout (`sluice::fallback_on`).
//
// It is a pipeline stage (put it outermost, so it sees what the other policies decided) and can
// be used alone with `execute`.
//
// The handler may be:
//   a value                              returned as the result (copied each time)
//   f()                                  called; returns the value or a result
//   f(const absl::Status&)               called with the failed status
//   f(const absl::Status&, sluice::reason)  called with the status and the reason
// and returns something convertible to the call's result type (`T`, `absl::StatusOr<T>`, or
// `absl::Status` for calls without a value).
//
// Thread safety: `run` and `execute` may be called concurrently if the handler may be.
// Time: none.
// Errors: exceptions from the call are not caught (they propagate through the fallback).
//
// Example:
//   auto p = sluice::pipeline(sluice::fallback(cached_price, sluice::fallback_on::rejections),
//                             sluice::breaker_ref(breaker));
#pragma once

#include <chrono>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "sluice/policy.hpp"

namespace sluice {

// Which outcomes a fallback covers; combine with `|`.
enum class fallback_on : std::uint32_t {
  failure = 1u << 0,  // the callable failed (its own non-OK status)
  breaker_open = 1u << static_cast<int>(reason::breaker_open),
  bulkhead_full = 1u << static_cast<int>(reason::bulkhead_full),
  budget_exhausted = 1u << static_cast<int>(reason::budget_exhausted),
  deadline_exceeded = 1u << static_cast<int>(reason::deadline_exceeded),
  timeout = 1u << static_cast<int>(reason::timeout),
  // Every refusal by a policy, not the callable's own failures.
  rejections = breaker_open | bulkhead_full | budget_exhausted | deadline_exceeded | timeout,
  any = failure | rejections,
};

// Returns the union of two selections.
constexpr fallback_on operator|(fallback_on a, fallback_on b) noexcept {
  return static_cast<fallback_on>(static_cast<std::uint32_t>(a) | static_cast<std::uint32_t>(b));
}

// Returns whether `set` covers a call that ended with `r` (rejected by a policy or not).
constexpr bool covers(fallback_on set, reason r, bool rejected) noexcept {
  const auto bits = static_cast<std::uint32_t>(set);
  const std::uint32_t reason_bit = r == reason::none ? 0u : (1u << static_cast<int>(r));
  if (rejected) return (bits & reason_bit) != 0;
  return (bits & (static_cast<std::uint32_t>(fallback_on::failure) | reason_bit)) != 0;
}

// A substitute result on failure or rejection; see the top of this header.
template <class Handler>
class fallback {
 public:
  using sluice_policy = void;

  // Creates a fallback with `handler` for the outcomes in `when`. The default, every failure and
  // rejection, is what "serve something rather than an error" usually means.
  explicit fallback(Handler handler, fallback_on when = fallback_on::any)
      : handler_(std::move(handler)), when_(when) {}

  // Runs `next`; on a covered failure returns the handler's result instead and marks the context.
  template <class Ctx, class Next>
  auto run(Ctx& ctx, Next&& next) -> std::invoke_result_t<Next&> {
    return recover(ctx, next());
  }

  // Returns `r`, or the handler's substitute when `r` is a covered failure (marking the context).
  // The step of `run` after the call, shared with asynchronous drivers.
  template <class Ctx, class R>
  R recover(Ctx& ctx, R r) {
    if (status_of(r).ok() || !covers(when_, ctx.reason(), ctx.rejected())) return r;
    ctx.set_fallback_used();
    return substitute<R>(status_of(r), ctx.reason());
  }

  // Runs `fn` (taking nothing or a `call_context<>&`) and falls back on its failure.
  template <class F>
  [[nodiscard]] auto execute(F&& fn) {
    std::chrono::steady_clock clock;
    call_context<std::chrono::steady_clock> ctx(clock);
    return run(ctx, [&] { return invoke_callable(fn, ctx); });
  }

 private:
  template <class R>
  R substitute(const absl::Status& status, reason why) {
    if constexpr (std::is_invocable_v<Handler&, const absl::Status&, reason>) {
      return wrap<R>([&] { return handler_(status, why); });
    } else if constexpr (std::is_invocable_v<Handler&, const absl::Status&>) {
      return wrap<R>([&] { return handler_(status); });
    } else if constexpr (std::is_invocable_v<Handler&>) {
      return wrap<R>([&] { return handler_(); });
    } else {
      return R(handler_);
    }
  }

  template <class R, class Fn>
  static R wrap(Fn&& fn) {
    if constexpr (std::is_void_v<std::invoke_result_t<Fn&>>) {
      fn();
      return R(absl::OkStatus());
    } else {
      return R(fn());
    }
  }

  Handler handler_;
  fallback_on when_;
};

}  // namespace sluice
