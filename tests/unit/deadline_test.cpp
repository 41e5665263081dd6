#include "sluice/deadline.hpp"

#include <chrono>

#include <sluice/clock.hpp>
#include <sluice/testing/manual_clock.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using manual = sluice::testing::manual_clock;
using manual_deadline = sluice::deadline<manual>;

TEST_CASE("deadline: default is infinite and never expires", "[deadline]") {
  manual clock;
  manual_deadline d;
  CHECK(d.is_infinite());
  CHECK(d == manual_deadline::infinite());
  CHECK_FALSE(d.expired(clock));
  clock.advance(std::chrono::hours(24 * 365));
  CHECK_FALSE(d.expired(clock));
  CHECK(d.remaining(clock) == manual::duration::max());
  CHECK(d.fits(clock.now(), std::chrono::hours(1000)));
}

TEST_CASE("deadline: remaining and expired follow the clock", "[deadline]") {
  manual clock;
  auto d = manual_deadline::after(clock, 100ms);
  CHECK_FALSE(d.is_infinite());
  CHECK(d.time() == clock.now() + 100ms);
  CHECK(d.remaining(clock) == 100ms);
  clock.advance(60ms);
  CHECK(d.remaining(clock) == 40ms);
  CHECK_FALSE(d.expired(clock));
  clock.advance(40ms);
  CHECK(d.expired(clock));  // a deadline at now has passed
  CHECK(d.remaining(clock) == 0ms);
  clock.advance(1s);
  CHECK(d.remaining(clock) == 0ms);
}

TEST_CASE("deadline: fits demands the work end strictly before the deadline", "[deadline]") {
  manual clock;
  auto d = manual_deadline::after(clock, 100ms);
  CHECK(d.fits(clock.now(), 99ms));
  CHECK_FALSE(d.fits(clock.now(), 100ms));
  CHECK_FALSE(d.fits(clock.now(), std::chrono::hours::max()));
}

TEST_CASE("deadline: arithmetic saturates instead of overflowing", "[deadline]") {
  manual clock;
  CHECK(manual_deadline::after(clock, std::chrono::hours::max()).is_infinite());
  CHECK(manual_deadline::after(clock, manual::duration::max()).is_infinite());
  auto past = manual_deadline::after(clock, std::chrono::hours::min());
  CHECK(past.expired(clock));
  CHECK(past.time() == manual::time_point::min());
  CHECK(manual_deadline::after(clock, -5s).expired(clock));
  auto steady =
      sluice::deadline<>::after(std::chrono::steady_clock::now(), std::chrono::years(400));
  CHECK(steady.is_infinite());
}

TEST_CASE("deadline: earliest composes, infinite is the identity", "[deadline]") {
  manual clock;
  auto a = manual_deadline::after(clock, 300ms);
  auto b = manual_deadline::after(clock, 100ms);
  auto c = manual_deadline::after(clock, 200ms);
  CHECK(sluice::earliest(a, b, c) == b);
  CHECK(sluice::earliest(manual_deadline::infinite(), a) == a);
  CHECK(sluice::earliest(manual_deadline::infinite()).is_infinite());
  CHECK(b < a);
  CHECK(a < manual_deadline::infinite());
  CHECK(a.within(clock.now(), 50ms).remaining(clock) == 50ms);
  CHECK(b.within(clock.now(), 5s) == b);
  CHECK(manual_deadline::infinite().within(clock.now(), 5s).remaining(clock) == 5s);
}

TEST_CASE("deadline: is a tiny constexpr value type", "[deadline]") {
  using steady_deadline = sluice::deadline<>;
  STATIC_REQUIRE(std::is_trivially_copyable_v<steady_deadline>);
  STATIC_REQUIRE(sizeof(steady_deadline) == sizeof(std::chrono::steady_clock::time_point));
  constexpr auto t0 = std::chrono::steady_clock::time_point(std::chrono::seconds(10));
  constexpr auto d = steady_deadline::after(t0, std::chrono::seconds(5));
  STATIC_REQUIRE(d.remaining(t0) == std::chrono::seconds(5));
  STATIC_REQUIRE(d.expired(t0 + std::chrono::seconds(5)));
  sluice::deadline<sluice::coarse_clock> coarse = sluice::deadline<sluice::coarse_clock>::after(
      sluice::coarse_clock{}, std::chrono::seconds(1));
  CHECK_FALSE(coarse.expired(sluice::coarse_clock{}));
}

TEST_CASE("deadline: integer and floating-point paths agree at the edges", "[deadline]") {
  using tp = manual::time_point;
  const tp now = tp(std::chrono::hours(1));
  // Exact integer path: nanoseconds, milliseconds, hours.
  CHECK(manual_deadline::after(now, 5ns).time() == now + 5ns);
  CHECK(manual_deadline::after(now, 5ms).time() == now + 5ms);
  CHECK(manual_deadline::after(now, std::chrono::hours(2)).time() == now + std::chrono::hours(2));
  CHECK(manual_deadline::after(tp::max() - 10ns, 9ns).time() == tp::max() - 1ns);
  CHECK(manual_deadline::after(tp::max() - 10ns, 10ns).is_infinite());
  CHECK(manual_deadline::after(tp::max() - 10ns, 11ns).is_infinite());
  CHECK(manual_deadline::after(tp::min() + 10ns, -11ns).time() == tp::min());
  CHECK(manual_deadline::after(now, std::chrono::hours::max()).is_infinite());
  CHECK(manual_deadline::after(now, std::chrono::hours::min()).time() == tp::min());
  // Floating-point path: a finer unit than the clock's, and a floating-point duration.
  using picoseconds = std::chrono::duration<std::int64_t, std::pico>;
  CHECK(manual_deadline::after(now, picoseconds(5000)).time() == now + 5ns);
  CHECK(manual_deadline::after(now, std::chrono::duration<double>(1.5)).time() == now + 1500ms);
  CHECK(manual_deadline::after(now, std::chrono::duration<double>(1e30)).is_infinite());
}
