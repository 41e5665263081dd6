// The update paths of sluice's metrics (<sluice/metrics.hpp>) against prometheus-cpp, the usual C++
// client, in the same run: counter increment and histogram observe, alone and from 2 threads
// sharing one metric. Both histograms use Prometheus' default bounds and observe the same values.
// Figures and targets: bench/RESULTS.md.
#include <chrono>
#include <cstddef>
#include <random>
#include <vector>

#include <benchmark/benchmark.h>

#include <sluice/metrics.hpp>

#if defined(SLUICE_BENCH_HAVE_PROMETHEUS_CPP)
#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#endif

namespace {

// 1024 latencies in seconds, exponentially distributed around 50 ms, so that observations spread
// over the default buckets (.005 .. 10) and the bucket search is not trivially predicted.
const std::vector<double>& sample_values() {
  static const std::vector<double> values = [] {
    std::mt19937_64 rng(2024);
    std::exponential_distribution<double> dist(20.0);
    std::vector<double> v(1024);
    for (auto& x : v) x = dist(rng);
    return v;
  }();
  return values;
}

sluice::metrics::registry& bench_registry() {
  static sluice::metrics::registry registry;
  return registry;
}

void BM_counter_inc(benchmark::State& state) {
  static sluice::metrics::counter& counter =
      **bench_registry().add_counter("bench_ops_total", "Benchmark increments.");
  for (auto _ : state) counter.inc();
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_counter_inc);
BENCHMARK(BM_counter_inc)->Threads(2);

void BM_histogram_observe(benchmark::State& state) {
  static sluice::metrics::histogram& histogram =
      **bench_registry().add_histogram("bench_duration_seconds", "Benchmark observations.",
                                       sluice::metrics::histogram::default_bounds());
  const std::vector<double>& values = sample_values();
  std::size_t i = 0;
  for (auto _ : state) {
    histogram.observe(values[i++ & 1023]);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_histogram_observe);
BENCHMARK(BM_histogram_observe)->Threads(2);

// Not a figure the issue asks for: the log-linear histogram's cost, for the record.
void BM_latency_histogram_observe(benchmark::State& state) {
  static sluice::metrics::latency_histogram& histogram =
      **bench_registry().add_latency_histogram("bench_latency_seconds", "Benchmark latencies.");
  std::vector<std::chrono::nanoseconds> values;
  for (const double v : sample_values()) {
    values.emplace_back(static_cast<std::chrono::nanoseconds::rep>(v * 1e9));
  }
  std::size_t i = 0;
  for (auto _ : state) {
    histogram.observe(values[i++ & 1023]);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_latency_histogram_observe);
BENCHMARK(BM_latency_histogram_observe)->Threads(2);

#if defined(SLUICE_BENCH_HAVE_PROMETHEUS_CPP)

prometheus::Registry& prometheus_registry() {
  static prometheus::Registry registry;
  return registry;
}

void BM_histogram_prometheus_cpp(benchmark::State& state) {
  static prometheus::Histogram& histogram =
      prometheus::BuildHistogram()
          .Name("bench_duration_seconds")
          .Help("Benchmark observations.")
          .Register(prometheus_registry())
          .Add({}, prometheus::Histogram::BucketBoundaries(
                       sluice::metrics::histogram::default_bounds()));
  const std::vector<double>& values = sample_values();
  std::size_t i = 0;
  for (auto _ : state) {
    histogram.Observe(values[i++ & 1023]);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_histogram_prometheus_cpp);
BENCHMARK(BM_histogram_prometheus_cpp)->Threads(2);

// Not a figure the issue asks for: prometheus-cpp's counter (one atomic double, shared line).
void BM_counter_prometheus_cpp(benchmark::State& state) {
  static prometheus::Counter& counter = prometheus::BuildCounter()
                                            .Name("bench_ops_total")
                                            .Help("Benchmark increments.")
                                            .Register(prometheus_registry())
                                            .Add({});
  for (auto _ : state) counter.Increment();
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_counter_prometheus_cpp);
BENCHMARK(BM_counter_prometheus_cpp)->Threads(2);

#endif

}  // namespace
