#include <atomic>
#include <chrono>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>

#include "sluice/redis/commands.hpp"
#include "sluice/redis/connection.hpp"
#include "sluice/redis/error.hpp"
#include "sluice/redis/subscriber.hpp"

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

awaitable<void> connect_or_throw(redis::connection& conn, const redis::endpoint& ep) {
  auto [ec] = co_await conn.async_connect(ep, tuple);
  if (ec) throw std::runtime_error("connect failed: " + ec.message());
}

// A key unique to this test run, so reruns against the same server do not see old data.
std::string key(const std::string& name) {
  static const std::string run =
      std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
  return "sluice:test:" + run + ":" + name;
}

}  // namespace

TEST_CASE("redis_connection: helpers for the common commands", "[redis_connection]") {
  net::io_context io;
  run_bounded(io, [&]() -> awaitable<void> {
    redis::connection conn(io);
    CHECK_FALSE(conn.is_connected());
    co_await connect_or_throw(conn, sluice_test::shared_endpoint());
    CHECK(conn.is_connected());

    redis::reply r = co_await redis::async_ping(conn, use_awaitable);
    CHECK(r.is_status("PONG"));

    const std::string k = key("helpers");
    r = co_await redis::async_get(conn, k, use_awaitable);
    CHECK(r.is_nil());
    r = co_await redis::async_set(conn, k, "v1", {}, use_awaitable);
    CHECK(r.is_status("OK"));
    r = co_await redis::async_set(conn, k, "v2", {.when = redis::set_options::condition::if_absent},
                                  use_awaitable);
    CHECK(r.is_nil());  // NX refused: the key exists
    r = co_await redis::async_get(conn, k, use_awaitable);
    CHECK(r == redis::reply::string("v1"));

    r = co_await redis::async_set(conn, k, "v3", {.ttl = 1500ms}, use_awaitable);
    CHECK(r.is_status("OK"));
    r = co_await conn.async_exec(redis::command{"PTTL", k}, use_awaitable);
    CHECK(r.as_integer() > 0);
    CHECK(r.as_integer() <= 1500);
    r = co_await redis::async_expire(conn, k, 100s, use_awaitable);
    CHECK(r.as_integer() == 1);
    r = co_await conn.async_exec(redis::command{"TTL", k}, use_awaitable);
    CHECK(r.as_integer() > 90);

    const std::string counter = key("counter");
    r = co_await redis::async_incr(conn, counter, use_awaitable);
    CHECK(r == redis::reply::integer(1));
    r = co_await redis::async_incr(conn, counter, use_awaitable);
    CHECK(r == redis::reply::integer(2));

    const std::string h = key("hash");
    r = co_await redis::async_hset(conn, h, "f1", "a", use_awaitable);
    CHECK(r.as_integer() == 1);
    r = co_await redis::async_hset(conn, h, "f2", "b", use_awaitable);
    r = co_await redis::async_hgetall(conn, h, use_awaitable);
    REQUIRE(r.is_array());
    CHECK(r.elements().size() == 4);

    // A wrong-type error is a reply, classified as rejected, and the connection stays usable.
    auto [ec, wrong] = co_await redis::async_incr(conn, h, tuple);
    CHECK_FALSE(ec);
    CHECK(wrong.is_error());
    CHECK(wrong.error_prefix() == "WRONGTYPE");
    CHECK(redis::classify(ec, wrong) == redis::outcome::rejected);

    const std::vector<std::string> keys{k, counter, h};
    r = co_await redis::async_del(conn, keys, use_awaitable);
    CHECK(r.as_integer() == 3);
    r = co_await redis::async_publish(conn, key("nobody-listens"), "x", use_awaitable);
    CHECK(r.as_integer() == 0);
  });
}

