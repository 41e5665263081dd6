// sluice/policy.hpp
//
// The protocol shared by sluice's resilience policies (retry, bulkhead, fallback, timeout, the
// circuit breaker adapter) so that `sluice::pipeline` can nest them at compile time: the typed
// `sluice::reason` a call was refused or stopped for, the `sluice::call_context` that travels
// through one call, the `sluice::outcome` a pipeline reports, and the `sluice::policy` concept.
//
// Writing a policy: a class with `using sluice_policy = void;` and
//   template <class Ctx, class Next> auto run(Ctx& ctx, Next&& next) -> std::invoke_result_t<Next&>
// where `next()` runs the rest of the pipeline and returns `R`, either `absl::Status` or
// `absl::StatusOr<T>`. A policy that refuses the call returns `sluice::reject<R>(ctx, reason)`
// (no allocation, no exception) instead of calling `next`.
//
// The callable at the centre of a pipeline may take no argument or a `call_context&`, through
// which it reads its deadline and attempt number and can pass a server's Retry-After hint to the
// retry policy (`ctx.set_retry_after(d)`). It may return `absl::StatusOr<T>`, `absl::Status`,
// `void` (treated as OK) or a plain `T` (wrapped as an OK `absl::StatusOr<T>`).
//
// Thread safety: a call_context belongs to one call on one thread (or one asynchronous chain);
//                the other types are values.
// Time: call_context reads the pipeline's clock.
// Errors: rejections are returned as statuses with an empty message (so they never allocate) plus
//         a `reason`; `sluice::to_status(reason)` gives the descriptive status.
//
// Example:
//   struct log_policy {
//     using sluice_policy = void;
//     template <class Ctx, class Next> auto run(Ctx& ctx, Next&& next) {
//       auto r = next();
//       if (!sluice::status_of(r).ok()) std::clog << "attempt " << ctx.attempt() << " failed\n";
//       return r;
//     }
//   };
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/cord.h"

#include "sluice/deadline.hpp"

namespace sluice {

// Why a policy refused a call or stopped retrying it. `none` when the result is the callable's own.
enum class reason : std::uint8_t {
  none = 0,
  breaker_open,       // a circuit breaker rejected the call (Unavailable)
  bulkhead_full,      // the bulkhead had no free slot and no queue room (ResourceExhausted)
  budget_exhausted,   // the retry budget refused another retry (the last failure is returned)
  deadline_exceeded,  // the caller's deadline passed or could not fit the next attempt or sleep
  timeout,            // a timeout policy's own limit passed (DeadlineExceeded)
};

// Returns the status code a rejection for `r` carries.
constexpr absl::StatusCode code_of(reason r) noexcept {
  switch (r) {
    case reason::none:
      return absl::StatusCode::kOk;
    case reason::breaker_open:
      return absl::StatusCode::kUnavailable;
    case reason::bulkhead_full:
    case reason::budget_exhausted:
      return absl::StatusCode::kResourceExhausted;
    case reason::deadline_exceeded:
    case reason::timeout:
      return absl::StatusCode::kDeadlineExceeded;
  }
  return absl::StatusCode::kUnknown;
}

// Returns a short name for `r` ("breaker_open", ...).
constexpr const char* to_string(reason r) noexcept {
  switch (r) {
    case reason::none:
      return "none";
    case reason::breaker_open:
      return "breaker_open";
    case reason::bulkhead_full:
      return "bulkhead_full";
    case reason::budget_exhausted:
      return "budget_exhausted";
    case reason::deadline_exceeded:
      return "deadline_exceeded";
    case reason::timeout:
      return "timeout";
  }
  return "unknown";
}

// Returns the descriptive status for a rejection (allocates its message; not for hot paths).
inline absl::Status to_status(reason r) {
  if (r == reason::none) return absl::OkStatus();
  return absl::Status(code_of(r), std::string("sluice: ") + to_string(r));
}

// The payload type URL under which `set_retry_after` stores a Retry-After hint in a status.
inline constexpr const char* retry_after_type_url = "type.sluice.dev/retry-after-ms";

// Attaches a server's Retry-After hint to `status` (a non-OK status), for callables that cannot
// take a call_context. Allocates (a status payload); meant for the failure path.
template <class Rep, class Period>
void set_retry_after(absl::Status& status, std::chrono::duration<Rep, Period> hint) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(hint).count();
  status.SetPayload(retry_after_type_url, absl::Cord(std::to_string(ms < 0 ? 0 : ms)));
}

// Returns the Retry-After hint stored in `status` by `set_retry_after`, if any.
inline std::optional<std::chrono::milliseconds> get_retry_after(const absl::Status& status) {
  if (status.ok()) return std::nullopt;
  auto payload = status.GetPayload(retry_after_type_url);
  if (!payload) return std::nullopt;
  long long ms = 0;
  for (char c : std::string(*payload)) {
    if (c < '0' || c > '9') return std::nullopt;
    ms = ms * 10 + (c - '0');
  }
  return std::chrono::milliseconds(ms);
}

// What travels through one call of a pipeline (or of one policy used alone): the clock, the
// deadline, the attempt number, a Retry-After hint and the reason the call was stopped.
template <class Clock = std::chrono::steady_clock>
class call_context {
 public:
  using clock_type = Clock;
  using time_point = typename Clock::time_point;
  using duration = typename Clock::duration;

  // Creates the context of one call that must end by `d`.
  explicit call_context(const Clock& clock, sluice::deadline<Clock> d = {}) noexcept
      : clock_(&clock), deadline_(d) {}

