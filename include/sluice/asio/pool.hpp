// sluice/asio/pool.hpp
//
// `sluice::asio::async_acquire(pool, deadline, token)` lends a connection from a `sluice::pool`
// to Asio code (a coroutine, a callback, a future) without blocking a thread while it waits, and
// `sluice::asio::maintain_every(pool, executor, interval)` drives the pool's maintenance from an
// Asio timer instead of a thread.
//
// Completion signature: void(boost::system::error_code, sluice::pool_lease<Connection, Clock>).
//   The error codes are sluice::asio::error values mirroring the synchronous errors
//   (resource_exhausted: waiter queue full; deadline_exceeded; unavailable: pool closed, factory
//   failure or backend down), or boost::asio::error::operation_aborted when cancelled. On error
//   the lease is empty.
// The handler is never invoked from inside the initiating function; it runs on its associated
// executor (for `use_awaitable`, the coroutine's), with a work guard kept on it while waiting.
// Cancellation: terminal, partial and total. A cancelled waiter leaves the queue at once and
// completes with operation_aborted. While an asynchronous connect or validation runs for it
// (`pool_factory::async_create` / `async_validate`), a cancelled operation also completes at once
// with operation_aborted; the connection, when the factory delivers it, goes to the pool as idle
// (or to the next waiter), never lost. Between a hand-over and the completion (a posted step), the
// operation completes normally instead.
// Shutdown: if the handler's execution context is destroyed while the operation waits, the
// handler is destroyed without being invoked (as Asio does); the operation leaves the queue, and
// a connection (or connect) handed to it meanwhile goes back to the pool.
// Time: the deadline is on the pool's clock; the wait is timed by a steady_timer for the time
//   remaining on that clock when the wait starts. An asynchronous connect is given the deadline
//   and must honour it (as a synchronous one).
// Connects: with `async_create` / `async_validate`, the pool starts the factory's operation and
//   the acquire completes from its callback (which may run on any thread; the handler is still
//   invoked on its own executor): no thread blocks. With the synchronous `create` / `validate`,
//   the factory runs on the handler's executor, as with a synchronous acquire: keep connects short
//   with their deadline, or keep min_idle connections ready.
//
// Thread safety: as `sluice::pool`: any number of concurrent operations on one pool.
//
// Example:
//   auto [ec, lease] = co_await sluice::asio::async_acquire(
//       pool, std::chrono::milliseconds(200), boost::asio::as_tuple(boost::asio::use_awaitable));
//   if (ec == sluice::asio::error::deadline_exceeded) co_return reply_503();
//   (*lease)->query("...");
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <utility>

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/error_code.hpp>

#include "sluice/asio/error.hpp"
#include "sluice/pool.hpp"

