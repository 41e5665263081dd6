#include "sluice/offload.hpp"

#include <atomic>
#include <chrono>
#include <future>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <sluice/testing/manual_clock.hpp>

#include "alloc_counter.hpp"
#include "catch.hpp"

using namespace std::chrono_literals;
using sluice::testing::manual_clock;

namespace {

// Blocks a worker until opened, so tests can arrange the queue behind it.
struct gate {
  std::atomic<bool> started{false};
  std::atomic<bool> open{false};
  auto task() {
    return [this] {
      started = true;
      while (!open) std::this_thread::yield();
    };
  }
  void wait_started() const {
    while (!started) std::this_thread::yield();
  }
};

}  // namespace

TEST_CASE("offload: results, void tasks and exceptions travel back", "[offload]") {
  sluice::offload_executor ex({.threads = 2});
  auto answer = ex.submit([] { return 6 * 7; });
  REQUIRE(answer.ok());
  CHECK(answer->get() == 42);
  std::atomic<int> ran{0};
  auto v = ex.submit([&] { ++ran; });
  REQUIRE(v.ok());
  v->get();
  CHECK(ran == 1);
  auto boom = ex.submit([]() -> int { throw std::runtime_error("boom"); });
  REQUIRE(boom.ok());
  CHECK_THROWS_AS(boom->get(), std::runtime_error);
  // execute(): the exception is caught and counted; the worker survives.
  REQUIRE(ex.execute([] { throw std::logic_error("x"); }).ok());
  auto after = ex.submit([] { return 1; });
  REQUIRE(after.ok());
  CHECK(after->get() == 1);
  ex.shutdown();
  CHECK(ex.stats().failed == 1);
  CHECK(ex.stats().completed == 5);
}

TEST_CASE("offload: higher priorities run first, FIFO within one", "[offload]") {
  sluice::offload_executor ex({.threads = 1});
  gate g;
  REQUIRE(ex.execute(g.task()).ok());
  g.wait_started();
  std::vector<std::string> order;  // written by the single worker only
  auto add = [&](std::string name, sluice::offload_priority p) {
    REQUIRE(ex.execute([&order, name] { order.push_back(name); }, {.priority = p}).ok());
  };
  add("low1", sluice::offload_priority::low);
  add("normal1", sluice::offload_priority::normal);
  add("high1", sluice::offload_priority::high);
  add("low2", sluice::offload_priority::low);
  add("high2", sluice::offload_priority::high);
  g.open = true;
  ex.shutdown();
  CHECK(order == std::vector<std::string>{"high1", "high2", "normal1", "low1", "low2"});
}

TEST_CASE("offload: a task whose deadline passed in the queue is not run", "[offload]") {
  manual_clock clock;
  sluice::basic_offload_executor<manual_clock> ex({.threads = 1}, clock);
  gate g;
  REQUIRE(ex.execute(g.task()).ok());
  g.wait_started();
  std::atomic<int> ran{0};
  auto late = ex.submit([&] { return ++ran; }, {.deadline = clock.now() + 1s});
  auto fine = ex.submit([&] { return ++ran; }, {.deadline = clock.now() + 10s});
  REQUIRE(late.ok());
  REQUIRE(fine.ok());
  clock.advance(2s);
  g.open = true;
  try {
    late->get();
    FAIL("expired task ran");
  } catch (const sluice::offload_error& e) {
    CHECK(e.status().code() == absl::StatusCode::kDeadlineExceeded);
  }
  CHECK(fine->get() == 1);
  CHECK(ran == 1);
  // enqueue(): the raw task learns its fate.
  std::atomic<int> fate{-1};
  g.open = false;
  g.started = false;
  REQUIRE(ex.execute(g.task()).ok());
  g.wait_started();
  REQUIRE(ex.enqueue([&](const absl::Status& s) { fate = static_cast<int>(s.code()); },
                     {.deadline = clock.now() + 1ms})
              .ok());
  clock.advance(1ms);
  g.open = true;
  ex.shutdown();
  CHECK(fate == static_cast<int>(absl::StatusCode::kDeadlineExceeded));
  CHECK(ex.stats().expired == 2);
}

TEST_CASE("offload: a full queue rejects with ResourceExhausted", "[offload]") {
  sluice::offload_executor ex({.threads = 1, .queue_capacity = 2});
  gate g;
  REQUIRE(ex.execute(g.task()).ok());
  g.wait_started();
  CHECK(ex.execute([] {}).ok());
  CHECK(ex.execute([] {}).ok());
  auto refused = ex.execute([] {});
  CHECK(refused.code() == absl::StatusCode::kResourceExhausted);
  CHECK(ex.submit([] { return 1; }).status().code() == absl::StatusCode::kResourceExhausted);
  CHECK(ex.stats().rejected == 2);
  CHECK(ex.stats().queue_depth == 2);
  CHECK(ex.stats().active == 1);
  g.open = true;
  ex.shutdown();
  CHECK(ex.stats().completed == 3);
}

