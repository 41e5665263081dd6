// sluice/asio/pipeline.hpp
//
// `sluice::asio::pipeline` runs an asynchronous operation through resilience policies, for Asio
// code: the same policies as `sluice::pipeline` (sluice/pipeline.hpp), composed at compile time,
// first policy outermost, but waiting without blocking a thread:
//
//   sluice::retry         backoff sleeps are `steady_timer` waits
//   sluice::timeout,      the limit REALLY cancels the inner operation (sluice/asio/timeout.hpp)
//   sluice::asio::timeout
//   sluice::breaker_ref   a permit is held across the operation; a cancelled operation releases
//                         it as ignored, so a cancelled probe frees its half-open slot
//   sluice::bulkhead_ref  fails fast when full (it never queues here: queueing would block the
//                         event loop's thread)
//   sluice::fallback      as in the synchronous pipeline
//   anything with `async_run(ctx, next)` returning an awaitable
//
// The operation is a callable taking nothing or a `sluice::call_context<>&` and returning
// `boost::asio::awaitable<X>`, where X is T, absl::StatusOr<T>, absl::Status or void.
//
//   co_await p.async_execute(op, use_awaitable)             -> T (throws system_error on error)
//   p.async_execute(op, deadline, [](error_code ec, T v) {...})
//   p.async_execute(op, use_future) / deferred / as_tuple(use_awaitable) ...
//   p.async_execute_outcome(op, deadline, token)  -> (error_code, sluice::outcome<R>): the typed
//                                                    reason, attempts, fallback used
//
// Completion signature: void(boost::system::error_code, T) for operations with a value, and
// void(boost::system::error_code) for operations returning absl::Status or void. The error is a
// `sluice::asio::error` mirroring the status code (unavailable: breaker open; resource_exhausted:
// bulkhead full; deadline_exceeded: deadline or timeout; cancelled: the operation was cancelled),
// or the operation's own status code. On error, T is value-initialised. An exception escaping the
// operation completes with `sluice::asio::error::unknown` (a boost::system::system_error keeps
// its code). The handler is never invoked from inside `async_execute`; it is invoked through its
// associated executor, and the pipeline keeps work on that executor while the operation runs.
//
// Cancellation: the handler's associated cancellation slot cancels the whole operation (terminal
// cancellation reaches the inner operation, backoff timers and timeout races); the completion is
// then `sluice::asio::error::cancelled`. A finite deadline cancels the inner operation when it
// passes.
//
// Allocation: each async_execute allocates its coroutine frames (Asio's awaitable frames are
//             recycled per thread); the synchronous sluice::pipeline is the allocation-free path.
// Thread safety: `async_execute` may be called concurrently. The pipeline, and the breakers and
//                bulkheads it refers to, must outlive every operation started on it.
// Time: std::chrono::steady_clock: timed policies must use it.
//
// Example:
//   auto p = sluice::asio::pipeline(io.get_executor(),
//                                   sluice::retry({.max_attempts = 3}),
//                                   sluice::asio::timeout(std::chrono::milliseconds(200)));
//   std::string body = co_await p.async_execute(
//       [&]() -> net::awaitable<absl::StatusOr<std::string>> { co_return co_await fetch(); },
//       net::use_awaitable);
#pragma once

#include <chrono>
#include <cstddef>
#include <exception>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include "sluice/asio/error.hpp"
#include "sluice/asio/timeout.hpp"
#include "sluice/bulkhead.hpp"
#include "sluice/deadline.hpp"
#include "sluice/fallback.hpp"
#include "sluice/pipeline.hpp"
#include "sluice/policy.hpp"
#include "sluice/retry.hpp"
#include "sluice/timeout.hpp"

