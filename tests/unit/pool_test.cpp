#include "sluice/pool.hpp"

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <sluice/testing/manual_clock.hpp>

#include "alloc_counter.hpp"
#include "catch.hpp"

using namespace std::chrono_literals;
using sluice::testing::manual_clock;

namespace {

// A fake backend: counts connections alive, can refuse connects or pings.
struct backend {
  std::atomic<int> alive{0};
  std::atomic<int> opened{0};
  std::atomic<int> max_alive{0};
  std::atomic<int> pings{0};
  std::atomic<int> resets{0};
  std::atomic<bool> down{false};
  std::atomic<bool> ping_fails{false};
};

struct conn {
  int id = 0;
  backend* b = nullptr;
  bool open = false;
};

template <class Clock>
sluice::pool_factory<conn, Clock> make_factory(backend& b) {
  sluice::pool_factory<conn, Clock> f;
  f.create = [&b](typename Clock::time_point) -> absl::StatusOr<conn> {
    if (b.down.load()) return absl::UnavailableError("connection refused");
    const int now_alive = ++b.alive;
    int seen = b.max_alive.load();
    while (now_alive > seen && !b.max_alive.compare_exchange_weak(seen, now_alive)) {
    }
    return conn{++b.opened, &b, true};
  };
  f.validate = [&b](conn&) -> absl::Status {
    ++b.pings;
    return b.ping_fails.load() ? absl::UnavailableError("ping failed") : absl::OkStatus();
  };
  f.reset = [&b](conn&) -> absl::Status {
    ++b.resets;
    return absl::OkStatus();
  };
  f.close = [&b](conn& c) {
    c.open = false;
    --b.alive;
  };
  return f;
}

using mpool = sluice::pool<conn, manual_clock>;

mpool make_manual(backend& b, manual_clock clock, sluice::pool_options o = {}) {
  auto p = mpool::make(make_factory<manual_clock>(b), std::move(o), clock);
  REQUIRE(p.ok());
  return std::move(*p);
}

}  // namespace

