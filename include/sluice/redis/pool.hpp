// sluice/redis/pool.hpp
//
// `sluice::redis::connection_pool` keeps a bounded set of `sluice::redis::connection`s to one
// server in a `sluice::pool` and runs each command on a connection leased for it: health checks
// (PING), paced reconnects after an outage, a backend that is down failing fast, connections
// that broke or stalled replaced, and never more than `pool.max_size` connections open.
//
// Each `async_exec` leases a connection (waiting up to `acquire_timeout` when all are busy), runs
// the command on it, and returns it. A connection-level error (a socket error, `data_loss`, a
// timed-out command: the connection may be stalled, `unavailable`: it is down) marks the lease
// broken, so the connection is closed instead of reused; a Redis error reply (-WRONGTYPE,
// -LOADING, ...) does not: the connection is fine. Idle connections found disconnected (the
// server went away while they sat in the pool) are discarded at checkout and another is leased.
// For MULTI/EXEC, WATCH, or several commands that must share a connection, lease one yourself
// from `pool()` with `sluice::asio::async_acquire` and use `lease->async_exec`.
//
// Connects and health checks are asynchronous (`sluice::pool_factory::async_create` /
// `async_validate`): no thread ever blocks on Redis. Maintenance (min-idle refills, keep-alive
// PINGs, idle eviction) runs every `maintenance_interval` on the executor.
//
// Completion: `void(boost::system::error_code, sluice::redis::reply)`, any completion token;
// the handler runs on its associated executor (else the pool's), never inside the initiating
// function. Cancellation: the handler's cancellation slot (terminal/partial/total) cancels the
// wait for a connection or the command, whichever is running.
// Errors: the command's own (see sluice/redis/connection.hpp), and the pool's, as
//   sluice::asio::error codes: `unavailable` (the backend is down: fails at once, no waiting; or
//   the pool is closed), `deadline_exceeded` (no connection within acquire_timeout, or the
//   command timed out), `resource_exhausted` (the pool's waiter queue is full). Classify them for
//   breakers and retries with sluice/redis/error.hpp (all are failures).
//
// Thread safety: all member functions may be called concurrently from any thread.
// Time: std::chrono::steady_clock (I/O deadlines are real time).
// Lifetime: operations keep the pool alive (it is held by shared_ptr); `close()` fails waiting
//   and later commands with `unavailable` and closes idle connections, leased ones on return.
//
// Example:
//   auto pool = sluice::redis::connection_pool::make(
//       io.get_executor(), {.server = *sluice::redis::parse_url("redis://127.0.0.1:6379")});
//   if (!pool.ok()) return pool.status();
//   auto [ec, r] = co_await (*pool)->async_exec(sluice::redis::command{"GET", "user:42"},
//                                               as_tuple(use_awaitable));
//   if (ec == sluice::asio::error::unavailable) ...  // Redis is down: use the fallback
//   r = co_await sluice::redis::async_get(**pool, "user:42", use_awaitable);  // helpers work too
#pragma once

#include <algorithm>
#include <chrono>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/system/error_code.hpp>

#include "sluice/asio/error.hpp"
#include "sluice/asio/pool.hpp"
#include "sluice/pool.hpp"
#include "sluice/redis/command.hpp"
#include "sluice/redis/connection.hpp"
#include "sluice/redis/error.hpp"
#include "sluice/redis/reply.hpp"
#include "sluice/redis/url.hpp"

