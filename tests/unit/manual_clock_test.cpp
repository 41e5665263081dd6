#include "sluice/testing/manual_clock.hpp"

#include <chrono>
#include <thread>

#include <sluice/clock.hpp>
#include <sluice/detail/clock.hpp>
#include <sluice/detail/mutex.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using sluice::testing::manual_clock;

TEST_CASE("manual_clock: copies share one time line and only move forward", "[manual_clock]") {
  manual_clock clock;
  manual_clock copy = clock;
  const auto t0 = clock.now();
  clock.advance(250ms);
  CHECK(copy.now() - t0 == 250ms);
  clock.advance(-1s);  // ignored
  CHECK(copy.now() - t0 == 250ms);
  copy.advance_to(t0);  // the past: ignored
  CHECK(clock.now() - t0 == 250ms);
  copy.advance_to(t0 + 1s);
  CHECK(clock.now() - t0 == 1s);
  CHECK(t0 > manual_clock::time_point{});
}

TEST_CASE("manual_clock: simulated sleeps advance time and are counted", "[manual_clock]") {
  manual_clock clock;
  const auto t0 = clock.now();
  clock.sleep_for(3s);
  sluice::detail::sleep_until(clock, clock.now() + 2s);
  CHECK(clock.now() - t0 == 5s);
  CHECK(clock.sleeps() == 2);
  CHECK(clock.slept() == 5s);
}

TEST_CASE("manual_clock: a blocking sleeper wakes when another thread advances", "[manual_clock]") {
  manual_clock clock(manual_clock::options{.advance_on_sleep = false});
  const auto wake_at = clock.now() + 10s;
  std::thread sleeper([&] { clock.sleep_until(wake_at); });
  clock.advance(4s);
  clock.advance(6s);
  sleeper.join();
  CHECK(clock.now() == wake_at);
}

TEST_CASE("detail::wait_until judges deadlines on the manual clock", "[manual_clock]") {
  manual_clock clock;
  sluice::detail::mutex mu;
  sluice::detail::cond_var cv;
  bool ready = false;
  const auto deadline = clock.now() + 1s;

  SECTION("the deadline passes only when the clock is advanced") {
    std::thread advancer([&] { clock.advance(2s); });
    bool got = false;
    {
      sluice::detail::mutex_lock lock(mu);
      got = sluice::detail::wait_until(clock, cv, mu, deadline, [&] { return ready; });
    }
    advancer.join();
    CHECK_FALSE(got);
    CHECK(clock.now() >= deadline);
  }
  SECTION("a notification before the deadline returns true") {
    std::thread notifier([&] {
      sluice::detail::mutex_lock lock(mu);
      ready = true;
      cv.notify_all();
    });
    bool got = false;
    {
      sluice::detail::mutex_lock lock(mu);
      got = sluice::detail::wait_until(clock, cv, mu, deadline, [&] { return ready; });
    }
    notifier.join();
    CHECK(got);
  }
}

TEST_CASE("coarse_clock is monotonic", "[clock]") {
  auto a = sluice::coarse_clock::now();
  auto b = sluice::coarse_clock::now();
  CHECK(b >= a);
  STATIC_REQUIRE(sluice::coarse_clock::is_steady);
}

TEST_CASE("detail::sleep_until on a real clock returns at once for a past time", "[clock]") {
  std::chrono::steady_clock steady;
  const auto before = steady.now();
  sluice::detail::sleep_until(steady, before - 1s);
  CHECK(steady.now() >= before);
  sluice::coarse_clock coarse;
  const auto coarse_before = coarse.now();
  sluice::detail::sleep_until(coarse, coarse_before);
  CHECK(coarse.now() >= coarse_before);
}

TEST_CASE("detail::wait_until with an infinite real-clock deadline waits for the condition",
          "[clock]") {
  std::chrono::steady_clock steady;
  sluice::detail::mutex mu;
  sluice::detail::cond_var cv;
  bool ready = false;
  std::thread notifier([&] {
    sluice::detail::mutex_lock lock(mu);
    ready = true;
    cv.notify_all();
  });
  bool got = false;
  {
    sluice::detail::mutex_lock lock(mu);
    got = sluice::detail::wait_until(steady, cv, mu, std::chrono::steady_clock::time_point::max(),
                                     [&] { return ready; });
  }
  notifier.join();
  CHECK(got);
}
