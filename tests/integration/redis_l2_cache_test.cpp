#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "sluice/redis/connection.hpp"
#include "sluice/redis/l2_cache.hpp"
#include "sluice/redis/pool.hpp"
#include "sluice/redis/subscriber.hpp"
#include "sluice/testing/manual_clock.hpp"

#include "catch.hpp"
#include "redis_support.hpp"

namespace net = boost::asio;
namespace redis = sluice::redis;
using net::awaitable;
using net::use_awaitable;
using sluice::testing::manual_clock;
using sluice_test::run_bounded;
using namespace std::chrono_literals;

namespace {

constexpr auto tuple = net::as_tuple(use_awaitable);

std::string unique_prefix(const std::string& name) {
  return "l2test:" + name + ":" +
         std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()) + ":";
}

awaitable<void> connect(redis::connection& conn, const redis::endpoint& ep) {
  auto [ec] = co_await conn.async_connect(ep, tuple);
  if (ec) throw std::runtime_error("connect: " + ec.message());
}

// Returns the command name of a RESP-encoded command.
std::string verb_of(std::string_view wire) {
  const std::size_t len_at = wire.find('$') + 1;
  const std::size_t eol = wire.find("\r\n", len_at);
  const std::size_t len = std::stoul(std::string(wire.substr(len_at, eol - len_at)));
  return std::string(wire.substr(eol + 2, len));
}

// A connection that counts the commands it sends, by name: proves what reached Redis.
class counting_client {
 public:
  explicit counting_client(redis::connection& conn) : conn_(conn) {}

  net::any_io_executor get_executor() const { return conn_.get_executor(); }

  template <class CompletionToken>
  auto async_exec(redis::command cmd, std::chrono::milliseconds timeout, CompletionToken&& token) {
    ++sent_[verb_of(cmd.wire())];
    ++total_;
    return conn_.async_exec(std::move(cmd), timeout, std::forward<CompletionToken>(token));
  }

  int total() const { return total_; }
  int count(const std::string& verb) const {
    auto it = sent_.find(verb);
    return it == sent_.end() ? 0 : it->second;
  }

 private:
  redis::connection& conn_;
  std::map<std::string, int> sent_;
  int total_ = 0;
};

using counted_l2 =
    redis::l2_cache<std::string, counting_client, redis::l2_codec<std::string>, manual_clock>;

redis::l2_cache_options options_for(const std::string& prefix) {
  redis::l2_cache_options o;
  o.key_prefix = prefix;
  o.redis_ttl = 60s;
  o.local_ttl = 10s;
  o.max_stale = 1min;
  o.command_timeout = 2s;
  o.background_sweep = false;
  o.breaker.minimum_calls = 2;
  o.breaker.window.window_size = 4;
  o.breaker.open_duration = 30s;
  o.breaker.open_duration_jitter = 0;
  o.breaker.open_duration_multiplier = 1.0;
  o.breaker.half_open_probes = 1;
  return o;
}

awaitable<redis::reply> exec(redis::connection& conn, redis::command cmd) {
  auto [ec, r] = co_await conn.async_exec(std::move(cmd), tuple);
  if (ec) throw std::runtime_error("exec: " + ec.message());
  co_return r;
}

// Waits (on a real timer, a few ms at a time, at most `limit`) until `done()` holds: for messages
// that travel through the server, whose arrival the test cannot otherwise await.
template <class Pred>
awaitable<bool> eventually(Pred done, std::chrono::milliseconds limit = 3s) {
  net::steady_timer timer(co_await net::this_coro::executor);
  for (auto waited = 0ms; waited < limit; waited += 5ms) {
    if (done()) co_return true;
    timer.expires_after(5ms);
    co_await timer.async_wait(use_awaitable);
  }
  co_return done();
}

}  // namespace