namespace sluice::asio {

namespace detail {

// Internal; one asynchronous acquire: a pool waiter whose wake-ups, deadline timer and
// cancellation all funnel into exactly one completion (decided under the pool's lock).
template <class Connection, class Clock, class Handler>
class acquire_op final
    : public sluice::detail::pool_waiter,
      public std::enable_shared_from_this<acquire_op<Connection, Clock, Handler>> {
 public:
  using core_type = sluice::detail::pool_core<Connection, Clock>;
  using lease_type = sluice::pool_lease<Connection, Clock>;
  using executor_type = boost::asio::associated_executor_t<Handler>;

  acquire_op(Handler handler, core_type& core, typename Clock::time_point deadline,
             acquire_site site)
      : handler_(std::move(handler)),
        executor_(boost::asio::get_associated_executor(handler_)),
        work_(executor_),
        timer_(executor_),
        core_(core),
        deadline_(deadline),
        start_(core.clock().now()),
        site_(site) {
    core_.async_ref();
  }
  acquire_op(const acquire_op&) = delete;
  acquire_op& operator=(const acquire_op&) = delete;
  ~acquire_op() { core_.async_unref(); }

  // Makes the first attempt; completes later, never inline.
  void start() {
    install_cancellation();
    attempt(true);
  }

  // Called by the pool, with its lock held, after unlinking this waiter.
  void on_wake(sluice::detail::pool_wake kind, std::uint32_t index,
               const absl::Status& status) override {
    timer_.cancel();
    sluice::detail::pool_step step;
    step.index = index;
    step.status = status;
    step.kind = kind == sluice::detail::pool_wake::handed   ? sluice::detail::pool_step::got
                : kind == sluice::detail::pool_wake::create ? sluice::detail::pool_step::create
                                                            : sluice::detail::pool_step::failed;
    boost::asio::post(executor_, posted_step(std::move(keep_), std::move(step)));
  }

 private:
  // Where the operation is, for a cancellation racing an asynchronous factory call.
  enum phase : int {
    idle_phase = 0,  // queued, or acting on the handler's executor
    in_flight = 1,   // an asynchronous connect or validation runs for this operation
    finished = 2,    // completed (or cancelled) while in flight
  };

  // A step handed to the handler's executor. If the executor destroys it unrun (its context was
  // shut down first), the slot it carries goes back to the pool: an idle connection is published
  // again, a reservation for a connect is released. No slot stays reserved for an operation that
  // will never act.
  class posted_step {
   public:
    posted_step(std::shared_ptr<acquire_op> self, sluice::detail::pool_step step)
        : self_(std::move(self)), step_(std::move(step)) {}
    posted_step(posted_step&&) noexcept = default;
    posted_step& operator=(posted_step&&) = delete;
    posted_step(const posted_step&) = delete;
    posted_step& operator=(const posted_step&) = delete;
    ~posted_step() {
      if (self_ != nullptr) self_->abandon(step_);
    }
    // Runs the step (once).
    void operator()() {
      std::shared_ptr<acquire_op> self = std::move(self_);
      self->act(std::move(step_));
    }

   private:
    std::shared_ptr<acquire_op> self_;  // null once run or moved from
    sluice::detail::pool_step step_;
  };

  // Gives back what an unrun step holds (see posted_step).
  void abandon(const sluice::detail::pool_step& step) {
    if (step.kind == sluice::detail::pool_step::got) {
      core_.publish_reserved(step.index);
    } else if (step.kind == sluice::detail::pool_step::create) {
      core_.cancel_create(step.index);
    }
  }

  void attempt(bool initiating) {
    sluice::detail::pool_step step;
    {
      sluice::detail::mutex_lock lock(core_.mu());
      step = core_.step_locked(this, core_.clock().now());
      if (step.kind == sluice::detail::pool_step::enqueued) {
        arm_locked();
        return;
      }
    }
    if (initiating) {
      boost::asio::post(executor_, posted_step(this->shared_from_this(), std::move(step)));
    } else {
      act(std::move(step));
    }
  }

  // Starts the deadline timer; the pool's lock is held, so it cannot race with a wake-up.
  void arm_locked() {
    keep_ = this->shared_from_this();
    const auto remaining = deadline_ - core_.clock().now();
    timer_.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::max(remaining, decltype(remaining)::zero())));
    timer_.async_wait(deadline_handler(this->shared_from_this()));
  }

  // The deadline timer's handler. If the executor destroys it uninvoked (its context was
  // destroyed with this operation queued), the operation leaves the queue: the pool must never
  // hand a connection to, or fail, an operation whose timer and executor are gone.
  class deadline_handler {
   public:
    explicit deadline_handler(std::shared_ptr<acquire_op> self) : self_(std::move(self)) {}
    deadline_handler(deadline_handler&&) noexcept = default;
    deadline_handler& operator=(deadline_handler&&) = delete;
    deadline_handler(const deadline_handler&) = delete;
    deadline_handler& operator=(const deadline_handler&) = delete;
    ~deadline_handler() {
      if (self_ != nullptr) self_->abandon_wait();
    }
    // Gives up on the deadline (once); a cancelled wait (a wake-up came first) does nothing.
    void operator()(const boost::system::error_code& ec) {
      std::shared_ptr<acquire_op> self = std::move(self_);
      if (ec == boost::asio::error::operation_aborted) return;
      self->give_up(false);
    }

   private:
    std::shared_ptr<acquire_op> self_;  // null once invoked or moved from
  };

  // Leaves the queue without completing (see deadline_handler); the handler is destroyed with
  // the operation, as Asio does with every handler of a destroyed context.
  void abandon_wait() {
    std::shared_ptr<acquire_op> self;  // released after the unlock
    sluice::detail::mutex_lock lock(core_.mu());
    if (core_.cancel_locked(this)) self = std::move(keep_);
  }

