#include "sluice/retry.hpp"

#include <chrono>
#include <stdexcept>
#include <vector>

#include <sluice/detail/random.hpp>
#include <sluice/retry_budget.hpp>
#include <sluice/testing/manual_clock.hpp>

#include "alloc_counter.hpp"
#include "catch.hpp"

using namespace std::chrono_literals;
using manual = sluice::testing::manual_clock;
using ns = std::chrono::nanoseconds;

namespace {

// A callable that fails `failures` times with `code`, then returns 42, recording when each attempt
// started.
struct flaky {
  manual clock;
  int failures;
  absl::StatusCode code = absl::StatusCode::kUnavailable;
  std::vector<manual::time_point> starts{};

  absl::StatusOr<int> operator()() {
    starts.push_back(clock.now());
    if (static_cast<int>(starts.size()) <= failures) return absl::Status(code, "flaky");
    return 42;
  }

  std::vector<ns> gaps() const {
    std::vector<ns> out;
    for (std::size_t i = 1; i < starts.size(); ++i) out.push_back(starts[i] - starts[i - 1]);
    return out;
  }
};

}  // namespace

TEST_CASE("retry: exponential backoff doubles up to the cap", "[retry]") {
  manual clock;
  sluice::retry retry({.max_attempts = 6, .delay = sluice::backoff::exponential(100ms, 1s)}, clock);
  flaky fn{clock, 100};
  auto r = retry.execute(std::ref(fn));
  CHECK(r.status().code() == absl::StatusCode::kUnavailable);
  CHECK(fn.starts.size() == 6);
  CHECK(fn.gaps() == std::vector<ns>{100ms, 200ms, 400ms, 800ms, 1s});
  CHECK(clock.sleeps() == 5);
  CHECK(clock.slept() == 2500ms);
}

TEST_CASE("retry: constant backoff and success stop the loop", "[retry]") {
  manual clock;
  sluice::retry retry({.max_attempts = 5, .delay = sluice::backoff::constant(30ms)}, clock);
  flaky fn{clock, 2};
  auto r = retry.execute(std::ref(fn));
  REQUIRE(r.ok());
  CHECK(*r == 42);
  CHECK(fn.gaps() == std::vector<ns>{30ms, 30ms});
  CHECK(clock.slept() == 60ms);
}

TEST_CASE("retry: full jitter is seeded and within the exponential envelope", "[retry]") {
  manual clock;
  const auto delay = sluice::backoff::full_jitter(100ms, 500ms);
  sluice::retry retry({.max_attempts = 6, .delay = delay, .jitter_seed = 7}, clock);
  flaky fn{clock, 100};
  (void)retry.execute(std::ref(fn));
  const auto gaps = fn.gaps();
  REQUIRE(gaps.size() == 5);
  sluice::detail::fast_rng rng(7);
  ns previous = 100ms;
  const ns envelope[] = {100ms, 200ms, 400ms, 500ms, 500ms};
  for (std::size_t i = 0; i < gaps.size(); ++i) {
    const ns expected = delay.next(static_cast<int>(i + 1), previous, rng);
    previous = expected;
    CHECK(gaps[i] == expected);
    CHECK(gaps[i] >= 0ms);
    CHECK(gaps[i] <= envelope[i]);
  }
  // The same seed gives the same sequence on the next call.
  flaky again{clock, 100};
  (void)retry.execute(std::ref(again));
  CHECK(again.gaps() == gaps);
}

TEST_CASE("retry: decorrelated jitter stays in [initial, 3 * previous] and the cap", "[retry]") {
  manual clock;
  const auto delay = sluice::backoff::decorrelated_jitter(10ms, 200ms);
  sluice::retry retry({.max_attempts = 30, .delay = delay, .jitter_seed = 99}, clock);
  flaky fn{clock, 1000};
  (void)retry.execute(std::ref(fn));
  const auto gaps = fn.gaps();
  REQUIRE(gaps.size() == 29);
  ns previous = 10ms;
  bool varied = false;
  for (const ns g : gaps) {
    CHECK(g >= 10ms);
    CHECK(g <= std::min<ns>(200ms, 3 * previous));
    if (g != gaps.front()) varied = true;
    previous = g;
  }
  CHECK(varied);
  sluice::detail::fast_rng rng(99);
  ns prev = 10ms;
  for (std::size_t i = 0; i < gaps.size(); ++i) {
    prev = delay.next(static_cast<int>(i + 1), prev, rng);
    CHECK(gaps[i] == prev);
  }
}

