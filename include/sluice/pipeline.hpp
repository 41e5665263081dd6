// sluice/pipeline.hpp
//
// `sluice::pipeline` combines resilience policies at compile time into one call path:
//
//   auto p = sluice::pipeline(sluice::fallback(cached),            // outermost
//                             sluice::retry(retry_opts, budget),
//                             sluice::breaker_ref(breaker),
//                             sluice::bulkhead_ref(db_slots),
//                             sluice::timeout(200ms));              // innermost, per attempt
//   absl::StatusOr<row> r = p.execute([&](sluice::call_context<>& ctx) { return db.get(key); });
//
// The first policy is the outermost: above, the fallback sees what the retry finally decided, the
// retry retries whole breaker + bulkhead + timeout attempts, and the timeout bounds one attempt.
// Each stage is a member of a `std::tuple` and calls the next through a lambda, so the whole
// pipeline inlines into straight-line code: no virtual calls, no type erasure, no allocation on
// the path of a call that succeeds or is rejected.
//
// Results: `execute` returns the callable's result normalised to `absl::StatusOr<T>` (or
// `absl::Status` for callables returning `absl::Status` or void). A rejection is a status with a
// descriptive message ("sluice: breaker_open"). `execute_outcome` returns a `sluice::outcome`
// with the distinct reason (breaker_open, bulkhead_full, budget_exhausted, deadline_exceeded,
// timeout), the number of attempts and whether a fallback answered, and never allocates for a
// rejection (its status has an empty message). Rejections never throw.
//
// Policies: anything satisfying `sluice::policy` (see sluice/policy.hpp): sluice::retry,
// sluice::fallback, sluice::timeout, sluice::bulkhead_ref, sluice::breaker_ref (any breaker with
// sluice::circuit_breaker's try_acquire/permit interface), or your own.
//
// Clock: the pipeline reads time through the clock of its first timed policy (one with a
// `clock_type` and a `clock()`), and all timed policies must share that clock type; with none it
// uses std::chrono::steady_clock. The deadline passed to `execute` is of that clock.
//
// Thread safety: `execute` may be called concurrently if every policy allows it (all of sluice's
//                do). Referenced breakers and bulkheads must outlive the pipeline.
// Errors: returned, never thrown; exceptions from the callable propagate (RAII permits are
//         released on the way out; a breaker records them as failures).
#pragma once

#include <chrono>
#include <cstddef>
#include <exception>
#include <tuple>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "sluice/deadline.hpp"
#include "sluice/policy.hpp"

namespace sluice {

namespace detail {

// Records the exception `e` on a breaker permit: through the breaker's exception classifier when
// the permit offers one (`record_exception`, as sluice::circuit_breaker's does), else as a failure.
// `permit` is what the acquire result's `operator->` gives.
template <class Permit>
void record_exception(Permit* permit, std::exception_ptr e) {
  if constexpr (requires { permit->record_exception(e); }) {
    permit->record_exception(std::move(e));
  } else {
    permit->record_failure();
  }
}

}  // namespace detail

// A pipeline stage over a circuit breaker owned elsewhere (`sluice::circuit_breaker` or any type
// whose `try_acquire()` returns a result testing true with a permit reached by `->`, offering
// `record(const absl::Status&)`, `record_failure()` and `record_ignored()`).
//
// A refused call returns reason::breaker_open (Unavailable) without calling the rest of the
// pipeline. A call's status is recorded through the breaker's own classifier; a refusal by a
// policy inside the breaker (a full bulkhead) is recorded as ignored, since it says nothing about
// the dependency, while an inner timeout counts; an exception is judged by the breaker's
// `classify_exception` (through the permit's `record_exception`, if it has one; else a failure).
template <class Breaker>
class breaker_ref {
 public:
  using sluice_policy = void;

  // Refers to `b`, which must outlive this object.
  explicit breaker_ref(Breaker& b) noexcept : b_(&b) {}

  // Returns the breaker's clock (when it exposes one, the pipeline uses it).
  template <class B = Breaker>
  auto clock() const noexcept -> decltype(std::declval<const B&>().clock()) {
    return b_->clock();
  }

  // Returns the referenced breaker.
  Breaker& breaker() const noexcept { return *b_; }

  // Asks the breaker for a permit, runs `next`, records its outcome.
  template <class Ctx, class Next>
  auto run(Ctx& ctx, Next&& next) -> std::invoke_result_t<Next&> {
    using R = std::invoke_result_t<Next&>;
    auto acquired = b_->try_acquire();
    if (!acquired) return reject<R>(ctx, reason::breaker_open);
    try {
      R r = next();
      if (ctx.rejected() && ctx.reason() != reason::timeout) {
        acquired->record_ignored();
      } else {
        acquired->record(status_of(r));
      }
      return r;
    } catch (...) {
      detail::record_exception(acquired.operator->(), std::current_exception());
      throw;
    }
  }