namespace sluice::asio {

namespace detail {

template <class A>
struct awaitable_value;
template <class T, class Executor>
struct awaitable_value<boost::asio::awaitable<T, Executor>> {
  using type = T;
};

template <class F, class Ctx>
decltype(auto) start_operation(F& fn, Ctx& ctx) {
  if constexpr (std::is_invocable_v<F&, Ctx&>) {
    return fn(ctx);
  } else {
    return fn();
  }
}

// The raw value type the operation's awaitable produces.
template <class F, class Ctx>
using raw_value_t = typename awaitable_value<
    std::remove_cvref_t<decltype(start_operation(std::declval<F&>(), std::declval<Ctx&>()))>>::type;

// The normalised result (absl::StatusOr<T> or absl::Status) of the operation.
template <class F, class Ctx>
using async_result_t = typename sluice::detail::normalize_result<raw_value_t<F, Ctx>>::type;

// Awaits the operation and normalises its value.
template <class R, class F, class Ctx>
boost::asio::awaitable<R> invoke_operation(F& fn, Ctx& ctx) {
  if constexpr (std::is_void_v<raw_value_t<F, Ctx>>) {
    co_await start_operation(fn, ctx);
    co_return absl::OkStatus();
  } else {
    co_return R(co_await start_operation(fn, ctx));
  }
}

// Tells the token-only overload of async_execute from the one taking a deadline.
template <class T>
concept not_a_deadline =
    !std::is_same_v<std::decay_t<T>, sluice::deadline<std::chrono::steady_clock>>;

template <class R>
struct completion;
template <class T>
struct completion<absl::StatusOr<T>> {
  static_assert(std::is_default_constructible_v<T>,
                "async_execute completes with (error_code, T): T must be default-constructible");
  using signature = void(boost::system::error_code, T);
};
template <>
struct completion<absl::Status> {
  using signature = void(boost::system::error_code);
};

// Converts what the coroutine produced into the completion's error_code.
inline boost::system::error_code error_of(const std::exception_ptr& e, const absl::Status& s) {
  if (!e) return to_error_code(s);
  try {
    std::rethrow_exception(e);
  } catch (const boost::system::system_error& err) {
    if (err.code() == boost::asio::error::operation_aborted)
      return make_error_code(error::cancelled);
    return err.code();
  } catch (...) {
    return make_error_code(error::unknown);
  }
}

// Async adapters: the asynchronous form of each synchronous policy's `run`.

template <class P, class Ctx, class Next>
auto async_run(P& p, Ctx& ctx, Next next) -> decltype(p.async_run(ctx, std::move(next))) {
  return p.async_run(ctx, std::move(next));
}

template <class Ctx, class Next>
auto async_run(sluice::timeout<std::chrono::steady_clock>& p, Ctx& ctx, Next next)
    -> std::invoke_result_t<Next&> {
  return run_with_limit(ctx, std::move(next), p.limit());
}

template <class Handler, class Ctx, class Next>
auto async_run(sluice::fallback<Handler>& p, Ctx& ctx, Next next) -> std::invoke_result_t<Next&> {
  co_return p.recover(ctx, co_await next());
}

template <class Ctx, class Next>
auto async_run(sluice::bulkhead_ref<std::chrono::steady_clock>& p, Ctx& ctx, Next next)
    -> std::invoke_result_t<Next&> {
  using R = typename std::invoke_result_t<Next&>::value_type;
  auto acquired = p.get().try_acquire();
  if (!acquired) co_return reject<R>(ctx, reason::bulkhead_full);
  co_return co_await next();  // the permit lives in this frame until the operation is over
}

template <class Breaker, class Ctx, class Next>
auto async_run(sluice::breaker_ref<Breaker>& p, Ctx& ctx, Next next)
    -> std::invoke_result_t<Next&> {
  using R = typename std::invoke_result_t<Next&>::value_type;
  auto acquired = p.breaker().try_acquire();
  if (!acquired) co_return reject<R>(ctx, reason::breaker_open);
  std::exception_ptr error;
  std::optional<R> result;
  try {
    result.emplace(co_await next());
  } catch (...) {
    error = std::current_exception();
  }
  if (error) {
    if (is_cancellation(error)) {
      acquired->record_ignored();  // a cancelled call says nothing about the dependency
    } else {
      sluice::detail::record_exception(acquired.operator->(), error);
    }
    std::rethrow_exception(error);
  }
  if (ctx.rejected() && ctx.reason() != reason::timeout) {
    acquired->record_ignored();
  } else {
    acquired->record(status_of(*result));
  }
  co_return std::move(*result);
}

template <class Budget, class Pred, class Ctx, class Next>
auto async_run(sluice::retry<std::chrono::steady_clock, Budget, Pred>& p, Ctx& ctx, Next next)
    -> std::invoke_result_t<Next&> {
  using R = typename std::invoke_result_t<Next&>::value_type;
  auto st = p.start_call(ctx);
  for (int attempt = 1;; ++attempt) {
    if (!p.begin_attempt(ctx, st, attempt)) co_return reject<R>(ctx, reason::deadline_exceeded);
    std::exception_ptr error;
    std::optional<R> result;
    try {
      result.emplace(co_await next());
    } catch (...) {
      error = std::current_exception();
    }
    std::optional<std::chrono::steady_clock::time_point> wake;
    if (error) {
      if (!is_cancellation(error)) wake = p.after_exception(ctx, st, attempt, error);
      if (!wake) std::rethrow_exception(error);
    } else {
      wake = p.after_attempt(ctx, st, attempt, *result);
      if (!wake) co_return std::move(*result);
    }
    boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor, *wake);
    co_await timer.async_wait(boost::asio::use_awaitable);
  }
}

}  // namespace detail

