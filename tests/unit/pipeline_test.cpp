#include "sluice/pipeline.hpp"

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <sluice/bulkhead.hpp>
#include <sluice/circuit_breaker.hpp>
#include <sluice/fallback.hpp>
#include <sluice/retry.hpp>
#include <sluice/retry_budget.hpp>
#include <sluice/testing/manual_clock.hpp>
#include <sluice/timeout.hpp>

#include "alloc_counter.hpp"
#include "catch.hpp"
#include "fake_breaker.hpp"

using namespace std::chrono_literals;
using manual = sluice::testing::manual_clock;
using manual_deadline = sluice::deadline<manual>;

namespace {

// Records when it is entered and left.
struct trace_policy {
  using sluice_policy = void;
  std::vector<std::string>* log;
  std::string name;
  template <class Ctx, class Next>
  auto run(Ctx&, Next&& next) {
    log->push_back(name + ">");
    auto r = next();
    log->push_back("<" + name);
    return r;
  }
};

using sluice_test::fake_breaker;

}  // namespace

TEST_CASE("pipeline: the first policy is the outermost", "[pipeline]") {
  std::vector<std::string> log;
  auto p =
      sluice::pipeline(trace_policy{&log, "a"}, trace_policy{&log, "b"}, trace_policy{&log, "c"});
  auto r = p.execute([&] {
    log.push_back("fn");
    return 3;
  });
  REQUIRE(r.ok());
  CHECK(*r == 3);
  CHECK(log == std::vector<std::string>{"a>", "b>", "c>", "fn", "<c", "<b", "<a"});
}

TEST_CASE("pipeline: callables may return T, StatusOr, Status or void", "[pipeline]") {
  std::vector<std::string> log;
  auto p = sluice::pipeline(trace_policy{&log, "a"});
  STATIC_REQUIRE(std::is_same_v<decltype(p.execute([] { return 1; })), absl::StatusOr<int>>);
  STATIC_REQUIRE(std::is_same_v<decltype(p.execute([] {})), absl::Status>);
  STATIC_REQUIRE(
      std::is_same_v<decltype(p.execute([] { return absl::OkStatus(); })), absl::Status>);
  CHECK(p.execute([] {}).ok());
  CHECK(p.execute([] { return absl::NotFoundError("x"); }).code() == absl::StatusCode::kNotFound);
  auto r = p.execute([]() -> absl::StatusOr<std::string> { return std::string("v"); });
  CHECK(*r == "v");
}

TEST_CASE("pipeline: breaker open is a typed rejection and the call does not run", "[pipeline]") {
  fake_breaker breaker;
  breaker.open = true;
  auto p = sluice::pipeline(sluice::breaker_ref(breaker));
  int calls = 0;
  auto r = p.execute([&] { return ++calls; });
  CHECK(calls == 0);
  CHECK(r.status().code() == absl::StatusCode::kUnavailable);
  CHECK(r.status().message() == "sluice: breaker_open");
  auto o = p.execute_outcome([&] { return ++calls; });
  CHECK(o.reason == sluice::reason::breaker_open);
  CHECK(o.result.status().message().empty());
  CHECK_FALSE(o.ok());
}

TEST_CASE("pipeline: breaker records outcomes, ignores inner rejections", "[pipeline]") {
  manual clock;
  fake_breaker breaker;
  sluice::bulkhead<manual> slots({.max_concurrent = 1}, clock);
  auto p = sluice::pipeline(sluice::breaker_ref(breaker), sluice::bulkhead_ref(slots));
  CHECK(p.execute([] { return 1; }).ok());
  CHECK(p.execute([] { return absl::UnavailableError("down"); }).code() ==
        absl::StatusCode::kUnavailable);
  auto held = slots.try_acquire();
  auto o = p.execute_outcome([] { return 1; });
  CHECK(o.reason == sluice::reason::bulkhead_full);
  CHECK(o.result.status().code() == absl::StatusCode::kResourceExhausted);
  CHECK(breaker.successes == 1);
  CHECK(breaker.failures == 1);
  CHECK(breaker.ignored == 1);
  held.get().release();
  CHECK_THROWS_AS(p.execute([]() -> int { throw std::runtime_error("x"); }), std::runtime_error);
  CHECK(breaker.failures == 2);
  CHECK(slots.in_use() == 0);  // the bulkhead permit was released on the way out
}

