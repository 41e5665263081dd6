// Rate limiter benchmarks (issue 5): the GCRA limiter's decision cost on one and two threads
// against a mutex-based token bucket baseline in the same run, and a keyed limiter with 100k
// active keys.
//
// Clocks: the named figures read sluice::coarse_clock (CLOCK_MONOTONIC_COARSE, ~5 ns). The
// `_steady_clock` and `_caller_now` variants show the same decision with steady_clock (~24 ns per
// read) and with a time the caller already has (no clock read at all).
#include <chrono>
#include <cstdint>
#include <mutex>
#include <random>
#include <vector>

#include "absl/synchronization/mutex.h"
#include <benchmark/benchmark.h>

#include <sluice/clock.hpp>
#include <sluice/gcra_limiter.hpp>
#include <sluice/keyed_limiter.hpp>
#include <sluice/token_bucket.hpp>

namespace {

using namespace std::chrono_literals;

// The named figures use a realistic limiter under overload: 1M units/s with a burst of 1000,
// offered far more calls than that (tens of millions per second), so most calls are refused, as
// when a limiter protects a service from a flood. The `_all_admitted` variants use a limiter that
// never refuses (1e9/s, burst 1e6): every call then writes the shared state, the worst case.
constexpr sluice::rate_limit_options flood_limits{.rate = 1'000'000, .period = 1s, .burst = 1'000};
constexpr sluice::rate_limit_options open_limits{
    .rate = 1'000'000'000, .period = 1s, .burst = 1'000'000};

// The baseline: the textbook token bucket behind a std::mutex (what a service writes by hand),
// reading the same clock as the sluice figure it is compared with.
template <class Clock>
class mutex_token_bucket {
 public:
  explicit mutex_token_bucket(const sluice::rate_limit_options& o)
      : rate_per_ns_(static_cast<double>(o.rate) / static_cast<double>(o.period.count())),
        burst_(static_cast<double>(o.burst)),
        tokens_(burst_),
        last_(Clock::now()) {}

  bool try_acquire(double n = 1) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto now = Clock::now();
    const auto elapsed = std::chrono::duration<double, std::nano>(now - last_).count();
    last_ = now;
    tokens_ += elapsed * rate_per_ns_;
    if (tokens_ > burst_) tokens_ = burst_;
    if (tokens_ < n) return false;
    tokens_ -= n;
    return true;
  }

 private:
  std::mutex mu_;
  const double rate_per_ns_;
  const double burst_;
  double tokens_;
  typename Clock::time_point last_;
};

template <class Limiter>
void run(benchmark::State& state, Limiter& limiter) {
  std::uint64_t admitted = 0;
  for (auto _ : state) {
    const auto r = limiter.try_acquire();
    admitted += static_cast<bool>(r) ? 1 : 0;
    benchmark::DoNotOptimize(r);
  }
  state.counters["admitted_frac"] =
      static_cast<double>(admitted) / static_cast<double>(state.iterations());
}

sluice::gcra_limiter<sluice::coarse_clock> g_gcra(flood_limits);
sluice::gcra_limiter<sluice::coarse_clock> g_gcra_open(open_limits);
sluice::gcra_limiter<std::chrono::steady_clock> g_gcra_steady(flood_limits);
mutex_token_bucket<sluice::coarse_clock> g_baseline(flood_limits);
mutex_token_bucket<sluice::coarse_clock> g_baseline_open(open_limits);
sluice::token_bucket<sluice::coarse_clock> g_token_bucket(flood_limits);

void BM_gcra_try_acquire(benchmark::State& state) { run(state, g_gcra); }
BENCHMARK(BM_gcra_try_acquire)->Threads(1)->Threads(2)->UseRealTime();

void BM_token_bucket_mutex_baseline(benchmark::State& state) { run(state, g_baseline); }
BENCHMARK(BM_token_bucket_mutex_baseline)->Threads(1)->Threads(2)->UseRealTime();

void BM_gcra_try_acquire_all_admitted(benchmark::State& state) { run(state, g_gcra_open); }
BENCHMARK(BM_gcra_try_acquire_all_admitted)->Threads(1)->Threads(2)->UseRealTime();

void BM_token_bucket_mutex_baseline_all_admitted(benchmark::State& state) {
  run(state, g_baseline_open);
}
BENCHMARK(BM_token_bucket_mutex_baseline_all_admitted)->Threads(1)->Threads(2)->UseRealTime();

void BM_gcra_try_acquire_steady_clock(benchmark::State& state) { run(state, g_gcra_steady); }
BENCHMARK(BM_gcra_try_acquire_steady_clock)->Threads(1)->Threads(2)->UseRealTime();

void BM_gcra_try_acquire_caller_now(benchmark::State& state) {
  // The caller's cached time (an event loop reads it once per turn), moved 10 ns per call so
  // the limiter sees time pass at the pace of the calls.
  auto now = sluice::coarse_clock::now();
  std::uint64_t admitted = 0;
  for (auto _ : state) {
    now += 10ns;
    const auto r = g_gcra.try_acquire(1, now);
    admitted += r.allowed ? 1 : 0;
    benchmark::DoNotOptimize(r);
  }
  state.counters["admitted_frac"] =
      static_cast<double>(admitted) / static_cast<double>(state.iterations());
}
BENCHMARK(BM_gcra_try_acquire_caller_now)->Threads(1)->Threads(2)->UseRealTime();

// sluice's mutex-based token bucket (absl::Mutex), for reference.
void BM_token_bucket_try_acquire(benchmark::State& state) { run(state, g_token_bucket); }
BENCHMARK(BM_token_bucket_try_acquire)->Threads(1)->Threads(2)->UseRealTime();

void BM_keyed_limiter_100k_keys(benchmark::State& state) {
  // Debian's Abseil is built without NDEBUG, so absl::Mutex runs its deadlock detector (a graph
  // update on every Lock) unless told not to: production services turn it off, and so do we.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  constexpr std::uint64_t keys = 100'000;
  sluice::keyed_limiter<std::uint64_t, sluice::gcra_limiter<sluice::coarse_clock>> keyed(
      {.limits = {.rate = 1'000'000, .burst = 1'000}, .max_keys = 131'072, .shards = 16});
  for (std::uint64_t k = 0; k < keys; ++k) (void)keyed.try_acquire(k * 0x9e3779b97f4a7c15ULL);
  // A random visiting order over all keys (a power of two long, far larger than the caches).
  std::vector<std::uint64_t> order(1 << 20);
  std::mt19937_64 rng(42);
  for (auto& k : order) k = (rng() % keys) * 0x9e3779b97f4a7c15ULL;
  std::size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(keyed.try_acquire(order[i]));
    i = (i + 1) & (order.size() - 1);
  }
  state.counters["keys"] = static_cast<double>(keyed.size());
}
BENCHMARK(BM_keyed_limiter_100k_keys);

}  // namespace
