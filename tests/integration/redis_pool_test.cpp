#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "sluice/redis/commands.hpp"
#include "sluice/redis/connection.hpp"
#include "sluice/redis/error.hpp"
#include "sluice/redis/gcra_limiter.hpp"
#include "sluice/redis/pool.hpp"

#include "catch.hpp"
#include "redis_support.hpp"

namespace net = boost::asio;
namespace redis = sluice::redis;
using boost::system::error_code;
using net::awaitable;
using net::use_awaitable;
using sluice_test::run_bounded;
using namespace std::chrono_literals;

namespace {

constexpr auto tuple = net::as_tuple(use_awaitable);

std::string pool_key(const std::string& name) {
  static const std::string run =
      std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
  return "sluice:pool-test:" + run + ":" + name;
}

std::shared_ptr<redis::connection_pool> make_pool(net::io_context& io,
                                                  redis::connection_pool_options o) {
  auto p = redis::connection_pool::make(io.get_executor(), std::move(o));
  REQUIRE(p.ok());
  return *p;
}

// Counts the clients connected to the server (CLIENT LIST has one line per client).
awaitable<int> client_count(redis::connection& admin) {
  auto [ec, r] = co_await admin.async_exec(redis::command{"CLIENT", "LIST"}, 2s, tuple);
  if (ec || !r.is_string()) co_return -1;
  co_return static_cast<int>(std::count(r.str().begin(), r.str().end(), '\n'));
}

awaitable<void> pause(std::chrono::milliseconds d) {
  net::steady_timer t(co_await net::this_coro::executor, d);
  co_await t.async_wait(use_awaitable);
}

}  // namespace

TEST_CASE("redis_pool: make validates options", "[redis_pool]") {
  net::io_context io;
  redis::connection_pool_options o;
  o.server.host = "";
  CHECK(redis::connection_pool::make(io.get_executor(), o).status().code() ==
        absl::StatusCode::kInvalidArgument);
  o = {};
  o.ping_timeout = 0ms;
  CHECK(redis::connection_pool::make(io.get_executor(), o).status().code() ==
        absl::StatusCode::kInvalidArgument);
  o = {};
  o.pool.max_size = 0;
  CHECK(redis::connection_pool::make(io.get_executor(), o).status().code() ==
        absl::StatusCode::kInvalidArgument);
  o = {};
  o.connection.connect_timeout = 0ms;  // every connect would time out: the pool never comes up
  CHECK(redis::connection_pool::make(io.get_executor(), o).status().code() ==
        absl::StatusCode::kInvalidArgument);
  o = {};
  o.connection.command_timeout = -1ms;
  CHECK(redis::connection_pool::make(io.get_executor(), o).status().code() ==
        absl::StatusCode::kInvalidArgument);
  o = {};
  CHECK(o.pool.max_size == 16);  // the Redis defaults, not HikariCP's
  CHECK(o.pool.reconnect_backoff_max == 2s);
  CHECK(redis::connection_pool::make(io.get_executor(), o).ok());
}

TEST_CASE("redis_pool: close stops the maintenance timer at once", "[redis_pool]") {
  // No server needed: nothing connects before the first maintenance pass.
  net::io_context io;
  redis::connection_pool_options o;
  o.server.port = 1;
  o.maintenance_interval = std::chrono::hours(1);
  auto pool = make_pool(io, o);
  pool->close();
  // The pending maintenance wait no longer keeps the executor's run() going for an hour.
  io.run_for(10s);
  CHECK(io.stopped());
  CHECK(pool->pool().stats().size == 0);
}

TEST_CASE("redis_pool: which completions break a connection", "[redis_pool]") {
  CHECK_FALSE(redis::breaks_connection({}));
  CHECK_FALSE(redis::breaks_connection(net::error::operation_aborted));     // the caller cancelled
  CHECK(redis::breaks_connection(sluice::asio::error::deadline_exceeded));  // maybe stalled
  CHECK(redis::breaks_connection(sluice::asio::error::data_loss));
  CHECK(redis::breaks_connection(sluice::asio::error::unavailable));
  CHECK(redis::breaks_connection(net::error::connection_reset));
  CHECK(redis::breaks_connection(net::error::eof));
}

