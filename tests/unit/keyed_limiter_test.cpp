#include "sluice/keyed_limiter.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include <sluice/gcra_limiter.hpp>
#include <sluice/testing/manual_clock.hpp>

#include "alloc_counter.hpp"
#include "catch.hpp"

using namespace std::chrono_literals;
using sluice::testing::manual_clock;
using keyed_t = sluice::keyed_limiter<std::uint64_t, sluice::gcra_limiter<manual_clock>>;

TEST_CASE("keyed_limiter: create validates options", "[keyed_limiter]") {
  manual_clock clock;
  CHECK(keyed_t::create({.limits = {.rate = 0}}, clock).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(keyed_t::create({.limits = {.rate = 1}, .max_keys = 0}, clock).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(keyed_t::create({.limits = {.rate = 1}, .idle_timeout = 0s}, clock).status().code() ==
        absl::StatusCode::kInvalidArgument);
  auto ok = keyed_t::create({.limits = {.rate = 1}, .max_keys = 3, .shards = 16}, clock);
  REQUIRE(ok.ok());
  CHECK((*ok)->capacity() == 2);  // shards reduced to 2 so every shard holds a key
}

TEST_CASE("keyed_limiter: each key has its own quota", "[keyed_limiter]") {
  manual_clock clock;
  keyed_t keyed({.limits = {.rate = 10, .burst = 2}}, clock);
  CHECK(keyed.try_acquire(1).allowed);
  CHECK(keyed.try_acquire(1).allowed);
  const auto r = keyed.try_acquire(1);
  CHECK_FALSE(r.allowed);
  CHECK(r.retry_after == 100ms);
  CHECK(keyed.try_acquire(2).allowed);  // another client is unaffected
  clock.advance(100ms);
  CHECK(keyed.try_acquire(1).allowed);
  CHECK(keyed.size() == 2);
}

TEST_CASE("keyed_limiter: the least recently seen key is evicted at the cap", "[keyed_limiter]") {
  manual_clock clock;
  keyed_t keyed({.limits = {.rate = 1, .burst = 2}, .max_keys = 3, .shards = 1}, clock);
  for (const std::uint64_t k : {std::uint64_t{1}, std::uint64_t{2}, std::uint64_t{3}}) {
    CHECK(keyed.try_acquire(k, 2).allowed);  // all three empty
  }
  CHECK_FALSE(keyed.try_acquire(1).allowed);  // 1 is now the most recently seen
  CHECK(keyed.try_acquire(4).allowed);        // evicts 2, the least recently seen
  CHECK(keyed.evictions() == 1);
  CHECK(keyed.size() == 3);
  CHECK_FALSE(keyed.contains(2));
  CHECK(keyed.contains(1));
  CHECK_FALSE(keyed.try_acquire(1).allowed);  // 1 kept its state
  CHECK_FALSE(keyed.try_acquire(3).allowed);  // so did 3 ...
  CHECK(keyed.try_acquire(2, 2).allowed);     // ... while 2 starts again from full (evicts 4)
  CHECK_FALSE(keyed.contains(4));
}

TEST_CASE("keyed_limiter: idle keys are swept, lazily and by sweep()", "[keyed_limiter]") {
  manual_clock clock;
  keyed_t keyed(
      {.limits = {.rate = 10, .burst = 5}, .max_keys = 100, .shards = 1, .idle_timeout = 10s},
      clock);
  for (std::uint64_t k = 0; k < 10; ++k) (void)keyed.try_acquire(k);
  clock.advance(5s);
  for (std::uint64_t k = 10; k < 20; ++k) (void)keyed.try_acquire(k);
  CHECK(keyed.size() == 20);
  CHECK(keyed.sweep() == 0);
  clock.advance(5s);             // keys 0-9 are now idle for exactly 10 s
  (void)keyed.try_acquire(100);  // a decision removes up to two idle keys
  CHECK(keyed.size() == 19);
  CHECK(keyed.sweep() == 8);
  CHECK(keyed.size() == 11);
  clock.advance(10s);
  CHECK(keyed.sweep() == 11);
  CHECK(keyed.size() == 0);
}

TEST_CASE("keyed_limiter: per-key overrides apply to live and future keys", "[keyed_limiter]") {
  manual_clock clock;
  keyed_t keyed({.limits = {.rate = 10, .burst = 1}}, clock);
  CHECK(keyed.set_override(7, {.rate = 0}).code() == absl::StatusCode::kInvalidArgument);
  REQUIRE(keyed.set_override(7, {.rate = 10, .burst = 5}).ok());
  for (int i = 0; i < 5; ++i) CHECK(keyed.try_acquire(7).allowed);
  CHECK_FALSE(keyed.try_acquire(7).allowed);

  CHECK(keyed.try_acquire(8).allowed);
  CHECK_FALSE(keyed.try_acquire(8).allowed);
  clock.advance(1s);
  REQUIRE(keyed.set_override(8, {.rate = 10, .burst = 3}).ok());  // live key
  CHECK(keyed.try_acquire(8, 3).allowed);

  CHECK(keyed.clear_override(7));
  CHECK_FALSE(keyed.clear_override(7));
  clock.advance(1s);
  CHECK(keyed.try_acquire(7).allowed);
  CHECK_FALSE(keyed.try_acquire(7).allowed);  // back to burst 1
}

TEST_CASE("keyed_limiter: a million unique keys never grow memory past the cap",
          "[keyed_limiter]") {
  manual_clock clock;
  keyed_t keyed({.limits = {.rate = 1, .burst = 1}, .max_keys = 4096, .shards = 8}, clock);
  std::uint64_t next = 0;
  // Fill every shard to its cap, and let each table reach its steady size.
  for (; next < 64 * 4096; ++next) (void)keyed.try_acquire(next);
  CHECK(keyed.size() == keyed.capacity());
  // From now on a flood of new keys only recycles slots: not one allocation.
  sluice_test::alloc_scope scope;
  for (; next < 64 * 4096 + 1'000'000; ++next) {
    if (!keyed.try_acquire(next).allowed) FAIL("a new key must start full");
  }
  CHECK(scope.allocations() == 0);
  CHECK(keyed.size() == 4096);
  CHECK(keyed.evictions() == next - 4096);
}

TEST_CASE("keyed_limiter: decisions on known keys do not allocate", "[keyed_limiter]") {
  manual_clock clock;
  sluice::keyed_limiter<std::string, sluice::gcra_limiter<manual_clock>> keyed(
      {.limits = {.rate = 100, .burst = 10}}, clock);
  const std::string a = "10.0.0.1", b = "10.0.0.2";
  (void)keyed.try_acquire(a);
  (void)keyed.try_acquire(b);
  sluice_test::alloc_scope scope;
  int admitted = 0;
  for (int i = 0; i < 20; ++i) admitted += keyed.try_acquire(i % 2 ? a : b).allowed ? 1 : 0;
  CHECK(scope.allocations() == 0);
  CHECK(admitted == 18);
}

TEST_CASE("keyed_limiter: concurrent decisions keep per-key totals exact",
          "[keyed_limiter][stress]") {
  const int threads = GENERATE(2, 4, 8);
  manual_clock clock;
  keyed_t keyed({.limits = {.rate = 1, .burst = 10}, .max_keys = 64, .shards = 4}, clock);
  std::atomic<std::uint64_t> admitted{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      std::uint64_t mine = 0;
      for (int i = 0; i < 2000; ++i) {
        mine += keyed.try_acquire(static_cast<std::uint64_t>(i % 32)).allowed ? 1 : 0;
        if (i % 500 == 0) (void)keyed.sweep();
      }
      admitted.fetch_add(mine);
    });
  }
  for (auto& w : workers) w.join();
  // 32 keys, each a full burst of 10, time never moves: exactly 320, whatever the interleaving.
  CHECK(admitted.load() == 320);
  CHECK(keyed.size() == 32);
}
