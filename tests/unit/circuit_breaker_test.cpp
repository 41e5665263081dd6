#include "sluice/circuit_breaker.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <sluice/clock.hpp>
#include <sluice/health_recorder.hpp>
#include <sluice/testing/manual_clock.hpp>

#include "alloc_counter.hpp"
#include "catch.hpp"

using namespace std::chrono_literals;
using sluice::breaker_state;
using sluice::call_outcome;
using sluice::circuit_breaker_options;
using sluice::testing::manual_clock;
using breaker = sluice::circuit_breaker<manual_clock>;
using window_kind = sluice::health_recorder_options::window_kind;

namespace {

// Deterministic options: no jitter, a 10-call window judged from 10 calls, 3 probes.
circuit_breaker_options test_options() {
  circuit_breaker_options o;
  o.window.window_size = 10;
  o.minimum_calls = 10;
  o.failure_rate_threshold = 0.5;
  o.half_open_probes = 3;
  o.open_duration = 10s;
  o.open_duration_multiplier = 2.0;
  o.max_open_duration = 35s;
  o.open_duration_jitter = 0.0;
  o.reset_open_duration_after = 60s;
  o.max_half_open_duration = 0s;
  return o;
}

void record_n(breaker& b, int n, call_outcome o) {
  for (int i = 0; i < n; ++i) {
    auto p = b.try_acquire();
    REQUIRE(p);
    p->record(o);
  }
}

// Trips a closed breaker (10 failures) and returns how long it stays open.
std::chrono::nanoseconds trip(breaker& b) {
  REQUIRE(b.state() == breaker_state::closed);
  record_n(b, 10, call_outcome::failure);
  REQUIRE(b.state() == breaker_state::open);
  auto r = b.try_acquire();
  REQUIRE(!r);
  return r.rejection().retry_after;
}

// Moves an open breaker to half-open and lets all probes succeed.
void recover(breaker& b, manual_clock& clock) {
  auto r = b.try_acquire();
  REQUIRE(!r);
  clock.advance(r.rejection().retry_after);
  for (std::uint32_t i = 0; i < b.options().half_open_probes; ++i) {
    auto p = b.try_acquire();
    REQUIRE(p);
    REQUIRE(p->is_probe());
    p->record_success();
  }
  REQUIRE(b.state() == breaker_state::closed);
}

}  // namespace

TEST_CASE("circuit_breaker: invalid options are rejected", "[circuit_breaker]") {
  auto bad = [](auto mutate) {
    circuit_breaker_options o = test_options();
    mutate(o);
    return breaker::create(o, manual_clock()).status().code() == absl::StatusCode::kInvalidArgument;
  };
  CHECK(bad([](auto& o) { o.failure_rate_threshold = 0.0; }));
  CHECK(bad([](auto& o) { o.failure_rate_threshold = 1.5; }));
  CHECK(bad([](auto& o) { o.slow_call_rate_threshold = 0.0; }));
  CHECK(bad([](auto& o) { o.minimum_calls = 0; }));
  CHECK(bad([](auto& o) { o.half_open_probes = 0; }));
  CHECK(bad([](auto& o) { o.open_duration = 0s; }));
  CHECK(bad([](auto& o) { o.max_open_duration = 1s; }));
  CHECK(bad([](auto& o) { o.open_duration_multiplier = 0.5; }));
  CHECK(bad([](auto& o) { o.open_duration_jitter = 1.0; }));
  CHECK(bad([](auto& o) { o.slow_start_initial_fraction = 0.0; }));
  CHECK(bad([](auto& o) { o.window.window_size = 0; }));
  CHECK(breaker::create(test_options(), manual_clock()).ok());
  circuit_breaker_options o = test_options();
  o.half_open_probes = 0;
  CHECK_THROWS_AS(breaker(o, manual_clock()), std::invalid_argument);
}

TEST_CASE("circuit_breaker: minimum calls gate the failure rate", "[circuit_breaker]") {
  manual_clock clock;
  breaker b(test_options(), clock);
  record_n(b, 9, call_outcome::failure);  // 100% failures but only 9 calls
  CHECK(b.state() == breaker_state::closed);
  record_n(b, 1, call_outcome::failure);
  CHECK(b.state() == breaker_state::open);
}