 private:
  Breaker* b_;
};

namespace detail {

template <class P, class = void>
struct policy_clock {
  using type = void;
};
template <class P>
struct policy_clock<
    P, std::void_t<typename P::clock_type, decltype(std::declval<const P&>().clock())>> {
  using type = typename P::clock_type;
};
template <class Breaker>
struct policy_clock<breaker_ref<Breaker>,
                    std::void_t<decltype(std::declval<const Breaker&>().clock())>> {
  using type = typename Breaker::clock_type;
};

template <class... Ps>
struct first_clock {
  using type = std::chrono::steady_clock;
};
template <class P, class... Ps>
struct first_clock<P, Ps...> {
  using type =
      std::conditional_t<std::is_void_v<typename policy_clock<P>::type>,
                         typename first_clock<Ps...>::type, typename policy_clock<P>::type>;
};

}  // namespace detail

// Policies combined at compile time; see the top of this header.
template <class... Policies>
class pipeline {
 public:
  using clock_type = typename detail::first_clock<Policies...>::type;
  using context = call_context<clock_type>;

  static_assert((policy<Policies> && ...),
                "every pipeline stage must satisfy sluice::policy (declare `using sluice_policy`)");
  static_assert(((std::is_void_v<typename detail::policy_clock<Policies>::type> ||
                  std::is_same_v<typename detail::policy_clock<Policies>::type, clock_type>)&&...),
                "all timed policies of a pipeline must use the same Clock type");

  // Creates the pipeline; the first policy is the outermost.
  explicit pipeline(Policies... policies)
      : policies_(std::move(policies)...), clock_(find_clock<0>()) {}

  // Runs `fn` (taking nothing or a `call_context<clock_type>&`) through every policy, within `d`.
  // Returns the normalised result; a rejection has a descriptive message (allocated only then).
  template <class F>
  [[nodiscard]] result_t<F, context> execute(F&& fn, sluice::deadline<clock_type> d = {}) {
    context ctx(clock_, d);
    auto r = run_all(ctx, fn);
    if (ctx.rejected() && !status_of(r).ok()) r = result_t<F, context>(to_status(ctx.reason()));
    return r;
  }

  // Runs `fn` like `execute` and reports the typed outcome. Allocates nothing for a rejection.
  template <class F>
  [[nodiscard]] outcome<result_t<F, context>> execute_outcome(F&& fn,
                                                              sluice::deadline<clock_type> d = {}) {
    context ctx(clock_, d);
    auto r = run_all(ctx, fn);
    return {std::move(r), ctx.reason(), ctx.attempt(), ctx.fallback_used()};
  }

  // Runs `next` through every policy inside an existing context (pipelines nest as policies).
  using sluice_policy = void;
  template <class Ctx, class Next>
  auto run(Ctx& ctx, Next&& next) -> std::invoke_result_t<Next&> {
    return step<0>(ctx, next);
  }

  // Returns the I-th policy.
  template <std::size_t I>
  auto& get() noexcept {
    return std::get<I>(policies_);
  }

  // Returns the clock the pipeline reads.
  const clock_type& clock() const noexcept { return clock_; }

 private:
  template <class F>
  result_t<F, context> run_all(context& ctx, F& fn) {
    auto call = [&]() -> result_t<F, context> { return invoke_callable(fn, ctx); };
    return step<0>(ctx, call);
  }

  template <std::size_t I, class Ctx, class Call>
  auto step(Ctx& ctx, Call& call) -> std::invoke_result_t<Call&> {
    if constexpr (I == sizeof...(Policies)) {
      return call();
    } else {
      return std::get<I>(policies_).run(ctx, [&]() -> std::invoke_result_t<Call&> {
        return this->template step<I + 1>(ctx, call);
      });
    }
  }

  template <std::size_t I>
  clock_type find_clock() const {
    if constexpr (I == sizeof...(Policies)) {
      return clock_type();
    } else if constexpr (std::is_same_v<typename detail::policy_clock<
                                            std::tuple_element_t<I, std::tuple<Policies...>>>::type,
                                        clock_type>) {
      return std::get<I>(policies_).clock();
    } else {
      return find_clock<I + 1>();
    }
  }

  std::tuple<Policies...> policies_;
  clock_type clock_;
};

template <class... Policies>
pipeline(Policies...) -> pipeline<Policies...>;

}  // namespace sluice
