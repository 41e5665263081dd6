#include <atomic>
#include <chrono>
#include <optional>
#include <thread>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <sluice/asio/pool.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
namespace net = boost::asio;

namespace {

struct conn {
  int id = 0;
};

sluice::pool<conn> make_pool(std::size_t max_size, std::atomic<int>* opened = nullptr) {
  sluice::pool_factory<conn> f;
  f.create = [opened](auto) -> absl::StatusOr<conn> {
    return conn{opened != nullptr ? ++*opened : 1};
  };
  auto p = sluice::pool<conn>::make(std::move(f), {.max_size = max_size});
  REQUIRE(p.ok());
  return std::move(*p);
}

using lease_t = sluice::pool<conn>::lease;

}  // namespace

TEST_CASE("asio_pool: co_await async_acquire lends and returns connections", "[asio_pool]") {
  net::io_context io;
  auto pool = make_pool(2);
  int got = 0;
  net::co_spawn(
      io,
      [&]() -> net::awaitable<void> {
        for (int i = 0; i < 3; ++i) {
          auto [ec, lease] =
              co_await sluice::asio::async_acquire(pool, 1s, net::as_tuple(net::use_awaitable));
          if (!ec && lease) got += lease->id;
        }
      },
      net::detached);
  io.run();
  CHECK(got == 3);  // one connection, reused
  CHECK(pool.stats().idle == 1);
}

TEST_CASE("asio_pool: the handler never runs inside the initiating function", "[asio_pool]") {
  net::io_context io;
  auto pool = make_pool(1);
  bool called = false;
  sluice::asio::async_acquire(pool, 1s,
                              net::bind_executor(io, [&](boost::system::error_code ec, lease_t l) {
                                called = !ec && static_cast<bool>(l);
                              }));
  CHECK_FALSE(called);
  io.run();
  CHECK(called);
}

TEST_CASE("asio_pool: queued waiters are served in FIFO order on release", "[asio_pool]") {
  net::io_context io;
  auto pool = make_pool(1);
  auto held = pool.acquire(1s);
  REQUIRE(held.ok());
  std::vector<int> order;
  for (int i = 0; i < 3; ++i) {
    sluice::asio::async_acquire(
        pool, 10s, net::bind_executor(io, [&, i](boost::system::error_code ec, lease_t) {
          order.push_back(ec ? -1 : i);
        }));
  }
  io.poll();
  CHECK(pool.stats().waiters == 3);
  held->release();
  io.run();
  CHECK(order == std::vector<int>{0, 1, 2});
}

TEST_CASE("asio_pool: the deadline completes a waiter with deadline_exceeded", "[asio_pool]") {
  net::io_context io;
  auto pool = make_pool(1);
  auto held = pool.acquire(1s);
  REQUIRE(held.ok());
  boost::system::error_code result;
  // A deadline already reached: the timer fires at once, no real waiting involved.
  sluice::asio::async_acquire(
      pool, std::chrono::steady_clock::now(),
      net::bind_executor(io, [&](boost::system::error_code ec, lease_t) { result = ec; }));
  io.run();
  CHECK(result == sluice::asio::error::deadline_exceeded);
  CHECK(pool.stats().waiters == 0);
  CHECK(pool.stats().timeouts == 1);
}

TEST_CASE("asio_pool: a cancelled waiter leaves the queue at once", "[asio_pool]") {
  net::io_context io;
  auto pool = make_pool(1);
  auto held = pool.acquire(1s);
  REQUIRE(held.ok());
  net::cancellation_signal signal;
  std::optional<boost::system::error_code> result;
  bool had_lease = true;
  sluice::asio::async_acquire(
      pool, 1h,
      net::bind_cancellation_slot(
          signal.slot(), net::bind_executor(io, [&](boost::system::error_code ec, lease_t lease) {
            result = ec;
            had_lease = static_cast<bool>(lease);
          })));
  io.poll();
  REQUIRE(pool.stats().waiters == 1);
  signal.emit(net::cancellation_type::terminal);
  CHECK(pool.stats().waiters == 0);  // left the queue inside emit()
  io.run();
  REQUIRE(result.has_value());
  CHECK(*result == net::error::operation_aborted);
  CHECK_FALSE(had_lease);
  // The returned connection goes back to the pool, not to the cancelled waiter.
  held->release();
  CHECK(pool.stats().idle == 1);
}

TEST_CASE("asio_pool: closing the pool fails async waiters with unavailable", "[asio_pool]") {
  net::io_context io;
  auto pool = make_pool(1);
  auto held = pool.acquire(1s);
  REQUIRE(held.ok());
  boost::system::error_code result;
  sluice::asio::async_acquire(
      pool, 1h,
      net::bind_executor(io, [&](boost::system::error_code ec, lease_t) { result = ec; }));
  io.poll();
  CHECK(pool.close(std::chrono::steady_clock::now()).code() ==
        absl::StatusCode::kDeadlineExceeded);  // one lease still out
  io.run();
  CHECK(result == sluice::asio::error::unavailable);
}

TEST_CASE("asio_pool: many coroutines on two threads never exceed max_size", "[asio_pool]") {
  net::io_context io;
  std::atomic<int> opened{0};
  auto pool = make_pool(3, &opened);
  std::atomic<int> ok{0}, failed{0}, in_hand{0}, max_in_hand{0};
  for (int c = 0; c < 16; ++c) {
    net::co_spawn(
        io,
        [&]() -> net::awaitable<void> {
          for (int i = 0; i < 200; ++i) {
            auto [ec, lease] =
                co_await sluice::asio::async_acquire(pool, 10s, net::as_tuple(net::use_awaitable));
            if (ec) {
              ++failed;
              continue;
            }
            const int h = ++in_hand;
            int seen = max_in_hand.load();
            while (h > seen && !max_in_hand.compare_exchange_weak(seen, h)) {
            }
            co_await net::post(co_await net::this_coro::executor, net::use_awaitable);
            --in_hand;
            ++ok;
          }
        },
        net::detached);
  }
  std::thread second([&] { io.run(); });
  io.run();
  second.join();
  CHECK(failed == 0);
  CHECK(ok == 16 * 200);
  CHECK(max_in_hand <= 3);
  CHECK(opened <= 3);
  CHECK(pool.stats().in_use == 0);
}

TEST_CASE("asio_pool: maintain_every drives maintenance from a timer", "[asio_pool]") {
  net::io_context io;
  sluice::pool_factory<conn> f;
  f.create = [](auto) -> absl::StatusOr<conn> { return conn{1}; };
  auto pool = sluice::pool<conn>::make(std::move(f), {.max_size = 2, .min_idle = 2});
  REQUIRE(pool.ok());
  auto timer = sluice::asio::maintain_every(*pool, io.get_executor(), 1ms);
  while (pool->stats().idle < 2) io.run_one();
  timer->cancel();
  io.run();
  CHECK(pool->stats().idle == 2);
}
