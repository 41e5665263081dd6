// sluice/redis/connection.hpp
//
// `sluice::redis::connection` is one non-blocking, pipelined connection to a Redis server.
// Asio owns the TCP socket; hiredis is used only to encode commands and parse replies, so no
// call ever blocks the event loop. Any number of coroutines or callbacks may issue commands on
// one connection at once: commands are queued, written in batches by a single writer, and
// replies are matched to commands in order (Redis answers in the order it was asked).
//
// Lifecycle: construct on an executor, `async_connect` (resolve, TCP connect, AUTH, SELECT, all
// under `connect_timeout`), then `async_exec` as much as needed. When the connection breaks
// (server gone, protocol error) every pending command completes with the error and the
// connection goes back to disconnected; `async_connect` again reconnects it (pace the attempts,
// e.g. with sluice::retry's backoff, when the server is down). Commands issued while disconnected
// or connecting complete at once with
// `sluice::asio::error::unavailable`: they are never silently queued for a server that may not
// come back.
//
// Timeouts and cancellation: every command has a deadline (its own `timeout` argument, else
// `connection_options::command_timeout`), and supports per-operation cancellation (terminal,
// partial and total: the bound cancellation slot, as `co_await (op || timer)` or
// `bind_cancellation_slot` use it). A command that times out or is cancelled completes at once
// (`sluice::asio::error::deadline_exceeded`, `boost::asio::error::operation_aborted`), but its
// bytes may already be on the wire: its reply is still read and dropped, so the replies of later
// commands stay matched. The connection itself is not failed by a timeout; to detect a server
// that stalls for good, PING it periodically with a short timeout and `close()` + reconnect when
// the PING times out.
//
// Completion: `void(boost::system::error_code, sluice::redis::reply)` for commands,
// `void(boost::system::error_code)` for connect; any completion token (callbacks,
// `use_awaitable`, `use_future`, `deferred`). Handlers run on their associated executor (else
// the connection's executor), never inside the initiating function. A Redis error reply is not
// an error_code (see sluice/redis/reply.hpp and sluice/redis/error.hpp).
// A handler whose executor is the connection's own (a plain callback, a coroutine spawned on
// that executor) runs inline from the connection's internal strand, so the connection's I/O
// waits while it runs: do not block in it (waiting there for another command of the same
// connection deadlocks, even on a multi-threaded io_context). Such a handler may issue commands,
// `close()`, `async_connect`, cancel other commands or destroy the connection: each takes effect
// after the handler returns, and every other command still completes exactly once, with its own
// reply or an error. A handler may throw; the exception leaves `run()` as Asio specifies, and the
// connection carries on (the rest of its work is posted first).
//
// Errors: connect: resolver/socket errors as Asio reports them, `deadline_exceeded` (connect
// timeout), `unauthenticated` (AUTH refused), `invalid_argument` (SELECT refused), `cancelled`
// (closed while connecting), `failed_precondition` (a connect already running). Commands:
// `unavailable` (not connected), the socket error that broke the connection (eof,
// connection_reset, ...), `data_loss` (protocol error), `deadline_exceeded`, `operation_aborted`,
// `cancelled` (closed).
//
// Thread safety: all member functions may be called concurrently from any thread; the
// connection serializes its work on an internal strand. Emit a cancellation signal from the
// thread (or strand) that runs the operation's handler, as for any Asio operation.
// Time: deadlines use std::chrono::steady_clock through an Asio timer (real time: they are I/O
// deadlines).
// Memory: there is no backpressure; a caller that issues commands faster than the server
// answers grows the write buffer. Bound the number of commands in flight (e.g. a
// sluice::concurrency_limiter or a bulkhead in front of the connection).
//
// Example:
//   sluice::redis::connection conn(io.get_executor());
//   co_await conn.async_connect(*sluice::redis::parse_url("redis://127.0.0.1:6379"),
//                               use_awaitable);
//   auto r = co_await conn.async_exec(sluice::redis::command{"GET", "user:42"}, use_awaitable);
//   if (r.is_string()) std::cout << r.str();
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/system/error_code.hpp>