TEST_CASE("circuit_breaker: trips exactly at the failure-rate threshold", "[circuit_breaker]") {
  manual_clock clock;
  breaker b(test_options(), clock);
  record_n(b, 6, call_outcome::success);
  record_n(b, 4, call_outcome::failure);  // 40% < 50%
  CHECK(b.state() == breaker_state::closed);
  record_n(b, 1, call_outcome::failure);  // window: 5 successes, 5 failures = 50%
  CHECK(b.state() == breaker_state::open);
  const auto m = b.metrics();
  CHECK(m.successful_calls == 6);
  CHECK(m.failed_calls == 5);
  CHECK(m.transitions[static_cast<int>(breaker_state::open)] == 1);
  CHECK(m.consecutive_trips == 1);
}

TEST_CASE("circuit_breaker: open rejects without throwing and reports the time left",
          "[circuit_breaker]") {
  manual_clock clock;
  breaker b(test_options(), clock);
  CHECK(trip(b) == 10s);
  clock.advance(4s);
  auto r = b.try_acquire();
  REQUIRE(!r);
  CHECK(r.rejection().state == breaker_state::open);
  CHECK(r.rejection().retry_after == 6s);
  CHECK(r.status().code() == absl::StatusCode::kUnavailable);
  const absl::Status described = r.rejection().to_status();
  CHECK(described.code() == absl::StatusCode::kUnavailable);
  CHECK(std::string(described.message()).find("retry after 6000 ms") != std::string::npos);
  bool ran = false;
  absl::Status st = b.execute([&] { ran = true; });
  CHECK_FALSE(ran);
  CHECK(st.code() == absl::StatusCode::kUnavailable);
  absl::StatusOr<int> v = b.execute([] { return 1; });
  CHECK(v.status().code() == absl::StatusCode::kUnavailable);
  CHECK(b.metrics().rejected_calls == 4);  // trip() and the three above
}

TEST_CASE("circuit_breaker: half-open after the open duration, closed after N good probes",
          "[circuit_breaker]") {
  manual_clock clock;
  breaker b(test_options(), clock);
  trip(b);
  clock.advance(9s);
  CHECK(b.state() == breaker_state::open);
  clock.advance(1s);
  CHECK(b.state() == breaker_state::half_open);
  std::vector<breaker::permit> probes;
  for (int i = 0; i < 3; ++i) {
    auto p = b.try_acquire();
    REQUIRE(p);
    CHECK(p->is_probe());
    probes.push_back(std::move(*p));
  }
  auto extra = b.try_acquire();
  REQUIRE(!extra);
  CHECK(extra.rejection().state == breaker_state::half_open);
  probes[0].record_success();
  probes[1].record_success();
  CHECK(b.state() == breaker_state::half_open);
  CHECK_FALSE(b.try_acquire());  // two results + one out: still no room
  probes[2].record_success();
  CHECK(b.state() == breaker_state::closed);
  auto p = b.try_acquire();
  REQUIRE(p);
  CHECK_FALSE(p->is_probe());
  // The window starts clean after closing: 9 failures do not trip (minimum calls).
  p->record_failure();
  record_n(b, 8, call_outcome::failure);
  CHECK(b.state() == breaker_state::closed);
}

TEST_CASE("circuit_breaker: a failing probe re-opens for longer", "[circuit_breaker]") {
  manual_clock clock;
  circuit_breaker_options o = test_options();
  o.failure_rate_threshold = 0.3;  // 1 failure of 3 probes is 33%: enough to re-open at once
  breaker b(o, clock);
  trip(b);
  clock.advance(10s);
  auto p1 = b.try_acquire();
  auto p2 = b.try_acquire();
  REQUIRE(p1);
  REQUIRE(p2);
  p1->record_success();
  p2->record_failure();
  CHECK(b.state() == breaker_state::open);
  auto r = b.try_acquire();
  REQUIRE(!r);
  CHECK(r.rejection().retry_after == 20s);
}

