// sluice/retry.hpp
//
// `sluice::retry` runs a call again when it fails in a way worth retrying: up to `max_attempts`
// attempts, with a backoff between them (constant, capped exponential, full jitter or decorrelated
// jitter), honouring a server's Retry-After hint, limited by a retry budget shared across calls
// (sluice/retry_budget.hpp), and deadline aware: no attempt and no backoff sleep starts when the
// remaining deadline cannot fit it.
//
// What is retried: a failed status whose code is in `retry_on_codes` (or that `retry_on_status`
// accepts), an OK result that a result predicate given with `.retry_if_result(pred)` accepts, and
// an exception that `retry_on_exception` accepts. Rejections by policies inside the retry (an open
// breaker, a full bulkhead) are not retried; attempt timeouts are (`retry_timeouts`).
//
// When it stops: it returns the last attempt's result unchanged (the most useful error for the
// caller) and records why in the call context: budget_exhausted or deadline_exceeded when those
// stopped it. A deadline already passed before the first attempt gives DeadlineExceeded.
//
// Retry-After: the callable calls `ctx.set_retry_after(d)` (taking a `sluice::call_context&`),
// or returns a status carrying `sluice::set_retry_after(status, d)`. The next sleep is then at
// least `d`; a hint longer than `max_retry_after` ends the retries.
//
// Sleeps go through `sluice::detail::sleep_until(clock, t)`, so with
// `sluice::testing::manual_clock` they are simulated and exact (`clock.slept()`).
//
// Thread safety: a retry object is immutable after construction; `execute` and `run` may be
//                called concurrently. The budget it points to must outlive it.
// Time: read from the injected clock (default std::chrono::steady_clock); the calling thread
//       sleeps between attempts (use sluice/asio/pipeline.hpp to wait on a timer instead).
// Errors: never throws by itself; exceptions from the callable propagate unless retried.
// Allocation: none per call, unless a std::function predicate allocates.
//
// Example:
//   sluice::token_bucket_retry_budget budget;
//   sluice::retry retry({.max_attempts = 4,
//                        .delay = sluice::backoff::exponential(10ms, 1s)}, budget);
//   absl::StatusOr<int> r = retry.execute([] { return fetch(); },
//                                          sluice::deadline<>::after(clock, 2s));
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <exception>
#include <functional>
#include <initializer_list>
#include <optional>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "sluice/deadline.hpp"
#include "sluice/detail/clock.hpp"
#include "sluice/detail/random.hpp"
#include "sluice/policy.hpp"
#include "sluice/retry_budget.hpp"

namespace sluice {

// How long to wait before each retry.
struct backoff {
  enum class kind : std::uint8_t {
    constant,             // always `initial`
    exponential,          // initial * multiplier^(n-1), capped at `max`
    full_jitter,          // uniform in [0, exponential(n)]: AWS's "full jitter"
    decorrelated_jitter,  // uniform in [initial, 3 * previous], capped: AWS's "decorrelated"
  };

  kind type = kind::exponential;
  // The first delay. 100 ms: long enough for a blip to clear, short enough that a user barely
  // notices one retry.
  std::chrono::nanoseconds initial = std::chrono::milliseconds(100);
  // The cap on any delay. 10 s: beyond that the caller is usually better served by an error.
  std::chrono::nanoseconds max = std::chrono::seconds(10);
  // The growth factor of the exponential kinds. 2: the classic doubling.
  double multiplier = 2.0;

  // Returns a constant backoff of `d`.
  static backoff constant(std::chrono::nanoseconds d) noexcept {
    return {kind::constant, d, d, 1.0};
  }
  // Returns an exponential backoff from `initial`, multiplied by `multiplier`, capped at `max`.
  static backoff exponential(std::chrono::nanoseconds initial, std::chrono::nanoseconds max,
                             double multiplier = 2.0) noexcept {
    return {kind::exponential, initial, max, multiplier};
  }
  // Returns a full-jitter backoff over the exponential envelope.
  static backoff full_jitter(std::chrono::nanoseconds initial, std::chrono::nanoseconds max,
                             double multiplier = 2.0) noexcept {
    return {kind::full_jitter, initial, max, multiplier};
  }
  // Returns a decorrelated-jitter backoff starting at `initial`, capped at `max`.
  static backoff decorrelated_jitter(std::chrono::nanoseconds initial,
                                     std::chrono::nanoseconds max) noexcept {
    return {kind::decorrelated_jitter, initial, max, 3.0};
  }

