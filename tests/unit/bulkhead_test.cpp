#include "sluice/bulkhead.hpp"

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include <sluice/detail/mutex.hpp>
#include <sluice/testing/manual_clock.hpp>

#include "alloc_counter.hpp"
#include "catch.hpp"

using namespace std::chrono_literals;
using manual = sluice::testing::manual_clock;
using manual_bulkhead = sluice::bulkhead<manual>;
using manual_deadline = sluice::deadline<manual>;

namespace {
// Spins (yielding) until `pred` holds; the tests use it to order threads, not to measure time.
template <class Pred>
void wait_for_state(Pred pred) {
  while (!pred()) std::this_thread::yield();
}
}  // namespace

TEST_CASE("bulkhead: caps concurrent calls and fails fast without a queue", "[bulkhead]") {
  manual clock;
  manual_bulkhead b({.max_concurrent = 2}, clock);
  auto p1 = b.try_acquire();
  auto p2 = b.acquire();
  REQUIRE(p1);
  REQUIRE(p2);
  CHECK(b.in_use() == 2);
  auto p3 = b.acquire(manual_deadline::after(clock, 1s));
  CHECK_FALSE(p3);
  CHECK(p3.rejection() == sluice::bulkhead_rejection::full);
  CHECK(p3.status().code() == absl::StatusCode::kResourceExhausted);
  p1.get().release();
  p1.get().release();  // idempotent
  CHECK(b.in_use() == 1);
  auto p4 = b.try_acquire();
  CHECK(p4);
  {
    auto moved = p4.take();
    CHECK(moved);
    CHECK_FALSE(p4);
  }
  CHECK(b.in_use() == 1);
}

TEST_CASE("bulkhead: an expired deadline is refused before taking a slot", "[bulkhead]") {
  manual clock;
  manual_bulkhead b({.max_concurrent = 1, .max_queue = 4}, clock);
  const auto d = manual_deadline::after(clock, 5ms);
  clock.advance(5ms);
  auto r = b.acquire(d);
  CHECK(r.rejection() == sluice::bulkhead_rejection::deadline_exceeded);
  CHECK(r.status().code() == absl::StatusCode::kDeadlineExceeded);
  CHECK(b.in_use() == 0);
}

TEST_CASE("bulkhead: waiters are served in FIFO order", "[bulkhead]") {
  manual clock;
  manual_bulkhead b({.max_concurrent = 1, .max_queue = 8}, clock);
  auto holder = b.acquire();
  REQUIRE(holder);
  sluice::detail::mutex mu;
  std::vector<int> order;
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      auto p = b.acquire();
      REQUIRE(p);
      sluice::detail::mutex_lock lock(mu);
      order.push_back(i);
    });
    wait_for_state([&] { return b.queued() == static_cast<std::size_t>(i + 1); });
  }
  // A newcomer does not overtake the queue even when it only tries.
  CHECK_FALSE(b.try_acquire());
  holder.get().release();
  for (auto& t : threads) t.join();
  CHECK(order == std::vector<int>{0, 1, 2, 3});
  CHECK(b.in_use() == 0);
  CHECK(b.queued() == 0);
}

TEST_CASE("bulkhead: a full queue refuses at once", "[bulkhead]") {
  manual clock;
  manual_bulkhead b({.max_concurrent = 1, .max_queue = 1}, clock);
  auto holder = b.acquire();
  std::thread waiter([&] { CHECK(b.acquire()); });
  wait_for_state([&] { return b.queued() == 1; });
  auto r = b.acquire(manual_deadline::after(clock, 1h));
  CHECK(r.rejection() == sluice::bulkhead_rejection::queue_full);
  CHECK(r.status().code() == absl::StatusCode::kResourceExhausted);
  holder.get().release();
  waiter.join();
}

TEST_CASE("bulkhead: a waiter leaves the queue when its deadline passes", "[bulkhead]") {
  manual clock;
  manual_bulkhead b({.max_concurrent = 1, .max_queue = 4}, clock);
  auto holder = b.acquire();
  std::atomic<int> result{-1};
  std::thread waiter([&] {
    auto r = b.acquire(manual_deadline::after(clock, 50ms));
    result = static_cast<int>(r.rejection());
  });
  wait_for_state([&] { return b.queued() == 1; });
  clock.advance(49ms);
  // Still waiting: the deadline is judged on manual time only.
  CHECK(result.load() == -1);
  clock.advance(1ms);
  waiter.join();
  CHECK(result.load() == static_cast<int>(sluice::bulkhead_rejection::deadline_exceeded));
  CHECK(b.queued() == 0);
  holder.get().release();
  CHECK(b.in_use() == 0);
  CHECK(b.try_acquire());  // the slot was not leaked to the departed waiter
}