TEST_CASE("circuit_breaker: a dropped or ignored probe permit frees its slot",
          "[circuit_breaker]") {
  manual_clock clock;
  breaker b(test_options(), clock);
  trip(b);
  clock.advance(10s);
  std::vector<breaker::permit> probes;
  for (int i = 0; i < 3; ++i) probes.push_back(std::move(*b.try_acquire()));
  CHECK_FALSE(b.try_acquire());
  probes.pop_back();  // dropped without a result: the call was cancelled
  {
    auto p = b.try_acquire();
    REQUIRE(p);  // the freed slot is handed out again
    p->record_ignored();
  }
  auto again = b.try_acquire();
  REQUIRE(again);
  CHECK_FALSE(b.try_acquire());
  for (auto& p : probes) p.record_success();
  again->record_success();
  CHECK(b.state() == breaker_state::closed);
  CHECK(b.metrics().ignored_calls == 2);
}

TEST_CASE("circuit_breaker: the open duration grows, caps and resets after a healthy period",
          "[circuit_breaker]") {
  manual_clock clock;
  breaker b(test_options(), clock);
  CHECK(trip(b) == 10s);
  recover(b, clock);
  CHECK(trip(b) == 20s);  // tripped again soon after closing
  recover(b, clock);
  CHECK(trip(b) == 35s);  // 40 s capped at 35 s
  recover(b, clock);
  CHECK(trip(b) == 35s);
  CHECK(b.metrics().consecutive_trips == 4);
  recover(b, clock);
  clock.advance(60s);  // healthy for reset_open_duration_after
  CHECK(trip(b) == 10s);
  CHECK(b.metrics().consecutive_trips == 1);
}

TEST_CASE("circuit_breaker: jitter keeps open durations within bounds", "[circuit_breaker]") {
  manual_clock clock;
  circuit_breaker_options o = test_options();
  o.open_duration_jitter = 0.2;
  o.max_open_duration = 11s;
  breaker b(o, clock);
  bool varied = false;
  std::chrono::nanoseconds first{};
  for (int i = 0; i < 20; ++i) {
    const auto d = trip(b);
    INFO("open for " << d.count() << " ns");
    CHECK(d >= 8s);
    CHECK(d <= 11s);
    if (i == 0) first = d;
    if (d != first) varied = true;
    b.reset();
  }
  CHECK(varied);
}

TEST_CASE("circuit_breaker: half-open that lasts too long opens again", "[circuit_breaker]") {
  manual_clock clock;
  circuit_breaker_options o = test_options();
  o.max_half_open_duration = 5s;
  o.half_open_probes = 1;
  breaker b(o, clock);
  trip(b);
  clock.advance(10s);
  auto hung = b.try_acquire();  // the only probe, and it never reports
  REQUIRE(hung);
  clock.advance(4s);
  CHECK(b.state() == breaker_state::half_open);
  auto full = b.try_acquire();  // refused on the lock-free path: all probes out
  REQUIRE(!full);
  CHECK(full.rejection().state == breaker_state::half_open);
  clock.advance(1s);
  SECTION("noticed by state()") { CHECK(b.state() == breaker_state::open); }
  SECTION("noticed by try_acquire()") {
    auto r = b.try_acquire();
    REQUIRE(!r);
    CHECK(r.rejection().state == breaker_state::open);
    CHECK(r.rejection().retry_after == 20s);
  }
  hung->record_success();  // too late: belongs to the expired half-open period
  CHECK(b.state() == breaker_state::open);
  auto r = b.try_acquire();
  REQUIRE(!r);
  CHECK(r.rejection().retry_after == 20s);
}

