#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "sluice/pool.hpp"
#include <sluice/asio/pool.hpp>
#include <sluice/detail/mutex.hpp>
#include <sluice/testing/manual_clock.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using sluice::testing::manual_clock;
namespace net = boost::asio;

namespace {

struct aconn {
  int id = 0;
};

// A fake event-loop backend: connects and pings are started by the pool and stay pending until
// the test finishes them (from any thread).
struct async_backend {
  sluice::detail::mutex mu;
  std::deque<sluice::pool_callback<absl::StatusOr<aconn>>> creates ABSL_GUARDED_BY(mu);
  std::deque<sluice::pool_callback<absl::Status>> pings ABSL_GUARDED_BY(mu);
  std::atomic<int> create_calls{0};
  std::atomic<int> ping_calls{0};
  std::atomic<int> opened{0};
  std::atomic<int> alive{0};

  std::size_t pending_creates() {
    sluice::detail::mutex_lock lock(mu);
    return creates.size();
  }
  std::size_t pending_pings() {
    sluice::detail::mutex_lock lock(mu);
    return pings.size();
  }
  // Finishes the oldest pending connect: a new connection, or a refusal.
  void finish_create(bool ok) {
    sluice::pool_callback<absl::StatusOr<aconn>> done;
    {
      sluice::detail::mutex_lock lock(mu);
      REQUIRE_FALSE(creates.empty());
      done = std::move(creates.front());
      creates.pop_front();
    }
    if (ok) {
      ++alive;
      std::move(done)(aconn{++opened});
    } else {
      std::move(done)(absl::UnavailableError("connection refused"));
    }
  }
  // Finishes the oldest pending ping.
  void finish_ping(bool ok) {
    sluice::pool_callback<absl::Status> done;
    {
      sluice::detail::mutex_lock lock(mu);
      REQUIRE_FALSE(pings.empty());
      done = std::move(pings.front());
      pings.pop_front();
    }
    std::move(done)(ok ? absl::OkStatus() : absl::UnavailableError("ping timed out"));
  }
};

template <class Clock>
sluice::pool_factory<aconn, Clock> async_factory(async_backend& b, bool with_ping = false) {
  sluice::pool_factory<aconn, Clock> f;
  f.async_create = [&b](typename Clock::time_point,
                        sluice::pool_callback<absl::StatusOr<aconn>> done) {
    ++b.create_calls;
    sluice::detail::mutex_lock lock(b.mu);
    b.creates.push_back(std::move(done));
  };
  if (with_ping) {
    f.async_validate = [&b](aconn&, sluice::pool_callback<absl::Status> done) {
      ++b.ping_calls;
      sluice::detail::mutex_lock lock(b.mu);
      b.pings.push_back(std::move(done));
    };
  }
  f.close = [&b](aconn&) { --b.alive; };
  return f;
}

using mpool = sluice::pool<aconn, manual_clock>;
using mlease = mpool::lease;

mpool make_mpool(async_backend& b, manual_clock clock, sluice::pool_options o = {},
                 bool with_ping = false) {
  auto p = mpool::make(async_factory<manual_clock>(b, with_ping), std::move(o), clock);
  REQUIRE(p.ok());
  return std::move(*p);
}

// The outcome of one async_acquire, recorded by its handler.
struct outcome {
  std::optional<boost::system::error_code> ec;
  mlease lease;
};

auto record(net::io_context& io, outcome& out) {
  return net::bind_executor(io, [&out](boost::system::error_code ec, mlease l) {
    out.ec = ec;
    out.lease = std::move(l);
  });
}

}  // namespace

