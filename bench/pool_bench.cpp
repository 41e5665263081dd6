// Pool benchmarks: sluice::pool acquire + release against a mutex + condition_variable pool
// written here as the baseline, uncontended and with two threads sharing one pool.
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <vector>

#include <benchmark/benchmark.h>

#include <sluice/clock.hpp>
#include <sluice/pool.hpp>

namespace {

struct fake_connection {
  int fd = 0;
};

template <class Clock>
sluice::pool<fake_connection, Clock>& shared_pool() {
  static auto pool = [] {
    sluice::pool_factory<fake_connection, Clock> factory;
    factory.create = [](auto) -> absl::StatusOr<fake_connection> { return fake_connection{3}; };
    auto p = sluice::pool<fake_connection, Clock>::make(std::move(factory), {.max_size = 8});
    if (!p.ok()) std::abort();
    return std::move(*p);
  }();
  return pool;
}

template <class Clock>
void acquire_release(benchmark::State& state) {
  auto& pool = shared_pool<Clock>();
  for (auto _ : state) {
    auto lease = pool.acquire(std::chrono::seconds(1));
    if (!lease.ok()) state.SkipWithError("acquire failed");
    benchmark::DoNotOptimize((*lease)->fd);
  }
  state.SetItemsProcessed(state.iterations());
}
// The default clock (std::chrono::steady_clock, ~24 ns a read, two reads per iteration).
void BM_pool_acquire_release(benchmark::State& state) {
  acquire_release<std::chrono::steady_clock>(state);
}
BENCHMARK(BM_pool_acquire_release);
BENCHMARK(BM_pool_acquire_release)->Threads(2);

// The same on sluice::coarse_clock (~5 ns a read, 1-4 ms resolution), for comparison.
void BM_pool_acquire_release_coarse_clock(benchmark::State& state) {
  acquire_release<sluice::coarse_clock>(state);
}
BENCHMARK(BM_pool_acquire_release_coarse_clock);
BENCHMARK(BM_pool_acquire_release_coarse_clock)->Threads(2);

// The baseline: the textbook pool, one mutex and one condition variable around a vector of idle
// connections, with the same RAII lease shape.
class mutex_cv_pool {
 public:
  explicit mutex_cv_pool(std::size_t n) : idle_(n) {}
  class lease {
   public:
    lease(mutex_cv_pool* p, fake_connection c) : pool_(p), conn_(c) {}
    lease(const lease&) = delete;
    lease& operator=(const lease&) = delete;
    ~lease() { pool_->release(conn_); }
    fake_connection& operator*() { return conn_; }

   private:
    mutex_cv_pool* pool_;
    fake_connection conn_;
  };
  lease acquire(std::chrono::steady_clock::duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, timeout, [&] { return !idle_.empty(); });
    fake_connection c = idle_.back();
    idle_.pop_back();
    return lease(this, c);
  }

 private:
  void release(fake_connection c) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      idle_.push_back(c);
    }
    cv_.notify_one();
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<fake_connection> idle_;
};

void BM_pool_mutex_cv_baseline(benchmark::State& state) {
  static mutex_cv_pool pool(8);
  for (auto _ : state) {
    auto lease = pool.acquire(std::chrono::seconds(1));
    benchmark::DoNotOptimize((*lease).fd);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_pool_mutex_cv_baseline);
BENCHMARK(BM_pool_mutex_cv_baseline)->Threads(2);

}  // namespace