namespace sluice::redis {

// Returns the pool knobs `connection_pool_options::pool` defaults to (the reasons are given per
// field); sluice::pool_options' own defaults are HikariCP's, tuned for SQL databases.
[[nodiscard]] inline sluice::pool_options default_redis_pool_options() {
  sluice::pool_options o;
  // 16: Redis answers a command in microseconds, so 16 connections carry well over 100k
  // commands/s for one service instance, while hundreds of instances stay far below Redis's
  // default maxclients (10000).
  o.max_size = 16;
  // 1: the first command after start-up or a quiet spell does not pay a connect.
  o.min_idle = 1;
  // 500 ms, as connection_pool_options::acquire_timeout (used by synchronous acquires and as the
  // deadline of maintenance connects).
  o.acquire_timeout = std::chrono::milliseconds(500);
  // 5 min: Redis keeps idle clients forever (timeout 0), so this only gives back connections a
  // traffic peak opened.
  o.idle_timeout = std::chrono::minutes(5);
  // 30 min: periodic reconnects pick up a failover behind a DNS name or a proxy.
  o.max_lifetime = std::chrono::minutes(30);
  // 30 s: a PING costs the server microseconds, and a connection a middlebox dropped is found by
  // the pool rather than by a caller.
  o.keepalive_interval = std::chrono::seconds(30);
  // 5 s: a connection used within 5 s is not pinged at checkout (a PING per command would double
  // the round trips); a dead one still fails fast and is replaced (see the file comment).
  o.validation_bypass = std::chrono::seconds(5);
  // 50 ms first, at most 2 s: connects are cheap (sub-millisecond on a LAN) and a restarting
  // Redis is back within a second or two, so recovery is noticed within 2 s of it.
  o.reconnect_backoff_initial = std::chrono::milliseconds(50);
  o.reconnect_backoff_max = std::chrono::seconds(2);
  return o;
}

// How a connection_pool connects and sizes itself.
struct connection_pool_options {
  // Names the server (from parse_url).
  endpoint server;
  // Sets each connection's options (connect and command timeouts, buffers).
  connection_options connection{};
  // Sets sizes, lifetimes, health checks and reconnect pacing; see default_redis_pool_options
  // for the defaults and why.
  sluice::pool_options pool = default_redis_pool_options();
  // Bounds the wait for a connection in async_exec. 500 ms: a free connection normally comes
  // within one command round trip; waiting longer means Redis or the pool is saturated, and a
  // caller of a cache is better off with its fallback. Connects are cut to what remains of it.
  std::chrono::milliseconds acquire_timeout{500};
  // Bounds the health-check PING. 250 ms: a healthy Redis answers in well under a millisecond; a
  // connection that cannot answer in 250 ms is stalled and is replaced.
  std::chrono::milliseconds ping_timeout{250};
  // Sets how often maintenance (min-idle refills, keep-alive PINGs, idle eviction) runs. 1 s:
  // finer than every interval it serves, and a pass over 16 slots costs microseconds.
  std::chrono::milliseconds maintenance_interval{1000};
};

// A pool of Redis connections (see the file comment).
class connection_pool : public std::enable_shared_from_this<connection_pool> {
 public:
  using executor_type = boost::asio::any_io_executor;
  using pool_type = sluice::pool<connection>;
  using lease_type = pool_type::lease;

  // Validates `options` and creates a pool whose connections and maintenance run on `ex`;
  // connections are opened on first use and by maintenance (min_idle). InvalidArgument: an empty
  // host, non-positive acquire_timeout, ping_timeout, maintenance_interval or
  // connection.connect_timeout, a negative connection.command_timeout, or pool options
  // sluice::pool rejects.
  [[nodiscard]] static absl::StatusOr<std::shared_ptr<connection_pool>> make(
      const executor_type& ex, connection_pool_options options) {
    if (options.server.host.empty()) {
      return absl::InvalidArgumentError("sluice::redis::connection_pool: empty server host");
    }
    if (options.acquire_timeout.count() <= 0 || options.ping_timeout.count() <= 0 ||
        options.maintenance_interval.count() <= 0) {
      return absl::InvalidArgumentError(
          "sluice::redis::connection_pool: acquire_timeout, ping_timeout and "
          "maintenance_interval must be positive");
    }
    if (options.connection.connect_timeout.count() <= 0 ||
        options.connection.command_timeout.count() < 0) {
      return absl::InvalidArgumentError(
          "sluice::redis::connection_pool: connection.connect_timeout must be positive and "
          "connection.command_timeout not negative");
    }
    auto made = pool_type::make(make_factory(ex, options), options.pool);
    if (!made.ok()) return made.status();
    std::shared_ptr<connection_pool> self(
        new connection_pool(ex, std::move(options), std::move(*made)));
    self->schedule_maintenance();
    return self;
  }

  connection_pool(const connection_pool&) = delete;
  connection_pool& operator=(const connection_pool&) = delete;
  // Closes the pool (see close()).
  ~connection_pool() { close_pool(); }

  // Returns the executor the connections and maintenance run on.
  [[nodiscard]] executor_type get_executor() const noexcept { return executor_; }

  // Returns the options the pool was made with.
  [[nodiscard]] const connection_pool_options& options() const noexcept { return options_; }

  // Runs `cmd` on a pooled connection with the connection's command_timeout. Completion:
  // void(error_code, reply).
  template <class CompletionToken>
  auto async_exec(command cmd, CompletionToken&& token) {
    return async_exec(std::move(cmd), options_.connection.command_timeout,
                      std::forward<CompletionToken>(token));
  }

  // Runs `cmd` on a pooled connection: waits up to acquire_timeout for one, then up to `timeout`
  // (0: none) for the reply. Completion: void(error_code, reply). See the file comment.
  template <class CompletionToken>
  auto async_exec(command cmd, std::chrono::milliseconds timeout, CompletionToken&& token) {
    return boost::asio::async_compose<CompletionToken, void(boost::system::error_code, reply)>(
        exec_op{shared_from_this(), std::move(cmd), timeout}, token, executor_);
  }

