// The header under test comes first: it must compile on its own.
// clang-format off
#include <sluice/metrics/process_collector.hpp>
// clang-format on

#include <atomic>
#include <chrono>
#include <cmath>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <sluice/detail/mutex.hpp>
#include <sluice/metrics/registry.hpp>

#include "catch.hpp"

namespace m = sluice::metrics;

#if defined(__linux__)

TEST_CASE("process_metrics: figures are plausible for this process", "[metrics][process]") {
  const auto s = m::process_collector::read();
  REQUIRE(s.ok());
  CHECK(s->resident_memory_bytes > 0);
  CHECK(s->virtual_memory_bytes >= s->resident_memory_bytes);
  CHECK(s->threads >= 1);
  CHECK(s->open_fds >= 3);  // stdin, stdout, stderr at least
  CHECK(s->cpu_seconds >= 0);
  const auto now = static_cast<double>(std::time(nullptr));
  CHECK(s->start_time_seconds <= now + 1);
  CHECK(s->start_time_seconds > now - 24 * 3600);  // this test run started less than a day ago
  rlimit limit{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &limit) == 0);
  if (limit.rlim_cur == RLIM_INFINITY) {
    CHECK(std::isinf(s->max_fds));
  } else {
    CHECK(s->max_fds == static_cast<double>(limit.rlim_cur));
  }
}

TEST_CASE("process_metrics: open descriptors and threads follow the process",
          "[metrics][process]") {
  const auto before = m::process_collector::read();
  REQUIRE(before.ok());
  std::vector<int> fds;
  for (int i = 0; i < 3; ++i) fds.push_back(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  for (const int fd : fds) REQUIRE(fd >= 0);
  const auto opened = m::process_collector::read();
  for (const int fd : fds) ::close(fd);
  REQUIRE(opened.ok());
  CHECK(opened->open_fds == before->open_fds + 3);

  // Two threads that stay alive until the figures are read.
  sluice::detail::mutex mu;
  sluice::detail::cond_var cv;
  bool release = false;
  int started = 0;
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i) {
    threads.emplace_back([&] {
      sluice::detail::mutex_lock lock(mu);
      ++started;
      cv.notify_all();
      while (!release) cv.wait(mu);
    });
  }
  {
    sluice::detail::mutex_lock lock(mu);
    while (started < 2) cv.wait(mu);
  }
  const auto running = m::process_collector::read();
  {
    sluice::detail::mutex_lock lock(mu);
    release = true;
    cv.notify_all();
  }
  for (auto& t : threads) t.join();
  REQUIRE(running.ok());
  CHECK(running->threads >= before->threads + 2);
}

TEST_CASE("process_metrics: CPU time grows with work", "[metrics][process]") {
  const auto before = m::process_collector::read();
  REQUIRE(before.ok());
  // Burn CPU until the kernel's tick-granular accounting moves (about 10 ms of work).
  std::atomic<std::uint64_t> sink{0};
  const auto start = std::chrono::steady_clock::now();
  double now_cpu = before->cpu_seconds;
  while (now_cpu <= before->cpu_seconds &&
         std::chrono::steady_clock::now() - start < std::chrono::seconds(10)) {
    for (int i = 0; i < 1'000'000; ++i) sink.fetch_add(1, std::memory_order_relaxed);
    now_cpu = m::process_collector::read()->cpu_seconds;
  }
  CHECK(now_cpu > before->cpu_seconds);
}

TEST_CASE("process_metrics: the collector publishes the conventional names", "[metrics][process]") {
  m::registry r;
  auto reg = r.add_collector(m::process_collector{});
  const std::string text = r.render();
  for (const char* line :
       {"# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total ",
        "# TYPE process_open_fds gauge\nprocess_open_fds ",
        "# TYPE process_max_fds gauge\nprocess_max_fds ",
        "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes ",
        "# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes ",
        "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds ",
        "# TYPE process_threads gauge\nprocess_threads "}) {
    INFO(line);
    CHECK(text.find(line) != std::string::npos);
  }
}

#endif
