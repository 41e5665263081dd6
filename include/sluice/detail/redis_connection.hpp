// sluice/detail/redis_connection.hpp
//
// Internal; not part of the public API. The state machine behind `sluice::redis::connection` and
// `sluice::redis::subscriber`, kept apart so the public headers stay a readable manual.
//
// Commands enter through a small mutex-protected queue (`submit`), drained on the strand with one
// post per burst. Everything else runs on one strand: the writer (batches every queued command
// into one write),
// the reader (feeds hiredis's parser, matches replies to the FIFO of pending commands), the
// deadline timer (one per connection, armed at the earliest pending deadline) and the connect
// coroutine. Public entry points post to that strand, so a handler is never invoked inside the
// function that initiated its operation.
//
// Handlers on the connection's own executor are completed inline, from inside the strand (the
// fast path: no post per reply). Whatever such a handler does to the connection posts, so it
// takes effect after the handler returns. A handler may throw: io_context and thread_pool
// executors hold the exception until the strand's handler returns, but a strand executor lets it
// unwind through this class; every loop that completes handlers (the reader, fail(), the deadline
// timer, drain) therefore posts its unfinished rest before the exception leaves, on the
// exceptional path only.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <iterator>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include <boost/asio/any_completion_executor.hpp>
#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/system/error_code.hpp>

#include "sluice/asio/error.hpp"
#include "sluice/detail/mutex.hpp"
#include "sluice/detail/redis_reader.hpp"
#include "sluice/redis/command.hpp"
#include "sluice/redis/reply.hpp"
#include "sluice/redis/url.hpp"

namespace sluice::redis {

// Tunables of one connection (see sluice/redis/connection.hpp).
struct connection_options {
  // Bounds resolve + TCP connect + AUTH/SELECT. 1 s: a healthy Redis on the same network answers
  // in well under a millisecond, and a caller that waits longer for a cache is better off without.
  std::chrono::milliseconds connect_timeout{1000};
  // Bounds each command that does not pass its own timeout; 0 means none. 1 s: far above any
  // healthy reply (a 10 MB value on loopback takes ~10 ms) and short enough that a stalled server
  // shows up as timeouts instead of hung callers.
  std::chrono::milliseconds command_timeout{1000};
  // Sizes each socket read. 64 KiB: one read drains a deep pipeline of small replies, and large
  // values arrive in few reads.
  std::size_t read_buffer_size = 64 * 1024;
  // Bounds the messages a subscriber holds for a slow receiver; the oldest is dropped beyond it.
  // 4096: a burst of invalidations fits, a receiver that stopped reading cannot exhaust memory.
  std::size_t max_queued_messages = 4096;
};

// One pub/sub message received by a subscriber.
struct message {
  // Names the channel the message was published to.
  std::string channel;
  // Holds the published bytes.
  std::string payload;
};

}  // namespace sluice::redis

namespace sluice::detail {

namespace net = boost::asio;

class redis_connection_impl : public std::enable_shared_from_this<redis_connection_impl> {
 public:
  using error_code = boost::system::error_code;
  using clock = std::chrono::steady_clock;
  using reply_handler = net::any_completion_handler<void(error_code, redis::reply)>;
  using message_handler = net::any_completion_handler<void(error_code, redis::message)>;
  using status_handler = net::any_completion_handler<void(error_code)>;

  redis_connection_impl(const net::any_io_executor& ex, redis::connection_options options)
      : user_ex_(ex),
        strand_(net::make_strand(ex)),
        socket_(strand_),
        resolver_(strand_),
        timer_(strand_),
        connect_timer_(strand_),
        options_(options),
        rbuf_(std::max<std::size_t>(options.read_buffer_size, 512)) {}

  const net::any_io_executor& user_executor() const noexcept { return user_ex_; }

  // Reports whether `handler` completes on the connection's own executor.
  template <class Handler>
  bool is_local(const Handler& handler) const {
    if constexpr (std::is_same_v<net::associated_executor_t<Handler, net::any_io_executor>,
                                 net::any_io_executor>) {
      return net::get_associated_executor(handler, user_ex_) == user_ex_;
    } else {
      return false;
    }
  }
  const net::strand<net::any_io_executor>& strand() const noexcept { return strand_; }
  const redis::connection_options& options() const noexcept { return options_; }

