// sluice/asio/rate_limiter.hpp
//
// `sluice::asio::async_acquire(limiter, n, deadline, token)` waits, without blocking a thread,
// until `n` units of a rate limiter may be used: it reserves them at once (queueing behind earlier
// reservations, like golang.org/x/time/rate's Wait) and completes when the reservation becomes
// usable. If that moment would fall after `deadline`, nothing is reserved and the operation fails
// at once with deadline_exceeded: a caller never waits only to miss its deadline.
//
// Works with any limiter offering `reserve(n, max_wait, now)` and `clock()`: sluice::gcra_limiter,
// sluice::token_bucket, sluice::warming_token_bucket.
//
// Completion signature: void(boost::system::error_code).
//   success                     the units are reserved and usable now
//   error::deadline_exceeded    the wait would pass the deadline (or it has passed); nothing taken
//   error::invalid_argument     n exceeds the limiter's burst: it can never be granted
//   asio::error::operation_aborted   cancelled while waiting; the units were given back
// The handler is never invoked from inside the initiating function; it runs on its associated
// executor (for `use_awaitable`, the coroutine's; for a plain callback, bind one with
// boost::asio::bind_executor, else the system executor is used). The timer that times the wait
// keeps work on that executor.
// Cancellation: terminal, partial and total; the reservation is cancelled (units returned).
// Time: the deadline and the reservation are on the limiter's clock. The wait is timed by a
//   steady_timer; with a clock other than steady_clock the limiter's clock is re-checked on
//   expiry (every millisecond of real time for sluice::testing::manual_clock, so tests advance
//   time by hand).
//
// Thread safety: as the limiter (all sluice limiters allow concurrent operations).
//
// Example:
//   auto [ec] = co_await sluice::asio::async_acquire(
//       limiter, 1, sluice::deadline<>::after(clock, 200ms), as_tuple(use_awaitable));
//   if (ec == sluice::asio::error::deadline_exceeded) co_return reply_429();
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>

#include <boost/asio/append.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/system_executor.hpp>

#include "sluice/asio/error.hpp"
#include "sluice/deadline.hpp"
#include "sluice/detail/clock.hpp"

namespace sluice::asio {
namespace detail {

template <class Limiter, class Handler>
class limiter_wait_op {
 public:
  using clock_type = typename Limiter::clock_type;
  using reservation_type = decltype(std::declval<Limiter&>().reserve(
      std::uint64_t{1}, std::chrono::nanoseconds{}, std::declval<clock_type&>().now()));
  using executor_type = boost::asio::associated_executor_t<Handler, boost::asio::system_executor>;

  limiter_wait_op(Handler handler, Limiter& limiter, reservation_type reservation)
      : handler_(std::move(handler)),
        executor_(boost::asio::get_associated_executor(handler_, boost::asio::system_executor())),
        limiter_(limiter),
        reservation_(std::move(reservation)),
        timer_(executor_) {}

  // Arms the timer and the cancellation slot; `self` owns the operation until it completes.
  static void start(std::unique_ptr<limiter_wait_op> self) {
    limiter_wait_op& op = *self;
    auto slot = boost::asio::get_associated_cancellation_slot(op.handler_);
    if (slot.is_connected()) {
      slot.assign([timer = &op.timer_](boost::asio::cancellation_type type) {
        if ((type &
             (boost::asio::cancellation_type::terminal | boost::asio::cancellation_type::partial |
              boost::asio::cancellation_type::total)) != boost::asio::cancellation_type::none) {
          timer->cancel();
        }
      });
    }
    wait(std::move(self));
  }