TEST_CASE("redis_pool: many concurrent commands never open more than max_size connections",
          "[redis_pool]") {
  sluice_test::redis_server server;
  net::io_context io;
  run_bounded(io, [&]() -> awaitable<void> {
    auto pool = make_pool(io, {.server = server.endpoint(),
                               .pool =
                                   [] {
                                     auto p = redis::default_redis_pool_options();
                                     p.max_size = 4;
                                     return p;
                                   }(),
                               .acquire_timeout = 5s,
                               .maintenance_interval = 50ms});
    redis::connection admin(io);
    auto [cec] = co_await admin.async_connect(server.endpoint(), tuple);
    REQUIRE_FALSE(cec);

    const std::string counter = pool_key("counter");
    constexpr int workers = 64, per_worker = 40;
    int finished = 0, errors = 0, max_clients = 0;
    for (int w = 0; w < workers; ++w) {
      net::co_spawn(
          io,
          [&, w]() -> awaitable<void> {
            const std::string k = pool_key("w" + std::to_string(w));
            for (int i = 0; i < per_worker; ++i) {
              auto [ec, r] = co_await pool->async_exec(redis::command{"INCR", counter}, tuple);
              if (ec || !r.is_integer()) ++errors;
              auto [ec2, r2] = co_await redis::async_set(*pool, k, std::to_string(i), {}, tuple);
              if (ec2 || !r2.is_status("OK")) ++errors;
            }
            ++finished;
          },
          net::detached);
    }
    while (finished < workers) {
      max_clients = std::max(max_clients, co_await client_count(admin) - 1);  // minus admin
      co_await pause(2ms);
    }
    CHECK(errors == 0);
    auto [ec, total] = co_await redis::async_get(*pool, counter, tuple);
    CHECK_FALSE(ec);
    CHECK(total.str() == std::to_string(workers * per_worker));
    CHECK(max_clients >= 1);
    CHECK(max_clients <= 4);
    const auto s = pool->pool().stats();
    CHECK(s.size <= 4);
    CHECK(s.in_use == 0);
    CHECK(s.waiters == 0);
    CHECK(s.created <= 4);  // nothing broke, nothing was replaced
    CHECK(s.closed == 0);
    CHECK(s.acquired >= static_cast<std::uint64_t>(2 * workers * per_worker));

    // The helpers and the distributed limiter run through the pool as through a connection.
    static const redis::script add("return redis.call('INCRBY', KEYS[1], ARGV[1])");
    const std::vector<std::string> keys{pool_key("script")}, args{"5"};
    auto [sec, sr] = co_await redis::async_evalsha(*pool, add, keys, args, tuple);
    CHECK_FALSE(sec);
    CHECK(sr.as_integer() == 5);
    auto limiter = redis::gcra_limiter::create(
        *pool, {.limits = {.rate = 1, .period = std::chrono::hours(1), .burst = 3}});
    REQUIRE(limiter.ok());
    int allowed = 0;
    for (int i = 0; i < 5; ++i) {
      auto [lec, lr] = co_await (*limiter)->async_acquire(pool_key("limit"), 1, tuple);
      CHECK_FALSE(lec);
      allowed += lr.allowed ? 1 : 0;
    }
    CHECK(allowed == 3);
  });
}

