// sluice/redis/subscriber.hpp
//
// `sluice::redis::subscriber` is a dedicated connection in Redis's pub/sub mode: it SUBSCRIBEs to
// channels and hands the messages published on them to `async_receive`, one at a time. Redis
// allows nothing but (un)subscribe and PING on such a connection, which is why it is its own
// type and not a mode of `connection`.
//
// The subscriber remembers its channels: `async_connect` after a lost connection subscribes to
// all of them again (messages published while it was down are lost: pub/sub does not store).
// Messages that arrive while nobody is receiving are queued, up to
// `connection_options::max_queued_messages`; beyond it the oldest are dropped.
//
// Completion: async_connect void(error_code); async_subscribe void(error_code, reply) with the
// confirmation array ["subscribe", channel, count]; async_receive void(error_code, message).
// Handlers never run inside the initiating function. async_receive supports per-operation
// cancellation (operation_aborted); one receive may be outstanding at a time (a second one
// completes with failed_precondition). When the connection breaks, the outstanding receive
// completes with the error.
//
// Thread safety: all member functions may be called concurrently from any thread.
//
// Example:
//   redis::subscriber sub(io.get_executor());
//   co_await sub.async_connect(ep, use_awaitable);
//   co_await sub.async_subscribe("invalidate", use_awaitable);
//   for (;;) {
//     redis::message m = co_await sub.async_receive(use_awaitable);
//     cache.erase(m.payload);
//   }
#pragma once

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

// A pub/sub connection (see the file comment).
class subscriber {
 public:
  using executor_type = boost::asio::any_io_executor;

  // Creates a disconnected subscriber whose I/O runs on `ex`.
  explicit subscriber(const executor_type& ex, connection_options options = {})
      : impl_(std::make_shared<detail::redis_connection_impl>(ex, options)) {
    impl_->set_pubsub();
  }
  template <class ExecutionContext,
            std::enable_if_t<
                std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&>, int> = 0>
  explicit subscriber(ExecutionContext& ctx, connection_options options = {})
      : subscriber(executor_type(ctx.get_executor()), options) {}

  subscriber(const subscriber&) = delete;
  subscriber& operator=(const subscriber&) = delete;

  // Closes the connection; an outstanding receive completes with `cancelled`.
  ~subscriber() { close(); }

  // Returns the executor given at construction.
  [[nodiscard]] executor_type get_executor() const noexcept { return impl_->user_executor(); }

  // Reports whether the connection is up (advisory).
  [[nodiscard]] bool is_connected() const noexcept { return impl_->is_connected(); }

  // Connects (as connection::async_connect) and subscribes again to every remembered channel.
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

  // Remembers `channel` and SUBSCRIBEs to it. When disconnected the channel is still remembered
  // (subscribed at the next connect) and the operation completes with `unavailable`.
  // Completion: void(error_code, reply).
  template <class CompletionToken>
  auto async_subscribe(std::string channel, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, reply)>(
        [](auto handler, std::shared_ptr<detail::redis_connection_impl> impl, std::string ch) {
          auto& strand = impl->strand();
          boost::asio::post(
              strand,
              [impl = std::move(impl), ch = std::move(ch),
               h = detail::redis_connection_impl::reply_handler(std::move(handler))]() mutable {
                const command cmd{"SUBSCRIBE", ch};
                impl->add_subscription(std::move(ch));
                impl->exec_now(cmd.wire(), impl->options().command_timeout, std::move(h));
              });
        },
        token, impl_, std::move(channel));
  }

  // Completes with the next message (queued or yet to come). Completion:
  // void(error_code, message).
  template <class CompletionToken>
  auto async_receive(CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code, message)>(
        [](auto handler, std::shared_ptr<detail::redis_connection_impl> impl) {
          auto& strand = impl->strand();
          boost::asio::post(
              strand, [impl = std::move(impl), h = detail::redis_connection_impl::message_handler(
                                                   std::move(handler))]() mutable {
                impl->start_receive(std::move(h));
              });
        },
        token, impl_);
  }

  // Closes the connection (channels stay remembered). Returns at once.
  void close() {
    boost::asio::post(impl_->strand(), [impl = impl_] { impl->close(); });
  }

 private:
  std::shared_ptr<detail::redis_connection_impl> impl_;
};

}  // namespace sluice::redis
