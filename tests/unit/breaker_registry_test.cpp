#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <sluice/breaker_registry.hpp>
#include <sluice/circuit_breaker.hpp>
#include <sluice/testing/manual_clock.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using sluice::breaker_state;
using sluice::testing::manual_clock;
using registry = sluice::breaker_registry<manual_clock>;

namespace {

registry::options_type small_options(std::size_t max_keys) {
  registry::options_type o;
  o.max_keys = max_keys;
  o.shards = 4;
  o.idle_timeout = 1min;
  o.breaker.window.window_size = 10;
  o.breaker.minimum_calls = 4;
  o.breaker.open_duration = 10s;
  o.breaker.open_duration_jitter = 0.0;
  o.breaker.half_open_probes = 1;
  return o;
}

void fail_n(registry::breaker_type& b, int n) {
  for (int i = 0; i < n; ++i) {
    if (auto p = b.try_acquire()) p->record_failure();
  }
}

}  // namespace

TEST_CASE("breaker_registry: one breaker per key", "[breaker_registry]") {
  manual_clock clock;
  registry r(small_options(8), clock);
  auto a1 = r.get("a").value();
  auto a2 = r.get("a").value();
  auto b = r.get("b").value();
  CHECK(a1 == a2);
  CHECK(a1 != b);
  CHECK(r.size() == 2);
  CHECK(r.find("a") == a1);
  CHECK(r.find("zzz") == nullptr);
  fail_n(*a1, 4);
  CHECK(r.get("a").value()->state() == breaker_state::open);
  CHECK(b->state() == breaker_state::closed);
  CHECK(r.erase("a"));
  CHECK_FALSE(r.erase("a"));
  CHECK(r.size() == 1);
}