  // Returns the delay before retry number `n` (1 = the first retry), given the previous delay
  // (`initial` before the first) and a random source. Never negative, never above `max`.
  template <class Rng>
  std::chrono::nanoseconds next(int n, std::chrono::nanoseconds previous, Rng& rng) const noexcept {
    const double cap = static_cast<double>(max.count());
    auto clamp_ns = [cap](double v) {
      v = std::clamp(v, 0.0, cap);
      // 2^63: `max` = nanoseconds::max() (no cap) converts to this double, which does not fit an
      // int64 (undefined; x86 gives INT64_MIN, a negative delay).
      if (v >= 9223372036854775808.0) return std::chrono::nanoseconds::max();
      return std::chrono::nanoseconds(static_cast<std::int64_t>(v));
    };
    const double base = static_cast<double>(initial.count());
    switch (type) {
      case kind::constant:
        return clamp_ns(base);
      case kind::exponential:
        return clamp_ns(base * std::pow(multiplier, n - 1));
      case kind::full_jitter:
        return clamp_ns(unit(rng) * std::min(cap, base * std::pow(multiplier, n - 1)));
      case kind::decorrelated_jitter: {
        const double hi = std::max(base, 3.0 * static_cast<double>(previous.count()));
        return clamp_ns(base + unit(rng) * (hi - base));
      }
    }
    return clamp_ns(base);
  }

  // Returns a uniform double in [0, 1) from `rng`'s next 64 bits.
  template <class Rng>
  static double unit(Rng& rng) noexcept {
    return static_cast<double>(rng() >> 11) * 0x1.0p-53;
  }
};

// Returns the bit of `code` in a `retry_options::retry_on_codes` mask.
constexpr std::uint32_t code_bit(absl::StatusCode code) noexcept {
  return std::uint32_t{1} << static_cast<int>(code);
}
// Returns the mask of the given codes.
constexpr std::uint32_t code_mask(std::initializer_list<absl::StatusCode> codes) noexcept {
  std::uint32_t m = 0;
  for (auto c : codes) m |= code_bit(c);
  return m;
}

struct retry_options {
  // Attempts in total, the first included. 3: one try and two retries, the default of gRPC
  // service configs and Polly; more rarely helps and multiplies load during outages.
  int max_attempts = 3;
  // The backoff between attempts; see `backoff`. Exponential 100 ms .. 10 s by default.
  backoff delay = {};
  // Seed of the jitter (0: a per-thread random source). A fixed seed makes every call's jitter
  // sequence the same, which tests use.
  std::uint64_t jitter_seed = 0;
  // Status codes retried. Unavailable, Aborted and ResourceExhausted: the codes gRPC documents as
  // safe to retry (transient, or overload the server asked us to back off from).
  std::uint32_t retry_on_codes =
      code_mask({absl::StatusCode::kUnavailable, absl::StatusCode::kAborted,
                 absl::StatusCode::kResourceExhausted});
  // Decides instead of `retry_on_codes` when set (called only for failed statuses).
  std::function<bool(const absl::Status&)> retry_on_status = nullptr;
  // Decides whether a thrown exception is retried. Empty (the default): exceptions propagate at
  // once, since an exception is usually a bug rather than a transient failure.
  std::function<bool(const std::exception_ptr&)> retry_on_exception = nullptr;
  // Whether an attempt stopped by a timeout policy inside the retry is retried. True: per-attempt
  // timeouts exist to cut a stuck attempt short and try again.
  bool retry_timeouts = true;
  // Whether a server's Retry-After hint lengthens the next delay. True: the server knows best.
  bool honour_retry_after = true;
  // A hint longer than this ends the retries. 1 min: a caller rarely wants to wait longer.
  std::chrono::nanoseconds max_retry_after = std::chrono::minutes(1);
  // The least time an attempt needs. An attempt (or the sleep before it) starts only if this much
  // remains before the deadline after the sleep. 0: any time left is enough.
  std::chrono::nanoseconds min_attempt_time = std::chrono::nanoseconds::zero();
};

// The result predicate of a retry that has none.
struct no_result_predicate {
  // Returns false: an OK result is never retried.
  template <class T>
  constexpr bool operator()(const T&) const noexcept {
    return false;
  }
};

namespace detail {
// What the deduction guides tell apart: a clock and a retry budget.
template <class C>
concept clock_like = requires(const C& c) {
  c.now();
};
template <class B>
concept retry_budget_like = requires(B& b) {
  b.try_retry();
};
}  // namespace detail

// Retries a call; see the top of this header.
template <class Clock = std::chrono::steady_clock, class Budget = no_retry_budget,
          class ResultPredicate = no_result_predicate>
class retry {
 public:
  using sluice_policy = void;
  using clock_type = Clock;
  using budget_type = Budget;

  // Creates a retry without a budget.
  template <std::same_as<no_retry_budget> B = Budget>
  explicit retry(retry_options opts, Clock clock = Clock())
      : opts_(std::move(opts)), budget_(&shared_no_budget()), clock_(clock) {
    opts_.max_attempts = std::max(1, opts_.max_attempts);
  }

