// The per-call overhead of sluice's retry, bulkhead and pipeline on the path of a call that
// succeeds (and of a rejection), against calling the function directly in the same run.
//   BM_resilience_direct_call          the baseline: the function alone
//   BM_retry_success                   retry (token-bucket budget) around a succeeding call
//   BM_retry_backoff_next              computing one decorrelated-jitter delay
//   BM_bulkhead_try_acquire            acquire + release, no queue (lock-free) / with a queue
//   BM_pipeline_execute_*              fallback + retry + breaker + bulkhead + timeout
//   BM_pipeline_reject_open            the same pipeline with the breaker open (execute_outcome)
#include <chrono>

#include <benchmark/benchmark.h>

#include <sluice/bulkhead.hpp>
#include <sluice/circuit_breaker.hpp>
#include <sluice/clock.hpp>
#include <sluice/fallback.hpp>
#include <sluice/pipeline.hpp>
#include <sluice/retry.hpp>
#include <sluice/retry_budget.hpp>
#include <sluice/timeout.hpp>

namespace {

using namespace std::chrono_literals;

int g_value = 1;

// The protected function: cheap, opaque to the optimiser.
absl::StatusOr<int> work() {
  benchmark::DoNotOptimize(g_value);
  return g_value;
}

void BM_resilience_direct_call(benchmark::State& state) {
  for (auto _ : state) {
    auto r = work();
    benchmark::DoNotOptimize(r);
  }
}
BENCHMARK(BM_resilience_direct_call);

void BM_retry_success(benchmark::State& state) {
  sluice::token_bucket_retry_budget budget;
  sluice::retry retry({.max_attempts = 3}, budget);
  for (auto _ : state) {
    auto r = retry.execute(work);
    benchmark::DoNotOptimize(r);
  }
}
BENCHMARK(BM_retry_success)->ThreadRange(1, 2);

void BM_retry_backoff_next(benchmark::State& state) {
  const auto delay = sluice::backoff::decorrelated_jitter(10ms, 10s);
  sluice::detail::fast_rng rng(42);
  std::chrono::nanoseconds previous = 10ms;
  for (auto _ : state) {
    previous = delay.next(3, previous, rng);
    benchmark::DoNotOptimize(previous);
  }
}
BENCHMARK(BM_retry_backoff_next);

void BM_bulkhead_try_acquire(benchmark::State& state) {
  static sluice::bulkhead<> no_queue({.max_concurrent = 64});
  static sluice::bulkhead<> queued({.max_concurrent = 64, .max_queue = 64});
  auto& b = state.range(0) == 0 ? no_queue : queued;
  for (auto _ : state) {
    auto p = b.try_acquire();
    benchmark::DoNotOptimize(p);
  }
  state.SetLabel(state.range(0) == 0 ? "no queue" : "queue");
}
BENCHMARK(BM_bulkhead_try_acquire)->Arg(0)->Arg(1)->ThreadRange(1, 2);

template <class Clock>
void pipeline_execute(benchmark::State& state) {
  static sluice::circuit_breaker<Clock> breaker;
  static sluice::bulkhead<Clock> slots({.max_concurrent = 64});
  static sluice::token_bucket_retry_budget budget;
  auto p = sluice::pipeline(
      sluice::fallback(0, sluice::fallback_on::rejections),
      sluice::retry<Clock, sluice::token_bucket_retry_budget>({.max_attempts = 3}, budget),
      sluice::breaker_ref(breaker), sluice::bulkhead_ref(slots), sluice::timeout<Clock>(1s));
  for (auto _ : state) {
    auto r = p.execute(work);
    benchmark::DoNotOptimize(r);
  }
}

void BM_pipeline_execute_steady(benchmark::State& state) {
  pipeline_execute<std::chrono::steady_clock>(state);
}
BENCHMARK(BM_pipeline_execute_steady)->ThreadRange(1, 2);

void BM_pipeline_execute_coarse(benchmark::State& state) {
  pipeline_execute<sluice::coarse_clock>(state);
}
BENCHMARK(BM_pipeline_execute_coarse)->ThreadRange(1, 2);

void BM_pipeline_execute_no_timeout(benchmark::State& state) {
  static sluice::circuit_breaker<> breaker;
  static sluice::bulkhead<> slots({.max_concurrent = 64});
  static sluice::token_bucket_retry_budget budget;
  auto p = sluice::pipeline(sluice::fallback(0, sluice::fallback_on::rejections),
                            sluice::retry({.max_attempts = 3}, budget),
                            sluice::breaker_ref(breaker), sluice::bulkhead_ref(slots));
  for (auto _ : state) {
    auto r = p.execute(work);
    benchmark::DoNotOptimize(r);
  }
}
BENCHMARK(BM_pipeline_execute_no_timeout)->ThreadRange(1, 2);

void BM_pipeline_reject_open(benchmark::State& state) {
  static sluice::circuit_breaker<> breaker;
  breaker.force_open();
  static sluice::bulkhead<> slots({.max_concurrent = 64});
  auto p = sluice::pipeline(sluice::retry({.max_attempts = 3}), sluice::breaker_ref(breaker),
                            sluice::bulkhead_ref(slots));
  for (auto _ : state) {
    auto o = p.execute_outcome(work);
    benchmark::DoNotOptimize(o);
  }
}
BENCHMARK(BM_pipeline_reject_open);

}  // namespace