TEST_CASE("bulkhead: execute and run report typed rejections", "[bulkhead]") {
  manual clock;
  manual_bulkhead b({.max_concurrent = 1}, clock);
  auto ok = b.execute([] { return 5; });
  REQUIRE(ok.ok());
  CHECK(*ok == 5);
  auto holder = b.acquire();
  auto full = b.execute([] { return 5; });
  CHECK(full.status().code() == absl::StatusCode::kResourceExhausted);
  CHECK(full.status().message() == "sluice: bulkhead_full");
  sluice::call_context<manual> ctx(clock);
  bool ran = false;
  auto r = b.run(ctx, [&] {
    ran = true;
    return absl::OkStatus();
  });
  CHECK_FALSE(ran);
  CHECK(r.code() == absl::StatusCode::kResourceExhausted);
  CHECK(r.message().empty());  // the fast-fail status carries no allocated message
  CHECK(ctx.reason() == sluice::reason::bulkhead_full);
  CHECK(ctx.rejected());
}

TEST_CASE("bulkhead: acquire and release allocate nothing", "[bulkhead]") {
  manual clock;
  manual_bulkhead fast({.max_concurrent = 1}, clock);
  manual_bulkhead queued({.max_concurrent = 1, .max_queue = 2}, clock);
  sluice_test::alloc_scope scope;
  for (int i = 0; i < 1000; ++i) {
    auto a = fast.try_acquire();
    auto rejected = fast.try_acquire();
    auto b = queued.acquire();
    CHECK_FALSE(rejected);
  }
  CHECK(scope.allocations() == 0);
}

TEST_CASE("bulkhead: concurrent callers never exceed the cap", "[bulkhead]") {
  const int threads = GENERATE(2, 4, 8);
  const std::size_t queue = GENERATE(std::size_t{0}, std::size_t{64});
  INFO("threads = " << threads << ", queue = " << queue);
  constexpr int per_thread = 5000;
  sluice::bulkhead<> b({.max_concurrent = 3, .max_queue = queue});
  std::atomic<int> inside{0};
  std::atomic<int> peak{0};
  std::atomic<int> admitted{0};
  std::atomic<int> refused{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (int i = 0; i < per_thread; ++i) {
        auto p = (i % 2 == 0) ? b.acquire() : b.try_acquire();
        if (!p) {
          refused.fetch_add(1, std::memory_order_relaxed);
          continue;
        }
        const int now = inside.fetch_add(1, std::memory_order_relaxed) + 1;
        int seen = peak.load(std::memory_order_relaxed);
        while (now > seen && !peak.compare_exchange_weak(seen, now)) {
        }
        inside.fetch_sub(1, std::memory_order_relaxed);
        admitted.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  for (auto& t : pool) t.join();
  CHECK(peak.load() <= 3);
  CHECK(admitted.load() + refused.load() == threads * per_thread);
  CHECK(b.in_use() == 0);
  CHECK(b.queued() == 0);
  if (queue == 64) CHECK(admitted.load() >= threads * per_thread / 2);  // waiters always get in
}

TEST_CASE("bulkhead: waiters with deadlines, releases and newcomers race safely", "[bulkhead]") {
  const int threads = GENERATE(2, 4, 8);
  INFO("threads = " << threads);
  constexpr int per_thread = 3000;
  sluice::bulkhead<> b({.max_concurrent = 2, .max_queue = 4});
  std::atomic<int> inside{0};
  std::atomic<bool> over_cap{false};
  std::atomic<int> admitted{0};
  std::atomic<int> refused{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::chrono::steady_clock clock;
      for (int i = 0; i < per_thread; ++i) {
        sluice::bulkhead<>::acquire_result p =
            (i + t) % 3 == 0   ? b.try_acquire()
            : (i + t) % 3 == 1 ? b.acquire(sluice::deadline<>::after(clock, 50us))
                               : b.acquire();
        if (!p) {
          refused.fetch_add(1, std::memory_order_relaxed);
          continue;
        }
        if (inside.fetch_add(1, std::memory_order_relaxed) + 1 > 2) over_cap = true;
        if (i % 16 == 0) std::this_thread::yield();  // hold the slot a little longer
        inside.fetch_sub(1, std::memory_order_relaxed);
        admitted.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  for (auto& th : pool) th.join();  // a lost wake-up would hang here
  CHECK_FALSE(over_cap.load());
  CHECK(admitted.load() + refused.load() == threads * per_thread);
  CHECK(admitted.load() > 0);
  CHECK(b.in_use() == 0);
  CHECK(b.queued() == 0);
}

TEST_CASE("bulkhead: a granted waiter may destroy the bulkhead as soon as it is done",
          "[bulkhead]") {
  // The releaser hands its slot to the waiter; the waiter returns, releases and deletes the
  // bulkhead at once. The releaser must not touch the bulkhead after the hand-over is visible
  // (ASan/TSan report it when it does). A manual-clock deadline makes the waiter poll, so it can
  // see its grant without waiting for the releaser's notification.
  manual clock;
  for (int round = 0; round < 200; ++round) {
    auto* b = new manual_bulkhead({.max_concurrent = 1, .max_queue = 1}, clock);
    auto held = b->try_acquire();
    REQUIRE(held);
    std::thread waiter([b, clock] {
      { auto p = b->acquire(manual_deadline::at(clock.now() + 1h)); }  // granted, released
      delete b;
    });
    wait_for_state([b] { return b->queued() == 1; });
    held.get().release();
    waiter.join();
  }
}