  // Creates a retry limited by `budget`, which must outlive the retry and its copies.
  retry(retry_options opts, Budget& budget, Clock clock = Clock())
      : opts_(std::move(opts)), budget_(&budget), clock_(clock) {
    opts_.max_attempts = std::max(1, opts_.max_attempts);
  }

  // Creates a retry from parts (used by `retry_if_result`).
  retry(retry_options opts, Budget* budget, Clock clock, ResultPredicate pred)
      : opts_(std::move(opts)), budget_(budget), clock_(clock), pred_(std::move(pred)) {}

  // Returns a copy that also retries OK results for which `pred(value)` is true (e.g. an HTTP 503
  // returned as a value). `pred` takes `const T&` of the callable's value type.
  template <class Pred>
  retry<Clock, Budget, Pred> retry_if_result(Pred pred) const {
    return retry<Clock, Budget, Pred>(opts_, budget_, clock_, std::move(pred));
  }

  // Returns the options.
  const retry_options& options() const noexcept { return opts_; }
  // Returns the clock.
  const Clock& clock() const noexcept { return clock_; }

  // Runs `fn` (taking nothing or a `call_context<Clock>&`) with retries, within `d`.
  // Returns its normalised result (see sluice/policy.hpp); a rejection is described by the status.
  template <class F>
  [[nodiscard]] auto execute(F&& fn, sluice::deadline<Clock> d = {}) {
    call_context<Clock> ctx(clock_, d);
    auto r = run(ctx, [&] { return invoke_callable(fn, ctx); });
    if (ctx.rejected() && !status_of(r).ok()) r = decltype(r)(to_status(ctx.reason()));
    return r;
  }

  // Runs `next` with retries inside a pipeline; see sluice/policy.hpp for the protocol.
  template <class Ctx, class Next>
  auto run(Ctx& ctx, Next&& next) -> std::invoke_result_t<Next&> {
    using R = std::invoke_result_t<Next&>;
    call_state st = start_call(ctx);
    for (int attempt = 1;; ++attempt) {
      if (!begin_attempt(ctx, st, attempt)) return reject<R>(ctx, reason::deadline_exceeded);
      std::optional<typename Clock::time_point> wake;
      if (opts_.retry_on_exception) {
        try {
          R r = next();
          wake = after_attempt(ctx, st, attempt, r);
          if (!wake) return r;
        } catch (...) {
          wake = after_exception(ctx, st, attempt, std::current_exception());
          if (!wake) throw;
        }
      } else {
        R r = next();
        wake = after_attempt(ctx, st, attempt, r);
        if (!wake) return r;
      }
      sleep_until(*wake);
    }
  }

  // The steps of `run`, public so that asynchronous drivers (sluice/asio/pipeline.hpp) share the
  // decisions and only wait differently. Per-call state:
  struct call_state {
    sluice::deadline<Clock> deadline;
    std::chrono::nanoseconds previous;
    // The seeded jitter source, created at the first backoff (only when `jitter_seed` is set).
    std::optional<detail::fast_rng> rng;
  };

  // Starts a call: counts it in the budget and captures the context's deadline.
  template <class Ctx>
  call_state start_call(const Ctx& ctx) {
    budget_->record_call();
    return call_state{ctx.deadline(), opts_.delay.initial, std::nullopt};
  }

  // Returns whether attempt `attempt` may start (the deadline fits `min_attempt_time`) and, if so,
  // begins it in `ctx`. When false, the caller returns `reject<R>(ctx, deadline_exceeded)`.
  template <class Ctx>
  bool begin_attempt(Ctx& ctx, const call_state& st, int attempt) const {
    // An infinite deadline fits everything: skip the clock read (about 24 ns with steady_clock).
    if (!st.deadline.is_infinite() && !st.deadline.fits(clock_.now(), opts_.min_attempt_time)) {
      return false;
    }
    ctx.begin_attempt(attempt);
    return true;
  }

  // Judges the result of attempt `attempt`: nothing when the call is over (return `r`), else the
  // time to sleep until before the next attempt. Updates the budget and the context's reason.
  template <class Ctx, class R>
  std::optional<typename Clock::time_point> after_attempt(Ctx& ctx, call_state& st, int attempt,
                                                          const R& r) {
    if (ctx.rejected() && ctx.reason() != reason::timeout) {
      return std::nullopt;  // an inner policy refused: nothing the dependency said to count
    }
    if (!should_retry(ctx, r)) {
      budget_->record_success();
      return std::nullopt;
    }
    budget_->record_failure();
    if (attempt >= opts_.max_attempts) return std::nullopt;
    std::optional<std::chrono::nanoseconds> hint;
    if (opts_.honour_retry_after) hint = hint_of(ctx, status_of(r));
    return plan_sleep(ctx, st, attempt, hint);
  }