TEST_CASE("redis_pool: Redis error replies keep the connection, timeouts replace it",
          "[redis_pool]") {
  sluice_test::redis_server server;
  net::io_context io;
  run_bounded(io, [&]() -> awaitable<void> {
    auto pool = make_pool(io, {.server = server.endpoint(),
                               .connection = {.command_timeout = 150ms},
                               .pool =
                                   [] {
                                     auto p = redis::default_redis_pool_options();
                                     p.max_size = 4;
                                     p.min_idle = 0;
                                     return p;
                                   }(),
                               .acquire_timeout = 2s});
    const std::string k = pool_key("wrongtype");
    co_await redis::async_set(*pool, k, "string", {}, use_awaitable);
    auto [ec, r] = co_await redis::async_hgetall(*pool, k, tuple);
    CHECK_FALSE(ec);
    CHECK(r.is_error());
    CHECK(redis::classify(ec, r) == redis::outcome::rejected);
    CHECK(pool->pool().stats().closed == 0);  // a WRONGTYPE reply does not break anything
    CHECK(pool->pool().stats().created == 1);

    // DEBUG SLEEP stalls the whole server: every pooled command times out and its connection is
    // discarded (it may be stalled), then replaced once the server answers again.
    redis::connection sleeper(io);
    auto [cec] = co_await sleeper.async_connect(server.endpoint(), tuple);
    REQUIRE_FALSE(cec);
    bool slept = false;
    error_code sleep_ec;
    sleeper.async_exec(redis::command{"DEBUG", "SLEEP", "0.8"}, 5s,
                       [&](error_code e, redis::reply) {
                         sleep_ec = e;
                         slept = true;
                       });
    co_await pause(50ms);
    constexpr int callers = 8;
    int done = 0, timed_out = 0;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < callers; ++i) {
      net::co_spawn(
          io,
          [&]() -> awaitable<void> {
            auto [e, rr] = co_await redis::async_get(*pool, k, tuple);
            if (e == sluice::asio::error::deadline_exceeded) ++timed_out;
            CHECK(redis::classify(e, rr) == redis::outcome::failure);
            ++done;
          },
          net::detached);
    }
    while (done < callers) co_await pause(5ms);
    CHECK(timed_out == callers);
    CHECK(std::chrono::steady_clock::now() - start < 700ms);  // nobody waited out the stall
    const auto during = pool->pool().stats();
    CHECK(during.closed >= static_cast<std::uint64_t>(callers));  // each stalled one discarded
    CHECK(during.size <= 4);
    while (!slept) co_await pause(5ms);
    CHECK_FALSE(sleep_ec);
    // Fresh connections serve again.
    auto [ec3, r3] = co_await pool->async_exec(redis::command{"PING"}, 2s, tuple);
    CHECK_FALSE(ec3);
    CHECK(r3.is_status("PONG"));
    CHECK(pool->pool().stats().size <= 4);
  });
}

TEST_CASE("redis_pool: a killed server fails commands fast, the pool recovers when it returns",
          "[redis_pool]") {
  sluice_test::redis_server server;
  net::io_context io;
  std::atomic<int> downs{0}, ups{0};
  run_bounded(
      io,
      [&]() -> awaitable<void> {
        auto popts = redis::default_redis_pool_options();
        popts.max_size = 4;
        popts.reconnect_backoff_initial = 100ms;
        popts.reconnect_backoff_max = 400ms;
        popts.on_event = [&](const sluice::pool_event& e) {
          if (e.kind == sluice::pool_event_kind::backend_down) ++downs;
          if (e.kind == sluice::pool_event_kind::backend_up) ++ups;
        };
        auto pool = make_pool(io, {.server = server.endpoint(),
                                   .connection = {.connect_timeout = 300ms},
                                   .pool = popts,
                                   .acquire_timeout = 1s,
                                   .maintenance_interval = 50ms});
        for (int i = 0; i < 8; ++i) {
          auto [ec, r] = co_await redis::async_ping(*pool, tuple);
          REQUIRE_FALSE(ec);
        }
        server.kill();
        co_await pause(50ms);  // the idle connections see the server go

        // Every command completes at once with an error: no caller waits out a timeout.
        int failed = 0, unavailable = 0;
        std::chrono::steady_clock::duration slowest{};
        const auto outage_start = std::chrono::steady_clock::now();
        for (int i = 0; i < 40; ++i) {
          const auto t0 = std::chrono::steady_clock::now();
          auto [ec, r] = co_await redis::async_get(*pool, "k", tuple);
          slowest = std::max(slowest, std::chrono::steady_clock::now() - t0);
          if (ec) ++failed;
          if (ec == sluice::asio::error::unavailable) ++unavailable;
          co_await pause(20ms);
        }
        const auto outage = std::chrono::steady_clock::now() - outage_start;
        CHECK(failed == 40);
        CHECK(unavailable >= 38);
        CHECK(slowest < 400ms);
        CHECK(pool->pool().stats().backend_down);
        CHECK(downs == 1);
        // Reconnects are paced: one probe per backoff (100, 200, 400, 400 ms...), not one per
        // command (40) nor one per command and slot.
        const auto failures = pool->pool().stats().create_failures;
        CHECK(failures >= 2);
        CHECK(failures <= static_cast<std::uint64_t>(outage / 100ms) + 2);
        INFO("create_failures=" << failures);

        server.restart();
        error_code last = sluice::asio::error::unavailable;
        for (int attempt = 0; attempt < 100 && last; ++attempt) {
          auto [ec, r] = co_await redis::async_ping(*pool, tuple);
          last = ec;
          if (ec) co_await pause(50ms);
        }
        CHECK_FALSE(last);
        CHECK(ups == 1);
        CHECK_FALSE(pool->pool().stats().backend_down);
        for (int i = 0; i < 8; ++i) {
          auto [ec, r] = co_await redis::async_ping(*pool, tuple);
          CHECK_FALSE(ec);
        }
      },
      30s);
}

