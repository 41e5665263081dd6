#include <atomic>
#include <chrono>
#include <future>
#include <string>
#include <thread>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>

#include <sluice/asio/error.hpp>
#include <sluice/asio/pipeline.hpp>
#include <sluice/asio/timeout.hpp>
#include <sluice/bulkhead.hpp>
#include <sluice/circuit_breaker.hpp>
#include <sluice/fallback.hpp>
#include <sluice/retry.hpp>
#include <sluice/timeout.hpp>

#include "catch.hpp"
#include "fake_breaker.hpp"

namespace net = boost::asio;
using namespace std::chrono_literals;
using boost::system::error_code;

namespace {

// An operation that waits on a timer for `d` and reports whether it was cancelled.
struct slow_op {
  std::chrono::nanoseconds d;
  bool* cancelled;
  net::awaitable<absl::StatusOr<int>> operator()() const {
    net::steady_timer timer(co_await net::this_coro::executor, d);
    auto [ec] = co_await timer.async_wait(net::as_tuple(net::use_awaitable));
    if (ec == net::error::operation_aborted) {
      *cancelled = true;
      co_return absl::CancelledError("cancelled");
    }
    co_return 1;
  }
};

using sluice_test::fake_breaker;

}  // namespace

TEST_CASE("asio_pipeline: co_await with use_awaitable", "[asio_pipeline]") {
  net::io_context io;
  auto p = sluice::asio::pipeline(io.get_executor(), sluice::retry({.max_attempts = 2}));
  int got = 0;
  net::co_spawn(
      io,
      [&]() -> net::awaitable<void> {
        got = co_await p.async_execute([]() -> net::awaitable<int> { co_return 41; },
                                       net::use_awaitable);
        ++got;
      },
      net::detached);
  io.run();
  CHECK(got == 42);
}

TEST_CASE("asio_pipeline: a callback is never invoked inside async_execute", "[asio_pipeline]") {
  net::io_context io;
  auto p = sluice::asio::pipeline(io.get_executor(), sluice::fallback(std::string("fallback")));
  bool called = false;
  error_code got_ec = sluice::asio::make_error_code(sluice::asio::error::unknown);
  std::string got;
  p.async_execute([]() -> net::awaitable<std::string> { co_return "hi"; },
                  [&](error_code ec, std::string v) {
                    called = true;
                    got_ec = ec;
                    got = std::move(v);
                  });
  CHECK_FALSE(called);
  io.run();
  CHECK(called);
  CHECK_FALSE(got_ec);
  CHECK(got == "hi");
}

TEST_CASE("asio_pipeline: use_future and deferred tokens", "[asio_pipeline]") {
  net::io_context io;
  auto p = sluice::asio::pipeline(io.get_executor(), sluice::retry({.max_attempts = 1}));
  std::future<int> f = p.async_execute([]() -> net::awaitable<absl::StatusOr<int>> { co_return 7; },
                                       net::use_future);
  auto op = p.async_execute([]() -> net::awaitable<int> { co_return 8; }, net::deferred);
  int deferred_value = 0;
  std::move(op)([&](error_code ec, int v) {
    CHECK_FALSE(ec);
    deferred_value = v;
  });
  io.run();
  CHECK(f.get() == 7);
  CHECK(deferred_value == 8);
}

TEST_CASE("asio_pipeline: operations without a value complete with an error_code only",
          "[asio_pipeline]") {
  net::io_context io;
  auto p = sluice::asio::pipeline(io.get_executor(), sluice::retry({.max_attempts = 1}));
  error_code a = sluice::asio::make_error_code(sluice::asio::error::unknown), b;
  p.async_execute([]() -> net::awaitable<void> { co_return; }, [&](error_code ec) { a = ec; });
  p.async_execute([]() -> net::awaitable<absl::Status> { co_return absl::NotFoundError("x"); },
                  [&](error_code ec) { b = ec; });
  io.run();
  CHECK_FALSE(a);
  CHECK(b == sluice::asio::error::not_found);
}