TEST_CASE("redis_l2_cache: a Redis hit fills the local copy; a local hit sends nothing",
          "[redis_l2_cache][integration]") {
  net::io_context io;
  run_bounded(io, [&]() -> awaitable<void> {
    redis::connection conn(io);
    co_await connect(conn, sluice_test::shared_endpoint());
    counting_client client(conn);
    manual_clock clock;
    const std::string prefix = unique_prefix("hit");
    auto c = counted_l2::create(client, options_for(prefix), {}, clock);
    REQUIRE(c.ok());
    counted_l2& cache = **c;

    auto [ec0, miss] = co_await cache.async_get("k", tuple);
    CHECK_FALSE(ec0);
    CHECK_FALSE(miss.has_value());

    co_await exec(conn,
                  redis::command{"SET", prefix + "k", std::string("v\0binary", 8), "PX", "60000"});
    auto [ec1, r1] = co_await cache.async_get("k", tuple);
    REQUIRE_FALSE(ec1);
    REQUIRE(r1.has_value());
    CHECK(r1->source == redis::l2_source::redis);
    CHECK(r1->value == std::string("v\0binary", 8));
    CHECK(cache.peek_local("k").has_value());

    const int sent = client.total();
    for (int i = 0; i < 10; ++i) {
      auto [ec, r] = co_await cache.async_get("k", tuple);
      REQUIRE(r.has_value());
      CHECK(r->source == redis::l2_source::local);
    }
    CHECK(client.total() == sent);
    CHECK(cache.stats().local_hits == 10);
    CHECK(cache.stats().redis_hits == 1);
    CHECK(cache.stats().misses == 1);
  });
}

TEST_CASE("redis_l2_cache: concurrent get_or_load of one key: one lookup, one load, one SET",
          "[redis_l2_cache][integration]") {
  net::io_context io;
  run_bounded(io, [&]() -> awaitable<void> {
    redis::connection conn(io);
    co_await connect(conn, sluice_test::shared_endpoint());
    counting_client client(conn);
    manual_clock clock;
    const std::string prefix = unique_prefix("flight");
    auto c = counted_l2::create(client, options_for(prefix), {}, clock);
    REQUIRE(c.ok());
    counted_l2& cache = **c;

    int loads = 0;
    auto loader = [&](const std::string& key) -> awaitable<absl::StatusOr<std::string>> {
      ++loads;
      net::steady_timer slow(co_await net::this_coro::executor, 20ms);  // a slow backend
      co_await slow.async_wait(use_awaitable);
      co_return "value of " + key;
    };
    constexpr int callers = 50;
    int finished = 0;
    int loaded = 0;
    for (int i = 0; i < callers; ++i) {
      net::co_spawn(
          io,
          [&]() -> awaitable<void> {
            auto [ec, r] = co_await cache.async_get_or_load("hot", loader, tuple);
            CHECK_FALSE(ec);
            CHECK(r.value == "value of hot");
            loaded += r.source == redis::l2_source::loaded ? 1 : 0;
            ++finished;
          },
          net::detached);
    }
    CHECK(co_await eventually([&] { return finished == callers; }));
    CHECK(loads == 1);
    CHECK(loaded == callers);
    CHECK(client.count("SET") == 1);
    CHECK(client.count("EVALSHA") == 1);  // one lookup for all callers
    CHECK(cache.stats().loads == 1);

    // The value is in Redis with redis_ttl (60 s): TTL is read by the server, no waiting.
    redis::reply ttl = co_await exec(conn, redis::command{"TTL", prefix + "hot"});
    CHECK(ttl.as_integer() > 55);
    CHECK(ttl.as_integer() <= 60);
    redis::reply stored = co_await exec(conn, redis::command{"GET", prefix + "hot"});
    CHECK(stored.str() == "value of hot");

    // Later callers find the local copy: no new command.
    const int sent = client.total();
    auto [ec, r] = co_await cache.async_get_or_load("hot", loader, tuple);
    CHECK(r.source == redis::l2_source::local);
    CHECK(client.total() == sent);
  });
}