TEST_CASE("redis_connection: EVALSHA falls back to EVAL on NOSCRIPT", "[redis_connection]") {
  net::io_context io;
  run_bounded(io, [&]() -> awaitable<void> {
    redis::connection conn(io);
    co_await connect_or_throw(conn, sluice_test::shared_endpoint());
    // A script body unique to this run, so the server cannot know it yet.
    const redis::script lua("return {KEYS[1], ARGV[1], '" + key("nonce") + "'}");
    redis::reply exists =
        co_await conn.async_exec(redis::command{"SCRIPT", "EXISTS", lua.sha1()}, use_awaitable);
    REQUIRE(exists.is_array());
    CHECK(exists.elements()[0].as_integer() == 0);

    const std::vector<std::string> k1{"k1"}, a1{"a1"}, k2{"k2"}, a2{"a2"}, none;
    redis::reply r = co_await redis::async_evalsha(conn, lua, k1, a1, use_awaitable);
    REQUIRE(r.is_array());
    REQUIRE(r.elements().size() == 3);
    CHECK(r.elements()[0].str() == "k1");
    CHECK(r.elements()[1].str() == "a1");

    // EVAL cached it: the SHA we computed is the server's name for it.
    exists =
        co_await conn.async_exec(redis::command{"SCRIPT", "EXISTS", lua.sha1()}, use_awaitable);
    CHECK(exists.elements()[0].as_integer() == 1);
    r = co_await redis::async_evalsha(conn, lua, k2, a2, use_awaitable);
    CHECK(r.elements()[0].str() == "k2");

    // A script error is a reply, not a fallback loop.
    const redis::script bad("return redis.call('NOSUCHCOMMAND')");
    r = co_await redis::async_evalsha(conn, bad, none, none, use_awaitable);
    CHECK(r.is_error());
  });
}

TEST_CASE("redis_connection: binary-safe keys and values", "[redis_connection]") {
  net::io_context io;
  run_bounded(io, [&]() -> awaitable<void> {
    redis::connection conn(io);
    co_await connect_or_throw(conn, sluice_test::shared_endpoint());
    std::string all_bytes;
    for (int i = 0; i < 256; ++i) all_bytes.push_back(static_cast<char>(i));
    const std::string k = key(std::string("bin\0\r\n*$", 8) + all_bytes);
    const std::string v = all_bytes + std::string("\r\n$-1\r\n\0", 8) + all_bytes;
    redis::reply r = co_await redis::async_set(conn, k, v, {}, use_awaitable);
    CHECK(r.is_status("OK"));
    r = co_await redis::async_get(conn, k, use_awaitable);
    REQUIRE(r.is_string());
    CHECK(r.str() == v);
    r = co_await redis::async_get(conn, k.substr(0, k.size() - 1), use_awaitable);
    CHECK(r.is_nil());
    co_await redis::async_del(conn, k, use_awaitable);
  });
}

TEST_CASE("redis_connection: a 10 MB value round-trips", "[redis_connection]") {
  net::io_context io;
  run_bounded(io, [&]() -> awaitable<void> {
    redis::connection conn(io, {.command_timeout = 10s});
    co_await connect_or_throw(conn, sluice_test::shared_endpoint());
    std::string big(10 * 1024 * 1024, '\0');
    for (std::size_t i = 0; i < big.size(); ++i)
      big[i] = static_cast<char>((i * 2654435761u) >> 13);
    const std::string k = key("big");
    // Pipelined with small commands on both sides: their replies must stay matched.
    auto before = redis::async_ping(conn, net::deferred);
    redis::reply r = co_await redis::async_set(conn, k, big, {}, use_awaitable);
    CHECK(r.is_status("OK"));
    co_await std::move(before)(use_awaitable);
    r = co_await redis::async_get(conn, k, use_awaitable);
    REQUIRE(r.is_string());
    CHECK(r.str().size() == big.size());
    CHECK(r.str() == big);
    r = co_await redis::async_ping(conn, use_awaitable);
    CHECK(r.is_status("PONG"));
    co_await redis::async_del(conn, k, use_awaitable);
  });
}

