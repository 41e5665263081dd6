// sluice::cache throughput against the classic alternative, in the same run:
//   BM_cache_get_hit             single thread, 100k resident entries, uniformly random keys
//   BM_cache_get_hit_wide_value  the same with a 24-byte value (read from the entry, not the index)
//   BM_cache_zipf_mixed          90% get / 10% put over 1M Zipf(0.99) keys, capacity 100k
//   BM_cache_mutex_lru_baseline  the same workload on a mutex-protected std::unordered_map +
//                                std::list LRU (below), the usual hand-written cache
// The Zipf and baseline runs also run on 2 threads; compare items_per_second (real time).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <list>
#include <mutex>
#include <optional>
#include <random>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include <benchmark/benchmark.h>

#include <sluice/cache.hpp>

namespace {

// Debian's Abseil is built without NDEBUG, so every absl::Mutex::Lock runs the deadlock detector
// (a graph lookup per acquisition, ~30 ns here); a release Abseil does not. The cache benchmarks
// measure the cache, not that debug aid: they turn it off (process-wide, as a release build has
// it) before running. The baseline uses std::mutex and is unaffected.
const bool deadlock_detection_off = [] {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  return true;
}();

constexpr std::size_t resident = 100'000;
constexpr std::size_t key_space = 1'000'000;
constexpr std::size_t trace_len = std::size_t{1} << 22;

// A mutex-protected LRU map: what most code bases write by hand.
class mutex_lru {
 public:
  explicit mutex_lru(std::size_t capacity) : capacity_(capacity) { map_.reserve(capacity * 2); }

  std::optional<std::uint64_t> get(std::uint64_t key) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    if (it == map_.end()) return std::nullopt;
    order_.splice(order_.end(), order_, it->second);
    return it->second->second;
  }

  void put(std::uint64_t key, std::uint64_t value) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    if (it != map_.end()) {
      it->second->second = value;
      order_.splice(order_.end(), order_, it->second);
      return;
    }
    order_.emplace_back(key, value);
    map_.emplace(key, std::prev(order_.end()));
    if (map_.size() > capacity_) {
      map_.erase(order_.front().first);
      order_.pop_front();
    }
  }

 private:
  std::mutex mu_;
  std::size_t capacity_;
  std::list<std::pair<std::uint64_t, std::uint64_t>> order_;
  std::unordered_map<std::uint64_t, std::list<std::pair<std::uint64_t, std::uint64_t>>::iterator>
      map_;
};

// Zipf(0.99)-distributed keys over [0, key_space), precomputed once (inverse CDF), shuffled
// ranks so hot keys are spread over shards as real keys are.
const std::vector<std::uint64_t>& zipf_trace() {
  static const std::vector<std::uint64_t> trace = [] {
    std::vector<double> cdf(key_space);
    double sum = 0;
    for (std::size_t i = 0; i < key_space; ++i) {
      sum += 1.0 / std::pow(static_cast<double>(i + 1), 0.99);
      cdf[i] = sum;
    }
    std::mt19937_64 rng(42);
    std::uniform_real_distribution<double> u(0, sum);
    std::vector<std::uint64_t> t(trace_len);
    for (auto& k : t) {
      const auto rank = static_cast<std::uint64_t>(
          std::lower_bound(cdf.begin(), cdf.end(), u(rng)) - cdf.begin());
      k = sluice::detail::mix64(rank) % key_space;
    }
    return t;
  }();
  return trace;
}

const std::vector<std::uint64_t>& uniform_trace() {
  static const std::vector<std::uint64_t> trace = [] {
    std::mt19937_64 rng(7);
    std::uniform_int_distribution<std::uint64_t> u(0, resident - 1);
    std::vector<std::uint64_t> t(trace_len);
    for (auto& k : t) k = u(rng);
    return t;
  }();
  return trace;
}

using sluice_cache = sluice::cache<std::uint64_t, std::uint64_t>;

// A value too large for the read index's inline copies (more than 8 bytes): a hit reads the entry.
struct wide_value {
  std::uint64_t a = 0, b = 0, c = 0;
};