TEST_CASE("redis_l2_cache: TTLs: Redis keeps redis_ttl, the local copy at most what Redis had left",
          "[redis_l2_cache][integration]") {
  net::io_context io;
  run_bounded(io, [&]() -> awaitable<void> {
    redis::connection conn(io);
    co_await connect(conn, sluice_test::shared_endpoint());
    counting_client client(conn);
    manual_clock clock;
    const std::string prefix = unique_prefix("ttl");
    auto c = counted_l2::create(client, options_for(prefix), {}, clock);
    REQUIRE(c.ok());
    counted_l2& cache = **c;

    auto [ec] = co_await cache.async_put("put", "v", tuple);
    REQUIRE_FALSE(ec);
    redis::reply pttl = co_await exec(conn, redis::command{"PTTL", prefix + "put"});
    CHECK(pttl.as_integer() > 55'000);
    CHECK(pttl.as_integer() <= 60'000);
    // The local copy lives local_ttl (10 s) on the cache's clock.
    clock.advance(9999ms);
    CHECK(cache.peek_local("put").has_value());
    clock.advance(1ms);
    CHECK_FALSE(cache.peek_local("put").has_value());

    // A Redis copy with 3 s left gives a local copy of at most 3 s, not local_ttl.
    co_await exec(conn, redis::command{"SET", prefix + "short", "v", "PX", "3000"});
    auto [ec2, r2] = co_await cache.async_get("short", tuple);
    REQUIRE(r2.has_value());
    clock.advance(2000ms);
    CHECK(cache.peek_local("short").has_value());
    clock.advance(1000ms);
    CHECK_FALSE(cache.peek_local("short").has_value());
  });
}

TEST_CASE("redis_l2_cache: server killed: stale copies served, breaker opens, recovery",
          "[redis_l2_cache][integration]") {
  sluice_test::redis_server server;
  net::io_context io;
  run_bounded(io, [&]() -> awaitable<void> {
    redis::connection conn(io);
    co_await connect(conn, server.endpoint());
    counting_client client(conn);
    manual_clock clock;
    const std::string prefix = unique_prefix("kill");
    auto c = counted_l2::create(client, options_for(prefix), {}, clock);
    REQUIRE(c.ok());
    counted_l2& cache = **c;
    int loads = 0;
    auto loader = [&](const std::string& k) -> awaitable<absl::StatusOr<std::string>> {
      ++loads;
      co_return "loaded " + k;
    };

    auto [ec0] = co_await cache.async_put("k", "before", tuple);
    REQUIRE_FALSE(ec0);
    clock.advance(15s);  // past local_ttl, within max_stale
    server.kill();

    auto [ec1, r1] = co_await cache.async_get("k", tuple);
    CHECK_FALSE(ec1);
    REQUIRE(r1.has_value());
    CHECK(r1->source == redis::l2_source::stale);
    CHECK(r1->value == "before");
    auto [ec2, r2] = co_await cache.async_get_or_load("k", loader, tuple);
    CHECK_FALSE(ec2);
    CHECK(r2.source == redis::l2_source::stale);
    CHECK(cache.breaker().state() == sluice::breaker_state::open);
    // The put succeeded, the first get failed: 1 failure in 2 calls trips it (50 %, minimum 2);
    // the get_or_load was refused by the breaker without reaching the connection.
    CHECK(cache.stats().redis_errors == 1);
    CHECK(cache.stats().breaker_rejections == 1);

    // Open: Redis is not even tried; no local copy means unavailable at once, no load.
    const int sent = client.total();
    auto [ec3, r3] = co_await cache.async_get("absent", tuple);
    CHECK(ec3 == sluice::asio::error::unavailable);
    auto [ec4, r4] = co_await cache.async_get_or_load("absent", loader, tuple);
    CHECK(ec4 == sluice::asio::error::unavailable);
    CHECK(loads == 0);
    CHECK(client.total() == sent);
    CHECK(cache.stats().stale_served == 2);

    // The server comes back (empty: no persistence); after the open duration a probe succeeds.
    server.restart();
    co_await connect(conn, server.endpoint());
    co_await exec(conn, redis::command{"SET", prefix + "k", "after", "PX", "60000"});
    clock.advance(31s);
    auto [ec5, r5] = co_await cache.async_get("k", tuple);
    CHECK_FALSE(ec5);
    REQUIRE(r5.has_value());
    CHECK(r5->source == redis::l2_source::redis);
    CHECK(r5->value == "after");
    CHECK(cache.breaker().state() == sluice::breaker_state::closed);
    auto [ec6, r6] = co_await cache.async_get_or_load("absent", loader, tuple);
    CHECK_FALSE(ec6);
    CHECK(r6.source == redis::l2_source::loaded);
    CHECK(loads == 1);
  });
}

TEST_CASE("redis_l2_cache: a stalled server times the lookup out and the stale copy is served",
          "[redis_l2_cache][integration]") {
  sluice_test::redis_server server;
  net::io_context io;
  run_bounded(io, [&]() -> awaitable<void> {
    redis::connection conn(io);
    co_await connect(conn, server.endpoint());
    counting_client client(conn);
    manual_clock clock;
    auto opts = options_for(unique_prefix("stall"));
    opts.command_timeout = 100ms;
    auto c = counted_l2::create(client, opts, {}, clock);
    REQUIRE(c.ok());
    counted_l2& cache = **c;
    auto [ec0] = co_await cache.async_put("k", "kept", tuple);
    REQUIRE_FALSE(ec0);
    clock.advance(15s);  // the local copy is stale

    // DEBUG SLEEP first on the same connection: the lookup queued behind it cannot be answered
    // within its 100 ms.
    bool slept = false;
    conn.async_exec(redis::command{"DEBUG", "SLEEP", "0.5"}, 5000ms,
                    [&](boost::system::error_code, redis::reply) { slept = true; });
    auto [ec1, r1] = co_await cache.async_get("k", tuple);
    CHECK_FALSE(ec1);
    REQUIRE(r1.has_value());
    CHECK(r1->source == redis::l2_source::stale);
    CHECK(r1->value == "kept");
    CHECK(cache.stats().redis_errors == 1);
    CHECK_FALSE(slept);
    CHECK(co_await eventually([&] { return slept; }));
  });
}

TEST_CASE("redis_l2_cache: pub/sub invalidation between two instances",
          "[redis_l2_cache][integration]") {
  net::io_context io;
  int listeners_done = 0;
  run_bounded(io, [&]() -> awaitable<void> {
    const redis::endpoint ep = sluice_test::shared_endpoint();
    redis::connection conn_a(io);
    redis::connection conn_b(io);
    redis::subscriber sub_a(io);
    redis::subscriber sub_b(io);
    co_await connect(conn_a, ep);
    co_await connect(conn_b, ep);
    auto [eca] = co_await sub_a.async_connect(ep, tuple);
    auto [ecb] = co_await sub_b.async_connect(ep, tuple);
    REQUIRE_FALSE(eca);
    REQUIRE_FALSE(ecb);

    const std::string prefix = unique_prefix("pubsub");
    auto opts = [&](const std::string& id) {
      auto o = options_for(prefix);
      o.invalidation_channel = prefix + "invalidate";
      o.instance_id = id;
      return o;
    };
    auto a = redis::l2_cache<std::string>::create(conn_a, opts("a"));
    auto b = redis::l2_cache<std::string>::create(conn_b, opts("b"));
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    auto& cache_a = **a;
    auto& cache_b = **b;
    auto [sa] = co_await cache_a.async_subscribe_invalidations(sub_a, tuple);
    auto [sb] = co_await cache_b.async_subscribe_invalidations(sub_b, tuple);
    REQUIRE_FALSE(sa);
    REQUIRE_FALSE(sb);
    auto listen_done = [&](boost::system::error_code) { ++listeners_done; };
    cache_a.async_listen(sub_a, listen_done);
    cache_b.async_listen(sub_b, listen_done);

    auto [ep1] = co_await cache_a.async_put("k", "v1", tuple);
    REQUIRE_FALSE(ep1);
    CHECK(co_await eventually([&] { return cache_b.stats().invalidations_received == 1; }));
    auto [eg1, g1] = co_await cache_b.async_get("k", tuple);
    REQUIRE(g1.has_value());
    CHECK(g1->value == "v1");
    CHECK(cache_b.peek_local("k").has_value());

    // A writes v2: B's local copy is erased, so B reads v2 from Redis at once.
    auto [ep2] = co_await cache_a.async_put("k", "v2", tuple);
    REQUIRE_FALSE(ep2);
    CHECK(co_await eventually([&] { return cache_b.stats().invalidations_received == 2; }));
    CHECK_FALSE(cache_b.peek_local("k").has_value());
    auto [eg2, g2] = co_await cache_b.async_get("k", tuple);
    REQUIRE(g2.has_value());
    CHECK(g2->value == "v2");
    CHECK(g2->source == redis::l2_source::redis);

    // B erases: A's copy goes. A ignored its own two messages (they came before B's).
    CHECK(cache_a.peek_local("k").has_value());
    auto [ee] = co_await cache_b.async_erase("k", tuple);
    REQUIRE_FALSE(ee);
    CHECK(co_await eventually([&] { return cache_a.stats().invalidations_received == 1; }));
    CHECK_FALSE(cache_a.peek_local("k").has_value());
    CHECK(cache_a.stats().invalidations_sent == 2);
    CHECK(cache_b.stats().invalidations_sent == 1);
    CHECK(cache_b.stats().invalidations_received == 2);  // B ignored its own erase
    auto [eg3, g3] = co_await cache_a.async_get("k", tuple);
    CHECK_FALSE(eg3);
    CHECK_FALSE(g3.has_value());

    sub_a.close();
    sub_b.close();
    CHECK(co_await eventually([&] { return listeners_done == 2; }));
  });
  CHECK(listeners_done == 2);
}

TEST_CASE("redis_l2_cache: over a connection_pool: single flight, stale while down, recovery",
          "[redis_l2_cache][integration]") {
  sluice_test::redis_server server;
  net::io_context io;
  run_bounded(io, [&]() -> awaitable<void> {
    auto pool = redis::connection_pool::make(io.get_executor(), {.server = server.endpoint()});
    REQUIRE(pool.ok());
    manual_clock clock;
    const std::string prefix = unique_prefix("pool");
    using pooled_l2 = redis::l2_cache<std::string, redis::connection_pool,
                                      redis::l2_codec<std::string>, manual_clock>;
    auto opts = options_for(prefix);
    // The breaker stays closed here (the manual clock would keep it open while the pool
    // reconnects on real time); test_options' breaker is covered by the other cases.
    opts.breaker.minimum_calls = 100;
    opts.breaker.window.window_size = 100;
    auto c = pooled_l2::create(**pool, opts, {}, clock);
    REQUIRE(c.ok());
    pooled_l2& cache = **c;
    int loads = 0;
    auto loader = [&](const std::string& key) -> awaitable<absl::StatusOr<std::string>> {
      ++loads;
      net::steady_timer slow(co_await net::this_coro::executor, 20ms);
      co_await slow.async_wait(use_awaitable);
      co_return "value of " + key;
    };

    constexpr int callers = 20;
    int finished = 0;
    for (int i = 0; i < callers; ++i) {
      net::co_spawn(
          io,
          [&]() -> awaitable<void> {
            auto [ec, r] = co_await cache.async_get_or_load("hot", loader, tuple);
            CHECK_FALSE(ec);
            CHECK(r.value == "value of hot");
            ++finished;
          },
          net::detached);
    }
    CHECK(co_await eventually([&] { return finished == callers; }));
    CHECK(loads == 1);
    auto [eg, stored] = co_await (*pool)->async_exec(redis::command{"GET", prefix + "hot"}, tuple);
    CHECK(stored.str() == "value of hot");

    // Down: the stale copy is served through the pool's failures.
    clock.advance(15s);
    server.kill();
    auto [ec1, r1] = co_await cache.async_get("hot", tuple);
    CHECK_FALSE(ec1);
    REQUIRE(r1.has_value());
    CHECK(r1->source == redis::l2_source::stale);

    // Back (empty): the pool reconnects by itself; the next load goes through to Redis again.
    server.restart();
    bool recovered = false;
    for (int attempt = 0; attempt < 100 && !recovered; ++attempt) {
      auto [ec, r] = co_await cache.async_get_or_load("hot", loader, tuple);
      recovered = !ec && r.source == redis::l2_source::loaded;
      if (!recovered) {
        net::steady_timer pause(co_await net::this_coro::executor, 20ms);
        co_await pause.async_wait(use_awaitable);
      }
    }
    CHECK(recovered);
    CHECK(loads == 2);
    auto [eg2, again] = co_await (*pool)->async_exec(redis::command{"GET", prefix + "hot"}, tuple);
    CHECK(again.str() == "value of hot");
    (*pool)->close();
  });
}
