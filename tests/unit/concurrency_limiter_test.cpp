#include "sluice/concurrency_limiter.hpp"

#include <atomic>
#include <optional>
#include <thread>
#include <vector>

#include "alloc_counter.hpp"
#include "catch.hpp"

using sluice::concurrency_limiter;

TEST_CASE("concurrency_limiter: create validates the limit", "[concurrency_limiter]") {
  CHECK(concurrency_limiter::create({.limit = 0}).status().code() ==
        absl::StatusCode::kInvalidArgument);
  REQUIRE(concurrency_limiter::create({.limit = 3}).ok());
}

TEST_CASE("concurrency_limiter: permits cap the calls in flight and free slots on release",
          "[concurrency_limiter]") {
  concurrency_limiter limiter({.limit = 3});
  sluice_test::alloc_scope scope;
  auto a = limiter.try_acquire();
  auto b = limiter.try_acquire();
  auto c = limiter.try_acquire();
  REQUIRE((a && b && c));
  CHECK_FALSE(limiter.try_acquire().has_value());
  CHECK(limiter.in_flight() == 3);
  b->release();
  b->release();  // idempotent
  CHECK(limiter.in_flight() == 2);
  {
    auto d = limiter.try_acquire();
    CHECK(d.has_value());
    CHECK_FALSE(limiter.try_acquire().has_value());
  }  // RAII
  CHECK(limiter.in_flight() == 2);
  auto moved = std::move(*a);
  a.reset();  // the moved-from permit owns nothing
  CHECK(limiter.in_flight() == 2);
  CHECK(scope.allocations() == 0);
  moved = std::move(*c);  // assigning releases the slot the target held
  CHECK(limiter.in_flight() == 1);
}

TEST_CASE("concurrency_limiter: limit changes and priority shares", "[concurrency_limiter]") {
  concurrency_limiter limiter({.limit = 4});
  std::vector<concurrency_limiter::permit> held;
  while (auto p = limiter.try_acquire_below(2)) held.push_back(std::move(*p));
  CHECK(held.size() == 2);
  limiter.set_limit(3);
  CHECK(limiter.limit() == 3);
  while (auto p = limiter.try_acquire()) held.push_back(std::move(*p));
  CHECK(held.size() == 3);
  limiter.set_limit(1);  // lowered below the in-flight count: drains
  held.pop_back();
  CHECK_FALSE(limiter.try_acquire().has_value());
  held.clear();
  CHECK(limiter.try_acquire().has_value());
}

TEST_CASE("concurrency_limiter: never more in flight than the cap under contention",
          "[concurrency_limiter][stress]") {
  const int threads = GENERATE(2, 4, 8);
  concurrency_limiter limiter({.limit = 5});
  std::atomic<int> inside{0};
  std::atomic<int> peak{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      for (int i = 0; i < 5000; ++i) {
        if (auto p = limiter.try_acquire()) {
          const int now = inside.fetch_add(1) + 1;
          int seen = peak.load();
          while (now > seen && !peak.compare_exchange_weak(seen, now)) {
          }
          inside.fetch_sub(1);
        }
      }
    });
  }
  for (auto& w : workers) w.join();
  CHECK(peak.load() <= 5);
  CHECK(limiter.in_flight() == 0);
}