TEST_CASE("retry: unseeded jitter stays within its bounds", "[retry]") {
  const auto delay = sluice::backoff::full_jitter(1ms, 1s);
  for (int n = 1; n <= 12; ++n) {
    const ns d = delay.next(n, 1ms, sluice::detail::thread_rng());
    CHECK(d >= 0ms);
    CHECK(d <= std::min<ns>(1s, ns(1ms) * (1 << (n - 1))));
  }
}

TEST_CASE("retry: no backoff sleep starts that the deadline cannot fit", "[retry]") {
  manual clock;
  sluice::retry retry({.max_attempts = 10, .delay = sluice::backoff::exponential(100ms, 10s)},
                      clock);
  flaky fn{clock, 100};
  sluice::call_context<manual> ctx(clock, sluice::deadline<manual>::after(clock, 250ms));
  auto r = retry.run(ctx, [&] { return fn(); });
  // Attempts at 0 and 100 ms; the 200 ms sleep would end at 300 ms > 250 ms.
  CHECK(fn.starts.size() == 2);
  CHECK(clock.sleeps() == 1);
  CHECK(r.status().code() == absl::StatusCode::kUnavailable);  // the last real failure
  CHECK(ctx.reason() == sluice::reason::deadline_exceeded);
  CHECK_FALSE(ctx.rejected());
}

TEST_CASE("retry: min_attempt_time keeps an attempt from starting too late", "[retry]") {
  manual clock;
  sluice::retry retry(
      {.max_attempts = 10, .delay = sluice::backoff::constant(100ms), .min_attempt_time = 60ms},
      clock);
  flaky fn{clock, 100};
  auto r = retry.execute(std::ref(fn), sluice::deadline<manual>::after(clock, 150ms));
  CHECK(fn.starts.size() == 1);  // 100 ms sleep + 60 ms attempt does not fit in 150 ms
  CHECK(clock.sleeps() == 0);
  CHECK(r.status().code() == absl::StatusCode::kUnavailable);
}

TEST_CASE("retry: an expired deadline prevents the first attempt", "[retry]") {
  manual clock;
  sluice::retry retry({}, clock);
  const auto d = sluice::deadline<manual>::after(clock, 10ms);
  clock.advance(10ms);
  int calls = 0;
  auto r = retry.execute([&] { return ++calls; }, d);
  CHECK(calls == 0);
  CHECK(r.status().code() == absl::StatusCode::kDeadlineExceeded);
  CHECK(r.status().message() == "sluice: deadline_exceeded");
}

TEST_CASE("retry: Retry-After from the call context lengthens the sleep", "[retry]") {
  manual clock;
  sluice::retry retry({.max_attempts = 3, .delay = sluice::backoff::constant(100ms)}, clock);
  int calls = 0;
  auto r = retry.execute([&](sluice::call_context<manual>& ctx) -> absl::StatusOr<int> {
    CHECK(ctx.attempt() == calls + 1);
    if (++calls == 1) {
      ctx.set_retry_after(2s);
      return absl::ResourceExhaustedError("slow down");
    }
    return 7;
  });
  REQUIRE(r.ok());
  CHECK(clock.slept() == 2s);
}

TEST_CASE("retry: Retry-After in a status payload, shorter than backoff, too long", "[retry]") {
  manual clock;
  sluice::retry retry(
      {.max_attempts = 3, .delay = sluice::backoff::constant(100ms), .max_retry_after = 30s},
      clock);
  SECTION("payload hint honoured") {
    int calls = 0;
    auto r = retry.execute([&]() -> absl::Status {
      if (++calls > 1) return absl::OkStatus();
      absl::Status s = absl::UnavailableError("busy");
      sluice::set_retry_after(s, 1500ms);
      return s;
    });
    CHECK(r.ok());
    CHECK(clock.slept() == 1500ms);
  }
  SECTION("a hint shorter than the backoff does not shorten it") {
    int calls = 0;
    auto r = retry.execute([&](sluice::call_context<manual>& ctx) -> absl::Status {
      if (++calls > 1) return absl::OkStatus();
      ctx.set_retry_after(1ms);
      return absl::UnavailableError("busy");
    });
    CHECK(r.ok());
    CHECK(clock.slept() == 100ms);
  }
  SECTION("a hint above max_retry_after ends the retries") {
    int calls = 0;
    auto r = retry.execute([&](sluice::call_context<manual>& ctx) -> absl::Status {
      ++calls;
      ctx.set_retry_after(1min);
      return absl::UnavailableError("come back later");
    });
    CHECK(calls == 1);
    CHECK(clock.sleeps() == 0);
    CHECK(r.code() == absl::StatusCode::kUnavailable);
  }
  SECTION("a hint that does not fit the deadline ends the retries") {
    int calls = 0;
    auto r = retry.execute(
        [&](sluice::call_context<manual>& ctx) -> absl::Status {
          ++calls;
          ctx.set_retry_after(5s);
          return absl::UnavailableError("busy");
        },
        sluice::deadline<manual>::after(clock, 4s));
    CHECK(calls == 1);
    CHECK(clock.sleeps() == 0);
  }
}