TEST_CASE("circuit_breaker: slow calls trip the breaker", "[circuit_breaker]") {
  manual_clock clock;
  circuit_breaker_options o = test_options();
  o.slow_call_duration = 2s;
  o.slow_call_rate_threshold = 0.5;
  breaker b(o, clock);
  SECTION("measured by the permit on the clock") {
    for (int i = 0; i < 5; ++i) {
      auto p = b.try_acquire();
      REQUIRE(p);
      clock.advance(1999ms);  // just under the limit
      p->record_success();
    }
    for (int i = 0; i < 4; ++i) {
      absl::Status st = b.execute([&] { clock.advance(2s); });  // a slow success
      CHECK(st.ok());
    }
    CHECK(b.state() == breaker_state::closed);
    CHECK(b.metrics().slow_calls == 4);
    CHECK(b.execute([&] { clock.advance(3s); }).ok());  // 5 of 10 slow
    CHECK(b.state() == breaker_state::open);
  }
  SECTION("measured by the caller") {
    for (int i = 0; i < 5; ++i) b.try_acquire()->record_success(100ms);
    for (int i = 0; i < 4; ++i) b.try_acquire()->record_failure(5s);  // slow failures
    CHECK(b.state() == breaker_state::closed);
    b.try_acquire()->record(call_outcome::success, 2s);
    CHECK(b.state() == breaker_state::open);
    CHECK(b.metrics().slow_calls == 5);
  }
}

TEST_CASE("circuit_breaker: a time-based window forgets old failures", "[circuit_breaker]") {
  manual_clock clock;
  circuit_breaker_options o = test_options();
  o.window = {.kind = window_kind::time_based, .window_duration = 10s, .buckets = 10};
  breaker b(o, clock);
  record_n(b, 9, call_outcome::failure);
  clock.advance(11s);  // those failures leave the window
  record_n(b, 9, call_outcome::success);
  record_n(b, 1, call_outcome::failure);
  CHECK(b.state() == breaker_state::closed);
  record_n(b, 7, call_outcome::failure);  // 8 failures of 17 calls in the window
  CHECK(b.state() == breaker_state::closed);
  record_n(b, 1, call_outcome::failure);  // 9 of 18: 50%
  CHECK(b.state() == breaker_state::open);
}

TEST_CASE("circuit_breaker: the slow-start ramp admits a rising fraction", "[circuit_breaker]") {
  manual_clock clock;
  circuit_breaker_options o = test_options();
  o.slow_start_duration = 10s;
  o.slow_start_initial_fraction = 0.2;
  breaker b(o, clock);
  trip(b);
  recover(b, clock);
  auto admitted = [&] {
    int n = 0;
    for (int i = 0; i < 4000; ++i) {
      auto p = b.try_acquire();
      if (p) {
        ++n;
        p->record_ignored();
      } else {
        REQUIRE(p.rejection().state == breaker_state::closed);
      }
    }
    return n / 4000.0;
  };
  const double at0 = admitted();
  clock.advance(5s);
  const double at5 = admitted();
  clock.advance(4s);
  const double at9 = admitted();
  clock.advance(1s);
  const double at10 = admitted();
  INFO(at0 << " " << at5 << " " << at9 << " " << at10);
  CHECK(at0 > 0.15);
  CHECK(at0 < 0.25);
  CHECK(at5 > 0.55);  // 0.2 + 0.8 * 0.5 = 0.6
  CHECK(at5 < 0.65);
  CHECK(at9 > 0.89);  // 0.92
  CHECK(at10 == 1.0);
  CHECK(b.state() == breaker_state::closed);
}

TEST_CASE("circuit_breaker: forced open and disabled are operator states", "[circuit_breaker]") {
  manual_clock clock;
  breaker b(test_options(), clock);
  b.force_open();
  CHECK(b.state() == breaker_state::forced_open);
  clock.advance(1h);
  auto r = b.try_acquire();
  REQUIRE(!r);
  CHECK(r.rejection().state == breaker_state::forced_open);
  b.disable();
  CHECK(b.state() == breaker_state::disabled);
  record_n(b, 50, call_outcome::failure);  // not judged
  CHECK(b.state() == breaker_state::disabled);
  b.reset();
  CHECK(b.state() == breaker_state::closed);
  CHECK(b.metrics().window.calls == 0);
  record_n(b, 9, call_outcome::failure);
  CHECK(b.state() == breaker_state::closed);
}