  // Reports whether the connection is up; advisory (it may change right after).
  // Relaxed: the flag is a hint read without any other data depending on it.
  bool is_connected() const noexcept { return connected_.load(std::memory_order_relaxed); }

  // ---- entry points (call on the strand) -------------------------------------------------------

  void start_connect(redis::endpoint ep, status_handler handler) {
    if (state_ == state::connecting) {
      complete_status(std::move(handler), make(sluice::asio::error::failed_precondition));
      return;
    }
    if (state_ == state::connected) {
      try {
        fail(make(sluice::asio::error::cancelled));
      } catch (...) {
        // A handler threw from fail(); connect once the exception has left (now disconnected).
        net::post(strand_, [self = shared_from_this(), ep = std::move(ep),
                            handler = std::move(handler)]() mutable {
          self->start_connect(std::move(ep), std::move(handler));
        });
        throw;
      }
    }
    state_ = state::connecting;
    connect_timed_out_ = false;
    const std::uint64_t gen = generation_;
    auto self = shared_from_this();
    connect_timer_.expires_after(options_.connect_timeout);
    connect_timer_.async_wait(net::bind_executor(strand_, [self, gen](error_code ec) {
      if (ec || gen != self->generation_ || self->state_ != state::connecting) return;
      self->connect_timed_out_ = true;
      self->resolver_.cancel();
      error_code ignored;
      self->socket_.close(ignored);
    }));
    auto work = track(handler);
    net::co_spawn(strand_, run_connect(std::move(ep), gen),
                  [self, gen, handler = std::move(handler), work = std::move(work)](
                      std::exception_ptr eptr, error_code ec) mutable {
                    if (eptr) ec = make(sluice::asio::error::internal);
                    self->finish_connect(gen, ec, std::move(handler));
                  });
  }

  // `local`: the handler runs on the connection's own executor (see submit()).
  void start_exec(std::string_view wire, std::chrono::milliseconds timeout, reply_handler handler,
                  clock::time_point now = clock::now(), bool local = false) {
    if (state_ != state::connected) {
      complete_reply(std::move(handler), make(sluice::asio::error::unavailable), redis::reply{});
      return;
    }
    const std::uint64_t seq = next_seq_++;
    auto slot = net::get_associated_cancellation_slot(handler);
    if (slot.is_connected()) slot.template emplace<canceller>(weak_from_this(), seq, false);
    out_.append(wire);
    if (local) {
      pending_.push_back(pending_op{std::move(handler), net::any_completion_executor{}, true});
    } else {
      auto work = track(handler);
      pending_.push_back(pending_op{std::move(handler), std::move(work), false});
    }
    if (timeout.count() > 0) add_deadline(now + timeout, seq);
  }

  // Queues a command from any thread. Commands submitted while a drain is pending join it, so a
  // burst of N commands costs one post to the strand and one write, not N.
  // `local` says the handler's associated executor is the connection's own (decided by the caller,
  // which still knows the handler's concrete type): such handlers need no work guard of their
  // own (the connection's pending read keeps that context busy) and complete through the
  // executor directly, which saves converting it to a type-erased completion executor.
  void submit(redis::command cmd, std::chrono::milliseconds timeout, reply_handler handler,
              bool local) ABSL_LOCKS_EXCLUDED(submit_mu_) {
    bool post = false;
    {
      mutex_lock lock(submit_mu_);
      submitted_.push_back(submission{std::move(cmd), timeout, std::move(handler), local});
      post = !drain_posted_;
      drain_posted_ = true;
    }
    if (post) net::post(strand_, [self = shared_from_this()] { self->drain(); });
  }

  // Sends a command issued on the strand (the subscriber's) without waiting for a drain.
  void exec_now(std::string_view wire, std::chrono::milliseconds timeout, reply_handler handler) {
    start_exec(wire, timeout, std::move(handler));
    schedule_flush();
  }