TEST_CASE("redis_pool: a closed pool fails commands with unavailable", "[redis_pool]") {
  net::io_context io;
  run_bounded(io, [&]() -> awaitable<void> {
    auto pool = make_pool(io, {.server = sluice_test::shared_endpoint()});
    auto [ec, r] = co_await redis::async_ping(*pool, tuple);
    CHECK_FALSE(ec);
    pool->close();
    auto [ec2, r2] = co_await redis::async_ping(*pool, tuple);
    CHECK(ec2 == sluice::asio::error::unavailable);
    CHECK(pool->pool().stats().size == 0);
  });
}

TEST_CASE("redis_pool: commands from two io threads share the pool safely", "[redis_pool]") {
  net::io_context io;
  auto popts = redis::default_redis_pool_options();
  popts.max_size = 3;
  auto pool = make_pool(io, {.server = sluice_test::shared_endpoint(),
                             .pool = popts,
                             .acquire_timeout = 5s,
                             .maintenance_interval = 10ms});
  const std::string counter = pool_key("two-threads");
  constexpr int workers = 16, per_worker = 50;
  std::atomic<int> finished{0}, errors{0};
  std::atomic<std::int64_t> highest{0};
  for (int w = 0; w < workers; ++w) {
    net::co_spawn(
        io,
        [&, pool]() -> awaitable<void> {
          for (int i = 0; i < per_worker; ++i) {
            auto [ec, r] = co_await pool->async_exec(redis::command{"INCR", counter}, tuple);
            if (ec || !r.is_integer()) {
              ++errors;
              continue;
            }
            std::int64_t seen = highest.load();
            while (r.as_integer() > seen && !highest.compare_exchange_weak(seen, r.as_integer())) {
            }
          }
          ++finished;
        },
        net::detached);
  }
  // The pool's maintenance timer keeps the io_context busy: run until the workers are done.
  const auto limit = std::chrono::steady_clock::now() + 20s;
  auto runner = [&] {
    while (finished < workers && std::chrono::steady_clock::now() < limit) io.run_for(5ms);
  };
  std::thread second(runner);
  runner();
  second.join();
  REQUIRE(finished == workers);
  const auto s = pool->pool().stats();
  pool->close();
  pool.reset();  // the last reference: maintenance stops, connections close
  io.restart();
  io.run_for(2s);
  CHECK(errors == 0);
  CHECK(highest == workers * per_worker);
  CHECK(s.size <= 3);
  CHECK(s.in_use == 0);
  CHECK(s.acquired >= static_cast<std::uint64_t>(workers * per_worker));
}