template <class Value>
void run_get_hit(benchmark::State& state) {
  // Capacity with headroom: each shard holds at most max_entries / shards, and 100k keys do not
  // spread perfectly evenly over the shards.
  sluice::cache<std::uint64_t, Value> c(
      {.max_entries = resident * 5 / 4, .background_sweep = false});
  for (std::uint64_t k = 0; k < resident; ++k) c.put(k, Value{k});
  for (std::uint64_t k = 0; k < resident; ++k) benchmark::DoNotOptimize(c.get(k));
  const auto& keys = uniform_trace();
  std::size_t i = 0;
  std::uint64_t found = 0;
  for (auto _ : state) {
    auto v = c.get(keys[i]);
    found += v.has_value();
    benchmark::DoNotOptimize(v);
    i = (i + 1) & (trace_len - 1);
  }
  if (found != static_cast<std::uint64_t>(state.iterations())) state.SkipWithError("a get missed");
  state.SetItemsProcessed(state.iterations());
}

// Integer keys and values: a hit is answered from the read index's copy (one cache miss).
void BM_cache_get_hit(benchmark::State& state) { run_get_hit<std::uint64_t>(state); }
BENCHMARK(BM_cache_get_hit);

// The same with a 24-byte value: a hit follows the index to the entry (two cache misses), the
// path of every key or value type larger than 8 bytes or not trivially copyable.
void BM_cache_get_hit_wide_value(benchmark::State& state) { run_get_hit<wide_value>(state); }
BENCHMARK(BM_cache_get_hit_wide_value);

// `shared` is read after the timing loop's start barrier, once thread 0 has set it.
template <class Cache>
void run_mixed(benchmark::State& state, Cache* const& shared) {
  const auto& keys = zipf_trace();
  std::size_t i = (static_cast<std::size_t>(state.thread_index()) * 7919 * 131) & (trace_len - 1);
  std::uint64_t n = static_cast<std::uint64_t>(state.thread_index());
  Cache* c = nullptr;
  for (auto _ : state) {
    if (c == nullptr) c = shared;
    const std::uint64_t k = keys[i];
    i = (i + 1) & (trace_len - 1);
    // 1 in 10 operations is a put (a deterministic pattern; cheaper than drawing a number).
    if (++n % 10 == 0) {
      c->put(k, k);
    } else {
      benchmark::DoNotOptimize(c->get(k));
    }
  }
  state.SetItemsProcessed(state.iterations());
}

template <class Cache>
void warm(Cache& c) {
  const auto& keys = zipf_trace();
  for (std::size_t i = 0; i < trace_len / 4; ++i) {
    if (!c.get(keys[i])) c.put(keys[i], keys[i]);
  }
}

// Shared by the threads of one run: thread 0 builds it before the timing loop (the loop starts
// with a barrier across threads) and frees it after (the loop ends with one too).
sluice_cache* shared_sluice = nullptr;
mutex_lru* shared_baseline = nullptr;

void BM_cache_zipf_mixed(benchmark::State& state) {
  if (state.thread_index() == 0) {
    shared_sluice = new sluice_cache({.max_entries = resident, .background_sweep = false});
    warm(*shared_sluice);
  }
  run_mixed(state, shared_sluice);
  if (state.thread_index() == 0) {
    const sluice::cache_stats st = shared_sluice->stats();
    state.counters["hit_ratio"] = st.hit_ratio();
    delete shared_sluice;
    shared_sluice = nullptr;
  }
}
BENCHMARK(BM_cache_zipf_mixed)->UseRealTime();
BENCHMARK(BM_cache_zipf_mixed)->Threads(2)->UseRealTime();

void BM_cache_mutex_lru_baseline(benchmark::State& state) {
  if (state.thread_index() == 0) {
    shared_baseline = new mutex_lru(resident);
    warm(*shared_baseline);
  }
  run_mixed(state, shared_baseline);
  if (state.thread_index() == 0) {
    delete shared_baseline;
    shared_baseline = nullptr;
  }
}
BENCHMARK(BM_cache_mutex_lru_baseline)->UseRealTime();
BENCHMARK(BM_cache_mutex_lru_baseline)->Threads(2)->UseRealTime();

}  // namespace