  void start_receive(message_handler handler) {
    if (!messages_.empty()) {
      redis::message m = std::move(messages_.front());
      messages_.pop_front();
      complete_message(std::move(handler), error_code{}, std::move(m));
      return;
    }
    if (receiver_) {
      complete_message(std::move(handler), make(sluice::asio::error::failed_precondition), {});
      return;
    }
    if (state_ != state::connected && state_ != state::connecting) {
      complete_message(std::move(handler), make(sluice::asio::error::unavailable), {});
      return;
    }
    auto slot = net::get_associated_cancellation_slot(handler);
    if (slot.is_connected()) slot.template emplace<canceller>(weak_from_this(), 0, true);
    receiver_work_ = track(handler);
    // swap, not move-assignment: Boost 1.81's any_completion_handler::operator=(&&) recurses.
    receiver_.swap(handler);
  }

  void set_pubsub() { pubsub_ = true; }

  // Starts every submitted command, in submission order, then writes them in one batch.
  void drain() ABSL_LOCKS_EXCLUDED(submit_mu_) {
    {
      mutex_lock lock(submit_mu_);
      draining_.swap(submitted_);
      drain_posted_ = false;
    }
    // One clock read per burst: the commands of a burst were submitted within microseconds.
    const clock::time_point now = clock::now();
    std::size_t i = 0;
    try {
      for (; i < draining_.size(); ++i) {
        submission& sub = draining_[i];
        start_exec(sub.cmd.wire(), sub.timeout, std::move(sub.handler), now, sub.local);
      }
    } catch (...) {
      // Keeps draining_[i] when its handler was not consumed (it did not run).
      requeue_rest(draining_[i].handler ? i : i + 1);
      throw;
    }
    draining_.clear();
    start_write();
  }
  void add_subscription(std::string channel) {
    if (std::find(subscriptions_.begin(), subscriptions_.end(), channel) == subscriptions_.end()) {
      subscriptions_.push_back(std::move(channel));
    }
  }
  std::uint64_t dropped_messages() const noexcept { return dropped_messages_; }

  void close() { fail(make(sluice::asio::error::cancelled)); }

 private:
  enum class state { disconnected, connecting, connected };

  struct submission {
    redis::command cmd;
    std::chrono::milliseconds timeout;
    reply_handler handler;
    bool local;
  };

  struct pending_op {
    reply_handler handler;              // empty once the op completed early (timeout, cancellation)
    net::any_completion_executor work;  // tracked executor of the handler; empty when local
    bool local;                         // the handler runs on user_ex_
  };

  // Receives per-operation cancellation and forwards it to the strand.
  struct canceller {
    canceller(std::weak_ptr<redis_connection_impl> i, std::uint64_t s, bool r) noexcept
        : impl(std::move(i)), seq(s), receive(r) {}
    std::weak_ptr<redis_connection_impl> impl;
    std::uint64_t seq;
    bool receive;
    void operator()(net::cancellation_type_t type) const {
      if ((type & (net::cancellation_type::terminal | net::cancellation_type::partial |
                   net::cancellation_type::total)) == net::cancellation_type::none) {
        return;
      }
      if (auto p = impl.lock()) {
        net::post(p->strand_, [p, seq = seq, receive = receive] {
          if (receive) {
            p->cancel_receive();
          } else {
            p->cancel_op(seq);
          }
        });
      }
    }
  };

  static error_code make(sluice::asio::error e) noexcept {
    return sluice::asio::make_error_code(e);
  }

  template <class Handler>
  net::any_completion_executor track(const Handler& h) const {
    return net::prefer(net::get_associated_executor(h, user_ex_),
                       net::execution::outstanding_work.tracked);
  }

