#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <sluice/asio/cache.hpp>

#include "catch.hpp"

namespace net = boost::asio;

TEST_CASE("cache asio: concurrent coroutine misses run the loader once", "[cache][asio]") {
  const int callers = GENERATE(2, 5);
  sluice::cache<std::string, std::string> c(
      {.max_entries = 100, .shards = 1, .background_sweep = false});
  net::io_context io;
  int loads = 0;
  std::vector<std::string> results;
  auto loader = [&](const std::string& key) -> net::awaitable<absl::StatusOr<std::string>> {
    ++loads;
    // Suspend a few times so every other caller reaches the cache while this load is running.
    for (int i = 0; i < 10; ++i) co_await net::post(io, net::use_awaitable);
    co_return "value of " + key;
  };
  for (int i = 0; i < callers; ++i) {
    net::co_spawn(
        io,
        [&]() -> net::awaitable<void> {
          absl::StatusOr<std::string> v =
              co_await sluice::asio::get_or_load(c, std::string("k"), loader);
          results.push_back(v.ok() ? *v : v.status().ToString());
        },
        net::detached);
  }
  io.run();
  CHECK(loads == 1);
  REQUIRE(results.size() == static_cast<std::size_t>(callers));
  for (const auto& r : results) CHECK(r == "value of k");
  CHECK(c.stats().loads == 1);
  CHECK(c.stats().misses == static_cast<std::uint64_t>(callers));
}

TEST_CASE("cache asio: hits and cached not-found answer without the loader", "[cache][asio]") {
  sluice::cache<int, std::string> c({.max_entries = 100,
                                     .negative_ttl = std::chrono::minutes(1),
                                     .shards = 1,
                                     .background_sweep = false});
  c.put(1, "one");
  net::io_context io;
  int loads = 0;
  std::vector<std::string> out;
  auto loader = [&](const int&) -> net::awaitable<absl::StatusOr<std::string>> {
    ++loads;
    co_return absl::NotFoundError("none");
  };
  net::co_spawn(
      io,
      [&]() -> net::awaitable<void> {
        out.push_back((co_await sluice::asio::get_or_load(c, 1, loader)).value());
        for (int i = 0; i < 3; ++i) {
          auto r = co_await sluice::asio::get_or_load(c, 2, loader);
          out.push_back(absl::IsNotFound(r.status()) ? "not found" : "?");
        }
      },
      net::detached);
  io.run();
  CHECK(loads == 1);
  CHECK(out == std::vector<std::string>{"one", "not found", "not found", "not found"});
}

TEST_CASE("cache asio: a thread loading and a coroutine waiting share one load", "[cache][asio]") {
  sluice::cache<int, int> c({.max_entries = 100, .shards = 1, .background_sweep = false});
  auto ticket = c.begin_load(7);
  REQUIRE(ticket.leader());
  net::io_context io;
  int got = 0;
  net::co_spawn(
      io,
      [&]() -> net::awaitable<void> {
        auto r = co_await sluice::asio::get_or_load(
            c, 7, [](const int&) -> net::awaitable<absl::StatusOr<int>> { co_return -1; });
        got = r.value();
      },
      net::detached);
  // Run the coroutine until it waits on the load.
  io.poll();
  CHECK(got == 0);
  std::thread loader([&] { c.complete_load(ticket, 49); });
  loader.join();
  io.restart();
  io.run();
  CHECK(got == 49);
  CHECK(c.get(7) == std::optional<int>(49));
}