TEST_CASE("retry: only retryable codes are retried", "[retry]") {
  manual clock;
  sluice::retry retry({.max_attempts = 5, .delay = sluice::backoff::constant(1ms)}, clock);
  flaky fn{clock, 100, absl::StatusCode::kInvalidArgument};
  auto r = retry.execute(std::ref(fn));
  CHECK(fn.starts.size() == 1);
  CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);

  sluice::retry custom({.max_attempts = 5,
                        .delay = sluice::backoff::constant(1ms),
                        .retry_on_codes = sluice::code_mask({absl::StatusCode::kInternal})},
                       clock);
  flaky internal{clock, 2, absl::StatusCode::kInternal};
  CHECK(custom.execute(std::ref(internal)).ok());
  CHECK(internal.starts.size() == 3);

  sluice::retry by_status(
      {.max_attempts = 5,
       .delay = sluice::backoff::constant(1ms),
       .retry_on_status = [](const absl::Status& s) { return s.message() == "flaky"; }},
      clock);
  flaky any{clock, 3, absl::StatusCode::kNotFound};
  CHECK(by_status.execute(std::ref(any)).ok());
  CHECK(any.starts.size() == 4);
}

TEST_CASE("retry: result predicate retries unwanted values", "[retry]") {
  manual clock;
  auto retry = sluice::retry({.max_attempts = 4, .delay = sluice::backoff::constant(5ms)}, clock)
                   .retry_if_result([](const int& http_status) { return http_status == 503; });
  int calls = 0;
  auto r = retry.execute([&] { return ++calls < 3 ? 503 : 200; });
  REQUIRE(r.ok());
  CHECK(*r == 200);
  CHECK(calls == 3);
  CHECK(clock.slept() == 10ms);
}

TEST_CASE("retry: exceptions propagate unless a predicate retries them", "[retry]") {
  manual clock;
  int calls = 0;
  auto thrower = [&]() -> absl::StatusOr<int> {
    if (++calls < 3) throw std::runtime_error("boom");
    return 1;
  };
  sluice::retry plain({.max_attempts = 5, .delay = sluice::backoff::constant(1ms)}, clock);
  CHECK_THROWS_AS(plain.execute(thrower), std::runtime_error);
  CHECK(calls == 1);

  calls = 0;
  sluice::retry catching({.max_attempts = 5,
                          .delay = sluice::backoff::constant(1ms),
                          .retry_on_exception = [](const std::exception_ptr&) { return true; }},
                         clock);
  auto r = catching.execute(thrower);
  CHECK(r.ok());
  CHECK(calls == 3);

  calls = -10;  // always throws: the last exception escapes after max_attempts
  CHECK_THROWS_AS(catching.execute(thrower), std::runtime_error);
  CHECK(calls == -5);
}

TEST_CASE("retry: a shared token bucket stops retries, then refills", "[retry]") {
  manual clock;
  sluice::token_bucket_retry_budget budget({.max_tokens = 4, .token_ratio = 1});
  sluice::retry retry({.max_attempts = 10, .delay = sluice::backoff::constant(1ms)}, budget, clock);
  flaky fn{clock, 100};
  sluice::call_context<manual> ctx(clock);
  auto r = retry.run(ctx, [&] { return fn(); });
  // 4 tokens: after two failures 2 remain, which is not above the threshold of 2.
  CHECK(fn.starts.size() == 2);
  CHECK(ctx.reason() == sluice::reason::budget_exhausted);
  CHECK(r.status().code() == absl::StatusCode::kUnavailable);
  // Another call fails at once and spends its token, no retry.
  flaky second{clock, 100};
  (void)retry.execute(std::ref(second));
  CHECK(second.starts.size() == 1);
  // Successes refill the bucket.
  for (int i = 0; i < 4; ++i) (void)retry.execute([] { return 1; });
  flaky third{clock, 1};
  CHECK(retry.execute(std::ref(third)).ok());
  CHECK(third.starts.size() == 2);
}