  void complete_reply(reply_handler h, error_code ec, redis::reply r) {
    const net::any_completion_executor ex = net::get_associated_executor(h, user_ex_);
    complete_reply(std::move(h), ex, ec, std::move(r));
  }
  // Completes through `ex`, the handler's (tracked) associated executor already at hand.
  void complete_reply(reply_handler h, const net::any_completion_executor& ex, error_code ec,
                      redis::reply r) {
    auto slot = net::get_associated_cancellation_slot(h);
    if (slot.is_connected()) slot.clear();
    net::dispatch(
        ex, [h = std::move(h), ec, r = std::move(r)]() mutable { std::move(h)(ec, std::move(r)); });
  }
  // Completes a pending op and releases its work on the handler's executor.
  void complete_op(pending_op& op, error_code ec, redis::reply r) {
    if (op.local) {
      reply_handler h = std::move(op.handler);
      auto slot = net::get_associated_cancellation_slot(h);
      if (slot.is_connected()) slot.clear();
      net::dispatch(user_ex_, [h = std::move(h), ec, r = std::move(r)]() mutable {
        std::move(h)(ec, std::move(r));
      });
      return;
    }
    net::any_completion_executor work = std::move(op.work);
    complete_reply(std::move(op.handler), work, ec, std::move(r));
  }
  void complete_message(message_handler h, error_code ec, redis::message m) {
    auto slot = net::get_associated_cancellation_slot(h);
    if (slot.is_connected()) slot.clear();
    auto ex = net::get_associated_executor(h, user_ex_);
    net::dispatch(
        ex, [h = std::move(h), ec, m = std::move(m)]() mutable { std::move(h)(ec, std::move(m)); });
  }
  void complete_status(status_handler h, error_code ec) {
    auto ex = net::get_associated_executor(h, user_ex_);
    net::dispatch(ex, [h = std::move(h), ec]() mutable { std::move(h)(ec); });
  }

  pending_op* find(std::uint64_t seq) noexcept {
    const std::uint64_t front = next_seq_ - pending_.size();
    if (seq < front || seq >= next_seq_) return nullptr;
    return &pending_[static_cast<std::size_t>(seq - front)];
  }

  // Puts draining_[first..] (the submissions after the one that threw) back in front of the queue
  // and posts a drain for them and for the write.
  void requeue_rest(std::size_t first) ABSL_LOCKS_EXCLUDED(submit_mu_) {
    bool post = false;
    {
      mutex_lock lock(submit_mu_);
      const auto rest = draining_.begin() + static_cast<std::ptrdiff_t>(first);
      submitted_.insert(submitted_.begin(), std::make_move_iterator(rest),
                        std::make_move_iterator(draining_.end()));
      post = !drain_posted_;
      drain_posted_ = true;
    }
    draining_.clear();
    if (post) net::post(strand_, [self = shared_from_this()] { self->drain(); });
  }

  void cancel_op(std::uint64_t seq) {
    pending_op* op = find(seq);
    if (op == nullptr || !op->handler) return;
    // The command may already be on the wire: its reply will still arrive and is dropped, so
    // the FIFO stays in step with the server.
    complete_op(*op, net::error::operation_aborted, redis::reply{});
  }

  void cancel_receive() {
    if (!receiver_) return;
    receiver_work_ = nullptr;  // first: the handler may throw
    complete_message(std::move(receiver_), net::error::operation_aborted, {});
  }

  // ---- connect ----------------------------------------------------------------------------------

