#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <sluice/asio/offload.hpp>
#include <sluice/testing/manual_clock.hpp>

#include "catch.hpp"

using namespace std::chrono_literals;
namespace net = boost::asio;

namespace {

struct gate {
  std::atomic<bool> started{false};
  std::atomic<bool> open{false};
  void block() {
    started = true;
    while (!open) std::this_thread::yield();
  }
  void wait_started() const {
    while (!started) std::this_thread::yield();
  }
};

// Returns the error code of a system_error in `ep`, or a default code for anything else.
boost::system::error_code code_of(std::exception_ptr ep) {
  try {
    if (ep) std::rethrow_exception(ep);
  } catch (const boost::system::system_error& e) {
    return e.code();
  } catch (...) {
  }
  return {};
}

}  // namespace

TEST_CASE("asio_offload: co_await runs fn on the pool and resumes on the caller's executor",
          "[asio_offload]") {
  net::io_context io;
  sluice::offload_executor cpu({.threads = 2});
  const auto io_thread = std::this_thread::get_id();
  std::thread::id worker_thread, resumed_thread;
  int result = 0;
  bool threw = false;
  net::co_spawn(
      io,
      [&]() -> net::awaitable<void> {
        result = co_await sluice::asio::offload(
            cpu,
            [&] {
              worker_thread = std::this_thread::get_id();
              return 42;
            },
            net::use_awaitable);
        resumed_thread = std::this_thread::get_id();
        co_await sluice::asio::offload(
            cpu, [] {}, net::use_awaitable);  // void form
        try {
          co_await sluice::asio::offload(
              cpu, []() -> int { throw std::runtime_error("boom"); }, net::use_awaitable);
        } catch (const std::runtime_error&) {
          threw = true;
        }
      },
      net::detached);
  io.run();  // returns only when the work guard is released: the coroutine finished
  CHECK(result == 42);
  CHECK(worker_thread != io_thread);
  CHECK(resumed_thread == io_thread);
  CHECK(threw);
}

TEST_CASE("asio_offload: the handler never runs inside the initiating function", "[asio_offload]") {
  net::io_context io;
  sluice::offload_executor cpu({.threads = 1});
  std::atomic<bool> called{false};
  sluice::asio::offload(
      cpu, [] { return 1; },
      net::bind_executor(io, [&](std::exception_ptr, int) { called = true; }));
  CHECK_FALSE(called);
  io.run();
  CHECK(called);
}

TEST_CASE("asio_offload: cancelling the await drops a still-queued task", "[asio_offload]") {
  net::io_context io;
  sluice::offload_executor cpu({.threads = 1});
  gate g;
  REQUIRE(cpu.execute([&] { g.block(); }).ok());
  g.wait_started();
  std::atomic<bool> ran{false};
  net::cancellation_signal signal;
  std::exception_ptr result;
  bool done = false;
  sluice::asio::offload(
      cpu, [&] { ran = true; },
      net::bind_cancellation_slot(signal.slot(), net::bind_executor(io, [&](std::exception_ptr ep) {
                                    result = ep;
                                    done = true;
                                  })));
  signal.emit(net::cancellation_type::terminal);
  io.run();  // completes without waiting for the blocked worker
  CHECK(done);
  CHECK(code_of(result) == net::error::operation_aborted);
  g.open = true;
  cpu.shutdown();
  CHECK_FALSE(ran);
}

TEST_CASE("asio_offload: a full queue and shutdown complete with typed errors", "[asio_offload]") {
  net::io_context io;
  sluice::offload_executor cpu({.threads = 1, .queue_capacity = 1});
  gate g;
  REQUIRE(cpu.execute([&] { g.block(); }).ok());
  g.wait_started();
  REQUIRE(cpu.execute([] {}).ok());  // fills the queue
  std::exception_ptr full;
  sluice::asio::offload(
      cpu, [] { return 1; },
      net::bind_executor(io, [&](std::exception_ptr ep, int) { full = ep; }));
  io.run();
  CHECK(code_of(full) == sluice::asio::error::resource_exhausted);
  g.open = true;
  cpu.shutdown();
  io.restart();
  std::exception_ptr closed;
  sluice::asio::offload(
      cpu, [] { return 1; },
      net::bind_executor(io, [&](std::exception_ptr ep, int) { closed = ep; }));
  io.run();
  CHECK(code_of(closed) == sluice::asio::error::cancelled);
}

TEST_CASE("asio_offload: a task expired in the queue completes with deadline_exceeded",
          "[asio_offload]") {
  net::io_context io;
  sluice::testing::manual_clock clock;
  sluice::basic_offload_executor<sluice::testing::manual_clock> cpu({.threads = 1}, clock);
  gate g;
  REQUIRE(cpu.execute([&] { g.block(); }).ok());
  g.wait_started();
  std::atomic<bool> ran{false};
  std::exception_ptr result;
  sluice::asio::offload(cpu, [&] { ran = true; },
                        net::bind_executor(io, [&](std::exception_ptr ep) { result = ep; }),
                        {.deadline = clock.now() + 1s});
  clock.advance(2s);
  g.open = true;
  io.run();
  CHECK(code_of(result) == sluice::asio::error::deadline_exceeded);
  CHECK_FALSE(ran);
}