TEST_CASE("pool_async: make requires exactly one create hook and one validate hook at most",
          "[pool_async]") {
  async_backend b;
  using spool = sluice::pool<aconn>;
  CHECK(spool::make({}).status().code() == absl::StatusCode::kInvalidArgument);
  auto both = async_factory<std::chrono::steady_clock>(b);
  both.create = [](auto) -> absl::StatusOr<aconn> { return aconn{}; };
  const auto st = spool::make(std::move(both)).status();
  CHECK(st.code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(st.message()).find("async_create") != std::string::npos);
  auto two_pings = async_factory<std::chrono::steady_clock>(b, true);
  two_pings.validate = [](aconn&) { return absl::OkStatus(); };
  CHECK(spool::make(std::move(two_pings)).status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(spool::make(async_factory<std::chrono::steady_clock>(b, true)).ok());
}

TEST_CASE("pool_async: async_acquire completes from the factory's callback on another thread",
          "[pool_async]") {
  async_backend b;
  manual_clock clock;
  net::io_context io;
  auto p = make_mpool(b, clock, {.max_size = 2});
  outcome first;
  sluice::asio::async_acquire(p, 1s, record(io, first));
  io.poll();
  // The connect is in flight: nothing blocked, nothing completed, the slot is reserved.
  CHECK_FALSE(first.ec.has_value());
  CHECK(b.pending_creates() == 1);
  CHECK(p.stats().pending_creates == 1);
  CHECK(p.stats().size == 1);
  std::thread([&] { b.finish_create(true); }).join();
  io.restart();
  io.run();
  REQUIRE(first.ec.has_value());
  CHECK_FALSE(*first.ec);
  REQUIRE(static_cast<bool>(first.lease));
  CHECK(first.lease->id == 1);
  CHECK(p.stats().pending_creates == 0);
  CHECK(p.stats().in_use == 1);
  first.lease.release();
  // The idle connection is reused without another connect.
  outcome second;
  sluice::asio::async_acquire(p, 1s, record(io, second));
  io.restart();
  io.run();
  REQUIRE(second.ec.has_value());
  CHECK_FALSE(*second.ec);
  CHECK(second.lease->id == 1);
  CHECK(b.create_calls == 1);
}

TEST_CASE("pool_async: a failed async create marks the backend down, fails fast, paces probes",
          "[pool_async]") {
  async_backend b;
  manual_clock clock;
  net::io_context io;
  std::atomic<int> downs{0}, ups{0};
  auto p = make_mpool(b, clock,
                      {.max_size = 2,
                       .reconnect_backoff_initial = 1s,
                       .reconnect_backoff_max = 8s,
                       .reconnect_backoff_jitter = 0.0,
                       .on_event = [&](const sluice::pool_event& e) {
                         if (e.kind == sluice::pool_event_kind::backend_down) ++downs;
                         if (e.kind == sluice::pool_event_kind::backend_up) ++ups;
                       }});
  outcome first, second;
  sluice::asio::async_acquire(p, 10s, record(io, first));
  sluice::asio::async_acquire(p, 10s, record(io, second));
  io.poll();
  CHECK(b.pending_creates() == 2);
  b.finish_create(false);
  b.finish_create(false);
  io.restart();
  io.run();
  CHECK(*first.ec == sluice::asio::error::unavailable);
  CHECK(*second.ec == sluice::asio::error::unavailable);
  CHECK(p.stats().backend_down);
  CHECK(p.stats().size == 0);
  CHECK(downs == 1);
  // Within the backoff: immediate unavailable, no connect started (sync and async alike).
  for (int i = 0; i < 5; ++i) {
    outcome o;
    sluice::asio::async_acquire(p, 10s, record(io, o));
    io.restart();
    io.run();
    CHECK(*o.ec == sluice::asio::error::unavailable);
  }
  CHECK(p.acquire(1s).status().code() == absl::StatusCode::kUnavailable);
  CHECK(b.create_calls == 2);
  // After the backoff (2 s: the second refusal doubled it): exactly one probe; concurrent callers
  // still fail fast meanwhile.
  clock.advance(2s);
  outcome probe, other;
  sluice::asio::async_acquire(p, 10s, record(io, probe));
  sluice::asio::async_acquire(p, 10s, record(io, other));
  io.restart();
  io.poll();
  CHECK(b.create_calls == 3);
  CHECK(*other.ec == sluice::asio::error::unavailable);
  std::thread([&] { b.finish_create(true); }).join();
  io.restart();
  io.run();
  CHECK_FALSE(*probe.ec);
  CHECK_FALSE(p.stats().backend_down);
  CHECK(ups == 1);
}

TEST_CASE("pool_async: a synchronous acquire blocks on an async create finished elsewhere",
          "[pool_async]") {
  async_backend b;
  auto p = sluice::pool<aconn>::make(async_factory<std::chrono::steady_clock>(b, true),
                                     {.max_size = 1, .validation_bypass = 0ns});
  REQUIRE(p.ok());
  std::atomic<bool> stop{false};
  // Stands in for the event loop that runs the factory's I/O.
  std::thread loop([&] {
    while (!stop) {
      if (b.pending_creates() > 0) b.finish_create(true);
      if (b.pending_pings() > 0) b.finish_ping(true);
      std::this_thread::yield();
    }
  });
  {
    auto l = p->acquire(10s);
    REQUIRE(l.ok());
    CHECK((*l)->id == 1);
  }
  {
    auto l = p->acquire(10s);  // validated (bypass 0) by a blocking wait on the async ping
    REQUIRE(l.ok());
  }
  stop = true;
  loop.join();
  CHECK(b.ping_calls == 1);
  CHECK(p->stats().created == 1);
}

TEST_CASE("pool_async: an async validation failing on checkout replaces the connection",
          "[pool_async]") {
  async_backend b;
  manual_clock clock;
  net::io_context io;
  auto p = make_mpool(b, clock, {.max_size = 2, .validation_bypass = 500ms}, true);
  outcome first;
  sluice::asio::async_acquire(p, 1s, record(io, first));
  io.poll();
  b.finish_create(true);
  io.restart();
  io.run();
  REQUIRE_FALSE(*first.ec);
  first.lease.release();
  clock.advance(1s);  // past the bypass window: the next checkout pings
  outcome second;
  sluice::asio::async_acquire(p, 1s, record(io, second));
  io.restart();
  io.poll();
  CHECK_FALSE(second.ec.has_value());
  CHECK(b.pending_pings() == 1);
  CHECK(p.stats().idle == 0);  // reserved while the ping runs
  std::thread([&] { b.finish_ping(false); }).join();
  io.restart();
  io.poll();
  // The dead connection is closed; a new one is being opened for the same caller.
  CHECK(b.alive == 0);
  CHECK(p.stats().validation_failures == 1);
  CHECK(b.pending_creates() == 1);
  b.finish_create(true);
  io.restart();
  io.run();
  REQUIRE_FALSE(*second.ec);
  CHECK(second.lease->id == 2);
  second.lease.release();
  // A passing ping lends the same connection.
  clock.advance(1s);
  outcome third;
  sluice::asio::async_acquire(p, 1s, record(io, third));
  io.restart();
  io.poll();
  b.finish_ping(true);
  io.restart();
  io.run();
  REQUIRE_FALSE(*third.ec);
  CHECK(third.lease->id == 2);
}

TEST_CASE("pool_async: keep-alive pings run asynchronously from maintain", "[pool_async]") {
  async_backend b;
  manual_clock clock;
  net::io_context io;
  auto p =
      make_mpool(b, clock, {.max_size = 2, .idle_timeout = 0ns, .keepalive_interval = 2min}, true);
  outcome o;
  sluice::asio::async_acquire(p, 1s, record(io, o));
  io.poll();
  b.finish_create(true);
  io.restart();
  io.run();
  o.lease.release();
  clock.advance(2min);
  auto r = p.maintain();
  CHECK(r.keepalive_checked == 1);
  CHECK(r.pending == 1);
  CHECK(p.stats().idle == 0);                  // reserved until the ping answers
  CHECK(p.maintain().keepalive_checked == 0);  // not pinged twice
  std::thread([&] { b.finish_ping(true); }).join();
  CHECK(p.stats().idle == 1);
  clock.advance(1min);
  CHECK(p.maintain().keepalive_checked == 0);  // checked a minute ago
  clock.advance(1min);
  CHECK(p.maintain().pending == 1);
  b.finish_ping(false);
  CHECK(b.alive == 0);
  CHECK(p.stats().size == 0);
  CHECK(p.stats().validation_failures == 1);
}

TEST_CASE("pool_async: maintain starts min-idle refills without waiting", "[pool_async]") {
  async_backend b;
  manual_clock clock;
  auto p = make_mpool(b, clock, {.max_size = 4, .min_idle = 2});
  auto r = p.maintain();
  CHECK(r.pending == 2);
  CHECK(r.created == 0);
  CHECK(p.stats().pending_creates == 2);
  CHECK(p.maintain().pending == 0);  // the two in flight count towards min_idle
  std::thread([&] {
    b.finish_create(true);
    b.finish_create(true);
  }).join();
  CHECK(p.stats().idle == 2);
  CHECK(p.stats().pending_creates == 0);
  // A refused refill marks the backend down; the next pass waits for the backoff.
  auto l = p.acquire(1s);  // takes one idle, leaving one
  REQUIRE(l.ok());
  CHECK(p.maintain().pending == 1);
  b.finish_create(false);
  CHECK(p.stats().backend_down);
  CHECK(p.maintain().pending == 0);
  CHECK(b.create_calls == 3);
}

TEST_CASE("pool_async: cancelling async_acquire during its async create keeps the connection",
          "[pool_async]") {
  async_backend b;
  manual_clock clock;
  net::io_context io;
  auto p = make_mpool(b, clock, {.max_size = 1});
  net::cancellation_signal signal;
  outcome o;
  sluice::asio::async_acquire(p, 1h, net::bind_cancellation_slot(signal.slot(), record(io, o)));
  io.poll();
  REQUIRE(b.pending_creates() == 1);
  signal.emit(net::cancellation_type::terminal);
  io.restart();
  io.poll();
  REQUIRE(o.ec.has_value());  // completed at once, not when the connect finishes
  CHECK(*o.ec == net::error::operation_aborted);
  CHECK_FALSE(static_cast<bool>(o.lease));
  std::thread([&] { b.finish_create(true); }).join();
  io.restart();
  io.run();
  // The connection went to the pool as idle: not leaked, not closed, reusable.
  CHECK(b.alive == 1);
  CHECK(p.stats().idle == 1);
  CHECK(p.stats().in_use == 0);
  CHECK(p.stats().size == 1);
  auto again = p.try_acquire();
  REQUIRE(again.has_value());
  CHECK((*again)->id == 1);
}

TEST_CASE("pool_async: closing the pool during an async create closes what it delivers",
          "[pool_async]") {
  async_backend b;
  manual_clock clock;
  net::io_context io;
  auto p = make_mpool(b, clock, {.max_size = 1});
  outcome o;
  sluice::asio::async_acquire(p, 1h, record(io, o));
  io.poll();
  REQUIRE(b.pending_creates() == 1);
  // The connect in flight holds a slot: close cannot drain it by its (immediate) deadline.
  CHECK(p.close(clock.now()).code() == absl::StatusCode::kDeadlineExceeded);
  std::thread([&] { b.finish_create(true); }).join();
  io.restart();
  io.run();
  REQUIRE(o.ec.has_value());
  CHECK(*o.ec == sluice::asio::error::unavailable);
  CHECK(b.alive == 0);
  CHECK(p.stats().size == 0);
  CHECK(p.close(clock.now()).ok());
}

TEST_CASE("pool_async: a factory that drops its callback fails the acquire instead of hanging",
          "[pool_async]") {
  async_backend b;
  manual_clock clock;
  net::io_context io;
  auto p = make_mpool(b, clock, {.max_size = 1});
  outcome o;
  sluice::asio::async_acquire(p, 1h, record(io, o));
  io.poll();
  {
    sluice::detail::mutex_lock lock(b.mu);
    b.creates.clear();  // e.g. the factory's I/O context was destroyed
  }
  io.restart();
  io.run();
  REQUIRE(o.ec.has_value());
  CHECK(*o.ec == sluice::asio::error::unavailable);
  CHECK(p.stats().size == 0);
  CHECK(p.stats().create_failures == 1);
}

TEST_CASE("pool_async: a pool destroyed during an async create is freed by its callback",
          "[pool_async]") {
  async_backend b;
  {
    auto p = sluice::pool<aconn>::make(async_factory<std::chrono::steady_clock>(b),
                                       {.max_size = 2, .min_idle = 1});
    REQUIRE(p.ok());
    CHECK(p->maintain().pending == 1);
  }
  // The handle is gone; the callback finds the pool closed, closes the connection and frees the
  // state (ASan/LSan would report a leak or a use after free).
  b.finish_create(true);
  CHECK(b.alive == 0);
}

TEST_CASE("pool_async: stress with async creates completing on another thread", "[pool_async]") {
  const int io_threads = GENERATE(1, 2);
  std::atomic<int> alive{0}, max_alive{0}, opened{0};
  net::thread_pool factory_loop(1);
  sluice::pool_factory<aconn> f;
  f.async_create = [&](auto, sluice::pool_callback<absl::StatusOr<aconn>> done) {
    net::post(factory_loop, [&, done = std::move(done)]() mutable {
      const int now_alive = ++alive;
      int seen = max_alive.load();
      while (now_alive > seen && !max_alive.compare_exchange_weak(seen, now_alive)) {
      }
      std::move(done)(aconn{++opened});
    });
  };
  f.async_validate = [&](aconn&, sluice::pool_callback<absl::Status> done) {
    net::post(factory_loop,
              [done = std::move(done)]() mutable { std::move(done)(absl::OkStatus()); });
  };
  f.close = [&](aconn&) { --alive; };
  auto made = sluice::pool<aconn>::make(std::move(f), {.max_size = 3, .validation_bypass = 0ns});
  REQUIRE(made.ok());
  auto& p = *made;
  net::io_context io;
  std::atomic<int> ok{0}, failed{0}, cancelled{0}, in_hand{0}, max_in_hand{0};
  constexpr int coroutines = 12, iterations = 150;
  int plain = 0;
  for (int c = 0; c < coroutines; ++c) {
    for (int i = 0; i < iterations; ++i) plain += (i + c) % 17 != 0 ? 1 : 0;
    // One strand per coroutine: a cancellation is emitted where the operation's handler runs.
    net::co_spawn(
        net::make_strand(io),
        [&, c]() -> net::awaitable<void> {
          for (int i = 0; i < iterations; ++i) {
            if ((i + c) % 17 == 0) {
              // Cancelled right after it starts: whatever it was waiting for (a queue slot, a
              // connect in flight) must go back to the pool.
              // (No co_await inside the post() call: GCC 12 mishandles a temporary lambda
              // spanning a suspension point in an argument list.)
              auto ex = co_await net::this_coro::executor;
              auto sig = std::make_shared<net::cancellation_signal>();
              net::post(ex, [sig] { sig->emit(net::cancellation_type::terminal); });
              auto [ec, lease] = co_await sluice::asio::async_acquire(
                  p, 10s,
                  net::bind_cancellation_slot(sig->slot(), net::as_tuple(net::use_awaitable)));
              if (ec) ++cancelled;
              continue;
            }
            auto [ec, lease] =
                co_await sluice::asio::async_acquire(p, 10s, net::as_tuple(net::use_awaitable));
            if (ec) {
              ++failed;
              continue;
            }
            const int h = ++in_hand;
            int seen = max_in_hand.load();
            while (h > seen && !max_in_hand.compare_exchange_weak(seen, h)) {
            }
            co_await net::post(co_await net::this_coro::executor, net::use_awaitable);
            if ((i + c) % 23 == 0) lease.mark_broken();
            --in_hand;
            ++ok;
          }
        },
        net::detached);
  }
  std::vector<std::thread> runners;
  for (int t = 1; t < io_threads; ++t) runners.emplace_back([&] { io.run(); });
  io.run();
  for (auto& t : runners) t.join();
  factory_loop.join();
  INFO("io_threads=" << io_threads);
  CHECK(failed == 0);
  CHECK(ok == plain);
  CHECK(cancelled <= coroutines * iterations - plain);
  CHECK(max_in_hand <= 3);
  CHECK(max_alive <= 3);
  const auto s = p.stats();
  CHECK(s.in_use == 0);
  CHECK(s.waiters == 0);
  CHECK(s.pending_creates == 0);
  CHECK(static_cast<int>(s.size) == alive);
  CHECK(s.created - s.closed == s.size);
}

TEST_CASE("pool_async: a hand-over its executor drops unrun gives the connection back",
          "[pool_async]") {
  async_backend b;
  manual_clock clock;
  net::io_context io;
  auto p = make_mpool(b, clock, {.max_size = 1});
  outcome first;
  sluice::asio::async_acquire(p, 1s, record(io, first));
  io.poll();
  b.finish_create(true);
  io.restart();
  io.run();
  REQUIRE(static_cast<bool>(first.lease));
  {
    // A second operation on an executor that is destroyed before it runs anything (a worker
    // context shut down): it queues, the lease comes back and is handed to it, and the posted
    // step is destroyed unrun.
    net::io_context dying;
    outcome second;
    sluice::asio::async_acquire(p, 1h, record(dying, second));
    CHECK(p.stats().waiters == 1);
    first.lease.release();
    CHECK(p.stats().waiters == 0);
    CHECK_FALSE(second.ec.has_value());
  }
  // The connection is idle again, not stuck reserved for an operation that will never act.
  CHECK(p.stats().idle == 1);
  CHECK(p.stats().size == 1);
  auto again = p.try_acquire();
  REQUIRE(again.has_value());
  CHECK((*again)->id == 1);
  CHECK(b.create_calls == 1);
}

TEST_CASE("pool_async: a connect slot its executor drops unrun is given back", "[pool_async]") {
  async_backend b;
  manual_clock clock;
  auto p = make_mpool(b, clock, {.max_size = 1});
  {
    // The first step (open a connection in a reserved slot) is posted to an executor that is
    // destroyed before it runs: no connect starts.
    net::io_context dying;
    outcome o;
    sluice::asio::async_acquire(p, 1h, record(dying, o));
    CHECK(p.stats().pending_creates == 1);
  }
  CHECK(b.create_calls == 0);
  CHECK(p.stats().size == 0);
  CHECK(p.stats().pending_creates == 0);
  // The capacity is free: the next acquire connects instead of queueing until its deadline.
  net::io_context io;
  outcome next;
  sluice::asio::async_acquire(p, 1s, record(io, next));
  io.poll();
  REQUIRE(b.pending_creates() == 1);
  b.finish_create(true);
  io.restart();
  io.run();
  REQUIRE(next.ec.has_value());
  CHECK_FALSE(*next.ec);
  CHECK(static_cast<bool>(next.lease));
}

TEST_CASE("pool_async: a pool closed and destroyed while callbacks run on other threads",
          "[pool_async]") {
  const int io_threads = GENERATE(1, 2);
  std::atomic<int> alive{0}, completed{0};
  net::thread_pool factory_loop(2);
  sluice::pool_factory<aconn> f;
  f.async_create = [&](auto, sluice::pool_callback<absl::StatusOr<aconn>> done) {
    net::post(factory_loop, [&, done = std::move(done)]() mutable {
      ++alive;
      std::move(done)(aconn{1});
    });
  };
  f.async_validate = [&](aconn&, sluice::pool_callback<absl::Status> done) {
    net::post(factory_loop,
              [done = std::move(done)]() mutable { std::move(done)(absl::OkStatus()); });
  };
  f.close = [&](aconn&) { --alive; };
  net::io_context io;
  {
    auto made = sluice::pool<aconn>::make(
        std::move(f),
        {.max_size = 4, .min_idle = 2, .keepalive_interval = 1ns, .validation_bypass = 0ns});
    REQUIRE(made.ok());
    auto p = std::move(*made);
    constexpr int coroutines = 8;
    for (int c = 0; c < coroutines; ++c) {
      net::co_spawn(
          net::make_strand(io),
          [&]() -> net::awaitable<void> {
            for (int i = 0; i < 50; ++i) {
              auto [ec, lease] =
                  co_await sluice::asio::async_acquire(p, 10s, net::as_tuple(net::use_awaitable));
              if (ec) break;  // closed
              co_await net::post(co_await net::this_coro::executor, net::use_awaitable);
            }
            ++completed;
          },
          net::detached);
    }
    std::vector<std::thread> runners;
    for (int t = 0; t < io_threads; ++t) runners.emplace_back([&] { io.run(); });
    // Maintenance starts refills and keep-alive pings on the factory's threads, while the
    // coroutines acquire; then the handle goes away with all of that still running.
    for (int i = 0; i < 20; ++i) (void)p.maintain();
    (void)p.close(std::chrono::steady_clock::now());
    // p is destroyed at the end of this scope, with callbacks and operations maybe in flight.
    for (auto& t : runners) t.join();
  }
  factory_loop.join();
  INFO("io_threads=" << io_threads);
  CHECK(completed == 8);
  CHECK(alive == 0);
}

TEST_CASE("pool_async: a keep-alive ping in flight counts towards min_idle (no extra connect)",
          "[pool_async]") {
  async_backend b;
  manual_clock clock;
  auto p = make_mpool(b, clock, {.max_size = 4, .min_idle = 1, .keepalive_interval = 30s}, true);
  CHECK(p.maintain().pending == 1);
  b.finish_create(true);
  CHECK(p.stats().idle == 1);
  for (int round = 0; round < 3; ++round) {
    clock.advance(31s);
    // The idle connection is reserved while it is pinged: it is still there, so the pass must
    // not open another one to "restore" min_idle.
    const auto r = p.maintain();
    CHECK(r.keepalive_checked == 1);
    CHECK(r.pending == 1);
    CHECK(b.pending_pings() == 1);
    CHECK(b.pending_creates() == 0);
    b.finish_ping(true);
    CHECK(p.stats().idle == 1);
  }
  CHECK(b.create_calls == 1);
  CHECK(p.stats().size == 1);
  // A failed ping closes the connection; the next pass refills.
  clock.advance(31s);
  CHECK(p.maintain().pending == 1);
  b.finish_ping(false);
  CHECK(p.stats().size == 0);
  CHECK(p.maintain().pending == 1);
  CHECK(b.pending_creates() == 1);
  b.finish_create(true);
  CHECK(p.stats().idle == 1);
}

TEST_CASE("pool_async: a queued acquire whose executor is destroyed leaves the queue",
          "[pool_async]") {
  async_backend b;
  manual_clock clock;
  net::io_context io;
  auto p = make_mpool(b, clock, {.max_size = 1});
  outcome first;
  sluice::asio::async_acquire(p, 1s, record(io, first));
  io.poll();
  b.finish_create(true);
  io.restart();
  io.run();
  REQUIRE(static_cast<bool>(first.lease));
  {
    // Queued on a context that is destroyed with the wait pending (e.g. a worker's io_context
    // torn down at shutdown while the pool lives on): its handler is destroyed, never invoked.
    net::io_context dying;
    outcome second;
    sluice::asio::async_acquire(p, 1h, record(dying, second));
    REQUIRE(p.stats().waiters == 1);
  }
  // The pool must not keep the dead operation queued: handing it the connection would touch its
  // destroyed timer and executor.
  REQUIRE(p.stats().waiters == 0);
  first.lease.release();
  CHECK(p.stats().idle == 1);
  CHECK(p.try_acquire().has_value());
}