  net::awaitable<error_code> run_connect(redis::endpoint ep, std::uint64_t gen) {
    auto self = shared_from_this();
    error_code ec;
    auto results = co_await resolver_.async_resolve(ep.host, std::to_string(ep.port),
                                                    net::redirect_error(net::use_awaitable, ec));
    if (ec) co_return ec;
    if (gen != generation_) co_return make(sluice::asio::error::cancelled);
    co_await net::async_connect(socket_, results, net::redirect_error(net::use_awaitable, ec));
    if (ec) co_return ec;
    error_code ignored;
    socket_.set_option(net::ip::tcp::no_delay(true), ignored);

    // Handshake: AUTH, SELECT, re-SUBSCRIBE, pipelined in one write, then one reply each.
    std::string out;
    std::vector<char> kinds;  // 'a' auth, 's' select, 'p' subscribe
    if (!ep.password.empty()) {
      if (ep.user.empty()) {
        out.append(redis::command{"AUTH", ep.password}.wire());
      } else {
        out.append(redis::command{"AUTH", ep.user, ep.password}.wire());
      }
      kinds.push_back('a');
    }
    if (ep.db != 0) {
      const std::string db = std::to_string(ep.db);
      out.append(redis::command{"SELECT", db}.wire());
      kinds.push_back('s');
    }
    if (pubsub_) {
      for (const std::string& ch : subscriptions_) {
        out.append(redis::command{"SUBSCRIBE", ch}.wire());
        kinds.push_back('p');
      }
    }
    if (kinds.empty()) co_return error_code{};
    co_await net::async_write(socket_, net::buffer(out),
                              net::redirect_error(net::use_awaitable, ec));
    if (ec) co_return ec;
    std::size_t got = 0;
    while (got < kinds.size()) {
      redis::reply r;
      const auto res = reader_.next(&r);
      if (res == resp_reader::result::protocol_error) {
        co_return make(sluice::asio::error::data_loss);
      }
      if (res == resp_reader::result::need_more) {
        const std::size_t n = co_await socket_.async_read_some(
            net::buffer(rbuf_), net::redirect_error(net::use_awaitable, ec));
        if (ec) co_return ec;
        if (!reader_.feed(rbuf_.data(), n)) co_return make(sluice::asio::error::data_loss);
        continue;
      }
      const char kind = kinds[got++];
      if (r.is_error()) {
        if (kind == 'a') co_return make(sluice::asio::error::unauthenticated);
        co_return make(sluice::asio::error::invalid_argument);
      }
    }
    co_return error_code{};
  }

  void finish_connect(std::uint64_t gen, error_code ec, status_handler handler) {
    connect_timer_.cancel();
    if (gen != generation_) {
      // close() ran while connecting.
      complete_status(std::move(handler), make(sluice::asio::error::cancelled));
      return;
    }
    if (ec) {
      if (connect_timed_out_) ec = make(sluice::asio::error::deadline_exceeded);
      state_ = state::disconnected;
      ++generation_;
      error_code ignored;
      socket_.close(ignored);
      reader_.reset();
      complete_status(std::move(handler), ec);
      return;
    }
    state_ = state::connected;
    connected_.store(true, std::memory_order_relaxed);
    start_read();
    complete_status(std::move(handler), error_code{});
  }

  // ---- failure ----------------------------------------------------------------------------------

  // Drops the session: closes the socket, fails every pending command with `ec`.
  void fail(error_code ec) {
    ++generation_;
    state_ = state::disconnected;
    connected_.store(false, std::memory_order_relaxed);
    error_code ignored;
    socket_.close(ignored);
    resolver_.cancel();
    timer_.cancel();
    connect_timer_.cancel();
    armed_ = clock::time_point::max();
    heap_.clear();
    out_.clear();
    flush_scheduled_ = false;
    reader_.reset();
    std::deque<pending_op> ops = std::move(pending_);
    pending_.clear();
    message_handler receiver(std::move(receiver_));
    receiver_work_ = nullptr;
    fail_ops(std::move(ops), std::move(receiver), ec);
  }

  // Completes the commands and the receiver of an ended session with `ec`. If a handler throws,
  // the rest is posted, then the exception leaves.
  void fail_ops(std::deque<pending_op> ops, message_handler receiver, error_code ec) {
    try {
      while (!ops.empty()) {
        pending_op op = std::move(ops.front());
        ops.pop_front();
        if (op.handler) complete_op(op, ec, redis::reply{});
      }
      if (receiver) complete_message(std::move(receiver), ec, {});
    } catch (...) {
      if (!ops.empty() || receiver) {
        net::post(strand_,
                  [self = shared_from_this(), ops = std::move(ops), receiver = std::move(receiver),
                   ec]() mutable { self->fail_ops(std::move(ops), std::move(receiver), ec); });
      }
      throw;
    }
  }

  // ---- writer -----------------------------------------------------------------------------------

