// The circuit breaker's hot paths (see <sluice/circuit_breaker.hpp>) against a straightforward
// mutex-based breaker written here as the baseline, measured in the same run. Figures and the
// command that produced them: bench/RESULTS.md.
//
//   BM_breaker_execute_closed        execute() around an empty function, count-based window,
//                                    slow-call detection off (steady_clock, never read)
//   BM_breaker_execute_closed_timed  the same with a time-based window and slow-call detection on
//                                    (sluice::coarse_clock: two ~5 ns clock reads per call)
//   BM_breaker_reject_open           execute() on a breaker tripped open (coarse_clock: one read)
//   BM_breaker_reject_open_steady    the same with std::chrono::steady_clock (for reference)
//   BM_breaker_mutex_baseline        the baseline's execute() around an empty function
// Each also runs with 2 threads on one shared breaker (`/threads:2`). With threads, Google
// Benchmark's "Time" column is wall time divided by the iterations of all threads, so the total
// throughput is 1e9 / Time (its items_per_second is per thread, being divided by summed CPU time).
#include <array>
#include <chrono>
#include <cstdint>
#include <mutex>

#include <benchmark/benchmark.h>

#include <sluice/circuit_breaker.hpp>
#include <sluice/clock.hpp>
#include <sluice/health_recorder.hpp>

namespace {

using namespace std::chrono_literals;

// The baseline: what a careful engineer writes first. One mutex guards a 100-call ring, the
// failure count and the state; a call takes the lock to ask for admission and again to record.
class mutex_breaker {
 public:
  template <class F>
  bool execute(F&& fn) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (state_ == state::open) {
        if (std::chrono::steady_clock::now() < open_until_) return false;
        state_ = state::half_open;
      }
    }
    bool ok = true;
    try {
      fn();
    } catch (...) {
      ok = false;
    }
    record(ok);
    return true;
  }

 private:
  enum class state { closed, open, half_open };

  void record(bool ok) {
    std::lock_guard<std::mutex> lock(mu_);
    const std::uint8_t failed = ok ? 0 : 1;
    failures_ = failures_ + failed - ring_[pos_];
    ring_[pos_] = failed;
    pos_ = (pos_ + 1) % ring_.size();
    if (calls_ < ring_.size()) ++calls_;
    if (state_ == state::half_open) {
      state_ = ok ? state::closed : state::open;
    } else if (calls_ >= 20 && failures_ * 2 >= calls_) {
      state_ = state::open;
      open_until_ = std::chrono::steady_clock::now() + 30s;
    }
  }

  std::mutex mu_;
  state state_ = state::closed;
  std::array<std::uint8_t, 100> ring_{};
  std::size_t pos_ = 0;
  std::size_t calls_ = 0;
  std::size_t failures_ = 0;
  std::chrono::steady_clock::time_point open_until_{};
};

sluice::circuit_breaker_options counted_options() {
  sluice::circuit_breaker_options o;  // count-based window of 100 calls, slow calls off
  return o;
}

sluice::circuit_breaker_options timed_options() {
  sluice::circuit_breaker_options o;
  o.window.kind = sluice::health_recorder_options::window_kind::time_based;
  o.window.window_duration = 10s;
  o.slow_call_duration = 1s;
  o.slow_call_rate_threshold = 0.8;
  return o;
}

template <class Breaker>
void trip(Breaker& b) {
  for (int i = 0; i < 200 && b.state() == sluice::breaker_state::closed; ++i) {
    if (auto p = b.try_acquire()) p->record_failure();
  }
}

void BM_breaker_execute_closed(benchmark::State& state) {
  static sluice::circuit_breaker<> breaker(counted_options());
  for (auto _ : state) {
    absl::Status st = breaker.execute([] {});
    benchmark::DoNotOptimize(st);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_breaker_execute_closed)->Threads(1)->Threads(2);

void BM_breaker_execute_closed_timed(benchmark::State& state) {
  static sluice::circuit_breaker<sluice::coarse_clock> breaker(timed_options());
  for (auto _ : state) {
    absl::Status st = breaker.execute([] {});
    benchmark::DoNotOptimize(st);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_breaker_execute_closed_timed)->Threads(1)->Threads(2);

void BM_breaker_reject_open(benchmark::State& state) {
  static sluice::circuit_breaker<sluice::coarse_clock> breaker = [] {
    sluice::circuit_breaker<sluice::coarse_clock> b(counted_options());
    trip(b);
    return b;
  }();
  if (breaker.state() != sluice::breaker_state::open) state.SkipWithError("breaker not open");
  for (auto _ : state) {
    absl::Status st = breaker.execute([] {});
    benchmark::DoNotOptimize(st);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_breaker_reject_open)->Threads(1)->Threads(2);

void BM_breaker_reject_open_steady(benchmark::State& state) {
  static sluice::circuit_breaker<> breaker = [] {
    sluice::circuit_breaker<> b(counted_options());
    trip(b);
    return b;
  }();
  if (breaker.state() != sluice::breaker_state::open) state.SkipWithError("breaker not open");
  for (auto _ : state) {
    absl::Status st = breaker.execute([] {});
    benchmark::DoNotOptimize(st);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_breaker_reject_open_steady)->Threads(1)->Threads(2);

void BM_breaker_mutex_baseline(benchmark::State& state) {
  static mutex_breaker breaker;
  for (auto _ : state) {
    bool admitted = breaker.execute([] {});
    benchmark::DoNotOptimize(admitted);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_breaker_mutex_baseline)->Threads(1)->Threads(2);

}  // namespace