TEST_CASE("redis_connection: many concurrent commands pipelined on one connection",
          "[redis_connection]") {
  const int threads = GENERATE(1, 2, 4);
  INFO("io threads: " << threads);
  constexpr int workers = 64;
  constexpr int per_worker = 100;
  net::io_context io;
  std::optional<redis::connection> conn;
  conn.emplace(io);
  std::atomic<int> mismatches{0};
  std::atomic<int> errors{0};
  std::atomic<int> finished{0};
  const std::string counter = key("pipeline-counter-" + std::to_string(threads));
  net::steady_timer watchdog(io, 30s);
  bool timed_out = false;
  watchdog.async_wait([&](error_code ec) {
    if (!ec) {
      timed_out = true;
      io.stop();
    }
  });

  auto worker = [&](int w) -> awaitable<void> {
    for (int i = 0; i < per_worker; ++i) {
      const std::string k = key("p" + std::to_string(threads) + ":" + std::to_string(w));
      const std::string v = std::to_string(w) + ":" + std::to_string(i);
      auto [ec1, set] = co_await redis::async_set(*conn, k, v, {}, tuple);
      auto [ec2, got] = co_await redis::async_get(*conn, k, tuple);
      auto [ec3, inc] = co_await redis::async_incr(*conn, counter, tuple);
      if (ec1 || ec2 || ec3) ++errors;
      if (!set.is_status("OK") || got.str() != v || !inc.is_integer()) ++mismatches;
    }
  };
  net::co_spawn(
      io,
      [&]() -> awaitable<void> {
        co_await connect_or_throw(*conn, sluice_test::shared_endpoint());
        for (int w = 0; w < workers; ++w) {
          net::co_spawn(io, worker(w), [&](std::exception_ptr) {
            if (++finished == workers) {
              net::co_spawn(
                  io,
                  [&]() -> awaitable<void> {
                    auto [ec, total] =
                        co_await conn->async_exec(redis::command{"GET", counter}, tuple);
                    if (ec || total.str() != std::to_string(workers * per_worker)) ++mismatches;
                    co_await conn->async_exec(redis::command{"DEL", counter}, tuple);
                    conn->close();
                    watchdog.cancel();
                  },
                  net::detached);
            }
          });
        }
      },
      net::detached);

  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back([&] { io.run(); });
  for (auto& t : pool) t.join();
  CHECK_FALSE(timed_out);
  CHECK(finished.load() == workers);
  CHECK(errors.load() == 0);
  CHECK(mismatches.load() == 0);
}

TEST_CASE("redis_connection: AUTH and SELECT on connect", "[redis_connection]") {
  sluice_test::redis_server server("--requirepass s3cret", "s3cret");
  net::io_context io;
  run_bounded(io, [&]() -> awaitable<void> {
    redis::endpoint ep = server.endpoint();

    redis::connection wrong(io);
    redis::endpoint bad = ep;
    bad.password = "nope";
    auto [ec_bad] = co_await wrong.async_connect(bad, tuple);
    CHECK(ec_bad == sluice::asio::error::unauthenticated);
    CHECK_FALSE(wrong.is_connected());

    redis::connection anonymous(io);
    redis::endpoint none = ep;
    none.password.clear();
    co_await connect_or_throw(anonymous, none);
    redis::reply r = co_await redis::async_ping(anonymous, use_awaitable);
    CHECK(r.error_prefix() == "NOAUTH");

    auto url = redis::parse_url("redis://:s3cret@127.0.0.1:" + std::to_string(ep.port) + "/3");
    REQUIRE(url.ok());
    redis::connection db3(io);
    co_await connect_or_throw(db3, *url);
    co_await redis::async_set(db3, "in-db-3", "yes", {}, use_awaitable);
    redis::connection db0(io);
    co_await connect_or_throw(db0, ep);
    r = co_await redis::async_get(db0, "in-db-3", use_awaitable);
    CHECK(r.is_nil());
    r = co_await redis::async_get(db3, "in-db-3", use_awaitable);
    CHECK(r.str() == "yes");

    redis::connection bad_db(io);
    redis::endpoint huge_db = ep;
    huge_db.db = 1000;  // the server has 16
    auto [ec_db] = co_await bad_db.async_connect(huge_db, tuple);
    CHECK(ec_db == sluice::asio::error::invalid_argument);
  });
}