#include "sluice/detail/redis_connection.hpp"
#include "sluice/redis/command.hpp"
#include "sluice/redis/reply.hpp"
#include "sluice/redis/url.hpp"

namespace sluice::redis {

// One pipelined connection (see the file comment).
class connection {
 public:
  using executor_type = boost::asio::any_io_executor;

  // Creates a disconnected connection whose I/O runs on `ex` (through an internal strand).
  explicit connection(const executor_type& ex, connection_options options = {})
      : impl_(std::make_shared<detail::redis_connection_impl>(ex, options)) {}

  // Creates a disconnected connection on an execution context's executor (an io_context).
  template <class ExecutionContext,
            std::enable_if_t<
                std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&>, int> = 0>
  explicit connection(ExecutionContext& ctx, connection_options options = {})
      : connection(executor_type(ctx.get_executor()), options) {}

  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  connection(connection&&) noexcept = default;
  connection& operator=(connection&& other) noexcept {
    if (this != &other) {
      close();
      impl_ = std::move(other.impl_);
    }
    return *this;
  }

  // Closes the connection: pending commands complete with `cancelled`. The I/O state lives on
  // until its last operation finished, so destroying a connection with commands in flight is
  // safe.
  ~connection() { close(); }

  // Returns the executor given at construction.
  [[nodiscard]] executor_type get_executor() const noexcept { return impl_->user_executor(); }

  // Reports whether the connection is up. Advisory: it may change right after the call.
  [[nodiscard]] bool is_connected() const noexcept { return impl_ && impl_->is_connected(); }

  // Returns the options given at construction.
  [[nodiscard]] const connection_options& options() const noexcept { return impl_->options(); }

  // Connects to `ep`: resolves, connects, sends AUTH and SELECT when the endpoint asks for them,
  // all within `connect_timeout`. On a connected connection, first closes the current session.
  // Completion: void(error_code).
  template <class CompletionToken>
  auto async_connect(endpoint ep, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code)>(
        [](auto handler, std::shared_ptr<detail::redis_connection_impl> impl, endpoint e) {
          auto& strand = impl->strand();
          boost::asio::post(
              strand,
              [impl = std::move(impl), e = std::move(e),
               h = detail::redis_connection_impl::status_handler(std::move(handler))]() mutable {
                impl->start_connect(std::move(e), std::move(h));
              });
        },
        token, impl_, std::move(ep));
  }

  // Sends `cmd` and completes with its reply; the deadline is `options().command_timeout`.
  // Completion: void(error_code, reply).
  template <class CompletionToken>
  auto async_exec(command cmd, CompletionToken&& token) {
    return async_exec(std::move(cmd), impl_->options().command_timeout,
                      std::forward<CompletionToken>(token));
  }

  // Sends `cmd` and completes with its reply, or with deadline_exceeded after `timeout`
  // (0: no deadline). Completion: void(error_code, reply).
  template <class CompletionToken>
  auto async_exec(command cmd, std::chrono::milliseconds timeout, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, reply)>(
        [](auto handler, detail::redis_connection_impl* impl, command c,
           std::chrono::milliseconds t) {
          const bool local = impl->is_local(handler);
          impl->submit(std::move(c), t,
                       detail::redis_connection_impl::reply_handler(std::move(handler)), local);
        },
        token, impl_.get(), std::move(cmd), timeout);
  }

  // Closes the current session: pending commands complete with `cancelled`, a running connect
  // with `cancelled`. The connection may be connected again. Returns at once (the work is posted).
  void close() {
    if (!impl_) return;
    boost::asio::post(impl_->strand(), [impl = impl_] { impl->close(); });
  }

 private:
  std::shared_ptr<detail::redis_connection_impl> impl_;
};

}  // namespace sluice::redis