  // Installs the cancellation handler (once, at the start: it serves the queued wait and any
  // asynchronous factory call alike).
  void install_cancellation() {
    auto slot = boost::asio::get_associated_cancellation_slot(handler_);
    if (slot.is_connected() && !slot.has_handler()) {
      slot.assign([weak = this->weak_from_this()](boost::asio::cancellation_type type) {
        if ((type &
             (boost::asio::cancellation_type::terminal | boost::asio::cancellation_type::partial |
              boost::asio::cancellation_type::total)) == boost::asio::cancellation_type::none) {
          return;
        }
        if (auto self = weak.lock()) self->give_up(true);
      });
    }
  }

  // Leaves the queue on a timeout or a cancellation, if a wake-up did not come first; a
  // cancellation also abandons an asynchronous factory call in flight.
  void give_up(bool cancelled) {
    std::shared_ptr<acquire_op> self;
    {
      sluice::detail::mutex_lock lock(core_.mu());
      if (core_.cancel_locked(this)) {
        if (cancelled) timer_.cancel();
        self = std::move(keep_);
      }
    }
    if (self == nullptr) {
      if (!cancelled) return;
      // Acq_rel: pairs with the in-flight store in go_async and the CAS in finish_in_flight;
      // exactly one of this CAS and that one wins.
      int expected = in_flight;
      if (!phase_.compare_exchange_strong(expected, finished, std::memory_order_acq_rel)) return;
    }
    if (cancelled) {
      complete(boost::asio::error::operation_aborted, lease_type());
    } else {
      complete(to_error_code(core_.timed_out(core_.clock().now() - start_)), lease_type());
    }
  }

  void act(sluice::detail::pool_step step) {
    lease_type lease;
    switch (step.kind) {
      case sluice::detail::pool_step::got:
        if (core_.async_validate()) {
          const auto now = core_.clock().now();
          if (core_.validation_due(step.index, now)) {
            validate_async(step.index);
          } else {
            core_.lend(step.index, site_, lease, core_type::reserved_state);
            complete({}, std::move(lease));
          }
        } else if (core_.checkout(step.index, site_, lease, core_type::reserved_state)) {
          complete({}, std::move(lease));
        } else {
          attempt(false);  // it was closed as unusable: try again
        }
        return;
      case sluice::detail::pool_step::create: {
        if (core_.async_create()) {
          create_async(step.index);
          return;
        }
        const absl::Status created = core_.create_in(step.index, deadline_);
        if (!created.ok()) {
          complete(to_error_code(created), lease_type());
          return;
        }
        core_.lend(step.index, site_, lease, core_type::reserved_state);
        complete({}, std::move(lease));
        return;
      }
      case sluice::detail::pool_step::failed:
        core_.flush_pending_event();
        complete(to_error_code(step.status), lease_type());
        return;
      case sluice::detail::pool_step::enqueued:
        return;
    }
  }

  void go_async() {
    // Release: a cancellation that reads in_flight (acquire half of its CAS) sees the state the
    // operation had when it started the call.
    phase_.store(in_flight, std::memory_order_release);
  }

  // Opens a connection in reserved slot `index` with the factory's asynchronous hook. The
  // callback (any thread) finishes the pool's bookkeeping there and lends the connection, then
  // hands the lease to the handler's executor; if the operation was cancelled meanwhile, the
  // lease is dropped there, which returns the connection to the pool.
  void create_async(std::uint32_t index) {
    go_async();
    core_.start_create(index, deadline_,
                       [self = this->shared_from_this(), index](const absl::Status& created) {
                         lease_type lease;
                         boost::system::error_code ec;
                         if (created.ok()) {
                           self->core_.lend(index, self->site_, lease, core_type::reserved_state);
                         } else {
                           ec = to_error_code(created);
                         }
                         self->post_finish(ec, std::move(lease));
                       });
  }

  // Validates the idle connection in slot `index` (reserved for this operation) with the
  // factory's asynchronous hook; lends it if it passes, else closes it and tries again.
  void validate_async(std::uint32_t index) {
    go_async();
    core_.start_validate(index, [self = this->shared_from_this(), index](const absl::Status& st) {
      if (st.ok()) {
        lease_type lease;
        self->core_.mark_validated(index, self->core_.clock().now());
        self->core_.lend(index, self->site_, lease, core_type::reserved_state);
        self->post_finish({}, std::move(lease));
        return;
      }
      self->core_.fail_validation(index);
      auto& ex = self->executor_;
      boost::asio::post(ex, [self = std::move(self)] {
        int expected = in_flight;
        // Acq_rel: see give_up. Back to idle_phase: the retry may queue or start another call.
        if (self->phase_.compare_exchange_strong(expected, idle_phase, std::memory_order_acq_rel)) {
          self->attempt(false);
        }
      });
    });
  }