TEST_CASE("redis_connection: connect timeout against a server that never answers",
          "[redis_connection]") {
  net::io_context io;
  // Listens but never accepts or answers: TCP connects (the kernel's backlog), AUTH never returns.
  net::ip::tcp::acceptor silent(io, {net::ip::make_address("127.0.0.1"), 0});
  run_bounded(
      io,
      [&]() -> awaitable<void> {
        redis::connection conn(io, {.connect_timeout = 200ms});
        redis::endpoint ep;
        ep.port = silent.local_endpoint().port();
        ep.password = "pw";
        const auto start = std::chrono::steady_clock::now();
        auto [ec] = co_await conn.async_connect(ep, tuple);
        CHECK(ec == sluice::asio::error::deadline_exceeded);
        CHECK(std::chrono::steady_clock::now() - start < 5s);
        CHECK_FALSE(conn.is_connected());
        // Commands on a connection that is not up fail at once.
        auto [ec2, r] = co_await redis::async_ping(conn, tuple);
        CHECK(ec2 == sluice::asio::error::unavailable);

        // Nobody listening at all: refused.
        redis::connection refused(io);
        redis::endpoint closed_port;
        {
          net::ip::tcp::acceptor tmp(io, {net::ip::make_address("127.0.0.1"), 0});
          closed_port.port = tmp.local_endpoint().port();
        }
        auto [ec3] = co_await refused.async_connect(closed_port, tuple);
        CHECK(ec3);
        CHECK(redis::classify(ec3, redis::reply()) == redis::outcome::failure);
      },
      10s);
}

TEST_CASE("redis_connection: a stalled server times commands out, the pipeline stays in step",
          "[redis_connection]") {
  sluice_test::redis_server server;
  net::io_context io;
  run_bounded(io, [&]() -> awaitable<void> {
    redis::connection conn(io, {.command_timeout = 150ms});
    co_await connect_or_throw(conn, server.endpoint());
    co_await redis::async_set(conn, "a", "value-a", {}, use_awaitable);
    co_await redis::async_set(conn, "b", "value-b", {}, use_awaitable);

    // DEBUG SLEEP 1 stalls the server for a second; the GET pipelined behind it has 150 ms.
    auto sleep_op = conn.async_exec(redis::command{"DEBUG", "SLEEP", "1"}, 5s, net::deferred);
    net::steady_timer sleep_done(io, std::chrono::steady_clock::time_point::max());
    error_code sleep_ec;
    redis::reply sleep_reply;
    bool slept = false;
    std::move(sleep_op)([&](error_code ec, redis::reply r) {
      sleep_ec = ec;
      sleep_reply = std::move(r);
      slept = true;
      sleep_done.cancel();
    });
    const auto start = std::chrono::steady_clock::now();
    auto [ec, r] = co_await redis::async_get(conn, "a", tuple);
    const auto waited = std::chrono::steady_clock::now() - start;
    CHECK(ec == sluice::asio::error::deadline_exceeded);
    CHECK(redis::classify(ec, r) == redis::outcome::failure);
    CHECK(waited < 900ms);  // it did not wait for the server

    // The connection is still up; the next command gets its own reply, not GET a's late one.
    auto [ec2, r2] = co_await conn.async_exec(redis::command{"GET", "b"}, 3s, tuple);
    CHECK_FALSE(ec2);
    CHECK(r2.str() == "value-b");
    if (!slept) co_await sleep_done.async_wait(tuple);
    CHECK(slept);
    CHECK_FALSE(sleep_ec);
    CHECK(sleep_reply.is_status("OK"));

    // Per-command cancellation: the same, through a cancellation slot.
    net::cancellation_signal cancel;
    auto sleep2 = conn.async_exec(redis::command{"DEBUG", "SLEEP", "0.3"}, 5s, net::deferred);
    bool sleep2_done = false;
    std::move(sleep2)([&](error_code, redis::reply) { sleep2_done = true; });
    error_code cancelled_ec;
    bool cancelled_done = false;
    redis::async_get(conn, "a",
                     net::bind_cancellation_slot(cancel.slot(), [&](error_code e, redis::reply) {
                       cancelled_ec = e;
                       cancelled_done = true;
                     }));
    net::steady_timer soon(io, 20ms);
    co_await soon.async_wait(use_awaitable);
    cancel.emit(net::cancellation_type::terminal);
    net::steady_timer tick(io, 5ms);
    while (!cancelled_done) {
      tick.expires_after(5ms);
      co_await tick.async_wait(use_awaitable);
    }
    CHECK(cancelled_ec == net::error::operation_aborted);
    CHECK_FALSE(sleep2_done);  // it was cancelled before the server answered anything
    auto [ec3, r3] = co_await conn.async_exec(redis::command{"GET", "b"}, 3s, tuple);
    CHECK_FALSE(ec3);
    CHECK(r3.str() == "value-b");
    CHECK(sleep2_done);
  });
}