TEST_CASE("pipeline: a per-attempt timeout is retried", "[pipeline]") {
  manual clock;
  auto p = sluice::pipeline(
      sluice::retry({.max_attempts = 3, .delay = sluice::backoff::constant(10ms)}, clock),
      sluice::timeout(200ms, clock));
  int calls = 0;
  auto o = p.execute_outcome([&](sluice::call_context<manual>& ctx) -> absl::StatusOr<int> {
    ++calls;
    CHECK(ctx.deadline().remaining(clock) == 200ms);
    if (calls == 1) {
      clock.advance(250ms);  // a stuck attempt that ignored its deadline
      return absl::DeadlineExceededError("socket timeout");
    }
    return 11;
  });
  REQUIRE(o.ok());
  CHECK(*o.result == 11);
  CHECK(o.attempts == 2);
  CHECK(o.reason == sluice::reason::none);
  CHECK(clock.now() - manual::time_point(std::chrono::hours(1)) == 260ms);
}

TEST_CASE("pipeline: timeout versus the caller's deadline", "[pipeline]") {
  manual clock;
  auto p = sluice::pipeline(sluice::timeout(200ms, clock));
  SECTION("the timeout is the tighter limit") {
    auto o = p.execute_outcome([&]() -> absl::Status {
      clock.advance(200ms);
      return absl::DeadlineExceededError("late");
    });
    CHECK(o.reason == sluice::reason::timeout);
    CHECK(o.result.code() == absl::StatusCode::kDeadlineExceeded);
    auto late = p.execute([&]() -> absl::Status {
      clock.advance(300ms);
      return absl::UnavailableError("late");
    });
    CHECK(late.message() == "sluice: timeout");
  }
  SECTION("the caller's deadline is the tighter limit") {
    auto o = p.execute_outcome(
        [&](sluice::call_context<manual>& ctx) -> absl::Status {
          CHECK(ctx.deadline().remaining(clock) == 50ms);
          clock.advance(60ms);
          return absl::DeadlineExceededError("late");
        },
        manual_deadline::after(clock, 50ms));
    CHECK(o.reason == sluice::reason::none);  // the callable's own DeadlineExceeded
    CHECK(o.result.message() == "late");
  }
  SECTION("a late success is kept") {
    auto r = p.execute([&] {
      clock.advance(1s);
      return 1;
    });
    CHECK(r.ok());
  }
}

TEST_CASE("pipeline: deadline and budget reasons reach the outcome", "[pipeline]") {
  manual clock;
  sluice::token_bucket_retry_budget budget({.max_tokens = 3, .token_ratio = 1});
  auto p = sluice::pipeline(
      sluice::retry({.max_attempts = 5, .delay = sluice::backoff::constant(100ms)}, budget, clock));
  auto down = [] { return absl::UnavailableError("down"); };
  auto expired = manual_deadline::after(clock, 0ms);
  auto o = p.execute_outcome(down, expired);
  CHECK(o.reason == sluice::reason::deadline_exceeded);
  CHECK(o.result.code() == absl::StatusCode::kDeadlineExceeded);

  auto fits_one = p.execute_outcome(down, manual_deadline::after(clock, 150ms));
  CHECK(fits_one.reason == sluice::reason::deadline_exceeded);
  CHECK(fits_one.attempts == 2);
  CHECK(fits_one.result.message() == "down");  // the last real failure, not a rejection

  auto b = p.execute_outcome(down);  // tokens: 0 after the two failures above
  CHECK(b.reason == sluice::reason::budget_exhausted);
  CHECK(b.attempts == 1);
  CHECK(b.result.message() == "down");
}

TEST_CASE("pipeline: fallback answers for the reasons it covers", "[pipeline]") {
  manual clock;
  fake_breaker breaker;
  sluice::bulkhead<manual> slots({.max_concurrent = 1}, clock);
  auto p = sluice::pipeline(sluice::fallback(-1, sluice::fallback_on::breaker_open),
                            sluice::breaker_ref(breaker), sluice::bulkhead_ref(slots));
  breaker.open = true;
  auto o = p.execute_outcome([] { return 1; });
  REQUIRE(o.ok());
  CHECK(*o.result == -1);
  CHECK(o.fallback_used);
  CHECK(o.reason == sluice::reason::breaker_open);
  breaker.open = false;
  auto held = slots.try_acquire();
  auto full = p.execute_outcome([] { return 1; });
  CHECK_FALSE(full.ok());
  CHECK(full.reason == sluice::reason::bulkhead_full);
  CHECK_FALSE(full.fallback_used);
}

TEST_CASE("pipeline: pipelines nest as policies", "[pipeline]") {
  std::vector<std::string> log;
  auto inner = sluice::pipeline(trace_policy{&log, "b"}, trace_policy{&log, "c"});
  auto outer = sluice::pipeline(trace_policy{&log, "a"}, inner);
  CHECK(outer.execute([] { return 1; }).ok());
  CHECK(log == std::vector<std::string>{"a>", "b>", "c>", "<c", "<b", "<a"});
}

