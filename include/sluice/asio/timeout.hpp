// sluice/asio/timeout.hpp
//
// `sluice::asio::timeout` bounds an asynchronous operation and REALLY cancels it when the limit
// passes: the operation runs in a parallel group with a `steady_timer`; whichever finishes first
// wins and the other is cancelled (per-operation cancellation, type `all`) and awaited, so when
// the timeout reports, the inner operation has stopped (its timer waits, socket reads, ... have
// completed with `operation_aborted`) and no work is left behind.
//
// Use it as a stage of `sluice::asio::pipeline` (sluice/asio/pipeline.hpp); there the synchronous
// `sluice::timeout` behaves the same way. The inner operation only stops if it supports Asio
// cancellation (every Asio I/O object and timer does, and so does a coroutine awaiting them).
//
// Thread safety: immutable; may be shared by concurrent operations.
// Time: std::chrono::steady_clock (Asio's timers).
// Errors: a timeout is reported as sluice::reason::timeout / asio::error::deadline_exceeded, never
//         thrown. An outer cancellation of the whole operation propagates as operation_aborted.
//
// Example:
//   auto p = sluice::asio::pipeline(ex, sluice::asio::timeout(std::chrono::milliseconds(200)));
//   auto [ec, body] = co_await p.async_execute(fetch, as_tuple(use_awaitable));
#pragma once

#include <chrono>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include "sluice/deadline.hpp"
#include "sluice/policy.hpp"

namespace sluice::asio {

namespace detail {

// Returns whether `e` is Asio's operation_aborted (a cancellation, not a failure).
inline bool is_cancellation(const std::exception_ptr& e) noexcept {
  if (!e) return false;
  try {
    std::rethrow_exception(e);
  } catch (const boost::system::system_error& err) {
    return err.code() == boost::asio::error::operation_aborted;
  } catch (...) {
    return false;
  }
}

// Runs `op` against a timer expiring at `at`. Returns the op's result if it finished first, or
// nothing if the timer did (the op has then been cancelled and has finished). Rethrows the op's
// exception; throws operation_aborted if the whole race was cancelled from outside.
template <class R>
boost::asio::awaitable<std::optional<R>> race_until(boost::asio::awaitable<R> op,
                                                    std::chrono::steady_clock::time_point at) {
  auto ex = co_await boost::asio::this_coro::executor;
  boost::asio::steady_timer timer(ex, at);
  auto [order, op_error, op_result, timer_error] =
      co_await boost::asio::experimental::make_parallel_group(
          boost::asio::co_spawn(ex, std::move(op), boost::asio::deferred),
          timer.async_wait(boost::asio::deferred))
          .async_wait(boost::asio::experimental::wait_for_one(), boost::asio::deferred);
  if (order[0] == 0) {
    if (op_error) std::rethrow_exception(op_error);
    co_return std::optional<R>(std::move(op_result));
  }
  if (timer_error) {
    // The timer was cancelled, not expired: the whole operation is being cancelled.
    if (op_error) std::rethrow_exception(op_error);
    throw boost::system::system_error(boost::asio::error::operation_aborted);
  }
  co_return std::nullopt;
}

// Runs `next()` (an awaitable of R) with the context's deadline narrowed to now + `limit`,
// cancelling it when that passes. Reports reason::timeout when the limit (not the caller's
// deadline) was the one that passed, reason::deadline_exceeded otherwise.
template <class Ctx, class Next>
auto run_with_limit(Ctx& ctx, Next next, std::chrono::nanoseconds limit)
    -> std::invoke_result_t<Next&> {
  using R = typename std::invoke_result_t<Next&>::value_type;
  const auto outer = ctx.deadline();
  const auto inner = outer.within(std::chrono::steady_clock::now(), limit);
  const bool ours = inner < outer;
  if (inner.is_infinite()) co_return co_await next();
  ctx.set_deadline(inner);
  std::exception_ptr error;
  std::optional<R> result;
  try {
    result = co_await race_until(next(), inner.time());
  } catch (...) {
    error = std::current_exception();
  }
  ctx.set_deadline(outer);
  if (error) std::rethrow_exception(error);
  if (!result) co_return reject<R>(ctx, ours ? reason::timeout : reason::deadline_exceeded);
  co_return std::move(*result);
}

}  // namespace detail

// A per-operation time limit that cancels the operation; see the top of this header.
class timeout {
 public:
  // Creates a timeout of `limit` (clamped to >= 0).
  explicit timeout(std::chrono::nanoseconds limit) noexcept
      : limit_(limit.count() < 0 ? std::chrono::nanoseconds::zero() : limit) {}

  // Returns the limit.
  std::chrono::nanoseconds limit() const noexcept { return limit_; }

  // Runs `next()` (returning an awaitable) within the limit; cancels it when the limit passes.
  template <class Ctx, class Next>
  auto async_run(Ctx& ctx, Next next) -> std::invoke_result_t<Next&> {
    return detail::run_with_limit(ctx, std::move(next), limit_);
  }

 private:
  std::chrono::nanoseconds limit_;
};

}  // namespace sluice::asio