TEST_CASE("offload: the wait policy blocks for room until the enqueue deadline", "[offload]") {
  manual_clock clock;
  sluice::basic_offload_executor<manual_clock> ex(
      {.threads = 1, .queue_capacity = 1, .full_policy = sluice::offload_full_policy::wait}, clock);
  gate g;
  REQUIRE(ex.execute(g.task()).ok());
  g.wait_started();
  REQUIRE(ex.execute([] {}).ok());
  // No room: the submission waits in manual time until its enqueue deadline (a ticker moves it).
  std::atomic<bool> done{false};
  std::thread ticker([&] {
    while (!done) {
      clock.advance(100ms);
      std::this_thread::yield();
    }
  });
  const auto t0 = clock.now();
  auto st = ex.execute([] {}, {.enqueue_deadline = t0 + 1s});
  done = true;
  ticker.join();
  CHECK(st.code() == absl::StatusCode::kDeadlineExceeded);
  CHECK(clock.now() - t0 >= 1s);
  // Room appears when the worker moves on: a waiting submission then succeeds.
  std::atomic<int> code{-1};
  std::thread submitter([&] { code = static_cast<int>(ex.execute([] {}).code()); });
  g.open = true;
  submitter.join();
  CHECK(code == 0);
  ex.shutdown();
  CHECK(ex.stats().completed == 3);
}

TEST_CASE("offload: shutdown drains or cancels queued work by policy", "[offload]") {
  const bool cancel = GENERATE(false, true);
  sluice::offload_executor ex({.threads = 1});
  gate g;
  REQUIRE(ex.execute(g.task()).ok());
  g.wait_started();
  std::atomic<int> ran{0};
  std::vector<std::future<int>> futures;
  for (int i = 0; i < 5; ++i) {
    auto f = ex.submit([&] { return ++ran; });
    REQUIRE(f.ok());
    futures.push_back(std::move(*f));
  }
  std::thread stopper([&] {
    ex.shutdown(cancel ? sluice::offload_shutdown::cancel : sluice::offload_shutdown::drain);
  });
  // Submissions after shutdown began are refused.
  std::uint64_t extra = 0;  // accepted before shutdown took effect
  while (ex.submit([] { return 0; }).ok()) {
    ++extra;
    std::this_thread::yield();
  }
  g.open = true;
  stopper.join();
  int cancelled = 0;
  for (auto& f : futures) {
    try {
      f.get();
    } catch (const sluice::offload_error& e) {
      CHECK(e.status().code() == absl::StatusCode::kCancelled);
      ++cancelled;
    }
  }
  CHECK(ex.execute([] {}).code() == absl::StatusCode::kCancelled);
  if (cancel) {
    CHECK(ran == 0);
    CHECK(cancelled == 5);
    CHECK(ex.stats().cancelled == 5 + extra);
  } else {
    CHECK(ran == 5);
    CHECK(cancelled == 0);
  }
}

TEST_CASE("offload: submitting a small task does not allocate", "[offload]") {
  sluice::offload_executor ex({.threads = 1, .queue_capacity = 1024});
  std::atomic<int> ran{0};
  REQUIRE(ex.execute([&] { ++ran; }).ok());  // warm up
  sluice_test::alloc_scope scope;
  for (int i = 0; i < 100; ++i) {
    if (!ex.execute([&] { ++ran; }).ok()) break;
  }
  CHECK(scope.allocations() == 0);
  ex.shutdown();
  CHECK(ran == 101);
}

TEST_CASE("offload: stress from many submitters, counters add up", "[offload]") {
  const int submitters = GENERATE(1, 2, 4);
  const std::size_t workers = GENERATE(1u, 2u, 4u);
  sluice::offload_executor ex({.threads = workers,
                               .queue_capacity = 64,
                               .full_policy = sluice::offload_full_policy::wait,
                               .latency_sample_every = 1});
  std::atomic<std::uint64_t> sum{0};
  std::atomic<int> refused{0};
  constexpr int per = 5000;
  std::vector<std::thread> ts;
  for (int s = 0; s < submitters; ++s) {
    ts.emplace_back([&] {
      for (int i = 1; i <= per; ++i) {
        if (!ex.execute([&sum, i] { sum += static_cast<std::uint64_t>(i); }).ok()) ++refused;
      }
    });
  }
  for (auto& t : ts) t.join();
  ex.shutdown();
  INFO("submitters=" << submitters << " workers=" << workers);
  const auto s = ex.stats();
  CHECK(refused == 0);
  CHECK(sum == static_cast<std::uint64_t>(submitters) * per * (per + 1) / 2);
  CHECK(s.submitted == static_cast<std::uint64_t>(submitters * per));
  CHECK(s.completed == s.submitted);
  CHECK(s.queue_depth == 0);
  CHECK(s.active == 0);
  CHECK(s.queue_wait_samples == s.submitted);
  CHECK(s.queue_wait_p50 <= s.queue_wait_p99);
}