TEST_CASE("pipeline: the hot path allocates nothing", "[pipeline]") {
  manual clock;
  fake_breaker breaker;
  sluice::token_bucket_retry_budget budget;
  sluice::bulkhead<manual> slots({.max_concurrent = 4}, clock);
  auto p = sluice::pipeline(
      sluice::fallback(0, sluice::fallback_on::rejections),
      sluice::retry({.max_attempts = 3, .delay = sluice::backoff::constant(1ms)}, budget, clock),
      sluice::breaker_ref(breaker), sluice::bulkhead_ref(slots), sluice::timeout(1s, clock));
  STATIC_REQUIRE(std::is_same_v<decltype(p)::clock_type, manual>);
  int calls = 0;
  auto fn = [&] { return ++calls; };
  (void)p.execute(fn);
  sluice_test::alloc_scope scope;
  for (int i = 0; i < 1000; ++i) {
    auto r = p.execute(fn);
    CHECK(r.ok());
  }
  CHECK(scope.allocations() == 0);

  // Rejections (reported through execute_outcome) allocate nothing either.
  sluice::bulkhead<manual> none({.max_concurrent = 1}, clock);
  auto held = none.try_acquire();
  auto q = sluice::pipeline(sluice::breaker_ref(breaker), sluice::bulkhead_ref(none));
  sluice_test::alloc_scope reject_scope;
  for (int i = 0; i < 1000; ++i) {
    auto o = q.execute_outcome(fn);
    CHECK(o.reason == sluice::reason::bulkhead_full);
  }
  breaker.open = true;
  for (int i = 0; i < 1000; ++i) {
    auto o = q.execute_outcome(fn);
    CHECK(o.reason == sluice::reason::breaker_open);
  }
  CHECK(reject_scope.allocations() == 0);
}

namespace {
sluice::circuit_breaker_options small_breaker() {
  sluice::circuit_breaker_options o;
  o.window.window_size = 10;
  o.minimum_calls = 4;
  o.failure_rate_threshold = 0.5;
  o.half_open_probes = 2;
  o.open_duration = 1s;
  o.max_open_duration = 1s;
  o.open_duration_jitter = 0.0;
  return o;
}
}  // namespace

TEST_CASE("pipeline: composes the real circuit breaker", "[pipeline]") {
  manual clock;
  sluice::circuit_breaker<manual> breaker(small_breaker(), clock);
  sluice::bulkhead<manual> slots({.max_concurrent = 1}, clock);
  auto p = sluice::pipeline(
      sluice::fallback(-1, sluice::fallback_on::breaker_open),
      sluice::retry({.max_attempts = 2, .delay = sluice::backoff::constant(10ms)}, clock),
      sluice::breaker_ref(breaker), sluice::bulkhead_ref(slots), sluice::timeout(1s, clock));
  STATIC_REQUIRE(std::is_same_v<decltype(p)::clock_type, manual>);
  int calls = 0;
  auto down = [&]() -> absl::StatusOr<int> {
    ++calls;
    return absl::UnavailableError("down");
  };
  auto up = [&]() -> absl::StatusOr<int> { return ++calls; };

  // A full bulkhead inside the breaker is recorded as ignored: it says nothing about the
  // dependency and must not trip the breaker.
  {
    auto held = slots.try_acquire();
    for (int i = 0; i < 10; ++i) {
      auto o = p.execute_outcome(up);
      CHECK(o.reason == sluice::reason::bulkhead_full);
      CHECK_FALSE(o.fallback_used);
    }
  }
  CHECK(breaker.state() == sluice::breaker_state::closed);
  CHECK(breaker.metrics().ignored_calls == 10);
  CHECK(calls == 0);

  // Two calls, each retried once: four failures trip the breaker.
  for (int i = 0; i < 2; ++i) {
    auto o = p.execute_outcome(down);
    CHECK(o.attempts == 2);
    CHECK(o.result.status().code() == absl::StatusCode::kUnavailable);
  }
  CHECK(calls == 4);
  CHECK(breaker.state() == sluice::breaker_state::open);

  // Open: rejected without calling, not retried, answered by the fallback.
  auto rejected = p.execute_outcome(up);
  CHECK(calls == 4);
  CHECK(rejected.reason == sluice::reason::breaker_open);
  CHECK(rejected.attempts == 1);
  CHECK(rejected.fallback_used);
  REQUIRE(rejected.ok());
  CHECK(*rejected.result == -1);
  CHECK(breaker.metrics().rejected_calls >= 1);

  // After the open duration the probes go through and close it again.
  clock.advance(1s);
  CHECK(breaker.state() == sluice::breaker_state::half_open);
  CHECK(p.execute(up).ok());
  CHECK(p.execute(up).ok());
  CHECK(breaker.state() == sluice::breaker_state::closed);
  const int before = calls;
  auto fine = p.execute_outcome(up);
  REQUIRE(fine.ok());
  CHECK(*fine.result == before + 1);
  CHECK_FALSE(fine.fallback_used);
  CHECK(fine.reason == sluice::reason::none);
}