  void schedule_flush() {
    if (writing_ || flush_scheduled_) return;
    flush_scheduled_ = true;
    // Posted rather than written at once, so every command already queued on the strand joins
    // this write.
    net::post(strand_, [self = shared_from_this(), gen = generation_] {
      if (gen != self->generation_) return;
      self->flush_scheduled_ = false;
      self->start_write();
    });
  }

  void start_write() {
    if (writing_ || out_.empty() || state_ != state::connected) return;
    writing_ = true;
    wbuf_.swap(out_);
    out_.clear();
    net::async_write(
        socket_, net::buffer(wbuf_),
        net::bind_executor(strand_, [self = shared_from_this(), gen = generation_](
                                        error_code ec, std::size_t) { self->on_write(gen, ec); }));
  }

  void on_write(std::uint64_t gen, error_code ec) {
    writing_ = false;
    wbuf_.clear();
    if (gen == generation_ && ec) {
      fail(ec);
      return;
    }
    start_write();
  }

  // ---- reader -----------------------------------------------------------------------------------

  void start_read() {
    socket_.async_read_some(
        net::buffer(rbuf_),
        net::bind_executor(
            strand_, [self = shared_from_this(), gen = generation_](error_code ec, std::size_t n) {
              self->on_read(gen, ec, n);
            }));
  }

  void on_read(std::uint64_t gen, error_code ec, std::size_t n) {
    if (gen != generation_) return;
    if (ec) {
      fail(ec);
      return;
    }
    if (!reader_.feed(rbuf_.data(), n)) {
      fail(make(sluice::asio::error::data_loss));
      return;
    }
    read_replies(gen);
  }

  // Completes every reply already received, then reads on. If a handler throws, the rest of the
  // batch and the next read are posted, then the exception leaves.
  void read_replies(std::uint64_t gen) {
    try {
      if (!complete_replies(gen)) return;
    } catch (...) {
      if (gen == generation_) {
        net::post(strand_, [self = shared_from_this(), gen] {
          if (gen == self->generation_) self->read_replies(gen);
        });
      }
      throw;
    }
    start_read();
  }

  // Returns false when the session ended (the reader must stop).
  bool complete_replies(std::uint64_t gen) {
    for (;;) {
      redis::reply r;
      const bool waiting = !pending_.empty() && pending_.front().handler;
      // Replies of abandoned (timed-out, cancelled) commands are parsed and dropped unconverted,
      // except on a subscriber, which must look at every reply.
      const auto res = reader_.next(&r, !waiting && !pubsub_ && !pending_.empty());
      if (res == resp_reader::result::need_more) break;
      if (res == resp_reader::result::protocol_error) {
        fail(make(sluice::asio::error::data_loss));
        return false;
      }
      if (pubsub_ && deliver_message(r)) continue;
      if (pending_.empty()) {
        fail(make(sluice::asio::error::data_loss));  // a reply nobody asked for
        return false;
      }
      pending_op op = std::move(pending_.front());
      pending_.pop_front();
      if (op.handler) complete_op(op, error_code{}, std::move(r));
      // Defensive: handlers reach the connection only through posts, so this holds.
      if (gen != generation_) return false;
    }
    return true;
  }

  bool deliver_message(redis::reply& r) {
    if (!r.is_array()) return false;
    auto elements = std::move(r).elements();
    const bool is_message = elements.size() == 3 && elements[0].str() == "message";
    const bool is_pmessage = elements.size() == 4 && elements[0].str() == "pmessage";
    if (!is_message && !is_pmessage) {
      r = redis::reply::array(std::move(elements));
      return false;
    }
    redis::message m;
    m.channel = std::move(elements[elements.size() - 2]).str();
    m.payload = std::move(elements.back()).str();
    if (receiver_) {
      receiver_work_ = nullptr;  // first: the handler may throw
      complete_message(std::move(receiver_), error_code{}, std::move(m));
      return true;
    }
    if (messages_.size() >= options_.max_queued_messages) {
      messages_.pop_front();
      ++dropped_messages_;
    }
    messages_.push_back(std::move(m));
    return true;
  }

