// Shows: moving CPU-heavy work off an event loop with a bounded offload executor: futures,
// priorities, deadlines, a full queue, and `co_await sluice::asio::offload` from a coroutine.
// Needs: sluice::core (sluice/offload.hpp) and sluice::asio (sluice/asio/offload.hpp).
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <sluice/asio/offload.hpp>
#include <sluice/offload.hpp>

// Stand-in for real CPU work (hashing a password, resizing an image).
std::uint64_t expensive(std::uint64_t n) {
  std::uint64_t x = n;
  for (int i = 0; i < 1'000'000; ++i) x = x * 6364136223846793005ULL + 1442695040888963407ULL;
  return x;
}

int main() {
  using namespace std::chrono_literals;
  sluice::offload_executor cpu({.threads = 2, .queue_capacity = 64});

  // A future, with a priority and a deadline for starting.
  auto digest =
      cpu.submit([] { return expensive(1); }, {.priority = sluice::offload_priority::high,
                                               .deadline = std::chrono::steady_clock::now() + 1s});
  if (!digest.ok()) return std::printf("refused: %s\n", digest.status().ToString().c_str()), 1;
  std::printf("digest %llx\n", static_cast<unsigned long long>(digest->get()));

  // From a coroutine: fn runs on the executor's workers, the coroutine resumes on its own loop.
  boost::asio::io_context io;
  boost::asio::co_spawn(
      io,
      [&]() -> boost::asio::awaitable<std::uint64_t> {
        co_return co_await sluice::asio::offload(
            cpu, [] { return expensive(2); }, boost::asio::use_awaitable);
      },
      [](std::exception_ptr ep, std::uint64_t v) {
        if (ep) return std::puts("offload failed");
        return std::printf("from the coroutine: %llx\n", static_cast<unsigned long long>(v));
      });
  io.run();

  // Shedding load: a tiny executor whose queue is full rejects at once with ResourceExhausted.
  sluice::offload_executor small({.threads = 1, .queue_capacity = 1});
  int accepted = 0, rejected = 0;
  for (int i = 0; i < 10; ++i) {
    if (small.execute([] { expensive(3); }).ok()) {
      ++accepted;
    } else {
      ++rejected;
    }
  }
  small.shutdown(sluice::offload_shutdown::drain);
  std::printf("accepted %d, rejected %d\n", accepted, rejected);

  cpu.shutdown();
  const sluice::offload_stats s = cpu.stats();
  std::printf("completed=%llu queue_wait_p50=%lldns\n",
              static_cast<unsigned long long>(s.completed),
              static_cast<long long>(s.queue_wait_p50.count()));
  return rejected > 0 ? 0 : 1;
}