TEST_CASE("retry: ratio budget limits retries across calls", "[retry]") {
  manual clock;
  sluice::ratio_retry_budget<manual> budget(
      {.ratio = 0.0, .min_retries_per_second = 0.5, .ttl = 10s, .buckets = 10}, clock);
  sluice::retry retry({.max_attempts = 3, .delay = sluice::backoff::constant(1ms)}, budget, clock);
  int attempts = 0;
  for (int call = 0; call < 5; ++call) {
    (void)retry.execute([&] {
      ++attempts;
      return absl::UnavailableError("down");
    });
  }
  CHECK(attempts == 5 + 5);  // 5 first attempts, then the floor's 5 retries in 10 s
}

TEST_CASE("retry: the per-call path allocates nothing", "[retry]") {
  manual clock;
  sluice::token_bucket_retry_budget budget;
  sluice::retry retry({.max_attempts = 3, .delay = sluice::backoff::constant(1ms)}, budget, clock);
  int calls = 0;
  auto fn = [&]() -> absl::StatusOr<int> {
    if (++calls % 2 == 1) return absl::Status(absl::StatusCode::kUnavailable, "");
    return calls;
  };
  (void)retry.execute(fn);
  sluice_test::alloc_scope scope;
  for (int i = 0; i < 100; ++i) (void)retry.execute(fn);
  CHECK(scope.allocations() == 0);
}

TEST_CASE("retry: an unbounded backoff saturates instead of wrapping negative", "[retry]") {
  // nanoseconds::max() as a cap means "no cap": the delay must stay the longest representable,
  // never wrap to a negative delay (or a wake-up time in the past, i.e. an immediate retry).
  sluice::detail::fast_rng rng(7);
  const auto unbounded = sluice::backoff::constant(ns::max());
  CHECK(unbounded.next(1, ns::max(), rng) == ns::max());
  const auto growing = sluice::backoff::exponential(1h, ns::max(), 1000.0);
  CHECK(growing.next(10, 1h, rng) == ns::max());

  manual clock;
  sluice::retry retry({.max_attempts = 2, .delay = unbounded}, clock);
  flaky fn{clock, 1};
  auto r = retry.execute(std::ref(fn));
  REQUIRE(fn.starts.size() == 2);
  CHECK(clock.sleeps() == 1);
  CHECK(clock.slept() > std::chrono::hours(24 * 365));  // slept "forever", not zero
  CHECK(fn.gaps()[0] > std::chrono::hours(24 * 365));
}

TEST_CASE("retry: the budget is charged the same for thrown and returned failures", "[retry]") {
  // gRPC's rule: every retryable failure takes a token, the last attempt's included.
  manual clock;
  auto always = [](const std::exception_ptr&) { return true; };
  sluice::token_bucket_retry_budget thrown_budget({.max_tokens = 10, .token_ratio = 1});
  sluice::token_bucket_retry_budget returned_budget({.max_tokens = 10, .token_ratio = 1});
  sluice::retry thrown_retry(
      {.max_attempts = 2, .delay = sluice::backoff::constant(1ms), .retry_on_exception = always},
      thrown_budget, clock);
  sluice::retry returned_retry({.max_attempts = 2, .delay = sluice::backoff::constant(1ms)},
                               returned_budget, clock);
  CHECK_THROWS_AS(
      thrown_retry.execute([]() -> absl::StatusOr<int> { throw std::runtime_error("down"); }),
      std::runtime_error);
  (void)returned_retry.execute(
      []() -> absl::StatusOr<int> { return absl::UnavailableError("down"); });
  CHECK(returned_budget.tokens() == 8.0);
  CHECK(thrown_budget.tokens() == returned_budget.tokens());

  // An exception the predicate does not retry is an answer, as a non-retryable status is: it
  // refills like a success.
  sluice::retry picky({.max_attempts = 2,
                       .delay = sluice::backoff::constant(1ms),
                       .retry_on_exception = [](const std::exception_ptr&) { return false; }},
                      thrown_budget, clock);
  CHECK_THROWS_AS(picky.execute([]() -> absl::StatusOr<int> { throw std::logic_error("bug"); }),
                  std::logic_error);
  (void)returned_retry.execute([]() -> absl::StatusOr<int> { return absl::NotFoundError("no"); });
  CHECK(returned_budget.tokens() == 9.0);
  CHECK(thrown_budget.tokens() == returned_budget.tokens());
}