TEST_CASE("pool: make validates options", "[pool]") {
  backend b;
  using spool = sluice::pool<conn>;
  CHECK(spool::make({}).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(spool::make(make_factory<std::chrono::steady_clock>(b), {.max_size = 0}).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(spool::make(make_factory<std::chrono::steady_clock>(b), {.max_size = 2, .min_idle = 3})
            .status()
            .code() == absl::StatusCode::kInvalidArgument);
  CHECK(spool::make(make_factory<std::chrono::steady_clock>(b), {.max_lifetime_jitter = 2.0})
            .status()
            .code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("pool: leases are reused, returned on destruction, discarded when broken", "[pool]") {
  backend b;
  manual_clock clock;
  auto p = make_manual(b, clock, {.max_size = 2});
  int first_id = 0;
  {
    auto l = p.acquire(1s);
    REQUIRE(l.ok());
    first_id = (*l)->id;
    CHECK(p.stats().in_use == 1);
  }
  CHECK(p.stats().idle == 1);
  CHECK(b.resets == 1);
  {
    auto l = p.acquire(1s);
    REQUIRE(l.ok());
    CHECK((*l)->id == first_id);  // reused, not reopened
    l->mark_broken();
  }
  CHECK(b.alive == 0);
  CHECK(p.stats().size == 0);
  auto l = p.acquire(1s);
  REQUIRE(l.ok());
  CHECK((*l)->id != first_id);
  // A moved-from lease is empty; releasing twice is a no-op.
  auto moved = std::move(*l);
  CHECK_FALSE(static_cast<bool>(*l));
  moved.release();
  moved.release();
  CHECK(p.stats().idle == 1);
  CHECK(p.stats().in_use == 0);
}

TEST_CASE("pool: uncontended acquire and release do not allocate", "[pool]") {
  backend b;
  auto p = sluice::pool<conn>::make(make_factory<std::chrono::steady_clock>(b), {.max_size = 4});
  REQUIRE(p.ok());
  { auto warm = p->acquire(1s); }
  sluice_test::alloc_scope scope;
  for (int i = 0; i < 100; ++i) {
    auto l = p->acquire(1s);
    REQUIRE(l.ok());
  }
  CHECK(scope.allocations() == 0);
}

TEST_CASE("pool: exhausted and timed-out acquires are typed and carry stats", "[pool]") {
  backend b;
  manual_clock clock;
  auto p = make_manual(b, clock, {.max_size = 1, .max_waiters = 0});
  auto held = p.acquire(1s);
  REQUIRE(held.ok());
  auto refused = p.acquire(1s);
  REQUIRE(refused.status().code() == absl::StatusCode::kResourceExhausted);
  const std::string msg(refused.status().message());
  CHECK(msg.find("size=1 idle=0 in_use=1 waiters=0") != std::string::npos);
  CHECK(p.stats().exhausted == 1);

  auto q = make_manual(b, clock, {.max_size = 1});
  auto held2 = q.acquire(1s);
  REQUIRE(held2.ok());
  std::thread t([&] {
    // Advance manual time past the waiter's deadline once it has queued.
    while (q.stats().waiters == 0) std::this_thread::yield();
    clock.advance(250ms);
  });
  auto timed_out = q.acquire(200ms);
  t.join();
  CHECK(timed_out.status().code() == absl::StatusCode::kDeadlineExceeded);
  CHECK(q.stats().timeouts == 1);
  CHECK(q.stats().waiters == 0);
}

TEST_CASE("pool: a returned lease is handed to the first waiter in FIFO order", "[pool]") {
  backend b;
  manual_clock clock;
  auto p = make_manual(b, clock, {.max_size = 1});
  auto held = p.acquire(1s);
  REQUIRE(held.ok());
  std::vector<int> order;
  sluice::detail::mutex mu;
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i) {
    // Start waiters one at a time so their queue order is known.
    threads.emplace_back([&, i] {
      auto l = p.acquire(1h);
      sluice::detail::mutex_lock lock(mu);
      order.push_back(l.ok() ? i : -1);
    });
    while (p.stats().waiters != static_cast<std::size_t>(i + 1)) std::this_thread::yield();
  }
  held->release();
  for (auto& t : threads) t.join();
  CHECK(order == std::vector<int>{0, 1, 2});
  CHECK(b.opened == 1);
}

TEST_CASE("pool: idle timeout evicts above min_idle and maintain refills min_idle", "[pool]") {
  backend b;
  manual_clock clock;
  auto p = make_manual(
      b, clock, {.max_size = 4, .min_idle = 1, .idle_timeout = 10min, .keepalive_interval = 0ns});
  auto report = p.maintain();
  CHECK(report.created == 1);
  CHECK(p.stats().idle == 1);
  {
    auto a = p.acquire(1s);
    auto c = p.acquire(1s);
    REQUIRE(a.ok());
    REQUIRE(c.ok());
  }
  CHECK(p.stats().idle == 2);
  clock.advance(9min);
  CHECK(p.maintain().evicted_idle == 0);
  clock.advance(1min);
  report = p.maintain();
  CHECK(report.evicted_idle == 1);  // down to min_idle, not below
  CHECK(p.stats().idle == 1);
  CHECK(b.alive == 1);
}

TEST_CASE("pool: max lifetime is jittered downwards and enforced on return and in maintain",
          "[pool]") {
  backend b;
  manual_clock clock;
  auto p = make_manual(
      b, clock,
      {.max_size = 2, .idle_timeout = 0ns, .max_lifetime = 30min, .keepalive_interval = 0ns});
  auto l = p.acquire(1s);
  REQUIRE(l.ok());
  clock.advance(29min);  // 30 min minus at most 2.5 % (45 s) is still ahead
  l->release();
  CHECK(p.stats().idle == 1);
  clock.advance(1min);  // now past any jittered lifetime
  CHECK(p.maintain().expired == 1);
  CHECK(b.alive == 0);
  // On return: a lease held past its lifetime is closed instead of pooled.
  auto l2 = p.acquire(1s);
  REQUIRE(l2.ok());
  clock.advance(31min);
  l2->release();
  CHECK(b.alive == 0);
  CHECK(p.stats().size == 0);
}

TEST_CASE("pool: validation is bypassed for recently used connections", "[pool]") {
  backend b;
  manual_clock clock;
  auto p = make_manual(b, clock, {.max_size = 1, .validation_bypass = 500ms});
  { auto l = p.acquire(1s); }
  { auto l = p.acquire(1s); }
  CHECK(b.pings == 0);
  clock.advance(600ms);
  { auto l = p.acquire(1s); }
  CHECK(b.pings == 1);
  // A failed checkout validation closes it and opens a fresh one transparently.
  clock.advance(600ms);
  b.ping_fails = true;
  auto l = p.acquire(1s);
  REQUIRE(l.ok());
  CHECK((*l)->id == 2);
  CHECK(p.stats().validation_failures == 1);
}

TEST_CASE("pool: keep-alive validates idle connections and drops dead ones", "[pool]") {
  backend b;
  manual_clock clock;
  auto p = make_manual(b, clock, {.max_size = 2, .idle_timeout = 0ns, .keepalive_interval = 2min});
  { auto l = p.acquire(1s); }
  clock.advance(1min);
  CHECK(p.maintain().keepalive_checked == 0);
  clock.advance(1min);
  auto r = p.maintain();
  CHECK(r.keepalive_checked == 1);
  CHECK(r.keepalive_failed == 0);
  CHECK(b.pings == 1);
  clock.advance(1min);
  CHECK(p.maintain().keepalive_checked == 0);  // checked a minute ago
  clock.advance(1min);
  b.ping_fails = true;
  r = p.maintain();
  CHECK(r.keepalive_failed == 1);
  CHECK(b.alive == 0);
}

TEST_CASE("pool: leak detection reports where a long-held lease was acquired", "[pool]") {
  backend b;
  manual_clock clock;
  std::vector<sluice::pool_event> leaks;
  sluice::detail::mutex mu;
  auto p = make_manual(b, clock,
                       {.max_size = 2,
                        .leak_detection_threshold = 10s,
                        .on_event = [&](const sluice::pool_event& e) {
                          if (e.kind != sluice::pool_event_kind::leak_detected) return;
                          sluice::detail::mutex_lock lock(mu);
                          leaks.push_back(e);
                        }});
  auto l = p.acquire(1s);  // the line reported
  const auto line = __LINE__ - 1;
  REQUIRE(l.ok());
  clock.advance(9s);
  CHECK(p.maintain().leaks_reported == 0);
  clock.advance(2s);
  CHECK(p.maintain().leaks_reported == 1);
  CHECK(p.maintain().leaks_reported == 0);  // reported once
  REQUIRE(leaks.size() == 1);
  CHECK(leaks[0].site.line == line);
  CHECK(std::string(leaks[0].site.file).find("pool_test.cpp") != std::string::npos);
  CHECK(leaks[0].held_for == 11s);
  CHECK(p.stats().leaks == 1);
  l->release();
  clock.advance(1min);
  CHECK(p.maintain().leaks_reported == 0);
}

TEST_CASE("pool: a down backend fails fast and reconnects are paced", "[pool]") {
  backend b;
  manual_clock clock;
  std::atomic<int> downs{0}, ups{0};
  auto p = make_manual(b, clock,
                       {.max_size = 4,
                        .reconnect_backoff_initial = 1s,
                        .reconnect_backoff_max = 8s,
                        .reconnect_backoff_jitter = 0.0,
                        .on_event = [&](const sluice::pool_event& e) {
                          if (e.kind == sluice::pool_event_kind::backend_down) ++downs;
                          if (e.kind == sluice::pool_event_kind::backend_up) ++ups;
                        }});
  b.down = true;
  auto first = p.acquire(1s);
  REQUIRE(first.status().code() == absl::StatusCode::kUnavailable);
  CHECK(std::string(first.status().message()).find("connection refused") != std::string::npos);
  CHECK(p.stats().backend_down);
  // Within the backoff: no connect attempt at all, immediate Unavailable.
  for (int i = 0; i < 10; ++i) {
    auto r = p.acquire(1s);
    CHECK(r.status().code() == absl::StatusCode::kUnavailable);
  }
  CHECK(p.stats().create_failures == 1);
  clock.advance(1s);  // one probe allowed, it fails, backoff doubles
  CHECK(p.acquire(1s).status().code() == absl::StatusCode::kUnavailable);
  CHECK(p.stats().create_failures == 2);
  clock.advance(1s);
  CHECK(p.acquire(1s).status().code() == absl::StatusCode::kUnavailable);
  CHECK(p.stats().create_failures == 2);  // 2 s backoff now
  b.down = false;
  clock.advance(1s);
  auto ok = p.acquire(1s);
  REQUIRE(ok.ok());
  CHECK_FALSE(p.stats().backend_down);
  CHECK(downs == 1);
  CHECK(ups == 1);
}

TEST_CASE("pool: a hanging factory is bounded by the caller's deadline", "[pool]") {
  // The factory blocks until its deadline (as a real connect with a timeout does); other callers
  // are not held up by it.
  manual_clock clock;
  std::atomic<int> attempts{0};
  sluice::pool_factory<conn, manual_clock> f;
  f.create = [&](manual_clock::time_point deadline) -> absl::StatusOr<conn> {
    ++attempts;
    clock.sleep_until(deadline);  // hangs until the deadline (simulated)
    return absl::DeadlineExceededError("connect timed out");
  };
  auto p = mpool::make(std::move(f), {.max_size = 1}, clock);
  REQUIRE(p.ok());
  const auto t0 = clock.now();
  auto r = p->acquire(2s);
  CHECK(r.status().code() == absl::StatusCode::kDeadlineExceeded);
  CHECK(clock.now() - t0 == 2s);
  CHECK(attempts == 1);
  CHECK(p->stats().size == 0);
}

TEST_CASE("pool: close fails waiters, drains leases until its deadline", "[pool]") {
  backend b;
  manual_clock clock;
  auto p = make_manual(b, clock, {.max_size = 1});
  auto held = p.acquire(1s);
  REQUIRE(held.ok());
  // Catch2 assertions are not thread-safe: threads record, the test thread checks.
  std::atomic<int> waiter_code{-1}, close_code{-1};
  std::thread waiter([&] {
    auto r = p.acquire(1h);
    waiter_code = static_cast<int>(r.status().code());
  });
  while (p.stats().waiters == 0) std::this_thread::yield();
  std::thread closer([&] { close_code = static_cast<int>(p.close(clock.now() + 5s).code()); });
  waiter.join();
  CHECK(waiter_code == static_cast<int>(absl::StatusCode::kUnavailable));
  held->release();  // closed on return, which completes the drain
  closer.join();
  CHECK(close_code == static_cast<int>(absl::StatusCode::kOk));
  CHECK(b.alive == 0);
  CHECK(p.acquire(1s).status().code() == absl::StatusCode::kUnavailable);

  // A lease never returned: close gives up at its deadline (manual time moved by a ticker).
  auto q = make_manual(b, clock, {.max_size = 1});
  auto kept = q.acquire(1s);
  REQUIRE(kept.ok());
  std::atomic<bool> done{false};
  std::thread ticker([&] {
    while (!done) {
      clock.advance(1s);
      std::this_thread::yield();
    }
  });
  auto st = q.close(clock.now() + 3s);
  done = true;
  ticker.join();
  CHECK(st.code() == absl::StatusCode::kDeadlineExceeded);
  kept->release();
  CHECK(b.alive == 0);
}

TEST_CASE("pool: leases may outlive the pool object", "[pool]") {
  backend b;
  std::optional<sluice::pool<conn>::lease> survivor;
  {
    auto p = sluice::pool<conn>::make(make_factory<std::chrono::steady_clock>(b), {.max_size = 2});
    REQUIRE(p.ok());
    auto l = p->acquire(1s);
    REQUIRE(l.ok());
    survivor.emplace(std::move(*l));
  }
  CHECK(b.alive == 1);
  CHECK((*survivor)->open);
  survivor.reset();  // closed on return; the shared state is freed (ASan would catch a leak)
  CHECK(b.alive == 0);
}

TEST_CASE("pool: stress keeps size within max and loses no lease", "[pool]") {
  const int threads = GENERATE(1, 2, 4, 8);
  backend b;
  auto p = sluice::pool<conn>::make(make_factory<std::chrono::steady_clock>(b),
                                    {.max_size = 3, .validation_bypass = 1h});
  REQUIRE(p.ok());
  std::atomic<int> ok{0}, failed{0}, in_hand{0}, max_in_hand{0};
  std::vector<std::thread> ts;
  constexpr int iterations = 2000;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < iterations; ++i) {
        auto l = p->acquire(10s);
        if (!l.ok()) {
          ++failed;
          continue;
        }
        const int h = ++in_hand;
        int seen = max_in_hand.load();
        while (h > seen && !max_in_hand.compare_exchange_weak(seen, h)) {
        }
        if ((i + t) % 97 == 0) l->mark_broken();
        --in_hand;
        ++ok;
      }
    });
  }
  for (auto& t : ts) t.join();
  INFO("threads=" << threads);
  CHECK(failed == 0);
  CHECK(ok == threads * iterations);
  CHECK(max_in_hand <= 3);
  CHECK(b.max_alive <= 3);
  const auto s = p->stats();
  CHECK(s.in_use == 0);
  CHECK(s.waiters == 0);
  CHECK(s.acquired == static_cast<std::uint64_t>(threads * iterations));
  CHECK(s.created - s.closed == s.size);
  CHECK(static_cast<int>(s.size) == b.alive);
}