  // Returns the clock the policies read.
  const Clock& clock() const noexcept { return *clock_; }
  // Returns the current time on that clock.
  time_point now() const noexcept { return clock_->now(); }

  // Returns the deadline the current attempt must finish by (the caller's, narrowed by timeouts).
  sluice::deadline<Clock> deadline() const noexcept { return deadline_; }
  // Replaces the deadline; policies narrow it for their inner part and restore it afterwards.
  void set_deadline(sluice::deadline<Clock> d) noexcept { deadline_ = d; }

  // Returns the 1-based number of the current attempt (1 outside any retry).
  int attempt() const noexcept { return attempt_; }
  // Starts attempt `n`: clears the hint and the reason left by the previous attempt.
  void begin_attempt(int n) noexcept {
    attempt_ = n;
    has_retry_after_ = false;
    reason_ = reason::none;
    rejected_ = false;
  }

  // Records a server's Retry-After hint for the retry policy (called by the callable).
  void set_retry_after(duration hint) noexcept {
    retry_after_ = hint;
    has_retry_after_ = true;
  }
  // Returns the hint recorded during the current attempt, if any.
  std::optional<duration> retry_after() const noexcept {
    if (!has_retry_after_) return std::nullopt;
    return retry_after_;
  }

  // Returns why the call was refused or stopped (`none` when the result is the callable's own).
  sluice::reason reason() const noexcept { return reason_; }
  // Returns whether the current result was produced by a policy's rejection (not the callable).
  bool rejected() const noexcept { return rejected_; }
  // Records why the call was stopped; `rejected` says the result is the rejection itself.
  void set_reason(sluice::reason r, bool rejected) noexcept {
    reason_ = r;
    rejected_ = rejected;
  }

  // Returns whether a fallback produced the result.
  bool fallback_used() const noexcept { return fallback_used_; }
  // Records that a fallback produced the result.
  void set_fallback_used() noexcept { fallback_used_ = true; }

 private:
  const Clock* clock_;
  sluice::deadline<Clock> deadline_;
  int attempt_ = 1;
  // A value and a flag rather than std::optional: GCC 12 at -O2 warns that an optional's payload
  // "may be used uninitialized" through the inlined pipeline.
  duration retry_after_{};
  bool has_retry_after_ = false;
  sluice::reason reason_ = reason::none;
  bool rejected_ = false;
  bool fallback_used_ = false;
};

// Returns the status of a result (`absl::Status` or `absl::StatusOr<T>`).
inline const absl::Status& status_of(const absl::Status& r) noexcept { return r; }
template <class T>
const absl::Status& status_of(const absl::StatusOr<T>& r) noexcept {
  return r.status();
}

namespace detail {
template <class R>
struct is_result : std::false_type {};
template <>
struct is_result<absl::Status> : std::true_type {};
template <class T>
struct is_result<absl::StatusOr<T>> : std::true_type {};

// The result type a callable's return type becomes inside a pipeline.
template <class Ret>
struct normalize_result {
  using type = absl::StatusOr<Ret>;
};
template <>
struct normalize_result<void> {
  using type = absl::Status;
};
template <>
struct normalize_result<absl::Status> {
  using type = absl::Status;
};
template <class T>
struct normalize_result<absl::StatusOr<T>> {
  using type = absl::StatusOr<T>;
};

template <class F, class Ctx>
decltype(auto) invoke_raw(F& fn, Ctx& ctx) {
  if constexpr (std::is_invocable_v<F&, Ctx&>) {
    return fn(ctx);
  } else {
    return fn();
  }
}

template <class F, class Ctx>
using raw_result_t = decltype(invoke_raw(std::declval<F&>(), std::declval<Ctx&>()));

}  // namespace detail

// The result type of running `F` inside a pipeline with context `Ctx`.
template <class F, class Ctx>
using result_t =
    typename detail::normalize_result<std::remove_cvref_t<detail::raw_result_t<F, Ctx>>>::type;

// Calls `fn` (with `ctx` if it takes it) and returns its result normalised to `result_t`.
template <class F, class Ctx>
result_t<F, Ctx> invoke_callable(F& fn, Ctx& ctx) {
  using raw = detail::raw_result_t<F, Ctx>;
  if constexpr (std::is_void_v<raw>) {
    detail::invoke_raw(fn, ctx);
    return absl::OkStatus();
  } else {
    return result_t<F, Ctx>(detail::invoke_raw(fn, ctx));
  }
}

// Returns the rejection result for `r` and records it in `ctx`. Never allocates: the status has
// an empty message (the pipeline's `execute` adds one when it hands the status to the caller).
template <class R, class Ctx>
R reject(Ctx& ctx, reason r) noexcept {
  ctx.set_reason(r, true);
  return R(absl::Status(code_of(r), ""));
}

// A type usable as a pipeline stage: it says so with `using sluice_policy = void;` and has a
// `run(ctx, next)` member template (see the top of this header).
template <class P>
concept policy = requires {
  typename std::remove_cvref_t<P>::sluice_policy;
};

// What a pipeline reports about one call: the result, why it was refused or stopped, how many
// attempts ran and whether a fallback produced the value.
template <class R>
struct outcome {
  R result;
  sluice::reason reason = reason::none;
  int attempts = 1;
  bool fallback_used = false;

  // Returns whether the result is OK.
  bool ok() const noexcept { return status_of(result).ok(); }
};

}  // namespace sluice
