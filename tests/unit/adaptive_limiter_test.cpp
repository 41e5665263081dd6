#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <optional>
#include <thread>
#include <vector>

#include <sluice/adaptive_limiter.hpp>
#include <sluice/testing/manual_clock.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
using sluice::testing::manual_clock;
using limiter_t = sluice::adaptive_limiter<manual_clock>;
using sluice::call_priority;

namespace {

// A discrete-event simulation of a server with `capacity` workers serving requests FIFO in
// `service` each (so latency = queueing + service), driven by clients with unbounded demand: as
// many requests are in flight as the limiter admits. Time is the limiter's manual clock.
class simulated_server {
 public:
  simulated_server(limiter_t& limiter, manual_clock clock, std::size_t capacity,
                   std::chrono::nanoseconds service)
      : limiter_(limiter), clock_(clock), service_(service), workers_(capacity, clock.now()) {}

  // Changes the service time of requests started from now on (a latency spike).
  void set_service(std::chrono::nanoseconds s) { service_ = s; }

  // Runs until `until`, calling `observe` after every completion.
  void run_until(
      manual_clock::time_point until, const std::function<void()>& observe = [] {}) {
    while (clock_.now() < until) {
      // One priority class (critical: the whole cap), so the admitted concurrency is the limit.
      while (auto p = limiter_.try_acquire(call_priority::critical)) {
        // The worker that frees up first takes the request (FIFO across workers).
        std::pop_heap(workers_.begin(), workers_.end(), std::greater<>());
        const auto begin = std::max(clock_.now(), workers_.back());
        workers_.back() = begin + service_;
        std::push_heap(workers_.begin(), workers_.end(), std::greater<>());
        events_.push_back({begin + service_, std::move(*p)});
        std::push_heap(events_.begin(), events_.end(), later);
      }
      REQUIRE_FALSE(events_.empty());  // the limiter always admits at least min_limit
      std::pop_heap(events_.begin(), events_.end(), later);
      event e = std::move(events_.back());
      events_.pop_back();
      clock_.advance_to(e.done);
      e.permit.record_success();
      observe();
    }
  }

 private:
  struct event {
    manual_clock::time_point done;
    limiter_t::permit permit;
  };
  static bool later(const event& a, const event& b) { return a.done > b.done; }

  limiter_t& limiter_;
  manual_clock clock_;
  std::chrono::nanoseconds service_;
  std::vector<manual_clock::time_point> workers_;  // min-heap of the times workers free up
  std::vector<event> events_;                      // min-heap of completions
};

// Returns the mean learned limit over [from, until) of simulated time, sampled per completion.
double mean_limit(simulated_server& server, limiter_t& limiter, manual_clock clock,
                  manual_clock::time_point until) {
  double sum = 0;
  std::uint64_t n = 0;
  server.run_until(until, [&] {
    sum += limiter.stats().estimated_limit;
    ++n;
  });
  (void)clock;
  return n == 0 ? 0 : sum / static_cast<double>(n);
}

}  // namespace

