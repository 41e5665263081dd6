// The cost of reading each clock sluice's primitives accept (see <sluice/clock.hpp>): the figures
// behind the clock table in that header and STYLE's timing budget.
#include <chrono>

#include <benchmark/benchmark.h>

#include <sluice/clock.hpp>
#include <sluice/testing/manual_clock.hpp>

namespace {

void BM_clock_steady_now(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(std::chrono::steady_clock::now());
}
BENCHMARK(BM_clock_steady_now);

void BM_clock_coarse_now(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(sluice::coarse_clock::now());
}
BENCHMARK(BM_clock_coarse_now);

void BM_clock_manual_now(benchmark::State& state) {
  sluice::testing::manual_clock clock;
  for (auto _ : state) benchmark::DoNotOptimize(clock.now());
}
BENCHMARK(BM_clock_manual_now);

}  // namespace