TEST_CASE("asio_pipeline: the timeout really cancels the inner operation", "[asio_pipeline]") {
  net::io_context io;
  auto p = sluice::asio::pipeline(io.get_executor(), sluice::asio::timeout(5ms));
  bool cancelled = false;
  error_code got;
  const auto start = std::chrono::steady_clock::now();
  p.async_execute(slow_op{10s, &cancelled}, [&](error_code ec, int) { got = ec; });
  io.run();  // returns only when nothing is left running: the 10 s wait must be gone
  CHECK(got == sluice::asio::error::deadline_exceeded);
  CHECK(cancelled);
  CHECK(std::chrono::steady_clock::now() - start < 5s);
}

TEST_CASE("asio_pipeline: the synchronous timeout type cancels too, and is retried",
          "[asio_pipeline]") {
  net::io_context io;
  auto p = sluice::asio::pipeline(
      io.get_executor(),
      sluice::retry({.max_attempts = 3, .delay = sluice::backoff::constant(1ms)}),
      sluice::timeout(5ms));
  int attempts = 0;
  bool cancelled = false;
  int got = 0;
  p.async_execute(
      [&](sluice::call_context<>& ctx) -> net::awaitable<absl::StatusOr<int>> {
        ++attempts;
        CHECK(ctx.attempt() == attempts);
        if (attempts == 1) co_return co_await slow_op{10s, &cancelled}();
        co_return 9;
      },
      [&](error_code ec, int v) {
        CHECK_FALSE(ec);
        got = v;
      });
  io.run();
  CHECK(cancelled);
  CHECK(attempts == 2);
  CHECK(got == 9);
}

TEST_CASE("asio_pipeline: the deadline cancels the whole operation", "[asio_pipeline]") {
  net::io_context io;
  auto p = sluice::asio::pipeline(io.get_executor(), sluice::retry({.max_attempts = 5}));
  bool cancelled = false;
  error_code got;
  p.async_execute(slow_op{10s, &cancelled},
                  sluice::deadline<>::after(std::chrono::steady_clock{}, 5ms),
                  [&](error_code ec, int) { got = ec; });
  io.run();
  CHECK(got == sluice::asio::error::deadline_exceeded);
  CHECK(cancelled);
}

TEST_CASE("asio_pipeline: retry waits on a timer between attempts", "[asio_pipeline]") {
  net::io_context io;
  auto p = sluice::asio::pipeline(
      io.get_executor(),
      sluice::retry({.max_attempts = 4, .delay = sluice::backoff::exponential(1ms, 4ms)}));
  int attempts = 0;
  std::optional<int> got;
  p.async_execute(
      [&]() -> net::awaitable<absl::StatusOr<int>> {
        if (++attempts < 3) co_return absl::UnavailableError("flaky");
        co_return attempts;
      },
      [&](error_code ec, int v) {
        CHECK_FALSE(ec);
        got = v;
      });
  // Before the loop runs, nothing has happened: the first attempt starts on the executor.
  CHECK(attempts == 0);
  io.run();
  CHECK(got == 3);
}

TEST_CASE("asio_pipeline: typed rejections become sluice errors", "[asio_pipeline]") {
  net::io_context io;
  fake_breaker breaker;
  sluice::bulkhead<> slots({.max_concurrent = 1});
  auto p = sluice::asio::pipeline(io.get_executor(), sluice::breaker_ref(breaker),
                                  sluice::bulkhead_ref(slots));
  auto op = []() -> net::awaitable<int> { co_return 1; };
  error_code full, open;
  auto held = slots.try_acquire();
  p.async_execute(op, [&](error_code ec, int) { full = ec; });
  io.run();
  CHECK(full == sluice::asio::error::resource_exhausted);
  CHECK(breaker.ignored == 1);  // a bulkhead refusal says nothing about the dependency
  breaker.open = true;
  io.restart();
  p.async_execute(op, [&](error_code ec, int) { open = ec; });
  io.run();
  CHECK(open == sluice::asio::error::unavailable);
  CHECK(sluice::asio::to_status(open).code() == absl::StatusCode::kUnavailable);
}