TEST_CASE("circuit_breaker: listeners see every transition in order", "[circuit_breaker]") {
  manual_clock clock;
  breaker b(test_options(), clock);
  std::vector<std::pair<breaker_state, breaker_state>> seen;
  std::vector<breaker_state> observed_inside;
  b.add_listener([&](const breaker::transition& t) {
    seen.emplace_back(t.from, t.to);
    observed_inside.push_back(b.state());  // a listener may call the breaker
    if (t.to == breaker_state::open) CHECK(t.open_for > 0s);
  });
  trip(b);
  recover(b, clock);
  b.force_open();
  b.disable();
  b.reset();
  const std::vector<std::pair<breaker_state, breaker_state>> expected = {
      {breaker_state::closed, breaker_state::open},
      {breaker_state::open, breaker_state::half_open},
      {breaker_state::half_open, breaker_state::closed},
      {breaker_state::closed, breaker_state::forced_open},
      {breaker_state::forced_open, breaker_state::disabled},
      {breaker_state::disabled, breaker_state::closed},
  };
  CHECK(seen == expected);
  CHECK(observed_inside.size() == expected.size());
  const auto m = b.metrics();
  CHECK(m.transitions[static_cast<int>(breaker_state::open)] == 1);
  CHECK(m.transitions[static_cast<int>(breaker_state::half_open)] == 1);
  CHECK(m.transitions[static_cast<int>(breaker_state::closed)] == 2);
}

TEST_CASE("circuit_breaker: outcomes are classified by status, exception and result",
          "[circuit_breaker]") {
  manual_clock clock;
  circuit_breaker_options o = test_options();
  o.classify_exception = sluice::classify_exceptions<std::invalid_argument>(call_outcome::ignored);
  breaker b(o, clock);
  CHECK(b.execute([] { return absl::NotFoundError("no such row"); }).code() ==
        absl::StatusCode::kNotFound);  // an answer: success
  CHECK(b.execute([] { return absl::CancelledError("gave up"); }).code() ==
        absl::StatusCode::kCancelled);  // ignored
  CHECK(b.execute([] { return absl::StatusOr<int>(absl::UnavailableError("down")); })
            .status()
            .code() == absl::StatusCode::kUnavailable);  // failure
  CHECK_THROWS_AS(b.execute([]() -> int { throw std::invalid_argument("bad"); }),
                  std::invalid_argument);  // ignored
  CHECK_THROWS_AS(b.execute([] { throw std::runtime_error("boom"); }), std::runtime_error);
  absl::StatusOr<int> v =
      b.execute([] { return -1; },
                [](int x) { return x < 0 ? call_outcome::failure : call_outcome::success; });
  CHECK(*v == -1);  // the value is returned, but recorded as a failure
  absl::StatusOr<std::string> s = b.execute([] { return absl::StatusOr<std::string>("ok"); });
  CHECK(*s == "ok");
  const auto m = b.metrics();
  CHECK(m.successful_calls == 2);
  CHECK(m.failed_calls == 3);
  CHECK(m.ignored_calls == 2);
  CHECK(m.window.calls == 5);
  CHECK(m.window.failures == 3);
}

TEST_CASE("circuit_breaker: results of calls admitted before a transition are not judged",
          "[circuit_breaker]") {
  manual_clock clock;
  breaker b(test_options(), clock);
  auto late = b.try_acquire();
  REQUIRE(late);
  trip(b);
  recover(b, clock);
  late->record_failure();  // from the previous closed period
  CHECK(b.metrics().window.calls == 0);
  CHECK(b.metrics().failed_calls == 11);
}

