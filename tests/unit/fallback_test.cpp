#include "sluice/fallback.hpp"

#include <string>

#include <sluice/policy.hpp>
#include <sluice/testing/manual_clock.hpp>

#include "catch.hpp"

using manual = sluice::testing::manual_clock;

namespace {
// Runs `fb` over a call that ends with `status`, as if a policy had set `why` (rejected or not).
template <class Fallback>
absl::StatusOr<int> run_with(Fallback& fb, absl::Status status, sluice::reason why, bool rejected,
                             bool* used = nullptr) {
  manual clock;
  sluice::call_context<manual> ctx(clock);
  auto r = fb.run(ctx, [&]() -> absl::StatusOr<int> {
    if (why != sluice::reason::none) ctx.set_reason(why, rejected);
    return status;
  });
  if (used != nullptr) *used = ctx.fallback_used();
  return r;
}
}  // namespace

TEST_CASE("fallback: a value replaces a failure, success passes through", "[fallback]") {
  sluice::fallback fb(7);
  bool used = false;
  auto r = run_with(fb, absl::UnavailableError("down"), sluice::reason::none, false, &used);
  REQUIRE(r.ok());
  CHECK(*r == 7);
  CHECK(used);
  auto ok = fb.execute([] { return 1; });
  REQUIRE(ok.ok());
  CHECK(*ok == 1);
}

TEST_CASE("fallback: handler forms receive the status and the reason", "[fallback]") {
  sluice::fallback none([] { return 1; });
  CHECK(*run_with(none, absl::InternalError("x"), sluice::reason::none, false) == 1);

  sluice::fallback by_status([](const absl::Status& s) { return s.message() == "x" ? 2 : 3; });
  CHECK(*run_with(by_status, absl::InternalError("x"), sluice::reason::none, false) == 2);

  sluice::reason seen = sluice::reason::none;
  sluice::fallback by_reason([&](const absl::Status& s, sluice::reason why) -> absl::StatusOr<int> {
    seen = why;
    if (s.code() == absl::StatusCode::kUnavailable) return 4;
    return s;  // a fallback may also decline by returning the failure
  });
  CHECK(*run_with(by_reason, absl::Status(absl::StatusCode::kUnavailable, ""),
                  sluice::reason::breaker_open, true) == 4);
  CHECK(seen == sluice::reason::breaker_open);
  CHECK(
      run_with(by_reason, absl::NotFoundError("no"), sluice::reason::none, false).status().code() ==
      absl::StatusCode::kNotFound);
}

TEST_CASE("fallback: selection by reason", "[fallback]") {
  sluice::fallback only_open(5, sluice::fallback_on::breaker_open);
  CHECK(*run_with(only_open, absl::Status(absl::StatusCode::kUnavailable, ""),
                  sluice::reason::breaker_open, true) == 5);
  CHECK_FALSE(run_with(only_open, absl::Status(absl::StatusCode::kResourceExhausted, ""),
                       sluice::reason::bulkhead_full, true)
                  .ok());
  CHECK_FALSE(run_with(only_open, absl::UnavailableError("own"), sluice::reason::none, false).ok());

  sluice::fallback failures(6, sluice::fallback_on::failure);
  CHECK(*run_with(failures, absl::UnavailableError("own"), sluice::reason::none, false) == 6);
  CHECK_FALSE(run_with(failures, absl::Status(absl::StatusCode::kUnavailable, ""),
                       sluice::reason::breaker_open, true)
                  .ok());
  // A retry stopped by its budget returns the callable's failure: covered by `failure` and by
  // `budget_exhausted`.
  CHECK(*run_with(failures, absl::UnavailableError("own"), sluice::reason::budget_exhausted,
                  false) == 6);
  sluice::fallback budget(8, sluice::fallback_on::budget_exhausted | sluice::fallback_on::timeout);
  CHECK(*run_with(budget, absl::UnavailableError("own"), sluice::reason::budget_exhausted, false) ==
        8);
  CHECK(*run_with(budget, absl::DeadlineExceededError(""), sluice::reason::timeout, true) == 8);
  CHECK_FALSE(run_with(budget, absl::UnavailableError("own"), sluice::reason::none, false).ok());

  sluice::fallback rejections(9, sluice::fallback_on::rejections);
  CHECK_FALSE(
      run_with(rejections, absl::UnavailableError("own"), sluice::reason::none, false).ok());
  CHECK(*run_with(rejections, absl::Status(absl::StatusCode::kDeadlineExceeded, ""),
                  sluice::reason::deadline_exceeded, true) == 9);
}

TEST_CASE("fallback: works for calls without a value", "[fallback]") {
  int handled = 0;
  sluice::fallback fb([&] { ++handled; });  // void handler: the call becomes OK
  auto r = fb.execute([]() -> absl::Status { return absl::UnavailableError("down"); });
  CHECK(r.ok());
  CHECK(handled == 1);
  sluice::fallback keep(absl::OkStatus());
  CHECK(keep.execute([] { return absl::InternalError("x"); }).ok());
}

TEST_CASE("fallback: values are copied per use", "[fallback]") {
  sluice::fallback fb(std::string("cached"));
  auto a = fb.execute([]() -> absl::StatusOr<std::string> { return absl::UnavailableError(""); });
  auto b = fb.execute([]() -> absl::StatusOr<std::string> { return absl::UnavailableError(""); });
  CHECK(*a == "cached");
  CHECK(*b == "cached");
}