TEST_CASE("redis_connection: server killed and restarted mid-test", "[redis_connection]") {
  sluice_test::redis_server server;
  net::io_context io;
  run_bounded(io, [&]() -> awaitable<void> {
    redis::connection conn(io, {.connect_timeout = 500ms, .command_timeout = 2s});
    co_await connect_or_throw(conn, server.endpoint());
    co_await redis::async_set(conn, "k", "v", {}, use_awaitable);

    // Commands in flight when the server dies: DEBUG SLEEP holds them on the server.
    constexpr int in_flight = 20;
    int completed = 0;
    int failed = 0;
    conn.async_exec(redis::command{"DEBUG", "SLEEP", "0.5"}, [&](error_code ec, redis::reply) {
      ++completed;
      if (ec) ++failed;
    });
    for (int i = 1; i < in_flight; ++i) {
      redis::async_get(conn, "k", [&](error_code ec, redis::reply) {
        ++completed;
        if (ec) ++failed;
      });
    }
    net::steady_timer t(io, 50ms);
    co_await t.async_wait(use_awaitable);
    server.kill();
    while (completed < in_flight) {
      t.expires_after(5ms);
      co_await t.async_wait(use_awaitable);
    }
    CHECK(failed == in_flight);  // every pending command completed, with an error
    CHECK_FALSE(conn.is_connected());
    auto [ec_down, r_down] = co_await redis::async_get(conn, "k", tuple);
    CHECK(ec_down == sluice::asio::error::unavailable);
    auto [ec_refused] = co_await conn.async_connect(server.endpoint(), tuple);
    CHECK(ec_refused);

    server.restart();
    error_code ec_up;
    for (int attempt = 0; attempt < 50; ++attempt) {
      std::tie(ec_up) = co_await conn.async_connect(server.endpoint(), tuple);
      if (!ec_up) break;
      t.expires_after(50ms);
      co_await t.async_wait(use_awaitable);
    }
    REQUIRE_FALSE(ec_up);
    redis::reply r = co_await redis::async_ping(conn, use_awaitable);
    CHECK(r.is_status("PONG"));
    r = co_await redis::async_set(conn, "k", "after", {}, use_awaitable);
    r = co_await redis::async_get(conn, "k", use_awaitable);
    CHECK(r.str() == "after");
  });
}

TEST_CASE("redis_connection: destroying a connection completes its pending commands",
          "[redis_connection]") {
  sluice_test::redis_server server;
  net::io_context io;
  error_code seen;
  bool called = false;
  run_bounded(io, [&]() -> awaitable<void> {
    auto conn = std::make_unique<redis::connection>(io);
    co_await connect_or_throw(*conn, server.endpoint());
    conn->async_exec(redis::command{"DEBUG", "SLEEP", "0.2"}, [&](error_code ec, redis::reply) {
      called = true;
      seen = ec;
    });
    conn.reset();
  });
  CHECK(called);
  CHECK(seen == sluice::asio::error::cancelled);
}