TEST_CASE("circuit_breaker: the closed paths and rejections allocate nothing",
          "[circuit_breaker]") {
  circuit_breaker_options counted;
  counted.open_duration = 1h;
  counted.max_open_duration = 1h;
  sluice::circuit_breaker<> b1(counted);
  circuit_breaker_options timed = counted;
  timed.window = {.kind = window_kind::time_based, .window_duration = 10s};
  timed.slow_call_duration = 1s;
  sluice::circuit_breaker<sluice::coarse_clock> b2(timed);
  (void)b1.execute([] {});  // warm the thread's stripe number
  sluice_test::alloc_scope scope;
  for (int i = 0; i < 10000; ++i) {
    CHECK(b1.execute([] {}).ok());
    CHECK(b2.execute([] {}).ok());
    CHECK(b1.execute([] { return absl::StatusOr<int>(1); }).ok());
    auto p = b2.try_acquire();
    p->record_success();
  }
  REQUIRE(scope.allocations() == 0);
  b1.force_open();
  sluice_test::alloc_scope rejecting;
  for (int i = 0; i < 1000; ++i) CHECK(b1.execute([] {}).code() == absl::StatusCode::kUnavailable);
  CHECK(rejecting.allocations() == 0);
}

TEST_CASE("circuit_breaker: half-open admits exactly N probes under concurrent callers",
          "[circuit_breaker]") {
  const int threads = GENERATE(2, 4, 8);
  INFO("threads " << threads);
  manual_clock clock;
  circuit_breaker_options o = test_options();
  o.half_open_probes = 5;
  breaker b(o, clock);
  trip(b);
  clock.advance(10s);
  std::atomic<int> granted{0};
  std::atomic<bool> go{false};
  std::vector<std::vector<breaker::permit>> held(static_cast<std::size_t>(threads));
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      while (!go.load()) std::this_thread::yield();
      for (int i = 0; i < 200; ++i) {
        auto p = b.try_acquire();
        if (p) {
          granted.fetch_add(1);
          held[static_cast<std::size_t>(t)].push_back(std::move(*p));
        }
      }
    });
  }
  go.store(true);
  for (auto& th : pool) th.join();
  CHECK(granted.load() == 5);
  for (auto& v : held) {
    for (auto& p : v) p.record_success();
  }
  CHECK(b.state() == breaker_state::closed);
}

TEST_CASE("circuit_breaker: concurrent stress keeps probes bounded and counters consistent",
          "[circuit_breaker]") {
  const int threads = GENERATE(2, 4, 8);
  const bool time_based = GENERATE(false, true);
  INFO("threads " << threads << (time_based ? ", time-based window" : ", count-based window"));
  manual_clock clock;
  circuit_breaker_options o = test_options();
  o.window.window_size = 50;
  if (time_based) {
    o.window = {.kind = window_kind::time_based, .window_duration = 1ms, .buckets = 4};
    o.slow_call_duration = 40us;  // calls spanning a clock step are slow
    o.slow_call_rate_threshold = 0.9;
  }
  o.minimum_calls = 20;
  o.half_open_probes = 4;
  o.open_duration = 1ms;
  o.max_open_duration = 2ms;
  o.reset_open_duration_after = 1s;
  o.slow_start_duration = 1ms;
  breaker b(o, clock);
  constexpr int total_calls = 1'000'000;
  const int per_thread = total_calls / threads;
  std::atomic<int> probes_out{0};
  std::atomic<int> max_probes_out{0};
  std::atomic<std::uint64_t> admitted{0};
  std::atomic<std::uint64_t> rejected{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::uint64_t x = static_cast<std::uint64_t>(t) * 7919 + 1;
      std::uint64_t mine_admitted = 0, mine_rejected = 0;
      for (int i = 0; i < per_thread; ++i) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        if (t == 0 && i % 8 == 0) clock.advance(50us);
        auto p = b.try_acquire();
        if (!p) {
          ++mine_rejected;
          continue;
        }
        ++mine_admitted;
        const bool probe = p->is_probe();
        if (probe) {
          const int now_out = probes_out.fetch_add(1) + 1;
          int seen = max_probes_out.load();
          while (now_out > seen && !max_probes_out.compare_exchange_weak(seen, now_out)) {
          }
        }
        // Phases of health and sickness, so the breaker keeps cycling.
        const bool sick = ((i / 20000) % 2) == 1;
        const unsigned roll = static_cast<unsigned>(x >> 33) % 100;
        if (probe) probes_out.fetch_sub(1);
        if (roll < 3) {
          // dropped without a result
        } else if (roll < (sick ? 80u : 10u)) {
          p->record_failure();
        } else {
          p->record_success();
        }
      }
      admitted.fetch_add(mine_admitted);
      rejected.fetch_add(mine_rejected);
    });
  }
  for (auto& th : pool) th.join();
  const auto m = b.metrics();
  INFO("open transitions " << m.transitions[1] << ", rejected " << m.rejected_calls);
  CHECK(max_probes_out.load() <= 4);
  CHECK(admitted.load() + rejected.load() ==
        static_cast<std::uint64_t>(per_thread) * static_cast<std::uint64_t>(threads));
  CHECK(m.calls() == admitted.load());
  CHECK(m.rejected_calls == rejected.load());
  CHECK(m.transitions[static_cast<int>(breaker_state::open)] > 0);
  CHECK(m.transitions[static_cast<int>(breaker_state::half_open)] > 0);
  if (!time_based) CHECK(m.window.calls <= 50);
}

