#include <chrono>
#include <optional>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <sluice/asio/rate_limiter.hpp>
#include <sluice/deadline.hpp>
#include <sluice/gcra_limiter.hpp>
#include <sluice/testing/manual_clock.hpp>
#include <sluice/token_bucket.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using sluice::testing::manual_clock;
using limiter_t = sluice::gcra_limiter<manual_clock>;
using deadline_t = sluice::deadline<manual_clock>;
namespace net = boost::asio;

namespace {
// Runs the context until `done`, moving manual time forward `step` per turn.
template <class Pred>
void run_until(net::io_context& ioc, manual_clock& clock, std::chrono::nanoseconds step,
               Pred done) {
  for (int turns = 0; !done() && turns < 10'000; ++turns) {
    ioc.poll();
    if (done()) break;
    clock.advance(step);
    ioc.run_one_for(2ms);
  }
  ioc.restart();
}
}  // namespace

TEST_CASE("asio_rate_limiter: completes at once, never inside the initiating function",
          "[asio_rate_limiter]") {
  net::io_context ioc;
  manual_clock clock;
  limiter_t limiter({.rate = 10, .burst = 2}, clock);
  std::optional<boost::system::error_code> result;
  sluice::asio::async_acquire(
      limiter, 2, deadline_t::infinite(),
      net::bind_executor(ioc, [&](boost::system::error_code ec) { result = ec; }));
  CHECK_FALSE(result.has_value());
  ioc.poll();
  REQUIRE(result.has_value());
  CHECK_FALSE(*result);
  CHECK(limiter.available() == 0);
}

TEST_CASE("asio_rate_limiter: waits for the reservation on the limiter's clock",
          "[asio_rate_limiter]") {
  net::io_context ioc;
  manual_clock clock;
  limiter_t limiter({.rate = 10, .burst = 1}, clock);
  const auto t0 = clock.now();
  int acquired = 0;
  std::optional<manual_clock::time_point> second_at;
  net::co_spawn(
      ioc,
      [&]() -> net::awaitable<void> {
        for (int i = 0; i < 3; ++i) {
          auto [ec] = co_await sluice::asio::async_acquire(limiter, 1, deadline_t::infinite(),
                                                           net::as_tuple(net::use_awaitable));
          REQUIRE_FALSE(ec);
          ++acquired;
          if (i == 1) second_at = clock.now();
        }
      },
      net::detached);
  run_until(ioc, clock, 10ms, [&] { return acquired == 3; });
  CHECK(acquired == 3);
  REQUIRE(second_at.has_value());
  CHECK(*second_at - t0 >= 100ms);
  CHECK(*second_at - t0 < 120ms);
  CHECK(clock.now() - t0 >= 200ms);
}

TEST_CASE("asio_rate_limiter: fails at once when the wait would pass the deadline",
          "[asio_rate_limiter]") {
  net::io_context ioc;
  manual_clock clock;
  limiter_t limiter({.rate = 10, .burst = 1}, clock);
  (void)limiter.try_acquire();  // the next unit is 100 ms away
  std::optional<boost::system::error_code> late, expired, huge;
  auto bind = [&](std::optional<boost::system::error_code>& out) {
    return net::bind_executor(ioc, [&out](boost::system::error_code ec) { out = ec; });
  };
  sluice::asio::async_acquire(limiter, 1, clock.now() + 50ms, bind(late));
  sluice::asio::async_acquire(limiter, 1, deadline_t::at(clock.now() - 1ms), bind(expired));
  sluice::asio::async_acquire(limiter, 5, deadline_t::infinite(), bind(huge));
  ioc.poll();  // no time passes: all three complete immediately
  REQUIRE((late && expired && huge));
  CHECK(*late == sluice::asio::error::deadline_exceeded);
  CHECK(*expired == sluice::asio::error::deadline_exceeded);
  CHECK(*huge == sluice::asio::error::invalid_argument);
  // Nothing was reserved by the failures: the next unit is still exactly 100 ms away.
  CHECK(limiter.reserve(1, 0ns).delay() == 100ms);
}

TEST_CASE("asio_rate_limiter: cancellation returns the reserved units", "[asio_rate_limiter]") {
  net::io_context ioc;
  manual_clock clock;
  sluice::token_bucket<manual_clock> bucket({.rate = 10, .burst = 1}, clock);
  (void)bucket.try_acquire();
  net::cancellation_signal signal;
  std::optional<boost::system::error_code> result;
  sluice::asio::async_acquire(
      bucket, 1, sluice::deadline<manual_clock>::infinite(),
      net::bind_cancellation_slot(signal.slot(),
                                  net::bind_executor(ioc, [&](auto ec) { result = ec; })));
  ioc.poll();
  CHECK_FALSE(result.has_value());                 // waiting for 100 ms of manual time
  CHECK(bucket.reserve(1, 0ns).delay() == 200ms);  // behind the pending reservation
  signal.emit(net::cancellation_type::terminal);
  run_until(ioc, clock, 0ns, [&] { return result.has_value(); });
  REQUIRE(result.has_value());
  CHECK(*result == net::error::operation_aborted);
  CHECK(bucket.reserve(1, 0ns).delay() == 100ms);  // its unit was given back
}
