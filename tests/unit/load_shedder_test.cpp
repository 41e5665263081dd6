#include "sluice/load_shedder.hpp"

#include <chrono>
#include <vector>

#include <sluice/adaptive_limiter.hpp>
#include <sluice/concurrency_limiter.hpp>
#include <sluice/gcra_limiter.hpp>
#include <sluice/testing/manual_clock.hpp>

#include "alloc_counter.hpp"
#include "catch.hpp"

using namespace std::chrono_literals;
using sluice::testing::manual_clock;
using rate_t = sluice::gcra_limiter<manual_clock>;

TEST_CASE("load_shedder: queue, concurrency and rate map to 503 and 429", "[load_shedder]") {
  manual_clock clock;
  rate_t rate({.rate = 10, .burst = 2}, clock);
  sluice::concurrency_limiter inflight({.limit = 3});
  sluice::load_shedder<rate_t> shedder(&rate, &inflight, {.max_queue_delay = 50ms});

  auto full = shedder.admit({.depth = 8, .capacity = 8});
  CHECK(full.reason() == sluice::shed_reason::queue_full);
  CHECK(full.http_status() == 503);
  CHECK(full.retry_after() == 1s);
  CHECK(full.retry_after_value().view() == "1");
  CHECK(full.status().code() == absl::StatusCode::kUnavailable);

  auto slow = shedder.admit({.depth = 1, .capacity = 8, .oldest_wait = 51ms});
  CHECK(slow.reason() == sluice::shed_reason::queue_delay);
  CHECK(rate.available() == 2);  // no token spent on refused requests

  sluice_test::alloc_scope scope;
  auto a = shedder.admit();
  auto b = shedder.admit({.depth = 3, .capacity = 8, .oldest_wait = 10ms});
  REQUIRE((a && b));
  CHECK(a.http_status() == 200);
  CHECK(a.permit().has_value());
  CHECK(a.rate()->remaining == 1);
  auto c = shedder.admit();  // burst spent: 429 with the limiter's retry_after
  CHECK(scope.allocations() == 0);
  CHECK(c.reason() == sluice::shed_reason::rate_limited);
  CHECK(c.http_status() == 429);
  CHECK(c.retry_after() == 100ms);
  CHECK(c.retry_after_value().view() == "1");
  CHECK(c.status().code() == absl::StatusCode::kResourceExhausted);
  CHECK(inflight.in_flight() == 2);  // the refused request gave its slot back

  clock.advance(1s);
  auto d = shedder.admit();
  REQUIRE(d);
  auto e = shedder.admit();  // a, b, d hold all three slots
  CHECK(e.reason() == sluice::shed_reason::overloaded);
  CHECK(rate.available() == 1);  // the overloaded request spent no token
  a.permit().reset();
  CHECK(shedder.admit().admitted());
}

TEST_CASE("load_shedder: works with an adaptive limiter and priorities, or no limiters",
          "[load_shedder]") {
  manual_clock clock;
  sluice::adaptive_limiter<manual_clock> adaptive({.initial_limit = 10, .min_limit = 2}, clock);
  sluice::load_shedder<rate_t, sluice::adaptive_limiter<manual_clock>> shedder(nullptr, &adaptive);
  std::vector<decltype(shedder.admit())> held;
  for (int i = 0; i < 20; ++i) {
    auto a = shedder.admit({}, 1, sluice::call_priority::sheddable);
    if (a) held.push_back(std::move(a));
  }
  CHECK(held.size() == 7);  // 0.75 x 10
  CHECK(shedder.admit({}, 1, sluice::call_priority::critical).admitted());
  held.front().permit()->record_success();
  CHECK(adaptive.in_flight() == 6);

  sluice::load_shedder<rate_t> open(nullptr, nullptr);
  CHECK(open.admit().admitted());
  CHECK(open.admit({.depth = 5, .capacity = 5}).http_status() == 503);
}