TEST_CASE("asio_pipeline: cancelling through the handler's slot stops the operation",
          "[asio_pipeline]") {
  net::io_context io;
  fake_breaker breaker;
  auto p = sluice::asio::pipeline(io.get_executor(), sluice::breaker_ref(breaker));
  net::cancellation_signal signal;
  bool cancelled = false;
  error_code got;
  p.async_execute(
      slow_op{10s, &cancelled},
      net::bind_cancellation_slot(signal.slot(), [&](error_code ec, int) { got = ec; }));
  net::steady_timer later(io, 2ms);
  later.async_wait([&](error_code) { signal.emit(net::cancellation_type::terminal); });
  io.run();
  CHECK(cancelled);
  // The operation saw the cancellation and returned Cancelled itself.
  CHECK(got == sluice::asio::error::cancelled);
}

TEST_CASE("asio_pipeline: exceptions complete with an error", "[asio_pipeline]") {
  net::io_context io;
  fake_breaker breaker;
  auto p = sluice::asio::pipeline(io.get_executor(), sluice::breaker_ref(breaker));
  error_code got;
  p.async_execute(
      []() -> net::awaitable<int> {
        throw std::runtime_error("boom");
        co_return 1;
      },
      [&](error_code ec, int) { got = ec; });
  io.run();
  CHECK(got == sluice::asio::error::unknown);
  CHECK(breaker.failures == 1);
}

TEST_CASE("asio_pipeline: a cancelled probe of the real breaker frees its permit",
          "[asio_pipeline]") {
  net::io_context io;
  sluice::circuit_breaker_options o;
  o.window.window_size = 4;
  o.minimum_calls = 2;
  o.half_open_probes = 1;
  o.open_duration = 1ms;
  o.max_open_duration = 1ms;
  o.open_duration_jitter = 0.0;
  sluice::circuit_breaker<> breaker(o);
  auto p = sluice::asio::pipeline(io.get_executor(), sluice::breaker_ref(breaker),
                                  sluice::asio::timeout(5ms));
  auto fail = []() -> net::awaitable<absl::Status> { co_return absl::UnavailableError("down"); };
  p.async_execute(fail, [](error_code) {});
  p.async_execute(fail, [](error_code) {});
  io.run();
  REQUIRE(breaker.state() != sluice::breaker_state::closed);
  // Wait (on a timer) for the open duration, then send a probe that the timeout cancels.
  io.restart();
  bool cancelled = false;
  error_code probe_ec;
  net::steady_timer wait(io, 5ms);
  wait.async_wait([&](error_code) {
    p.async_execute(
        [&]() -> net::awaitable<absl::Status> {
          bool c = false;
          auto r = co_await slow_op{10s, &c}();
          cancelled = c;
          co_return r.status();
        },
        [&](error_code ec) { probe_ec = ec; });
  });
  io.run();
  CHECK(cancelled);
  CHECK(probe_ec == sluice::asio::error::deadline_exceeded);
  // The probe's outcome (a timeout, a failure) was recorded, so the breaker is not stuck in
  // half-open with its only permit out: it re-opened, and after the open duration admits a probe.
  io.restart();
  error_code next_ec = sluice::asio::make_error_code(sluice::asio::error::unknown);
  net::steady_timer again(io, 5ms);
  again.async_wait([&](error_code) {
    p.async_execute([]() -> net::awaitable<absl::Status> { co_return absl::OkStatus(); },
                    [&](error_code ec) { next_ec = ec; });
  });
  io.run();
  CHECK_FALSE(next_ec);
}