// Policies composed for asynchronous operations; see the top of this header.
template <class... Policies>
class pipeline {
 public:
  using executor_type = boost::asio::any_io_executor;
  using clock_type = std::chrono::steady_clock;
  using context = call_context<clock_type>;

  // Creates the pipeline; operations run on `ex` (their coroutines and timers). The first policy
  // is the outermost.
  template <class Executor>
  explicit pipeline(const Executor& ex, Policies... policies)
      : ex_(ex), policies_(std::move(policies)...) {}

  // Returns the executor operations run on.
  executor_type get_executor() const noexcept { return ex_; }

  // Returns the I-th policy.
  template <std::size_t I>
  auto& get() noexcept {
    return std::get<I>(policies_);
  }

  // Starts `fn` through every policy with no deadline; completes with `token` (see the top).
  template <class F, detail::not_a_deadline CompletionToken =
                         boost::asio::default_completion_token_t<executor_type>>
  auto async_execute(F fn, CompletionToken&& token = {}) {
    return async_execute(std::move(fn), sluice::deadline<clock_type>(),
                         std::forward<CompletionToken>(token));
  }

  // Starts `fn` like `async_execute` and completes with the typed outcome instead:
  // void(boost::system::error_code, sluice::outcome<R>), where R is absl::StatusOr<T> or
  // absl::Status and the outcome says why the call was refused or stopped (breaker_open,
  // bulkhead_full, budget_exhausted, deadline_exceeded, timeout), how many attempts ran and
  // whether a fallback answered. The error_code is the result's (or the exception's), for
  // convenience; after an exception the outcome's result holds the same error.
  template <class F, class CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto async_execute_outcome(F fn, sluice::deadline<clock_type> d = {},
                             CompletionToken&& token = {}) {
    using R = detail::async_result_t<F, context>;
    return boost::asio::async_initiate<CompletionToken,
                                       void(boost::system::error_code, outcome<R>)>(
        initiate_outcome{this}, token, std::move(fn), d);
  }

  // Starts `fn` through every policy; the deadline `d` cancels it when it passes.
  template <class F, class CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto async_execute(F fn, sluice::deadline<clock_type> d, CompletionToken&& token = {}) {
    using R = detail::async_result_t<F, context>;
    return boost::asio::async_initiate<CompletionToken, typename detail::completion<R>::signature>(
        initiate{this}, token, std::move(fn), d);
  }