TEST_CASE("circuit_breaker: classify_exceptions matches the listed types and derived ones",
          "[circuit_breaker]") {
  const auto classify =
      sluice::classify_exceptions<std::invalid_argument, std::out_of_range>(call_outcome::ignored);
  struct derived : std::invalid_argument {
    derived() : std::invalid_argument("derived") {}
  };
  CHECK(classify(std::make_exception_ptr(std::invalid_argument("x"))) == call_outcome::ignored);
  CHECK(classify(std::make_exception_ptr(std::out_of_range("x"))) == call_outcome::ignored);
  CHECK(classify(std::make_exception_ptr(derived())) == call_outcome::ignored);
  CHECK(classify(std::make_exception_ptr(std::runtime_error("x"))) == call_outcome::failure);
  CHECK(classify(std::make_exception_ptr(42)) == call_outcome::failure);
  const auto success_on = sluice::classify_exceptions<std::logic_error>(call_outcome::success);
  CHECK(success_on(std::make_exception_ptr(std::invalid_argument("x"))) == call_outcome::success);
}

TEST_CASE("circuit_breaker: the header examples compile and behave", "[circuit_breaker]") {
  sluice::circuit_breaker b1({.failure_rate_threshold = 0.5});  // STYLE's example, CTAD
  STATIC_REQUIRE(std::is_same_v<decltype(b1), sluice::circuit_breaker<>>);
  sluice::circuit_breaker<> b2({.failure_rate_threshold = 0.5, .minimum_calls = 20});
  absl::StatusOr<std::string> body = b2.execute([] { return absl::StatusOr<std::string>("x"); });
  CHECK(body.ok());
  if (auto permit = b1.try_acquire()) {
    std::thread t([p = std::move(*permit)]() mutable { p.record(absl::OkStatus()); });
    t.join();
  }
  CHECK(b1.metrics().successful_calls == 1);
  auto created = sluice::circuit_breaker<>::create({.open_duration = std::chrono::seconds(-1)});
  CHECK(created.status().code() == absl::StatusCode::kInvalidArgument);
  auto moved = sluice::circuit_breaker<>::create({}).value();  // movable before use
  CHECK(moved.state() == breaker_state::closed);
}

TEST_CASE("circuit_breaker: an uncapped open duration saturates instead of overflowing",
          "[circuit_breaker]") {
  // nanoseconds::max() is how a user writes "no cap"; the open period must then end "never",
  // not wrap around into the past (which would let probes through at once).
  manual_clock clock;
  circuit_breaker_options o = test_options();
  o.open_duration = std::chrono::nanoseconds::max();
  o.max_open_duration = std::chrono::nanoseconds::max();
  o.max_half_open_duration = std::chrono::nanoseconds::max();
  breaker b(o, clock);
  const auto left = trip(b);
  CHECK(left > std::chrono::hours(24 * 365));
  clock.advance(std::chrono::hours(24));
  CHECK(b.state() == breaker_state::open);
  auto r = b.try_acquire();
  REQUIRE(!r);
  CHECK(r.rejection().state == breaker_state::open);
  CHECK(r.rejection().retry_after > std::chrono::hours(24 * 365));
}