TEST_CASE("asio_pipeline: async_execute_outcome reports the typed reason", "[asio_pipeline]") {
  net::io_context io;
  auto p = sluice::asio::pipeline(
      io.get_executor(), sluice::fallback(-1, sluice::fallback_on::breaker_open),
      sluice::retry({.max_attempts = 2, .delay = sluice::backoff::constant(1ms)}),
      sluice::asio::timeout(5ms));
  bool cancelled = false;
  std::optional<sluice::outcome<absl::StatusOr<int>>> timed_out;
  error_code timed_out_ec;
  p.async_execute_outcome(slow_op{10s, &cancelled}, {},
                          [&](error_code ec, sluice::outcome<absl::StatusOr<int>> o) {
                            timed_out_ec = ec;
                            timed_out = std::move(o);
                          });
  std::optional<sluice::outcome<absl::StatusOr<int>>> fine;
  net::co_spawn(
      io,
      [&]() -> net::awaitable<void> {
        fine = co_await p.async_execute_outcome([]() -> net::awaitable<int> { co_return 3; }, {},
                                                net::use_awaitable);
      },
      net::detached);
  io.run();
  REQUIRE(timed_out.has_value());
  CHECK(timed_out->reason == sluice::reason::timeout);
  CHECK(timed_out->attempts == 2);  // each attempt timed out and was retried once
  CHECK(timed_out_ec == sluice::asio::error::deadline_exceeded);
  CHECK(timed_out->result.status().message().empty());  // no allocated message on rejection
  CHECK_FALSE(timed_out->fallback_used);
  CHECK(cancelled);
  REQUIRE(fine.has_value());
  REQUIRE(fine->ok());
  CHECK(*fine->result == 3);
  CHECK(fine->reason == sluice::reason::none);
}

TEST_CASE("asio_pipeline: a synchronous rejection started on the executor still completes later",
          "[asio_pipeline]") {
  net::io_context io;
  fake_breaker breaker;
  breaker.open = true;
  auto p = sluice::asio::pipeline(io.get_executor(), sluice::breaker_ref(breaker));
  bool returned = false;
  bool called_before_return = false;
  error_code got;
  net::post(io, [&] {
    p.async_execute([]() -> net::awaitable<int> { co_return 1; },
                    [&](error_code ec, int) {
                      called_before_return = !returned;
                      got = ec;
                    });
    returned = true;
  });
  io.run();
  CHECK(returned);
  CHECK_FALSE(called_before_return);
  CHECK(got == sluice::asio::error::unavailable);
}

TEST_CASE("asio_pipeline: the breaker stage classifies exceptions with the breaker's predicate",
          "[asio_pipeline]") {
  net::io_context io;
  sluice::circuit_breaker_options o;
  o.window.window_size = 4;
  o.minimum_calls = 4;
  o.classify_exception =
      sluice::classify_exceptions<std::invalid_argument>(sluice::call_outcome::ignored);
  sluice::circuit_breaker<> breaker(o);
  auto p = sluice::asio::pipeline(io.get_executor(), sluice::breaker_ref(breaker));
  int errors = 0;
  for (int i = 0; i < 8; ++i) {
    p.async_execute(
        []() -> net::awaitable<int> {
          throw std::invalid_argument("caller bug");
          co_return 1;
        },
        [&](error_code ec, int) { errors += ec ? 1 : 0; });
  }
  io.run();
  CHECK(errors == 8);
  CHECK(breaker.state() == sluice::breaker_state::closed);
  CHECK(breaker.metrics().ignored_calls == 8);
  CHECK(breaker.metrics().failed_calls == 0);
}

TEST_CASE("asio_pipeline: the handler runs on its own executor, which is kept busy meanwhile",
          "[asio_pipeline]") {
  // The operation runs on `work_io`; the handler is bound to `handler_io`. handler_io.run() is
  // started first, on another thread: it returns early (and the handler never runs) unless the
  // pipeline holds work on the handler's executor while the operation is in flight.
  net::io_context work_io;
  net::io_context handler_io;
  auto p = sluice::asio::pipeline(work_io.get_executor(), sluice::retry({.max_attempts = 1}));
  std::atomic<bool> on_handler_io{false};
  std::atomic<int> got{0};
  p.async_execute([]() -> net::awaitable<int> { co_return 5; },
                  net::bind_executor(handler_io, [&](error_code ec, int v) {
                    on_handler_io = handler_io.get_executor().running_in_this_thread() &&
                                    !work_io.get_executor().running_in_this_thread();
                    got = ec ? -1 : v;
                  }));
  std::thread handler_thread([&] { handler_io.run(); });
  work_io.run();
  handler_thread.join();
  CHECK(got.load() == 5);
  CHECK(on_handler_io.load());
}