TEST_CASE("adaptive_limiter: create validates options", "[adaptive_limiter]") {
  manual_clock clock;
  CHECK(limiter_t::create({.min_limit = 0}, clock).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(limiter_t::create({.initial_limit = 5, .min_limit = 10}, clock).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(limiter_t::create({.backoff_ratio = 1.5}, clock).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(limiter_t::create({.admit_fraction = {1.0, 0.0, 0.5}}, clock).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(limiter_t::create({.failure_rate_threshold = 1.0}, clock).status().code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(limiter_t::create({.failure_rate_threshold = -0.1}, clock).status().code() ==
        absl::StatusCode::kInvalidArgument);
  REQUIRE(limiter_t::create({}, clock).ok());
}

TEST_CASE(
    "adaptive_limiter: gradient converges to the server's capacity and recovers after "
    "a latency spike",
    "[adaptive_limiter]") {
  const std::size_t capacity = GENERATE(std::size_t{50}, std::size_t{100});
  INFO("capacity " << capacity);
  manual_clock clock;
  // Probes without jitter, every 4 s, so the spike below falls between two of them: a probe
  // during a transient spike would (by design) adopt the spike's latency until the next probe.
  limiter_t limiter({.initial_limit = 10,
                     .min_limit = 4,
                     .max_limit = 1000,
                     .probe_interval = 4s,
                     .probe_jitter = 0,
                     .probe_samples = 8},
                    clock);
  simulated_server server(limiter, clock, capacity, 10ms);
  const auto t0 = clock.now();
  const double c = static_cast<double>(capacity);

  server.run_until(t0 + 4s);  // converge
  const double settled = mean_limit(server, limiter, clock, t0 + 9s);
  CHECK(settled >= 0.8 * c);
  CHECK(settled <= 1.2 * c);
  CHECK(limiter.stats().probes == 2);  // at ~4 s and ~8 s
  CHECK(limiter.stats().min_rtt == 10ms);

  server.run_until(t0 + 9500ms);
  server.set_service(50ms);  // a 5x latency spike for 2 s
  server.run_until(t0 + 11500ms);
  CHECK(limiter.stats().estimated_limit < 0.5 * c);
  CHECK(limiter.stats().probes == 2);

  server.set_service(10ms);
  server.run_until(t0 + 14s);  // recover
  const double recovered = mean_limit(server, limiter, clock, t0 + 20s);
  CHECK(recovered >= 0.8 * c);
  CHECK(recovered <= 1.2 * c);
}

TEST_CASE("adaptive_limiter: aimd converges to the capacity and recovers after a spike",
          "[adaptive_limiter]") {
  const std::size_t capacity = 60;
  manual_clock clock;
  limiter_t limiter({.algorithm = sluice::adaptive_algorithm::aimd,
                     .initial_limit = 10,
                     .aimd_latency_threshold = 11ms},
                    clock);
  simulated_server server(limiter, clock, capacity, 10ms);
  const auto t0 = clock.now();
  server.run_until(t0 + 10s);
  double settled = mean_limit(server, limiter, clock, t0 + 15s);
  CHECK(settled >= 0.8 * capacity);
  CHECK(settled <= 1.2 * capacity);

  server.set_service(50ms);
  server.run_until(t0 + 18s);
  CHECK(limiter.stats().estimated_limit < 0.5 * capacity);
  server.set_service(10ms);
  server.run_until(t0 + 28s);
  settled = mean_limit(server, limiter, clock, t0 + 33s);
  CHECK(settled >= 0.8 * capacity);
  CHECK(settled <= 1.2 * capacity);
}

TEST_CASE("adaptive_limiter: latencies below the clock's resolution keep the limit finite",
          "[adaptive_limiter]") {
  // Calls that finish within one clock tick measure 0 ns (a coarse clock, a fast dependency):
  // min_rtt and the window's mean are both 0, which must read as "no queueing", not 0/0.
  manual_clock clock;
  limiter_t limiter({.initial_limit = 16, .min_limit = 4, .max_limit = 64}, clock);
  for (int i = 0; i < 500; ++i) {
    auto p = limiter.try_acquire();
    REQUIRE(p);
    p->record_success();
  }
  const auto s = limiter.stats();
  CHECK(std::isfinite(s.estimated_limit));
  CHECK(s.estimated_limit >= 4);
  CHECK(s.estimated_limit <= 64);
  CHECK(limiter.limit() >= 4);
  CHECK(limiter.limit() <= 64);
}

TEST_CASE("adaptive_limiter: min and max bound the limit", "[adaptive_limiter]") {
  manual_clock clock;
  limiter_t limiter({.initial_limit = 10, .min_limit = 8, .max_limit = 12, .min_window_samples = 4},
                    clock);
  // Fast, saturated calls: the limit grows, but not past max.
  for (int round = 0; round < 50; ++round) {
    std::vector<limiter_t::permit> ps;
    while (auto p = limiter.try_acquire(call_priority::critical)) ps.push_back(std::move(*p));
    clock.advance(1ms);
    for (auto& p : ps) p.record_success();
  }
  CHECK(limiter.stats().estimated_limit == 12);
  // Every call dropped: backs off, but not below min.
  for (int round = 0; round < 50; ++round) {
    std::vector<limiter_t::permit> ps;
    while (auto p = limiter.try_acquire(call_priority::critical)) ps.push_back(std::move(*p));
    for (auto& p : ps) p.record_dropped();
  }
  CHECK(limiter.stats().estimated_limit == 8);
}

TEST_CASE("adaptive_limiter: cancelled calls are ignored, drops are never fast samples",
          "[adaptive_limiter]") {
  manual_clock clock;
  limiter_t limiter({.initial_limit = 20, .min_limit = 2, .max_limit = 100}, clock);
  // Establish a 10 ms baseline at a used limit.
  for (int round = 0; round < 3; ++round) {
    std::vector<limiter_t::permit> ps;
    while (auto p = limiter.try_acquire(call_priority::critical)) ps.push_back(std::move(*p));
    clock.advance(10ms);
    for (auto& p : ps) p.record_success();
  }
  const double before = limiter.stats().estimated_limit;
  CHECK(before > 20);

  // Cancelled calls that took an hour say nothing: the limit stays.
  for (int round = 0; round < 5; ++round) {
    std::vector<limiter_t::permit> ps;
    while (auto p = limiter.try_acquire(call_priority::critical)) ps.push_back(std::move(*p));
    clock.advance(1h);
    for (auto& p : ps) p.record_ignored();
  }
  {
    auto p = limiter.try_acquire();
    REQUIRE(p.has_value());
  }  // destroyed unrecorded: ignored too
  CHECK(limiter.stats().estimated_limit == before);
  CHECK(limiter.stats().ignored > 20);
  const auto samples = limiter.stats().samples;

  // Instant failures are not "fast calls": the limit must go down, not up.
  for (int round = 0; round < 3; ++round) {
    std::vector<limiter_t::permit> ps;
    while (auto p = limiter.try_acquire(call_priority::critical)) ps.push_back(std::move(*p));
    for (auto& p : ps) p.record_dropped();
  }
  CHECK(limiter.stats().estimated_limit < before);
  CHECK(limiter.stats().samples == samples);
  CHECK(limiter.stats().dropped > 0);
  CHECK(limiter.stats().min_rtt == 10ms);  // drops never touched the latency baseline
}

TEST_CASE("adaptive_limiter: priorities keep a share for critical calls", "[adaptive_limiter]") {
  manual_clock clock;
  limiter_t limiter({.initial_limit = 20, .min_limit = 4}, clock);
  std::vector<limiter_t::permit> held;
  while (auto p = limiter.try_acquire(call_priority::sheddable)) held.push_back(std::move(*p));
  CHECK(held.size() == 15);  // 0.75 x 20
  while (auto p = limiter.try_acquire(call_priority::normal)) held.push_back(std::move(*p));
  CHECK(held.size() == 18);  // 0.9 x 20
  CHECK_FALSE(limiter.try_acquire(call_priority::sheddable).has_value());
  while (auto p = limiter.try_acquire(call_priority::critical)) held.push_back(std::move(*p));
  CHECK(held.size() == 20);
  CHECK(limiter.in_flight() == 20);
  held.clear();  // unrecorded permits: ignored, slots freed
  CHECK(limiter.in_flight() == 0);
  CHECK(limiter.stats().ignored == 20);
}

TEST_CASE("adaptive_limiter: concurrent admission never exceeds the limit",
          "[adaptive_limiter][stress]") {
  const int threads = GENERATE(2, 4, 8);
  manual_clock clock;
  limiter_t limiter({.initial_limit = 16, .min_limit = 4, .max_limit = 64}, clock);
  std::atomic<bool> over{false};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        auto p = limiter.try_acquire(static_cast<call_priority>(i % 3));
        if (!p) continue;
        if (limiter.in_flight() > 64) over = true;
        if (i % 64 == 0) (void)limiter.stats();  // snapshots race with recording and resets
        if ((i + t) % 3 == 0)
          p->record_success();
        else if ((i + t) % 3 == 1)
          p->record_dropped();
      }
    });
  }
  for (auto& w : workers) w.join();
  CHECK_FALSE(over.load());
  CHECK(limiter.in_flight() == 0);
  const auto s = limiter.stats();
  CHECK(s.estimated_limit >= 4);
  CHECK(s.estimated_limit <= 64);
}

TEST_CASE(
    "adaptive_limiter: aimd backs off when the recorder's failure rate exceeds the "
    "threshold, not at or below it",
    "[adaptive_limiter]") {
  // One window = 10 calls (min_window_samples 10, limit 10), all admitted at once (the cap is
  // used), `failures` of them dropped: 2/10 is at the 0.2 threshold, 3/10 above it.
  const int failures = GENERATE(0, 1, 2, 3, 5, 10);
  INFO("failures " << failures);
  manual_clock clock;
  limiter_t limiter({.algorithm = sluice::adaptive_algorithm::aimd,
                     .initial_limit = 10,
                     .min_limit = 4,
                     .max_limit = 100,
                     .min_window_samples = 10,
                     .failure_rate_threshold = 0.2},
                    clock);
  std::vector<limiter_t::permit> ps;
  while (auto p = limiter.try_acquire(call_priority::critical)) ps.push_back(std::move(*p));
  REQUIRE(ps.size() == 10);
  clock.advance(1ms);
  for (int i = 0; i < 9; ++i) {
    if (i < failures) {
      ps[static_cast<std::size_t>(i)].record_dropped();
    } else {
      ps[static_cast<std::size_t>(i)].record_success();
    }
  }
  // The recorder's snapshot of the window in progress is what stats() exposes.
  const auto before = limiter.stats();
  CHECK(before.health.calls == 9);
  CHECK(before.health.failures == static_cast<std::uint64_t>(std::min(failures, 9)));
  CHECK(before.health.slow_calls == 0);
  CHECK(before.estimated_limit == 10);
  if (failures == 10) {
    ps[9].record_dropped();
  } else {
    ps[9].record_success();
  }
  const auto after = limiter.stats();
  if (failures > 2) {
    CHECK(after.estimated_limit == Approx(9.0));  // 10 x backoff_ratio 0.9
  } else {
    CHECK(after.estimated_limit == 11);  // additive increase: the cap was used
  }
  CHECK(after.health.calls == 0);  // the window closed: the recorder starts afresh
  CHECK(after.dropped == static_cast<std::uint64_t>(failures));
}

TEST_CASE(
    "adaptive_limiter: a failure backs the limit off once, then the next window is judged "
    "on its own",
    "[adaptive_limiter]") {
  manual_clock clock;
  limiter_t limiter({.algorithm = sluice::adaptive_algorithm::aimd,
                     .initial_limit = 10,
                     .min_limit = 4,
                     .max_limit = 100,
                     .min_window_samples = 5,
                     .failure_rate_threshold = 0.2},
                    clock);
  auto window = [&](int drops) {
    std::vector<limiter_t::permit> ps;
    while (auto p = limiter.try_acquire(call_priority::critical)) ps.push_back(std::move(*p));
    clock.advance(1ms);
    int i = 0;
    for (auto& p : ps) {
      if (i++ < drops) {
        p.record_dropped();
      } else {
        p.record_success();
      }
    }
  };
  window(5);  // 5/10 > 0.2: 10 -> 9 (the window: max(5, limit) calls)
  CHECK(limiter.stats().estimated_limit == Approx(9.0));
  window(0);  // a clean window: the earlier drops are forgotten, 9 -> 10
  CHECK(limiter.stats().estimated_limit == Approx(10.0));
}

TEST_CASE("adaptive_limiter: ignored and cancelled calls do not count in the failure rate",
          "[adaptive_limiter]") {
  manual_clock clock;
  limiter_t limiter({.algorithm = sluice::adaptive_algorithm::aimd,
                     .initial_limit = 10,
                     .min_limit = 4,
                     .max_limit = 100,
                     .min_window_samples = 10,
                     .failure_rate_threshold = 0.2},
                    clock);
  std::vector<limiter_t::permit> ps;
  while (auto p = limiter.try_acquire(call_priority::critical)) ps.push_back(std::move(*p));
  REQUIRE(ps.size() == 10);
  clock.advance(1ms);
  ps[0].record_dropped();
  ps[1].record_dropped();
  for (std::size_t i = 2; i < 5; ++i) ps[i].record_ignored();  // cancelled by the caller
  ps.erase(ps.begin() + 7, ps.end());  // three destroyed unrecorded: ignored too
  {
    const auto s = limiter.stats();
    CHECK(s.ignored == 6);
    CHECK(s.health.calls == 2);  // only the drops are in the window
    CHECK(s.health.failures == 2);
    CHECK(s.health.failure_rate == 1.0);
    CHECK(s.estimated_limit == 10);  // no update: ignored calls do not fill the window either
  }
  // Eight successes close the window: 2 failures / 10 calls = 0.2, not above the threshold. Had
  // the six ignored calls counted as failures (8/16) the limit would back off; had they counted
  // as calls the window would have closed early.
  for (std::size_t i = 5; i < 7; ++i) ps[i].record_success();
  std::vector<limiter_t::permit> more;
  for (int i = 0; i < 6; ++i) {
    auto p = limiter.try_acquire(call_priority::critical);
    REQUIRE(p.has_value());
    more.push_back(std::move(*p));
  }
  clock.advance(1ms);
  for (std::size_t i = 0; i < 5; ++i) more[i].record_success();
  CHECK(limiter.stats().health.calls == 9);
  CHECK(limiter.stats().estimated_limit == 10);
  more[5].record_success();
  CHECK(limiter.stats().estimated_limit == 11);
  CHECK(limiter.stats().health.calls == 0);
  // Control: three drops in an 11-call window (3/11 > 0.2) do back off.
  std::vector<limiter_t::permit> next;
  while (auto p = limiter.try_acquire(call_priority::critical)) next.push_back(std::move(*p));
  REQUIRE(next.size() == 11);
  for (std::size_t i = 0; i < 11; ++i) {
    if (i < 3) {
      next[i].record_dropped();  // 3/11 > 0.2
    } else {
      next[i].record_success();
    }
  }
  CHECK(limiter.stats().estimated_limit == Approx(9.9));
}

TEST_CASE("adaptive_limiter: aimd records calls slower than its latency threshold as slow",
          "[adaptive_limiter]") {
  manual_clock clock;
  limiter_t limiter({.algorithm = sluice::adaptive_algorithm::aimd,
                     .initial_limit = 10,
                     .min_limit = 4,
                     .max_limit = 100,
                     .min_window_samples = 10,
                     .aimd_latency_threshold = 5ms},
                    clock);
  auto fast = limiter.try_acquire();
  auto slow = limiter.try_acquire();
  auto slow_drop = limiter.try_acquire();
  REQUIRE((fast && slow && slow_drop));
  clock.advance(2ms);
  fast->record_success();
  clock.advance(10ms);
  slow->record_success();
  slow_drop->record_dropped();  // a failure's latency is not judged: not marked slow
  const auto h = limiter.stats().health;
  CHECK(h.calls == 3);
  CHECK(h.failures == 1);
  CHECK(h.slow_calls == 1);
}

TEST_CASE("adaptive_limiter: gradient backs off on the recorder's failure rate above the threshold",
          "[adaptive_limiter]") {
  const int failures = GENERATE(2, 3);
  INFO("failures " << failures);
  manual_clock clock;
  limiter_t limiter({.initial_limit = 10,
                     .min_limit = 4,
                     .max_limit = 100,
                     .min_window_samples = 10,
                     .failure_rate_threshold = 0.25,
                     .probe_interval = 1h},
                    clock);
  std::vector<limiter_t::permit> ps;
  while (auto p = limiter.try_acquire(call_priority::critical)) ps.push_back(std::move(*p));
  REQUIRE(ps.size() == 10);
  clock.advance(10ms);
  for (int i = 0; i < 10; ++i) {
    if (i < failures) {
      ps[static_cast<std::size_t>(i)].record_dropped();
    } else {
      ps[static_cast<std::size_t>(i)].record_success();
    }
  }
  const auto s = limiter.stats();
  if (failures == 3) {
    CHECK(s.estimated_limit == Approx(9.0));  // 3/10 > 0.25: x 0.9
  } else {
    // 2/10 <= 0.25: the latency decides (all at min_rtt: grow by smoothing x sqrt(10)).
    CHECK(s.estimated_limit == Approx(10 + 0.2 * std::sqrt(10.0)));
  }
  CHECK(s.min_rtt == 10ms);
}
