// Redis client benchmarks: GET throughput on one pipelined connection and single-GET round trip,
// against the server named by SLUICE_BENCH_REDIS_URL (skipped when unset). bench/redis/compare.sh
// starts a server, runs these and redis-benchmark against it in the same run, and prints the
// comparison recorded in bench/RESULTS.md.
//
// Both GET the key redis-benchmark uses ("key:__rand_int__", set to 3 bytes like its default -d 3),
// with the connection's default 1 s command timeout armed, as an application would run it.
#include <cstdint>
#include <cstdlib>
#include <string>

#include <benchmark/benchmark.h>
#include <boost/asio/io_context.hpp>

#include "sluice/redis/commands.hpp"
#include "sluice/redis/connection.hpp"
#include "sluice/redis/url.hpp"

namespace {

namespace net = boost::asio;
namespace redis = sluice::redis;

constexpr const char* bench_key = "key:__rand_int__";

// Connects `conn` and sets the benchmark key; false (with the reason in `state`) on failure.
bool setup(benchmark::State& state, net::io_context& io, redis::connection& conn) {
  const char* url = std::getenv("SLUICE_BENCH_REDIS_URL");
  if (url == nullptr || *url == '\0') {
    state.SkipWithError("SLUICE_BENCH_REDIS_URL is not set (see bench/redis/compare.sh)");
    return false;
  }
  auto ep = redis::parse_url(url);
  if (!ep.ok()) {
    state.SkipWithError("SLUICE_BENCH_REDIS_URL is not a redis:// URL");
    return false;
  }
  bool done = false;
  boost::system::error_code error;
  conn.async_connect(*ep, [&](boost::system::error_code ec) {
    error = ec;
    done = true;
  });
  while (!done) io.run_one();
  if (error) {
    state.SkipWithError("cannot connect to SLUICE_BENCH_REDIS_URL");
    return false;
  }
  done = false;
  redis::async_set(conn, bench_key, "xxx", {}, [&](boost::system::error_code ec, redis::reply) {
    error = ec;
    done = true;
  });
  while (!done) io.run_one();
  return !error;
}

// Counts replies; a GET that fails or returns anything but the 3-byte value is an error.
struct reply_counter {
  std::int64_t in_flight = 0;
  std::int64_t errors = 0;
};

struct on_reply {
  reply_counter* counter;
  void operator()(boost::system::error_code ec, const redis::reply& r) const {
    --counter->in_flight;
    if (ec || r.str().size() != 3) ++counter->errors;
  }
};

void run_window(benchmark::State& state, std::int64_t window) {
  net::io_context io(1);
  redis::connection conn(io);
  if (!setup(state, io, conn)) return;
  reply_counter counter;
  for (auto _ : state) {
    while (counter.in_flight >= window) io.run_one();
    ++counter.in_flight;
    redis::async_get(conn, bench_key, on_reply{&counter});
  }
  while (counter.in_flight > 0) io.run_one();
  if (counter.errors != 0) state.SkipWithError("GET failed");
  state.counters["gets_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.SetItemsProcessed(state.iterations());
}

// GETs with up to 1024 commands in flight on one connection (one iteration = one GET).
void BM_redis_get_pipelined(benchmark::State& state) { run_window(state, 1024); }
BENCHMARK(BM_redis_get_pipelined)->UseRealTime();

// One GET at a time: the time per iteration is the round trip.
void BM_redis_get_roundtrip(benchmark::State& state) { run_window(state, 1); }
BENCHMARK(BM_redis_get_roundtrip)->UseRealTime();

}  // namespace