TEST_CASE("pipeline: the real breaker's closed and open paths allocate nothing", "[pipeline]") {
  manual clock;
  sluice::circuit_breaker<manual> breaker(small_breaker(), clock);
  auto p = sluice::pipeline(
      sluice::breaker_ref(breaker),
      sluice::retry({.max_attempts = 2, .delay = sluice::backoff::constant(1ms)}, clock));
  auto up = [] { return 1; };
  (void)p.execute(up);
  {
    sluice_test::alloc_scope scope;
    for (int i = 0; i < 1000; ++i) CHECK(p.execute(up).ok());
    CHECK(scope.allocations() == 0);
  }
  for (int i = 0; i < 10; ++i) (void)p.execute([] { return absl::UnavailableError(""); });
  REQUIRE(breaker.state() == sluice::breaker_state::open);
  sluice_test::alloc_scope scope;
  for (int i = 0; i < 1000; ++i) {
    auto o = p.execute_outcome(up);
    CHECK(o.reason == sluice::reason::breaker_open);
  }
  CHECK(scope.allocations() == 0);
}

TEST_CASE("pipeline: concurrent callers through the real breaker, bulkhead and budget",
          "[pipeline]") {
  const int threads = GENERATE(2, 4, 8);
  INFO("threads = " << threads);
  constexpr int per_thread = 4000;
  manual clock;
  sluice::circuit_breaker_options o = small_breaker();
  o.window.window_size = 50;
  o.minimum_calls = 20;
  o.failure_rate_threshold = 0.9;  // trips only in the all-failing phase
  sluice::circuit_breaker<manual> breaker(o, clock);
  sluice::bulkhead<manual> slots({.max_concurrent = 2, .max_queue = 2}, clock);
  sluice::token_bucket_retry_budget budget({.max_tokens = 20, .token_ratio = 0.5});
  auto p = sluice::pipeline(
      sluice::retry({.max_attempts = 2, .delay = sluice::backoff::constant(0ms)}, budget, clock),
      sluice::breaker_ref(breaker), sluice::bulkhead_ref(slots));
  std::atomic<int> inside{0};
  std::atomic<bool> over_cap{false};
  std::atomic<int> ok{0}, failed{0}, open{0}, full{0}, other{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        const bool failing = (i / 500) % 2 == 1;  // phases of health and of failure
        auto outcome = p.execute_outcome([&]() -> absl::StatusOr<int> {
          if (inside.fetch_add(1) + 1 > 2) over_cap = true;
          inside.fetch_sub(1);
          if (failing || (i + t) % 7 == 0) return absl::UnavailableError("down");
          return i;
        });
        switch (outcome.reason) {
          case sluice::reason::none:
          case sluice::reason::budget_exhausted:
            (outcome.ok() ? ok : failed).fetch_add(1);
            break;
          case sluice::reason::breaker_open:
            open.fetch_add(1);
            break;
          case sluice::reason::bulkhead_full:
            full.fetch_add(1);
            break;
          default:
            other.fetch_add(1);
        }
        if (i % 1000 == 999) clock.advance(2s);  // let an open breaker probe again
      }
    });
  }
  for (auto& th : pool) th.join();
  CHECK_FALSE(over_cap.load());
  CHECK(ok + failed + open + full + other == threads * per_thread);
  CHECK(other.load() == 0);
  CHECK(ok.load() > 0);
  CHECK(open.load() > 0);  // the failing phases trip the breaker
  CHECK(slots.in_use() == 0);
  CHECK(budget.tokens() >= 0.0);
  CHECK(budget.tokens() <= 20.0);
}

TEST_CASE("pipeline: the breaker stage classifies exceptions with the breaker's predicate",
          "[pipeline]") {
  manual clock;
  sluice::circuit_breaker_options o = small_breaker();
  // Caller bugs say nothing about the dependency: they must not trip the breaker.
  o.classify_exception =
      sluice::classify_exceptions<std::invalid_argument>(sluice::call_outcome::ignored);
  sluice::circuit_breaker<manual> breaker(o, clock);
  auto p = sluice::pipeline(sluice::breaker_ref(breaker));
  for (int i = 0; i < 10; ++i) {
    CHECK_THROWS_AS(p.execute([]() -> absl::StatusOr<int> { throw std::invalid_argument("bad"); }),
                    std::invalid_argument);
  }
  CHECK(breaker.state() == sluice::breaker_state::closed);
  CHECK(breaker.metrics().ignored_calls == 10);
  CHECK(breaker.metrics().failed_calls == 0);
  // Other exceptions are still failures.
  for (int i = 0; i < 4; ++i) {
    CHECK_THROWS_AS(p.execute([]() -> absl::StatusOr<int> { throw std::runtime_error("io"); }),
                    std::runtime_error);
  }
  CHECK(breaker.state() == sluice::breaker_state::open);
}