 private:
  static void wait(std::unique_ptr<limiter_wait_op> self) {
    limiter_wait_op& op = *self;
    const auto remaining = op.reservation_.ready_at() - op.limiter_.clock().now();
    auto d = std::chrono::duration_cast<std::chrono::steady_clock::duration>(remaining);
    if constexpr (sluice::detail::is_manual_clock_v<clock_type>) {
      // Manual time moves only by hand: look again every millisecond of real time.
      d = std::min<std::chrono::steady_clock::duration>(d, sluice::detail::manual_clock_poll);
    }
    if (d.count() < 0) d = std::chrono::steady_clock::duration::zero();
    op.timer_.expires_after(d);
    op.timer_.async_wait([self = std::move(self)](boost::system::error_code ec) mutable {
      limiter_wait_op& o = *self;
      if (ec == boost::asio::error::operation_aborted) {
        o.reservation_.cancel();
        finish(std::move(self), ec);
        return;
      }
      if (o.limiter_.clock().now() < o.reservation_.ready_at()) {
        wait(std::move(self));  // a coarse or manual clock has not caught up yet
        return;
      }
      finish(std::move(self), boost::system::error_code());
    });
  }

  static void finish(std::unique_ptr<limiter_wait_op> self, boost::system::error_code ec) {
    boost::asio::get_associated_cancellation_slot(self->handler_).clear();
    Handler handler = std::move(self->handler_);
    self.reset();
    // We run on the timer's executor, which is the handler's: invoke it directly.
    std::move(handler)(ec);
  }

  Handler handler_;
  executor_type executor_;
  Limiter& limiter_;
  reservation_type reservation_;
  boost::asio::basic_waitable_timer<
      std::chrono::steady_clock, boost::asio::wait_traits<std::chrono::steady_clock>, executor_type>
      timer_;
};

}  // namespace detail

// Waits until `n` units of `limiter` are usable, failing at once with deadline_exceeded if that
// would be after `deadline`. See the top of this file for the completion signature,
// cancellation and errors.
template <class Limiter, class CompletionToken>
requires requires(Limiter& l) {
  l.reserve(std::uint64_t{1}, std::chrono::nanoseconds{}, l.clock().now());
}
auto async_acquire(Limiter& limiter, std::uint64_t n,
                   sluice::deadline<typename Limiter::clock_type> deadline,
                   CompletionToken&& token) {
  return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code)>(
      [](auto handler, Limiter* l, std::uint64_t units,
         sluice::deadline<typename Limiter::clock_type> d) {
        using handler_type = std::decay_t<decltype(handler)>;
        const auto now = l->clock().now();
        auto complete_now = [&handler](boost::system::error_code ec) {
          auto ex = boost::asio::get_associated_executor(handler, boost::asio::system_executor());
          boost::asio::post(ex, boost::asio::append(std::move(handler), ec));
        };
        if (d.expired(now)) return complete_now(make_error_code(error::deadline_exceeded));
        const std::chrono::nanoseconds max_wait =
            d.is_infinite()
                ? std::chrono::nanoseconds::max()
                : std::chrono::duration_cast<std::chrono::nanoseconds>(d.remaining(now));
        auto r = l->reserve(units, max_wait, now);
        if (r.exceeds_burst()) return complete_now(make_error_code(error::invalid_argument));
        if (!r.ok()) return complete_now(make_error_code(error::deadline_exceeded));
        if (r.delay().count() <= 0) return complete_now(boost::system::error_code());
        using op_type = detail::limiter_wait_op<Limiter, handler_type>;
        op_type::start(std::make_unique<op_type>(std::move(handler), *l, std::move(r)));
      },
      token, &limiter, n, deadline);
}

// As above with a time point on the limiter's clock as the deadline.
template <class Limiter, class CompletionToken>
requires requires(Limiter& l) {
  l.reserve(std::uint64_t{1}, std::chrono::nanoseconds{}, l.clock().now());
}
auto async_acquire(Limiter& limiter, std::uint64_t n,
                   typename Limiter::clock_type::time_point deadline, CompletionToken&& token) {
  return async_acquire(limiter, n, sluice::deadline<typename Limiter::clock_type>(deadline),
                       std::forward<CompletionToken>(token));
}

}  // namespace sluice::asio
