#include <chrono>
#include <string>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "sluice/gcra_limiter.hpp"
#include "sluice/redis/gcra_limiter.hpp"
#include "sluice/testing/manual_clock.hpp"

#include "catch.hpp"
#include "redis_support.hpp"

namespace net = boost::asio;
namespace redis = sluice::redis;
using net::awaitable;
using net::use_awaitable;
using sluice_test::run_bounded;
using namespace std::chrono_literals;

namespace {

constexpr auto tuple = net::as_tuple(use_awaitable);

std::string unique_key(const std::string& name) {
  return name + ":" + std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
}

awaitable<void> connect(redis::connection& conn, const redis::endpoint& ep) {
  auto [ec] = co_await conn.async_connect(ep, tuple);
  if (ec) throw std::runtime_error("connect: " + ec.message());
}

}  // namespace

TEST_CASE("redis_gcra_limiter: two clients share the totals of one in-process limiter",
          "[redis_gcra_limiter]") {
  // One unit per hour, burst 25: the few milliseconds the test takes cannot refill a unit, so
  // both limiters see the same instant.
  const sluice::rate_limit_options limits{.rate = 1, .period = std::chrono::hours(1), .burst = 25};
  sluice::testing::manual_clock clock;
  sluice::gcra_limiter<sluice::testing::manual_clock> local(limits, clock);

  net::io_context io;
  run_bounded(io, [&]() -> awaitable<void> {
    const redis::endpoint ep = sluice_test::shared_endpoint();
    redis::connection a_conn(io);
    redis::connection b_conn(io);
    co_await connect(a_conn, ep);
    co_await connect(b_conn, ep);
    auto a = redis::gcra_limiter::create(a_conn, {.limits = limits});
    auto b = redis::gcra_limiter::create(b_conn, {.limits = limits});
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    const std::string key = unique_key("shared");

    int allowed_distributed = 0;
    int allowed_local = 0;
    for (int i = 0; i < 60; ++i) {
      redis::gcra_limiter& client = (i % 2 == 0) ? **a : **b;
      auto [ec, r] = co_await client.async_acquire(key, 1, tuple);
      REQUIRE_FALSE(ec);
      const sluice::rate_limit_result expected = local.try_acquire(1);
      INFO("attempt " << i);
      CHECK(r.allowed == expected.allowed);
      CHECK(r.remaining == expected.remaining);
      CHECK(r.limit == expected.limit);
      if (i == 0) {
        CHECK(r.reset_after == expected.reset_after);  // exactly one interval from full
      }
      // Server time moved by a few ms at most between the two limiters' readings.
      const auto retry_diff = r.retry_after - expected.retry_after;
      CHECK(retry_diff < 50ms);
      CHECK(retry_diff > -50ms);
      allowed_distributed += r.allowed ? 1 : 0;
      allowed_local += expected.allowed ? 1 : 0;
    }
    CHECK(allowed_distributed == 25);
    CHECK(allowed_local == 25);

    // Asking (n = 0) charges nothing; more than the burst can never pass.
    auto [ec0, ask] = co_await (*a)->async_acquire(key, 0, tuple);
    CHECK_FALSE(ec0);
    CHECK(ask.remaining == 0);
    auto [ec1, huge] = co_await (*b)->async_acquire(unique_key("huge"), 26, tuple);
    CHECK_FALSE(ec1);
    CHECK_FALSE(huge.allowed);
    CHECK(huge.retry_after == sluice::rate_limit_result::never());
  });
}

TEST_CASE("redis_gcra_limiter: refills at the configured rate on server time",
          "[redis_gcra_limiter]") {
  net::io_context io;
  run_bounded(io, [&]() -> awaitable<void> {
    redis::connection conn(io);
    co_await connect(conn, sluice_test::shared_endpoint());
    // 20 per second, burst 2: after the burst, the next unit is 50 ms away.
    auto limiter = redis::gcra_limiter::create(conn, {.limits = {.rate = 20, .burst = 2}});
    REQUIRE(limiter.ok());
    const std::string key = unique_key("refill");
    auto [e1, r1] = co_await (*limiter)->async_acquire(key, 1, tuple);
    auto [e2, r2] = co_await (*limiter)->async_acquire(key, 1, tuple);
    auto [e3, r3] = co_await (*limiter)->async_acquire(key, 1, tuple);
    CHECK(r1.allowed);
    CHECK(r2.allowed);
    REQUIRE_FALSE(r3.allowed);
    CHECK(r3.retry_after > 0ms);
    CHECK(r3.retry_after <= 50ms);
    CHECK(r3.reset_after <= 100ms);
    // The state key expires once the limiter is full again (no garbage for idle keys).
    redis::reply ttl = co_await conn.async_exec(
        redis::command{"PTTL", (*limiter)->get_options().key_prefix + key}, use_awaitable);
    CHECK(ttl.as_integer() > 0);
    CHECK(ttl.as_integer() <= 101);
  });
}

TEST_CASE("redis_gcra_limiter: Redis unreachable fails open to a local limiter, or closed",
          "[redis_gcra_limiter]") {
  sluice_test::redis_server server;
  net::io_context io;
  run_bounded(io, [&]() -> awaitable<void> {
    redis::connection conn(io);
    co_await connect(conn, server.endpoint());
    const sluice::rate_limit_options limits{.rate = 1, .period = std::chrono::hours(1), .burst = 3};
    auto open = redis::gcra_limiter::create(conn, {.limits = limits});
    auto closed = redis::gcra_limiter::create(
        conn,
        {.limits = limits, .when_unreachable = redis::gcra_limiter_options::unreachable::closed});
    REQUIRE(open.ok());
    REQUIRE(closed.ok());
    auto [ec_up, up] = co_await (*closed)->async_acquire("k", 1, tuple);
    CHECK_FALSE(ec_up);
    CHECK(up.allowed);

    server.kill();
    // The connection notices on its next use; from then on Redis cannot decide.
    co_await conn.async_exec(redis::command{"PING"}, tuple);

    int allowed = 0;
    for (int i = 0; i < 5; ++i) {
      auto [ec, r] = co_await (*open)->async_acquire("k", 1, tuple);
      CHECK_FALSE(ec);
      allowed += r.allowed ? 1 : 0;
    }
    CHECK(allowed == 3);  // the local limiter enforces the same quota alone

    auto [ec_closed, refused] = co_await (*closed)->async_acquire("k", 1, tuple);
    CHECK(ec_closed == sluice::asio::error::unavailable);
    CHECK_FALSE(refused.allowed);
  });
}

TEST_CASE("redis_gcra_limiter: invalid options are rejected", "[redis_gcra_limiter]") {
  net::io_context io;
  redis::connection conn(io);
  auto bad = redis::gcra_limiter::create(conn, {.limits = {.rate = 0}});
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.status().code() == absl::StatusCode::kInvalidArgument);
}