 private:
  // Runs `coro` on the pipeline's executor and passes its result to `done(handler, exception,
  // value)` on the handler's associated executor, keeping work on that executor meanwhile and
  // connecting the handler's cancellation slot. co_spawn delivers the completion there (bound
  // below), never inside the initiating function: it posts first when the coroutine finished
  // without switching context.
  template <class Handler, class T, class Done>
  void spawn(Handler&& handler, boost::asio::awaitable<T> coro, Done done) {
    auto slot = boost::asio::get_associated_cancellation_slot(handler);
    auto work = boost::asio::make_work_guard(boost::asio::get_associated_executor(handler, ex_));
    auto hex = work.get_executor();
    boost::asio::co_spawn(
        ex_, std::move(coro),
        boost::asio::bind_cancellation_slot(
            slot, boost::asio::bind_executor(
                      hex, [h = std::forward<Handler>(handler), work = std::move(work),
                            done = std::move(done)](std::exception_ptr e, T value) mutable {
                        work.reset();
                        done(std::move(h), e, std::move(value));
                      })));
  }

  struct initiate {
    pipeline* self;

    template <class Handler, class F>
    void operator()(Handler&& handler, F fn, sluice::deadline<clock_type> d) const {
      using R = detail::async_result_t<F, context>;
      self->spawn(std::forward<Handler>(handler), self->template run_async<R>(std::move(fn), d),
                  [](auto h, std::exception_ptr e, R r) {
                    const boost::system::error_code ec = detail::error_of(e, status_of(r));
                    if constexpr (std::is_same_v<R, absl::Status>) {
                      std::move(h)(ec);
                    } else {
                      typename R::value_type value{};
                      if (!ec && r.ok()) value = std::move(*r);
                      std::move(h)(ec, std::move(value));
                    }
                  });
    }
  };

  struct initiate_outcome {
    pipeline* self;

    template <class Handler, class F>
    void operator()(Handler&& handler, F fn, sluice::deadline<clock_type> d) const {
      using R = detail::async_result_t<F, context>;
      self->spawn(std::forward<Handler>(handler), self->template run_outcome<R>(std::move(fn), d),
                  [](auto h, std::exception_ptr e, outcome<R> o) {
                    const boost::system::error_code ec = detail::error_of(e, status_of(o.result));
                    if (e) o.result = R(to_status(ec));
                    std::move(h)(ec, std::move(o));
                  });
    }
  };

  template <class R, class F>
  boost::asio::awaitable<R> run_core(F& fn, context& ctx) {
    auto call = [&]() { return detail::invoke_operation<R>(fn, ctx); };
    const sluice::deadline<clock_type> d = ctx.deadline();
    if (d.is_infinite()) co_return co_await step<0, R>(ctx, call);
    std::optional<R> finished = co_await detail::race_until(step<0, R>(ctx, call), d.time());
    if (finished) co_return std::move(*finished);
    co_return reject<R>(ctx, reason::deadline_exceeded);
  }

  template <class R, class F>
  boost::asio::awaitable<R> run_async(F fn, sluice::deadline<clock_type> d) {
    context ctx(clock_, d);
    R r = co_await run_core<R>(fn, ctx);
    if (ctx.rejected() && !status_of(r).ok()) r = R(to_status(ctx.reason()));
    co_return r;
  }

  template <class R, class F>
  boost::asio::awaitable<outcome<R>> run_outcome(F fn, sluice::deadline<clock_type> d) {
    context ctx(clock_, d);
    R r = co_await run_core<R>(fn, ctx);
    co_return outcome<R>{std::move(r), ctx.reason(), ctx.attempt(), ctx.fallback_used()};
  }

  template <std::size_t I, class R, class Call>
  boost::asio::awaitable<R> step(context& ctx, Call& call) {
    if constexpr (I == sizeof...(Policies)) {
      co_return co_await call();
    } else {
      co_return co_await detail::async_run(
          std::get<I>(policies_), ctx, [this, &ctx, &call] { return step<I + 1, R>(ctx, call); });
    }
  }

  executor_type ex_;
  std::tuple<Policies...> policies_;
  clock_type clock_{};
};

template <class Executor, class... Policies>
pipeline(const Executor&, Policies...) -> pipeline<Policies...>;

}  // namespace sluice::asio