  // Returns the underlying sluice::pool: stats(), events (set through options().pool.on_event),
  // and leases for MULTI/EXEC or several commands on one connection.
  pool_type& pool() noexcept { return pool_; }

  // Closes the pool: stops maintenance (its pending timer wait is cancelled, so it no longer
  // keeps the executor busy), fails queued and later commands with `unavailable`, closes idle
  // connections now and leased ones when returned. Does not wait. Idempotent.
  void close() {
    close_pool();
    // The timer belongs to the strand. (The destructor skips this: destroying the timer cancels
    // its wait.)
    boost::asio::post(strand_, [weak = weak_from_this()] {
      if (auto self = weak.lock()) self->timer_.cancel();
    });
  }

 private:
  // Closes the pool (the maintenance loop stops at its next tick).
  void close_pool() { (void)pool_.close(std::chrono::steady_clock::now()); }

  // Leases a connection, runs the command, returns the connection (or discards it when broken).
  struct exec_op {
    std::shared_ptr<connection_pool> self;
    command cmd;
    std::chrono::milliseconds timeout;
    lease_type lease{};
    std::size_t dead_skipped = 0;

    template <class Self>
    void operator()(Self& op) {
      sluice::asio::async_acquire(self->pool_, self->options_.acquire_timeout, std::move(op));
    }

    template <class Self>
    void operator()(Self& op, boost::system::error_code ec, lease_type got) {
      if (ec) {
        op.complete(ec, reply());
        return;
      }
      if (!got->is_connected() && dead_skipped < self->options_.pool.max_size) {
        // Went down while idle (the server closed it): discard it and lease another.
        ++dead_skipped;
        got.mark_broken();
        got.release();
        sluice::asio::async_acquire(self->pool_, self->options_.acquire_timeout, std::move(op));
        return;
      }
      lease = std::move(got);
      connection& conn = *lease;
      conn.async_exec(std::move(cmd), timeout, std::move(op));
    }

    template <class Self>
    void operator()(Self& op, boost::system::error_code ec, reply r) {
      if (breaks_connection(ec)) lease.mark_broken();
      lease.release();
      op.complete(ec, std::move(r));
    }
  };

  connection_pool(const executor_type& ex, connection_pool_options options, pool_type pool)
      : executor_(ex),
        strand_(boost::asio::make_strand(ex)),
        options_(std::move(options)),
        pool_(std::move(pool)),
        timer_(strand_) {}

  static sluice::pool_factory<connection> make_factory(const executor_type& ex,
                                                       const connection_pool_options& options) {
    sluice::pool_factory<connection> f;
    f.async_create = [ex, server = options.server, copts = options.connection](
                         std::chrono::steady_clock::time_point deadline,
                         sluice::pool_callback<absl::StatusOr<connection>> done) {
      connection_options o = copts;
      // Honour the pool's deadline: the connect may not outlast it.
      const auto left =
          std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      o.connect_timeout = std::max(std::chrono::milliseconds(1), std::min(o.connect_timeout, left));
      auto conn = std::make_shared<connection>(ex, o);
      conn->async_connect(
          server, [conn, done = std::move(done)](const boost::system::error_code& ec) mutable {
            if (ec) {
              std::move(done)(sluice::asio::to_status(ec));
            } else {
              std::move(done)(std::move(*conn));
            }
          });
    };
    f.async_validate = [timeout = options.ping_timeout](connection& conn,
                                                        sluice::pool_callback<absl::Status> done) {
      if (!conn.is_connected()) {
        std::move(done)(absl::UnavailableError("sluice::redis: connection is down"));
        return;
      }
      conn.async_exec(
          command{"PING"}, timeout,
          [done = std::move(done)](const boost::system::error_code& ec, const reply& r) mutable {
            std::move(done)(to_status(ec, r));
          });
    };
    return f;
  }

  void schedule_maintenance() {
    timer_.expires_after(options_.maintenance_interval);
    timer_.async_wait([weak = weak_from_this()](const boost::system::error_code& ec) {
      if (ec) return;
      auto self = weak.lock();
      if (!self || self->pool_.core().closed()) return;
      self->pool_.maintain();
      self->schedule_maintenance();
    });
  }

  executor_type executor_;
  // Serializes the maintenance timer.
  boost::asio::strand<executor_type> strand_;
  connection_pool_options options_;
  pool_type pool_;
  boost::asio::steady_timer timer_;
};

}  // namespace sluice::redis