  // Judges an exception thrown by attempt `attempt`: nothing when it must propagate, else the time
  // to sleep until before the next attempt. Charges the budget as `after_attempt` does for a
  // status: a retryable exception is a failure (the last attempt's too), one the predicate
  // declines is an answer.
  template <class Ctx>
  std::optional<typename Clock::time_point> after_exception(Ctx& ctx, call_state& st, int attempt,
                                                            std::exception_ptr e) {
    if (!opts_.retry_on_exception) return std::nullopt;
    if (!opts_.retry_on_exception(e)) {
      budget_->record_success();
      return std::nullopt;
    }
    budget_->record_failure();
    if (attempt >= opts_.max_attempts) return std::nullopt;
    return plan_sleep(ctx, st, attempt,
                      opts_.honour_retry_after ? hint_of(ctx, absl::OkStatus()) : std::nullopt);
  }

 private:
  // Sleeps until `t` through the clock (manual clocks: simulated and counted).
  void sleep_until(typename Clock::time_point t) { detail::sleep_until(clock_, t); }

  static no_retry_budget& shared_no_budget() noexcept {
    static no_retry_budget none;
    return none;
  }

  template <class Ctx, class R>
  bool should_retry(const Ctx& ctx, const R& r) const {
    const absl::Status& s = status_of(r);
    if (s.ok()) {
      if constexpr (std::is_same_v<R, absl::Status> ||
                    std::is_same_v<ResultPredicate, no_result_predicate>) {
        return false;
      } else {
        return static_cast<bool>(pred_(*r));
      }
    }
    if (ctx.rejected()) return ctx.reason() == reason::timeout && opts_.retry_timeouts;
    if (opts_.retry_on_status) return opts_.retry_on_status(s);
    const auto code = static_cast<int>(s.code());
    return code < 32 && (opts_.retry_on_codes & (std::uint32_t{1} << code)) != 0;
  }

  template <class Ctx>
  static std::optional<std::chrono::nanoseconds> hint_of(const Ctx& ctx, const absl::Status& s) {
    if (auto h = ctx.retry_after()) return std::chrono::duration_cast<std::chrono::nanoseconds>(*h);
    if (!s.ok() && s.GetPayload(retry_after_type_url)) {
      if (auto h = get_retry_after(s)) return std::chrono::nanoseconds(*h);
    }
    return std::nullopt;
  }

  // Decides the wake-up time before attempt `attempt + 1`, or nothing when retrying must stop
  // (recording the reason in `ctx`).
  template <class Ctx>
  std::optional<typename Clock::time_point> plan_sleep(
      Ctx& ctx, call_state& st, int attempt, std::optional<std::chrono::nanoseconds> hint) {
    std::chrono::nanoseconds delay;
    if (opts_.jitter_seed != 0) {
      if (!st.rng) st.rng.emplace(opts_.jitter_seed);
      delay = opts_.delay.next(attempt, st.previous, *st.rng);
    } else {
      delay = opts_.delay.next(attempt, st.previous, detail::thread_rng());
    }
    st.previous = delay;
    if (hint) {
      if (*hint > opts_.max_retry_after) return std::nullopt;
      delay = std::max(delay, *hint);
    }
    const auto now = clock_.now();
    // Saturating: an unbounded backoff or hint (nanoseconds::max()) must not wrap around into an
    // immediate retry.
    const std::chrono::nanoseconds extra =
        std::max(opts_.min_attempt_time, std::chrono::nanoseconds::zero());
    const std::chrono::nanoseconds needed = delay <= std::chrono::nanoseconds::max() - extra
                                                ? delay + extra
                                                : std::chrono::nanoseconds::max();
    if (!st.deadline.fits(now, needed)) {
      ctx.set_reason(reason::deadline_exceeded, false);
      return std::nullopt;
    }
    if (!budget_->try_retry()) {
      ctx.set_reason(reason::budget_exhausted, false);
      return std::nullopt;
    }
    return sluice::deadline<Clock>::after(now, delay).time();
  }

  retry_options opts_;
  Budget* budget_;
  Clock clock_;
  [[no_unique_address]] ResultPredicate pred_{};
};

// Deduction guides: `sluice::retry(opts)`, `sluice::retry(opts, budget)`, `..., clock)`.
retry(retry_options)->retry<std::chrono::steady_clock, no_retry_budget>;
template <detail::clock_like Clock>
retry(retry_options, Clock) -> retry<Clock, no_retry_budget>;
template <detail::retry_budget_like Budget>
retry(retry_options, Budget&) -> retry<std::chrono::steady_clock, Budget>;
template <class Budget, class Clock>
retry(retry_options, Budget&, Clock) -> retry<Clock, Budget>;

}  // namespace sluice