TEST_CASE("breaker_registry: invalid options are rejected", "[breaker_registry]") {
  auto o = small_options(0);
  CHECK(registry::create(o, manual_clock()).status().code() == absl::StatusCode::kInvalidArgument);
  o = small_options(4);
  o.breaker.failure_rate_threshold = 2.0;
  CHECK(registry::create(o, manual_clock()).status().code() == absl::StatusCode::kInvalidArgument);
  o = small_options(4);
  o.options_for = [](const std::string&) {
    sluice::circuit_breaker_options bad;
    bad.minimum_calls = 0;
    return bad;
  };
  auto r = registry::create(o, manual_clock()).value();
  CHECK(r.get("x").status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(r.size() == 0);
}

TEST_CASE("breaker_registry: the cap holds and only closed, clean, unused entries make room",
          "[breaker_registry]") {
  manual_clock clock;
  registry r(small_options(3), clock);
  auto open = r.get("open").value();
  fail_n(*open, 4);
  REQUIRE(open->state() == breaker_state::open);
  auto half = r.get("half").value();
  fail_n(*half, 4);
  auto failing = r.get("failing").value();
  fail_n(*failing, 1);  // closed but not clean
  clock.advance(10s);
  auto probe = half->try_acquire();  // half-open with its probe out
  REQUIRE(probe);
  REQUIRE(half->state() == breaker_state::half_open);
  open.reset();
  half.reset();
  failing.reset();
  clock.advance(1h);
  // Open, half-open and unhealthy closed breakers are never evicted, idle or not.
  CHECK(r.evict_idle() == 0);
  auto refused = r.get("new");
  CHECK(refused.status().code() == absl::StatusCode::kResourceExhausted);
  CHECK(r.size() == 3);
  CHECK(r.rejected() == 1);
  // Once "failing" is clean again (reset), it is the one evicted for room.
  r.find("failing")->reset();
  auto fresh = r.get("new");
  REQUIRE(fresh.ok());
  CHECK(r.size() == 3);
  CHECK(r.find("failing") == nullptr);
  CHECK(r.find("open") != nullptr);
  CHECK(r.find("half") != nullptr);
  probe->record_success();
}

TEST_CASE("breaker_registry: idle eviction removes only idle, clean, unheld entries",
          "[breaker_registry]") {
  manual_clock clock;
  registry r(small_options(100), clock);
  (void)r.get("idle").value();
  auto held = r.get("held").value();
  (void)r.get("busy").value();
  {
    auto sick = r.get("sick").value();
    fail_n(*sick, 2);
  }
  clock.advance(59s);
  (void)r.get("busy").value();  // looked up recently
  CHECK(r.evict_idle() == 0);   // nothing idle for a minute yet
  clock.advance(1s);
  CHECK(r.evict_idle() == 1);  // only "idle"
  CHECK(r.find("idle") == nullptr);
  CHECK(r.find("held") == held);
  CHECK(r.find("sick") != nullptr);
  clock.advance(1min);
  CHECK(r.evict_idle() == 1);  // "busy" is idle now
  CHECK(r.size() == 2);
  CHECK(r.evicted() == 2);
}

TEST_CASE("breaker_registry: per-key options and a creation hook", "[breaker_registry]") {
  manual_clock clock;
  auto o = small_options(10);
  o.options_for = [](const std::string& key) {
    sluice::circuit_breaker_options bo;
    bo.minimum_calls = key == "fragile" ? 1 : 50;
    return bo;
  };
  std::vector<std::string> created;
  registry r(o, clock,
             [&](const std::string& key, registry::breaker_type&) { created.push_back(key); });
  auto fragile = r.get("fragile").value();
  auto sturdy = r.get("sturdy").value();
  (void)r.get("fragile").value();
  fail_n(*fragile, 1);
  fail_n(*sturdy, 1);
  CHECK(fragile->state() == breaker_state::open);
  CHECK(sturdy->state() == breaker_state::closed);
  CHECK(created == std::vector<std::string>{"fragile", "sturdy"});
}

TEST_CASE("breaker_registry: concurrent gets never exceed the cap", "[breaker_registry]") {
  const int threads = GENERATE(2, 4, 8);
  INFO("threads " << threads);
  manual_clock clock;
  registry r(small_options(64), clock);
  std::atomic<int> refused{0};
  std::atomic<int> over_cap{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int i = 0; i < 3000; ++i) {
        const std::string key = "host-" + std::to_string((i * 7 + t * 13) % 200);
        auto b = r.get(key);
        if (!b.ok()) {
          refused.fetch_add(1);
          continue;
        }
        if (r.size() > 64) over_cap.fetch_add(1);
        if (i % 50 == 0) {
          fail_n(**b, 1);  // a few unclean entries that must survive
        } else if (auto p = (*b)->try_acquire()) {
          p->record_success();
        }
        if (t == 0 && i % 500 == 0) r.evict_idle();
      }
    });
  }
  for (auto& th : pool) th.join();
  CHECK(over_cap.load() == 0);
  CHECK(r.size() <= 64);
  std::size_t counted = 0;
  r.for_each([&](const std::string&, const registry::breaker_type&) { ++counted; });
  CHECK(counted == r.size());
  CHECK(static_cast<std::uint64_t>(refused.load()) == r.rejected());
}

TEST_CASE("breaker_registry: operator states are never evicted", "[breaker_registry]") {
  manual_clock clock;
  registry r(small_options(2), clock);
  r.get("forced").value()->force_open();
  r.get("disabled").value()->disable();
  clock.advance(1h);
  CHECK(r.evict_idle() == 0);
  CHECK(r.get("third").status().code() == absl::StatusCode::kResourceExhausted);
  r.find("disabled")->reset();  // closed and clean again: evictable
  CHECK(r.evict_idle() == 1);
  CHECK(r.get("third").ok());
  CHECK(r.find("forced")->state() == breaker_state::forced_open);
}

TEST_CASE("breaker_registry: a creation that throws gives its reserved slot back",
          "[breaker_registry]") {
  manual_clock clock;
  auto o = small_options(2);
  o.options_for = [](const std::string& key) {
    if (key == "unparsable") throw std::runtime_error("no config for " + key);
    return sluice::circuit_breaker_options{};
  };
  bool hook_throws = true;
  registry r(o, clock, [&](const std::string&, registry::breaker_type&) {
    if (hook_throws) throw std::logic_error("hook");
  });
  for (int i = 0; i < 3; ++i) {
    CHECK_THROWS_AS(r.get("unparsable"), std::runtime_error);
    CHECK_THROWS_AS(r.get("k" + std::to_string(i)), std::logic_error);
  }
  CHECK(r.size() == 0);
  hook_throws = false;
  // The failed creations leaked nothing: the full capacity is still there.
  CHECK(r.get("a").ok());
  CHECK(r.get("b").ok());
  CHECK(r.size() == 2);
  CHECK(r.rejected() == 0);
}
