// Offload benchmarks: 1M tiny tasks through sluice::offload_executor and through
// boost::asio::thread_pool with the same number of worker threads, submitted from one thread.
// Counters: tasks/s (items_per_second) and the submit-to-start latency p50/p99 of every 256th
// task, measured the same way for both.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <vector>

#include <benchmark/benchmark.h>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include <sluice/offload.hpp>

namespace {

constexpr std::int64_t tasks = 1'000'000;
constexpr std::size_t workers = 2;
constexpr std::int64_t sample_every = 256;

using steady = std::chrono::steady_clock;

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now().time_since_epoch())
      .count();
}

// The tiny task: count, and for sampled tasks record the submit-to-start latency.
struct tiny_task {
  std::atomic<std::int64_t>* done;
  std::int64_t* latency;  // null unless sampled
  std::int64_t submitted_ns;
  void operator()() const {
    if (latency != nullptr) *latency = now_ns() - submitted_ns;
    done->fetch_add(1, std::memory_order_relaxed);
  }
};

void report(benchmark::State& state, std::vector<std::int64_t>& lat) {
  std::sort(lat.begin(), lat.end());
  state.counters["p50_ns"] = static_cast<double>(lat[lat.size() / 2]);
  state.counters["p99_ns"] = static_cast<double>(lat[lat.size() * 99 / 100]);
  state.SetItemsProcessed(state.iterations() * tasks);
}

template <class Submit>
void submit_all(std::atomic<std::int64_t>& done, std::vector<std::int64_t>& lat, Submit&& submit) {
  for (std::int64_t i = 0; i < tasks; ++i) {
    const bool sampled = i % sample_every == 0;
    submit(tiny_task{&done, sampled ? &lat[static_cast<std::size_t>(i / sample_every)] : nullptr,
                     sampled ? now_ns() : 0});
  }
}

void BM_offload_tiny_tasks(benchmark::State& state) {
  std::vector<std::int64_t> lat(static_cast<std::size_t>(tasks / sample_every) + 1);
  std::vector<std::int64_t> all;
  for (auto _ : state) {
    std::atomic<std::int64_t> done{0};
    sluice::offload_executor ex({.threads = workers,
                                 .queue_capacity = 65536,
                                 .full_policy = sluice::offload_full_policy::wait});
    submit_all(done, lat, [&](tiny_task t) {
      if (!ex.execute(t).ok()) std::abort();
    });
    ex.shutdown();
    if (done.load() != tasks) state.SkipWithError("lost tasks");
    all.insert(all.end(), lat.begin(), lat.end());
  }
  report(state, all);
}
BENCHMARK(BM_offload_tiny_tasks)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_asio_thread_pool_baseline(benchmark::State& state) {
  std::vector<std::int64_t> lat(static_cast<std::size_t>(tasks / sample_every) + 1);
  std::vector<std::int64_t> all;
  for (auto _ : state) {
    std::atomic<std::int64_t> done{0};
    boost::asio::thread_pool pool(workers);
    submit_all(done, lat, [&](tiny_task t) { boost::asio::post(pool, t); });
    pool.join();
    if (done.load() != tasks) state.SkipWithError("lost tasks");
    all.insert(all.end(), lat.begin(), lat.end());
  }
  report(state, all);
}
BENCHMARK(BM_asio_thread_pool_baseline)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