  // ---- deadlines --------------------------------------------------------------------------------

  struct later {
    bool operator()(const std::pair<clock::time_point, std::uint64_t>& a,
                    const std::pair<clock::time_point, std::uint64_t>& b) const noexcept {
      return a.first > b.first;
    }
  };

  void add_deadline(clock::time_point deadline, std::uint64_t seq) {
    heap_.emplace_back(deadline, seq);
    std::push_heap(heap_.begin(), heap_.end(), later{});
    // Entries of commands that completed stay in the heap until they reach its top; rebuild it
    // from the live commands when they outnumber them, so it stays O(pending).
    if (heap_.size() > 2 * pending_.size() + 64) {
      std::erase_if(heap_, [this](const auto& e) {
        const pending_op* op = find(e.second);
        return op == nullptr || !op->handler;
      });
      std::make_heap(heap_.begin(), heap_.end(), later{});
    }
    if (deadline < armed_) arm(deadline);
  }

  void arm(clock::time_point at) {
    armed_ = at;
    timer_.expires_at(at);
    timer_.async_wait(net::bind_executor(strand_, [self = shared_from_this(), gen = generation_](
                                                      error_code ec) { self->on_timer(gen, ec); }));
  }

  void on_timer(std::uint64_t gen, error_code ec) {
    if (ec || gen != generation_) return;  // re-armed, or the session ended
    armed_ = clock::time_point::max();
    const auto now = clock::now();
    try {
      while (!heap_.empty() && heap_.front().first <= now) {
        const std::uint64_t seq = heap_.front().second;
        std::pop_heap(heap_.begin(), heap_.end(), later{});
        heap_.pop_back();
        pending_op* op = find(seq);
        if (op == nullptr || !op->handler) continue;
        // The reply is still coming; it will be read and dropped (see cancel_op).
        complete_op(*op, make(sluice::asio::error::deadline_exceeded), redis::reply{});
        if (gen != generation_) return;
      }
    } catch (...) {
      // A handler threw: expire the rest once the exception has left.
      if (gen == generation_ && !heap_.empty()) arm(heap_.front().first);
      throw;
    }
    while (!heap_.empty()) {
      const pending_op* op = find(heap_.front().second);
      if (op != nullptr && op->handler) break;
      std::pop_heap(heap_.begin(), heap_.end(), later{});
      heap_.pop_back();
    }
    if (!heap_.empty()) arm(heap_.front().first);
  }

  net::any_io_executor user_ex_;
  net::strand<net::any_io_executor> strand_;
  net::ip::tcp::socket socket_;
  net::ip::tcp::resolver resolver_;
  net::steady_timer timer_;
  net::steady_timer connect_timer_;
  redis::connection_options options_;
  resp_reader reader_;
  std::vector<char> rbuf_;
  std::string out_;   // commands not yet handed to the socket
  std::string wbuf_;  // the write in flight
  std::deque<pending_op> pending_;
  std::uint64_t next_seq_ = 0;  // sequence number of the next command; pending_ ends just before
  std::vector<std::pair<clock::time_point, std::uint64_t>> heap_;  // (deadline, seq), min-heap
  clock::time_point armed_ = clock::time_point::max();
  std::uint64_t generation_ = 0;  // bumped when a session ends; stale callbacks compare it
  state state_ = state::disconnected;
  bool writing_ = false;
  bool flush_scheduled_ = false;
  bool connect_timed_out_ = false;
  bool pubsub_ = false;
  std::vector<std::string> subscriptions_;
  std::deque<redis::message> messages_;
  message_handler receiver_;
  net::any_completion_executor receiver_work_;
  std::uint64_t dropped_messages_ = 0;
  std::atomic<bool> connected_{false};
  mutex submit_mu_;
  std::vector<submission> submitted_ ABSL_GUARDED_BY(submit_mu_);
  bool drain_posted_ ABSL_GUARDED_BY(submit_mu_) = false;
  std::vector<submission> draining_;  // strand only; kept to reuse its capacity
};

}  // namespace sluice::detail