  void post_finish(boost::system::error_code ec, lease_type lease) {
    auto& ex = executor_;
    boost::asio::post(
        ex, [self = this->shared_from_this(), ec, lease = std::move(lease)]() mutable {
          int expected = in_flight;
          // Acq_rel: see give_up. Losing means the operation was cancelled: the lease is dropped
          // here and its connection returned to the pool.
          if (self->phase_.compare_exchange_strong(expected, finished, std::memory_order_acq_rel)) {
            self->complete(ec, std::move(lease));
          }
        });
  }

  void complete(boost::system::error_code ec, lease_type lease) {
    boost::asio::get_associated_cancellation_slot(handler_).clear();
    auto work = std::move(work_);
    boost::asio::dispatch(executor_,
                          [h = std::move(handler_), ec, lease = std::move(lease)]() mutable {
                            std::move(h)(ec, std::move(lease));
                          });
    work.reset();
  }

  Handler handler_;
  executor_type executor_;
  boost::asio::executor_work_guard<executor_type> work_;
  boost::asio::steady_timer timer_;
  core_type& core_;
  const typename Clock::time_point deadline_;
  const typename Clock::time_point start_;
  const acquire_site site_;
  // Keeps the operation alive while it is queued (guarded by the pool's lock).
  std::shared_ptr<acquire_op> keep_;
  // A `phase`: written on the handler's executor, raced only by a cancellation (see give_up).
  std::atomic<int> phase_{idle_phase};
};

}  // namespace detail

// Lends a connection from `pool`, waiting until `deadline` (on the pool's clock) without blocking
// a thread. See the top of this file for the completion signature, cancellation and errors.
template <class Connection, class Clock, class CompletionToken>
auto async_acquire(sluice::pool<Connection, Clock>& pool, typename Clock::time_point deadline,
                   CompletionToken&& token, acquire_site site = acquire_site::current()) {
  using lease_type = sluice::pool_lease<Connection, Clock>;
  return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, lease_type)>(
      [](auto handler, sluice::detail::pool_core<Connection, Clock>* core,
         typename Clock::time_point d, acquire_site s) {
        using op_type = detail::acquire_op<Connection, Clock, std::decay_t<decltype(handler)>>;
        std::make_shared<op_type>(std::move(handler), *core, d, s)->start();
      },
      token, &pool.core(), deadline, site);
}

// Lends a connection from `pool`, waiting up to `timeout`. See the overload above.
template <class Connection, class Clock, class Rep, class Period, class CompletionToken>
auto async_acquire(sluice::pool<Connection, Clock>& pool,
                   std::chrono::duration<Rep, Period> timeout, CompletionToken&& token,
                   acquire_site site = acquire_site::current()) {
  return async_acquire(
      pool,
      pool.core().clock().now() + std::chrono::duration_cast<typename Clock::duration>(timeout),
      std::forward<CompletionToken>(token), site);
}

// Runs `pool.maintain()` every `interval` on `executor` until the pool is closed or the
// returned timer is cancelled/destroyed. The pool must outlive the timer's last wait (cancel it,
// then let its handler run, before destroying the pool).
template <class Connection, class Clock, class Executor>
std::shared_ptr<boost::asio::steady_timer> maintain_every(
    sluice::pool<Connection, Clock>& pool, const Executor& executor,
    std::chrono::steady_clock::duration interval) {
  auto timer = std::make_shared<boost::asio::steady_timer>(executor);
  struct loop {
    sluice::detail::pool_core<Connection, Clock>* core;
    std::weak_ptr<boost::asio::steady_timer> timer;
    std::chrono::steady_clock::duration interval;
    void operator()(const boost::system::error_code& ec) const {
      if (ec || core->closed()) return;
      auto t = timer.lock();
      if (!t) return;
      core->maintain();
      t->expires_after(interval);
      t->async_wait(*this);
    }
  };
  timer->expires_after(interval);
  timer->async_wait(loop{&pool.core(), timer, interval});
  return timer;
}

}  // namespace sluice::asio