TEST_CASE("redis_connection: subscriber receives published messages", "[redis_connection]") {
  net::io_context io;
  run_bounded(io, [&]() -> awaitable<void> {
    const redis::endpoint ep = sluice_test::shared_endpoint();
    redis::subscriber sub(io);
    co_await sub.async_connect(ep, use_awaitable);
    const std::string channel = key("channel");
    redis::reply confirm = co_await sub.async_subscribe(channel, use_awaitable);
    REQUIRE(confirm.is_array());
    CHECK(confirm.elements()[0].str() == "subscribe");

    redis::connection pub(io);
    co_await connect_or_throw(pub, ep);
    const std::string payload("bin\0ary", 7);
    redis::reply n = co_await redis::async_publish(pub, channel, payload, use_awaitable);
    CHECK(n.as_integer() == 1);
    co_await redis::async_publish(pub, channel, "second", use_awaitable);

    redis::message m = co_await sub.async_receive(use_awaitable);
    CHECK(m.channel == channel);
    CHECK(m.payload == payload);
    m = co_await sub.async_receive(use_awaitable);
    CHECK(m.payload == "second");

    // A receive can be cancelled.
    net::cancellation_signal cancel;
    error_code ec;
    bool done = false;
    sub.async_receive(net::bind_cancellation_slot(cancel.slot(), [&](error_code e, redis::message) {
      ec = e;
      done = true;
    }));
    net::steady_timer t(io, 10ms);
    co_await t.async_wait(use_awaitable);
    cancel.emit(net::cancellation_type::terminal);
    while (!done) {
      t.expires_after(2ms);
      co_await t.async_wait(use_awaitable);
    }
    CHECK(ec == net::error::operation_aborted);
  });
}

TEST_CASE("redis_connection: subscriber resubscribes after the server restarts",
          "[redis_connection]") {
  sluice_test::redis_server server;
  net::io_context io;
  run_bounded(io, [&]() -> awaitable<void> {
    redis::subscriber sub(io, {.connect_timeout = 500ms});
    co_await sub.async_connect(server.endpoint(), use_awaitable);
    co_await sub.async_subscribe("events", use_awaitable);

    // A receive outstanding when the server dies completes with the error.
    error_code receive_ec;
    bool received = false;
    sub.async_receive([&](error_code ec, redis::message) {
      receive_ec = ec;
      received = true;
    });
    net::steady_timer t(io, 20ms);
    co_await t.async_wait(use_awaitable);
    server.kill();
    while (!received) {
      t.expires_after(5ms);
      co_await t.async_wait(use_awaitable);
    }
    CHECK(receive_ec);
    CHECK(redis::classify(receive_ec, redis::reply()) == redis::outcome::failure);

    server.restart();
    error_code ec_up;
    for (int attempt = 0; attempt < 50; ++attempt) {
      std::tie(ec_up) = co_await sub.async_connect(server.endpoint(), tuple);
      if (!ec_up) break;
      t.expires_after(50ms);
      co_await t.async_wait(use_awaitable);
    }
    REQUIRE_FALSE(ec_up);
    // The connect subscribed to "events" again: a publish reaches it without a new SUBSCRIBE.
    redis::connection pub(io);
    co_await connect_or_throw(pub, server.endpoint());
    redis::reply n = co_await redis::async_publish(pub, "events", "after restart", use_awaitable);
    CHECK(n.as_integer() == 1);
    redis::message m = co_await sub.async_receive(use_awaitable);
    CHECK(m.channel == "events");
    CHECK(m.payload == "after restart");
  });
}

TEST_CASE("redis_connection: use_future and deferred tokens", "[redis_connection]") {
  net::io_context io;
  redis::connection conn(io);
  std::future<void> connected = conn.async_connect(sluice_test::shared_endpoint(), net::use_future);
  std::thread runner([&] { io.run_for(5s); });
  REQUIRE(connected.wait_for(5s) == std::future_status::ready);
  connected.get();
  std::future<redis::reply> pong = redis::async_ping(conn, net::use_future);
  REQUIRE(pong.wait_for(5s) == std::future_status::ready);
  CHECK(pong.get().is_status("PONG"));
  auto op = redis::async_ping(conn, net::deferred);
  std::future<redis::reply> later = std::move(op)(net::use_future);
  REQUIRE(later.wait_for(5s) == std::future_status::ready);
  CHECK(later.get().is_status("PONG"));
  conn.close();
  runner.join();
}
