// sluice/asio/offload.hpp
//
// `co_await sluice::asio::offload(executor, fn, token)` runs `fn()` on a
// `sluice::basic_offload_executor`'s worker threads and resumes the caller on its own executor
// (for a coroutine, the coroutine's), so CPU-heavy or blocking work leaves the event loop.
//
// Completion signature, as co_spawn's: void(std::exception_ptr, R) where R is fn's result type
//   (void(std::exception_ptr) when fn returns void; R must then be default-constructible for the
//   error cases). The exception_ptr holds fn's exception, or a boost::system::system_error with:
//     sluice::asio::error::resource_exhausted  the queue was full (never blocks the caller, even
//                                              with offload_full_policy::wait)
//     sluice::asio::error::deadline_exceeded   the task's deadline passed while it was queued
//     sluice::asio::error::cancelled           the executor was shut down
//     boost::asio::error::operation_aborted    the operation was cancelled while the task was
//                                              still queued (the task will not run)
//   With `use_awaitable`, co_await returns R or throws that exception.
// The handler is never invoked from inside the initiating function; a work guard keeps the
// caller's executor busy while the task is queued or running.
// Cancellation: terminal, partial and total. A task still queued is dropped and the operation
// completes at once with operation_aborted; a task already running is not interrupted and the
// operation completes normally when it finishes.
//
// Thread safety: as the executor: any number of concurrent offloads.
//
// Example:
//   sluice::offload_executor cpu({.threads = 4});
//   std::string digest = co_await sluice::asio::offload(cpu, [&] { return sha256(body); },
//                                                      boost::asio::use_awaitable);
#pragma once

#include <atomic>
#include <exception>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/system/system_error.hpp>

#include "sluice/asio/error.hpp"
#include "sluice/offload.hpp"

namespace sluice::asio {

namespace detail {

// Internal; the state shared by the queued task, the cancellation handler and the completion.
template <class Handler, class R>
class offload_op final : public std::enable_shared_from_this<offload_op<Handler, R>> {
 public:
  using executor_type = boost::asio::associated_executor_t<Handler>;
  // The stored result (a placeholder for void).
  using value_type = std::conditional_t<std::is_void_v<R>, char, R>;

  explicit offload_op(Handler handler)
      : handler_(std::move(handler)),
        executor_(boost::asio::get_associated_executor(handler_)),
        work_(executor_) {}

  // Claims the task for running; false if it was cancelled first.
  bool claim() noexcept {
    int expected = queued;
    // Acq_rel: the winner of queued -> running/cancelled sees the other side's prior writes.
    return state_.compare_exchange_strong(expected, running, std::memory_order_acq_rel);
  }

  // Installs the cancellation handler (on the initiating thread, before the task is queued).
  void arm() {
    auto slot = boost::asio::get_associated_cancellation_slot(handler_);
    if (!slot.is_connected()) return;
    slot.assign([weak = this->weak_from_this()](boost::asio::cancellation_type type) {
      if ((type &
           (boost::asio::cancellation_type::terminal | boost::asio::cancellation_type::partial |
            boost::asio::cancellation_type::total)) == boost::asio::cancellation_type::none) {
        return;
      }
      auto self = weak.lock();
      if (!self) return;
      int expected = queued;
      if (self->state_.compare_exchange_strong(expected, cancelled, std::memory_order_acq_rel)) {
        self->fail(boost::asio::error::operation_aborted);
      }
    });
  }

  // Completes with an error as an exception (system_error), on the handler's executor.
  void fail(boost::system::error_code ec) {
    finish(std::make_exception_ptr(boost::system::system_error(ec)), std::optional<value_type>());
  }

  // Completes with `ep` and the result (if any) on the handler's executor.
  void finish(std::exception_ptr ep, std::optional<value_type> value) {
    // Moved, not copied: no reference to the exception stays on the worker after the post.
    boost::asio::post(executor_, [self = this->shared_from_this(), ep = std::move(ep),
                                  value = std::move(value)]() mutable {
      boost::asio::get_associated_cancellation_slot(self->handler_).clear();
      auto work = std::move(self->work_);
      auto h = std::move(self->handler_);
      if constexpr (std::is_void_v<R>) {
        std::move(h)(ep);
      } else if (value) {
        std::move(h)(ep, std::move(*value));
      } else {
        std::move(h)(ep, R{});
      }
      work.reset();
    });
  }

 private:
  static constexpr int queued = 0, running = 1, cancelled = 2;
  Handler handler_;
  executor_type executor_;
  boost::asio::executor_work_guard<executor_type> work_;
  std::atomic<int> state_{queued};
};

template <class R>
struct offload_signature_of {
  using type = void(std::exception_ptr, R);
};
template <>
struct offload_signature_of<void> {
  using type = void(std::exception_ptr);
};
template <class R>
using offload_signature = typename offload_signature_of<R>::type;

}  // namespace detail

// Runs `fn()` on `executor` and completes on the caller's executor with fn's result or
// exception. See the top of this file.
template <class Clock, class Fn, class CompletionToken,
          class R = std::invoke_result_t<std::decay_t<Fn>&>>
auto offload(sluice::basic_offload_executor<Clock>& executor, Fn&& fn, CompletionToken&& token,
             typename sluice::basic_offload_executor<Clock>::task_options options = {}) {
  return boost::asio::async_initiate<CompletionToken, detail::offload_signature<R>>(
      [](auto handler, sluice::basic_offload_executor<Clock>* ex, auto f,
         typename sluice::basic_offload_executor<Clock>::task_options opts) {
        using op_type = detail::offload_op<std::decay_t<decltype(handler)>, R>;
        auto op = std::make_shared<op_type>(std::move(handler));
        op->arm();
        const absl::Status queued = ex->enqueue(
            [op, f = std::move(f)](const absl::Status& fate) mutable {
              if (!op->claim()) return;  // cancelled while queued: completed already
              if (!fate.ok()) {
                op->fail(to_error_code(fate));
                return;
              }
              std::optional<typename op_type::value_type> value;
              std::exception_ptr ep;
              try {
                if constexpr (std::is_void_v<R>) {
                  f();
                  value.emplace();
                } else {
                  value.emplace(f());
                }
              } catch (...) {
                ep = std::current_exception();
              }
              op->finish(std::move(ep), std::move(value));
            },
            opts);
        if (!queued.ok() && op->claim()) op->fail(to_error_code(queued));
      },
      token, &executor, std::decay_t<Fn>(std::forward<Fn>(fn)), options);
}

}  // namespace sluice::asio