TEST_CASE("pool: the maintenance thread refills min_idle", "[pool]") {
  backend b;
  manual_clock clock;
  auto p = make_manual(b, clock, {.max_size = 4, .min_idle = 2});
  p.start_maintenance(1s);
  // The thread waits for one second of manual time, then maintains.
  while (p.stats().idle < 2) {
    clock.advance(1s);
    std::this_thread::yield();
  }
  p.stop_maintenance();
  CHECK(b.alive == 2);
  auto moved = std::move(p);  // the handle moves freely
  CHECK(moved.stats().idle == 2);
}

TEST_CASE("pool: leases returned while the pool is destroyed free the state once", "[pool]") {
  backend b;
  for (int round = 0; round < 50; ++round) {
    std::optional<sluice::pool<conn>> p;
    {
      auto made =
          sluice::pool<conn>::make(make_factory<std::chrono::steady_clock>(b), {.max_size = 4});
      REQUIRE(made.ok());
      p.emplace(std::move(*made));
    }
    std::vector<sluice::pool<conn>::lease> mine, theirs;
    for (int i = 0; i < 4; ++i) {
      auto l = p->acquire(1s);
      REQUIRE(l.ok());
      (i % 2 == 0 ? mine : theirs).push_back(std::move(*l));
    }
    mine.pop_back();  // one returned (idle) before the pool goes away
    std::atomic<bool> go{false};
    std::thread returner([&] {
      while (!go) std::this_thread::yield();
      theirs.clear();  // returned concurrently with the pool's destruction
    });
    go = true;
    p.reset();
    returner.join();
    mine.clear();  // returned after the pool is gone: closed, the state freed by the last one
    CHECK(b.alive == 0);
  }
}
