#include "sluice/cache.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "sluice/cache/sweeper.hpp"
#include "sluice/detail/cache_epoch.hpp"
#include "sluice/detail/cache_maintainer.hpp"
#include "sluice/detail/cache_read_index.hpp"
#include "sluice/detail/cache_sketch.hpp"
#include "sluice/detail/cache_timer_wheel.hpp"
#include "sluice/detail/mutex.hpp"
#include "sluice/testing/manual_clock.hpp"

#include "alloc_counter.hpp"
#include "catch.hpp"

namespace {

using namespace std::chrono_literals;
using sluice::testing::manual_clock;
using str_cache = sluice::cache<std::string, std::string, manual_clock>;
using int_cache = sluice::cache<int, int, manual_clock>;

// One shard, no sweeper thread, and caller maintenance: every hit reaches the policy before the
// next write, so eviction order is exact (tests of background maintenance set it themselves).
sluice::cache_options one_shard(std::size_t max_entries) {
  sluice::cache_options o;
  o.max_entries = max_entries;
  o.shards = 1;
  o.background_sweep = false;
  o.maintenance = sluice::cache_maintenance::caller;
  return o;
}

// Waits (in real time, up to a generous bound) for `pred`, polling: for conditions that another
// thread makes true. Returns the final value of `pred()`.
template <class Pred>
bool eventually(Pred pred) {
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return pred();
    std::this_thread::yield();
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

}  // namespace

TEST_CASE("cache: put, get, erase, size and stats", "[cache]") {
  manual_clock clock;
  str_cache c(one_shard(100), clock);
  CHECK_FALSE(c.get("a").has_value());
  c.put("a", "1");
  c.put("b", "2");
  REQUIRE(c.get("a") == std::optional<std::string>("1"));
  CHECK(c.size() == 2);
  CHECK(c.contains("b"));
  c.put("a", "3");
  CHECK(c.get("a") == std::optional<std::string>("3"));
  CHECK(c.size() == 2);
  CHECK(c.erase("a"));
  CHECK_FALSE(c.erase("a"));
  CHECK_FALSE(c.get("a").has_value());
  const sluice::cache_stats st = c.stats();
  CHECK(st.hits == 2);
  CHECK(st.misses == 2);
  CHECK(st.replacements == 1);
  CHECK(st.erasures == 1);
  CHECK(st.hit_ratio() == 0.5);
  c.clear();
  CHECK(c.size() == 0);
  CHECK(c.weight() == 0);
}

TEST_CASE("cache: create validates options", "[cache]") {
  sluice::cache_options bad;
  bad.max_entries = 0;
  CHECK(absl::IsInvalidArgument(str_cache::create(bad).status()));
  sluice::cache_options negative;
  negative.expire_after_write = -1s;
  CHECK(absl::IsInvalidArgument(str_cache::create(negative).status()));
  sluice::cache_options weighted;
  weighted.max_weight = 100;  // without a weigher
  CHECK(absl::IsInvalidArgument(str_cache::create(weighted).status()));
  auto ok = str_cache::create(one_shard(10));
  REQUIRE(ok.ok());
  (*ok)->put("k", "v");
  CHECK((*ok)->get("k").has_value());
}

TEST_CASE("cache: LRU evicts the least recently used entry", "[cache]") {
  sluice::cache_options o = one_shard(3);
  o.policy = sluice::eviction_policy::lru;
  int_cache c(o);
  c.put(1, 1);
  c.put(2, 2);
  c.put(3, 3);
  REQUIRE(c.get(1).has_value());  // order now 2, 3, 1
  c.put(4, 4);                    // evicts 2
  CHECK_FALSE(c.peek(2).has_value());
  CHECK(c.peek(1).has_value());
  CHECK(c.peek(3).has_value());
  CHECK(c.peek(4).has_value());
  REQUIRE(c.get(3).has_value());  // order 1, 4, 3
  c.put(5, 5);                    // evicts 1
  CHECK_FALSE(c.peek(1).has_value());
  CHECK(c.size() == 3);
  CHECK(c.stats().evictions == 2);
}

TEST_CASE("cache: TinyLFU keeps frequent keys that LRU loses to a stream of one-offs", "[cache]") {
  // Each round requests 50 hot keys, then 100 keys never seen before. The LRU reuse distance of a
  // hot key (150) exceeds the capacity (100), so LRU never hits; TinyLFU keeps the hot keys.
  const auto hot_hits = [](sluice::eviction_policy policy) {
    sluice::cache_options o = one_shard(100);
    o.policy = policy;
    int_cache c(o);
    int hits = 0;
    int next_cold = 1000;
    for (int round = 0; round < 100; ++round) {
      for (int k = 0; k < 50; ++k) {
        if (c.get(k)) {
          if (round >= 50) ++hits;
        } else {
          c.put(k, k);
        }
      }
      for (int j = 0; j < 100; ++j, ++next_cold) {
        if (!c.get(next_cold)) c.put(next_cold, next_cold);
      }
    }
    return hits;
  };
  CHECK(hot_hits(sluice::eviction_policy::lru) == 0);
  CHECK(hot_hits(sluice::eviction_policy::tinylfu) >= 50 * 50 * 9 / 10);
}

TEST_CASE("cache: expire_after_write on a manual clock", "[cache]") {
  manual_clock clock;
  sluice::cache_options o = one_shard(100);
  o.expire_after_write = 1s;
  str_cache c(o, clock);
  c.put("k", "v");
  clock.advance(999ms);
  CHECK(c.get("k").has_value());
  clock.advance(1ms);
  CHECK_FALSE(c.get("k").has_value());
  CHECK_FALSE(c.peek("k").has_value());
  // Still in memory until swept; cleanup() removes it.
  CHECK(c.size() == 1);
  c.cleanup();
  CHECK(c.size() == 0);
  CHECK(c.stats().expirations == 1);
  // A rewrite restarts the time to live.
  c.put("k", "v1");
  clock.advance(600ms);
  c.put("k", "v2");
  clock.advance(600ms);
  CHECK(c.get("k") == std::optional<std::string>("v2"));
}

TEST_CASE("cache: a per-entry ttl overrides the default", "[cache]") {
  manual_clock clock;
  sluice::cache_options o = one_shard(100);
  o.expire_after_write = 10s;
  str_cache c(o, clock);
  c.put("short", "v", 100ms);
  c.put("long", "v", 1h);
  c.put("default", "v");
  clock.advance(100ms);
  CHECK_FALSE(c.get("short").has_value());
  clock.advance(10s);
  CHECK_FALSE(c.get("default").has_value());
  CHECK(c.get("long").has_value());
  clock.advance(1h);
  CHECK_FALSE(c.get("long").has_value());
  c.put("zero", "v", 0s);
  CHECK_FALSE(c.get("zero").has_value());
  c.cleanup();
  CHECK(c.size() == 0);
}

TEST_CASE("cache: expire_after_access slides with reads", "[cache]") {
  manual_clock clock;
  sluice::cache_options o = one_shard(100);
  o.expire_after_access = 1s;
  str_cache c(o, clock);
  c.put("k", "v");
  for (int i = 0; i < 10; ++i) {
    clock.advance(900ms);
    REQUIRE(c.get("k").has_value());
    c.cleanup();  // the wheel reschedules it at its old deadline, it must survive
    REQUIRE(c.size() == 1);
  }
  clock.advance(1s);
  CHECK_FALSE(c.get("k").has_value());
  c.cleanup();
  CHECK(c.size() == 0);
}

TEST_CASE("cache: memory returns to baseline after a burst of short-lived entries", "[cache]") {
  manual_clock clock;
  sluice::cache_options o;
  o.max_entries = 100'000;
  o.max_weight = 10'000'000;
  o.shards = 4;
  o.background_sweep = false;
  str_cache::hooks h;
  h.weigher = [](const std::string& k, const std::string& v) { return k.size() + v.size(); };
  str_cache c(o, clock, h);
  for (int i = 0; i < 100; ++i) c.put("long" + std::to_string(i), std::string(100, 'x'));
  const std::size_t base_size = c.size();
  const std::uint64_t base_weight = c.weight();
  for (int i = 0; i < 50'000; ++i) {
    c.put("burst" + std::to_string(i), std::string(64, 'y'), std::chrono::seconds(1 + i % 5));
  }
  CHECK(c.size() == base_size + 50'000);
  CHECK(c.weight() > base_weight);
  clock.advance(6s);
  c.cleanup();
  CHECK(c.size() == base_size);
  CHECK(c.weight() == base_weight);
  CHECK(c.stats().expirations == 50'000);
  for (int i = 0; i < 100; ++i) REQUIRE(c.get("long" + std::to_string(i)).has_value());
}

TEST_CASE("cache: the background sweeper removes expired entries and stops with the last cache",
          "[cache][sweeper]") {
  manual_clock clock;
  {
    sluice::cache_options o;
    o.max_entries = 10'000;
    o.expire_after_write = 1s;
    int_cache c(o, clock);
    CHECK(sluice::cache_sweeper::instance().running());
    for (int i = 0; i < 1000; ++i) c.put(i, i);
    c.put(-1, -1, 1h);
    clock.advance(2s);
    // Nobody touches the cache: only the sweeper thread can remove the entries.
    CHECK(eventually([&] { return c.size() == 1; }));
    CHECK(c.stats().expirations == 1000);
  }
  CHECK_FALSE(sluice::cache_sweeper::instance().running());
}

TEST_CASE("cache: get_or_load runs the loader once for concurrent misses", "[cache]") {
  const int n = GENERATE(2, 4, 8);
  sluice::cache_options o = one_shard(100);
  str_cache c(o);
  std::atomic<int> calls{0};
  auto loader = [&](const std::string& key) -> absl::StatusOr<std::string> {
    calls.fetch_add(1);
    // Hold the load until every caller has missed (so all of them are waiting on it).
    eventually([&] { return c.stats().misses == static_cast<std::uint64_t>(n); });
    return "value of " + key;
  };
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&] {
      absl::StatusOr<std::string> v = c.get_or_load("k", loader);
      if (v.ok() && *v == "value of k") ok.fetch_add(1);
    });
  }
  for (auto& t : threads) t.join();
  CHECK(calls.load() == 1);
  CHECK(ok.load() == n);
  CHECK(c.stats().loads == 1);
  CHECK(c.get("k") == std::optional<std::string>("value of k"));
}

TEST_CASE("cache: loader errors reach every waiter and are not cached", "[cache]") {
  str_cache c(one_shard(100));
  int calls = 0;
  auto failing = [&](const std::string&) -> absl::StatusOr<std::string> {
    ++calls;
    return absl::UnavailableError("backend down");
  };
  CHECK(absl::IsUnavailable(c.get_or_load("k", failing).status()));
  CHECK(absl::IsUnavailable(c.get_or_load("k", failing).status()));
  CHECK(calls == 2);
  CHECK(c.stats().load_failures == 2);
  auto throwing = [](const std::string&) -> absl::StatusOr<std::string> {
    throw std::runtime_error("boom");
  };
  CHECK_THROWS_AS(c.get_or_load("k", throwing), std::runtime_error);
  // The flight was retired: the next load runs.
  auto good = [](const std::string&) -> absl::StatusOr<std::string> { return std::string("v"); };
  CHECK(c.get_or_load("k", good).value() == "v");
}

TEST_CASE("cache: not found is cached for negative_ttl", "[cache]") {
  manual_clock clock;
  sluice::cache_options o = one_shard(100);
  o.negative_ttl = 5s;
  str_cache c(o, clock);
  int calls = 0;
  auto loader = [&](const std::string&) -> absl::StatusOr<std::string> {
    ++calls;
    return absl::NotFoundError("no such user");
  };
  CHECK(absl::IsNotFound(c.get_or_load("ghost", loader).status()));
  CHECK(absl::IsNotFound(c.get_or_load("ghost", loader).status()));
  CHECK_FALSE(c.get("ghost").has_value());
  CHECK(calls == 1);
  CHECK(c.stats().negative_hits == 2);
  clock.advance(5s);
  CHECK(absl::IsNotFound(c.get_or_load("ghost", loader).status()));
  CHECK(calls == 2);
  // A put replaces the negative entry.
  c.put("ghost", "found");
  CHECK(c.get_or_load("ghost", loader).value() == "found");
}

TEST_CASE("cache: refresh_after serves the current value while one reload runs", "[cache]") {
  manual_clock clock;
  sluice::cache_options o = one_shard(100);
  o.refresh_after = 10s;
  o.expire_after_write = 1h;
  str_cache c(o, clock);
  std::atomic<int> calls{0};
  std::atomic<bool> release{false};
  auto loader = [&](const std::string&) -> absl::StatusOr<std::string> {
    const int call = calls.fetch_add(1) + 1;
    if (call > 1) eventually([&] { return release.load(); });
    return "v" + std::to_string(call);
  };
  REQUIRE(c.get_or_load("k", loader).value() == "v1");
  clock.advance(11s);
  // Both callers get v1 at once; only one reload starts.
  CHECK(c.get_or_load("k", loader).value() == "v1");
  CHECK(c.get_or_load("k", loader).value() == "v1");
  CHECK(eventually([&] { return calls.load() == 2; }));
  release = true;
  CHECK(eventually([&] { return c.peek("k") == std::optional<std::string>("v2"); }));
  CHECK(calls.load() == 2);
  CHECK(c.stats().refreshes == 1);
}

TEST_CASE("cache: stale values are served while the backend is down", "[cache]") {
  manual_clock clock;
  sluice::cache_options o = one_shard(100);
  o.expire_after_write = 1s;
  o.stale_for = 1min;
  str_cache c(o, clock);
  c.put("k", "last known");
  auto fresh = c.get_stale("k");
  REQUIRE(fresh.has_value());
  CHECK_FALSE(fresh->stale);
  clock.advance(2s);
  CHECK_FALSE(c.get("k").has_value());
  auto stale = c.get_stale("k");
  REQUIRE(stale.has_value());
  CHECK(stale->stale);
  CHECK(stale->value == "last known");
  // Stale-while-revalidate: the stale value now, one failing reload in the background keeps it.
  std::atomic<int> calls{0};
  auto down = [&](const std::string&) -> absl::StatusOr<std::string> {
    calls.fetch_add(1);
    return absl::UnavailableError("backend down");
  };
  CHECK(c.get_or_load("k", down).value() == "last known");
  CHECK(eventually([&] { return c.stats().load_failures == 1; }));
  CHECK(c.get_stale("k").has_value());
  clock.advance(1min);
  CHECK_FALSE(c.get_stale("k").has_value());
  c.cleanup();
  CHECK(c.size() == 0);
}

TEST_CASE("cache: the removal listener reports each cause", "[cache]") {
  manual_clock clock;
  sluice::cache_options o = one_shard(2);
  o.policy = sluice::eviction_policy::lru;
  std::vector<std::pair<std::string, sluice::removal_cause>> seen;
  str_cache::hooks h;
  h.listener = [&](const std::string& k, const std::string& v, sluice::removal_cause cause) {
    seen.emplace_back(k + "=" + v, cause);
  };
  str_cache c(o, clock, h);
  c.put("a", "1");
  c.put("a", "2");  // replaced a=1
  c.put("b", "1");
  c.put("c", "1");  // evicts a=2
  c.erase("b");     // erased b=1
  c.put("d", "1", 1s);
  clock.advance(1s);
  c.cleanup();  // expired d=1
  using rc = sluice::removal_cause;
  const std::vector<std::pair<std::string, rc>> expected = {
      {"a=1", rc::replaced}, {"a=2", rc::evicted}, {"b=1", rc::erased}, {"d=1", rc::expired}};
  CHECK(seen == expected);
}

TEST_CASE("cache: a weigher bounds the total weight", "[cache]") {
  sluice::cache_options o = one_shard(100);
  o.max_weight = 1000;
  o.policy = sluice::eviction_policy::lru;
  str_cache::hooks h;
  h.weigher = [](const std::string&, const std::string& v) { return v.size(); };
  str_cache c(o, manual_clock(), h);
  for (int i = 0; i < 50; ++i) c.put(std::to_string(i), std::string(100, 'x'));
  CHECK(c.weight() <= 1000);
  CHECK(c.size() == 10);
  c.put("big", std::string(500, 'x'));
  CHECK(c.weight() <= 1000);
  CHECK(c.peek("big").has_value());
  CHECK(c.stats().evicted_weight == 50 * 100 + 500 - c.weight());
}

TEST_CASE("cache: a get hit does not allocate", "[cache]") {
  const auto mode =
      GENERATE(sluice::cache_maintenance::background, sluice::cache_maintenance::caller);
  sluice::cache<std::uint64_t, std::uint64_t> c(
      {.max_entries = 1000, .shards = 1, .background_sweep = false, .maintenance = mode});
  for (std::uint64_t k = 0; k < 1000; ++k) c.put(k, k);
  sluice_test::alloc_scope scope;
  std::uint64_t sum = 0;
  for (int round = 0; round < 10; ++round) {
    for (std::uint64_t k = 0; k < 1000; ++k) sum += c.get(k).value_or(0);
  }
  CHECK(scope.allocations() == 0);
  CHECK(sum == 10 * 999 * 1000 / 2);
}

TEST_CASE("cache: concurrent mixed operations keep the cache consistent", "[cache][stress]") {
  const int threads = GENERATE(1, 2, 4);
  const auto mode =
      GENERATE(sluice::cache_maintenance::background, sluice::cache_maintenance::caller);
  manual_clock clock;
  sluice::cache_options o;
  o.maintenance = mode;
  o.max_entries = 512;
  o.shards = 4;
  o.expire_after_write = 1s;
  o.negative_ttl = 1s;
  std::atomic<int> removed{0};
  str_cache::hooks h;
  h.listener = [&](const std::string&, const std::string&, sluice::removal_cause) {
    removed.fetch_add(1, std::memory_order_relaxed);
  };
  str_cache c(o, clock, h);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t));
      for (int i = 0; i < 20'000; ++i) {
        const std::string key = std::to_string(rng() % 2048);
        switch (rng() % 8) {
          case 0:
            c.put(key, key);
            break;
          case 1:
            c.erase(key);
            break;
          case 2: {
            auto v = c.get_or_load(key, [](const std::string& k) -> absl::StatusOr<std::string> {
              if (k.size() == 1) return absl::NotFoundError("short");
              return k;
            });
            if (v.ok() && *v != key) std::abort();
            break;
          }
          case 3:
            if (t == 0) clock.advance(10ms);
            break;
          case 4:
            if (i % 512 == 0) c.cleanup();
            break;
          default: {
            auto v = c.get(key);
            if (v && *v != key) std::abort();
          }
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  CHECK(c.size() <= 512 + 4);  // each shard rounds its capacity up
  clock.advance(2s);
  c.cleanup();
  CHECK(c.size() == 0);
  CHECK(c.weight() == 0);
}

TEST_CASE("cache: the timer wheel expires every entry exactly when due", "[cache][wheel]") {
  std::mt19937_64 rng(1);
  const std::int64_t start = std::int64_t{1} << 40;
  sluice::detail::cache_timer_wheel wheel(start);
  std::vector<sluice::detail::cache_node_base> nodes(5000);
  const std::int64_t spans[] = {1'000'000, 100'000'000, 10'000'000'000, 1'000'000'000'000,
                                std::int64_t{1} << 52};
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    nodes[i].remove_at =
        start + 1 + static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(spans[i % 5]));
    wheel.schedule(&nodes[i]);
  }
  std::vector<bool> expired(nodes.size(), false);
  std::int64_t now = start;
  std::size_t count = 0;
  while (count < nodes.size()) {
    // Steps of varied size, from sub-tick to many days.
    now += static_cast<std::int64_t>(rng() % (std::uint64_t{1} << (10 + rng() % 42)));
    std::uint64_t budget = 100;  // small budgets: progress must survive interruption
    while (!wheel.advance(now, budget, [&](sluice::detail::cache_node_base* n) {
      const auto idx = static_cast<std::size_t>(n - nodes.data());
      REQUIRE(!expired[idx]);
      REQUIRE(n->remove_at <= now);
      expired[idx] = true;
      ++count;
    })) {
      budget = 100;
    }
    // Caught up: nothing due may remain.
    for (std::size_t i = 0; i < nodes.size(); ++i) {
      INFO("entry " << i);
      REQUIRE((expired[i] || nodes[i].remove_at > now));
    }
  }
  CHECK(wheel.size() == 0);
}

TEST_CASE("cache: the count-min sketch never underestimates and ages by halving", "[cache]") {
  sluice::detail::cache_sketch sketch;
  sketch.resize(1000);
  std::map<std::uint64_t, unsigned> truth;
  std::mt19937_64 rng(3);
  for (int i = 0; i < 5000; ++i) {
    const std::uint64_t h = rng() % 500;
    sketch.increment(h * 0x9E3779B97F4A7C15ULL);
    ++truth[h];
  }
  for (const auto& [h, n] : truth) {
    REQUIRE(sketch.frequency(h * 0x9E3779B97F4A7C15ULL) >= std::min(n, 15u));
  }
  const unsigned before = sketch.frequency(7 * 0x9E3779B97F4A7C15ULL);
  sketch.halve();
  CHECK(sketch.frequency(7 * 0x9E3779B97F4A7C15ULL) == before / 2);
}

TEST_CASE("cache: lock-free readers race writers, eviction and expiry on a few keys",
          "[cache][stress]") {
  // Few keys and a tiny capacity: every write replaces, evicts or expires an entry that readers
  // on other threads are reading, so reclamation runs while they hold pointers (TSan checks it).
  const int writers = GENERATE(1, 2);
  const auto mode =
      GENERATE(sluice::cache_maintenance::background, sluice::cache_maintenance::caller);
  manual_clock clock;
  sluice::cache_options o;
  o.maintenance = mode;
  o.max_entries = 4;
  o.shards = 1;
  o.expire_after_write = 50ms;
  o.background_sweep = false;
  str_cache c(o, clock);
  std::atomic<bool> stop{false};
  std::atomic<long> hits{0};
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      std::mt19937 rng(static_cast<unsigned>(100 + r));
      while (!stop.load(std::memory_order_relaxed)) {
        const int k = static_cast<int>(rng() % 8);
        const std::string key = "k" + std::to_string(k);
        if (auto v = c.get(key)) {
          // A value is always one written for this key, never a freed or torn one.
          if (v->compare(0, key.size() + 1, key + ":") != 0) std::abort();
          hits.fetch_add(1, std::memory_order_relaxed);
        }
        if (auto v = c.peek(key)) {
          if (v->compare(0, key.size() + 1, key + ":") != 0) std::abort();
        }
      }
    });
  }
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([&, w] {
      std::mt19937 rng(static_cast<unsigned>(w));
      for (int i = 0; i < 50'000; ++i) {
        const std::string key = "k" + std::to_string(rng() % 8);
        switch (rng() % 6) {
          case 0:
            c.erase(key);
            break;
          case 1:
            if (w == 0) clock.advance(10ms);
            break;
          case 2:
            c.cleanup();
            break;
          default:
            c.put(key, key + ":" + std::to_string(i) + std::string(rng() % 40, 'x'));
        }
      }
    });
  }
  for (std::size_t t = 2; t < threads.size(); ++t) threads[t].join();
  stop = true;
  threads[0].join();
  threads[1].join();
  CHECK(c.size() <= 4);
  const sluice::cache_stats st = c.stats();
  CHECK(st.evictions + st.expirations + st.erasures + st.replacements > 1000);
  INFO("reader hits " << hits.load());
}

TEST_CASE("cache: an expired entry is never returned by the lock-free get", "[cache]") {
  manual_clock clock;
  sluice::cache_options o = one_shard(100);
  str_cache c(o, clock);
  c.put("a", "1", 10s);
  c.put("b", "2");
  CHECK(c.get("a") == std::optional<std::string>("1"));
  clock.advance(10s);
  // Still in memory (not swept), but past its deadline.
  CHECK(c.size() == 2);
  CHECK_FALSE(c.get("a").has_value());
  CHECK_FALSE(c.peek("a").has_value());
  CHECK(c.get("b") == std::optional<std::string>("2"));
  // A rewrite publishes a fresh entry.
  c.put("a", "3", 10s);
  CHECK(c.get("a") == std::optional<std::string>("3"));
}

TEST_CASE("cache: the read index survives growth, tombstones and shrinking", "[cache]") {
  sluice::cache<int, int> c({.max_entries = 20'000, .shards = 1, .background_sweep = false});
  for (int round = 0; round < 3; ++round) {
    for (int k = 0; k < 5000; ++k) c.put(k, k + round);
    for (int k = 0; k < 5000; ++k) REQUIRE(c.get(k) == std::optional<int>(k + round));
    for (int k = 0; k < 5000; k += 2) c.erase(k);
    for (int k = 0; k < 5000; ++k) {
      REQUIRE(c.get(k).has_value() == (k % 2 == 1));
    }
    for (int k = 1; k < 5000; k += 2) c.erase(k);
    CHECK(c.size() == 0);
    c.cleanup();
    for (int k = 0; k < 5000; ++k) REQUIRE(!c.get(k).has_value());
  }
  c.put(7, 7);
  c.clear();
  CHECK_FALSE(c.get(7).has_value());
  c.put(7, 8);
  CHECK(c.get(7) == std::optional<int>(8));
}

TEST_CASE("cache: lock-free hits and misses are counted and feed the policy", "[cache]") {
  sluice::cache_options o = one_shard(100);
  o.policy = sluice::eviction_policy::lru;
  int_cache c(o);
  for (int k = 0; k < 100; ++k) c.put(k, k);
  // Touch 0..49 (more than one read-buffer stripe's worth), then insert 50 new keys: LRU must
  // evict 50..99, which only holds if the buffered hits reached the policy.
  for (int k = 0; k < 50; ++k) REQUIRE(c.get(k).has_value());
  for (int k = 100; k < 150; ++k) c.put(k, k);
  for (int k = 0; k < 50; ++k) CHECK(c.peek(k).has_value());
  for (int k = 50; k < 100; ++k) CHECK_FALSE(c.peek(k).has_value());
  CHECK_FALSE(c.get(1000).has_value());
  const sluice::cache_stats st = c.stats();
  CHECK(st.hits == 50);
  CHECK(st.misses == 1);
}

TEST_CASE("cache: background maintenance replays hits on the shared thread", "[cache]") {
  sluice::cache_options o = one_shard(100);
  o.policy = sluice::eviction_policy::lru;
  o.maintenance = sluice::cache_maintenance::background;
  std::uint64_t passes_before = 0;
  {
    int_cache c(o);
    CHECK(sluice::detail::cache_maintainer::instance().running());
    for (int k = 0; k < 100; ++k) c.put(k, k);
    passes_before = sluice::detail::cache_maintainer::instance().passes();
    // Writes leave the buffers to the thread; 8 hits (half a stripe's ring) ask it for a pass.
    for (int k = 0; k < 8; ++k) REQUIRE(c.get(k).has_value());
    REQUIRE(eventually(
        [&] { return sluice::detail::cache_maintainer::instance().passes() > passes_before; }));
    // The pass replayed the 8 hits: LRU now evicts 8..99 first.
    for (int k = 100; k < 192; ++k) c.put(k, k);
    for (int k = 0; k < 8; ++k) CHECK(c.peek(k).has_value());
    for (int k = 8; k < 100; ++k) CHECK_FALSE(c.peek(k).has_value());
    CHECK(c.stats().hits == 8);
  }
  // The thread stops with the last cache that uses it.
  CHECK_FALSE(sluice::detail::cache_maintainer::instance().running());
}

TEST_CASE("cache: caches come and go while the maintenance thread replays their hits",
          "[cache][stress]") {
  // Each cache is destroyed right after its threads stop, usually with a pass queued or running
  // (or re-queued by a pass that found a shard busy): the destructor must wait for it and drop
  // it (ASan/TSan check that no pass touches a destroyed cache).
  for (int round = 0; round < 40; ++round) {
    auto c = std::make_unique<sluice::cache<int, int>>(
        sluice::cache_options{.max_entries = 256, .shards = 4, .background_sweep = false});
    for (int k = 0; k < 256; ++k) c->put(k, k);
    std::vector<std::thread> readers;
    for (int t = 0; t < 2; ++t) {
      readers.emplace_back([&c, t] {
        // Writes hold shard locks that the pass finds taken: it then queues the cache again.
        for (int i = 0; i < 2000; ++i) {
          const int k = (i * 7 + t) % 300;
          if (i % 5 == 0) {
            c->put(k, k);
          } else {
            (void)c->get(k);
          }
        }
      });
    }
    for (auto& r : readers) r.join();
    c.reset();
  }
  CHECK_FALSE(sluice::detail::cache_maintainer::instance().running());
}

TEST_CASE("cache: hit and miss counters never step back with more threads than stripes",
          "[cache][stress]") {
  // More reader threads than stripes share stripes, whose counts are a load and a store: a count
  // may be lost, but a scrape (a Prometheus counter) must never see a counter decrease.
  sluice::cache_options o = one_shard(64);
  int_cache c(o);
  for (int k = 0; k < 32; ++k) c.put(k, k);
  std::atomic<bool> stop{false};
  std::vector<std::thread> readers;
  const unsigned n = 2 * std::max(16u, std::thread::hardware_concurrency());
  for (unsigned t = 0; t < n; ++t) {
    readers.emplace_back([&c, &stop, t] {
      for (int i = 0; !stop.load(std::memory_order_relaxed); ++i) {
        (void)c.get(static_cast<int>((t + static_cast<unsigned>(i)) % 48));  // hits and misses
      }
    });
  }
  // Let every reader get going first (they run until stopped).
  while (c.stats().hits < 10'000) std::this_thread::yield();
  std::uint64_t last_hits = 0;
  std::uint64_t last_misses = 0;
  bool monotonic = true;
  for (int i = 0; i < 20000 && monotonic; ++i) {
    const sluice::cache_stats st = c.stats();
    monotonic = st.hits >= last_hits && st.misses >= last_misses;
    last_hits = st.hits;
    last_misses = st.misses;
  }
  stop = true;
  for (auto& r : readers) r.join();
  CHECK(monotonic);
}

TEST_CASE("cache: refreshes run on the executor given in the options", "[cache]") {
  manual_clock clock;
  sluice::cache_options o = one_shard(100);
  o.refresh_after = 10s;
  o.expire_after_write = 1h;
  std::vector<absl::AnyInvocable<void()>> queued;
  o.refresh_executor = [&](absl::AnyInvocable<void()>&& task) {
    queued.push_back(std::move(task));
    return true;
  };
  str_cache c(o, clock);
  int calls = 0;
  auto loader = [&](const std::string&) -> absl::StatusOr<std::string> {
    return "v" + std::to_string(++calls);
  };
  REQUIRE(c.get_or_load("k", loader).value() == "v1");
  clock.advance(11s);
  CHECK(c.get_or_load("k", loader).value() == "v1");
  CHECK(c.get_or_load("k", loader).value() == "v1");
  // One reload queued, none run yet: the executor decides when.
  REQUIRE(queued.size() == 1);
  CHECK(calls == 1);
  std::move(queued[0])();
  CHECK(calls == 2);
  CHECK(c.get("k") == std::optional<std::string>("v2"));
  CHECK(c.stats().refreshes == 1);
  CHECK(c.stats().refreshes_skipped == 0);
}

TEST_CASE("cache: a declined refresh is skipped and counted; the value stays", "[cache]") {
  manual_clock clock;
  sluice::cache_options o = one_shard(100);
  o.refresh_after = 10s;
  o.expire_after_write = 1h;
  bool accept = false;
  std::vector<absl::AnyInvocable<void()>> queued;
  o.refresh_executor = [&](absl::AnyInvocable<void()>&& task) {
    if (!accept) return false;
    queued.push_back(std::move(task));
    return true;
  };
  str_cache c(o, clock);
  int calls = 0;
  auto loader = [&](const std::string&) -> absl::StatusOr<std::string> {
    return "v" + std::to_string(++calls);
  };
  REQUIRE(c.get_or_load("k", loader).value() == "v1");
  clock.advance(11s);
  CHECK(c.get_or_load("k", loader).value() == "v1");
  CHECK(c.stats().refreshes_skipped == 1);
  CHECK(c.stats().refreshes == 0);
  CHECK(calls == 1);
  // The skipped refresh left no flight behind: the next hit tries again.
  accept = true;
  CHECK(c.get_or_load("k", loader).value() == "v1");
  REQUIRE(queued.size() == 1);
  std::move(queued[0])();
  CHECK(c.get("k") == std::optional<std::string>("v2"));
  CHECK(c.stats().refreshes == 1);
}

TEST_CASE("cache: the default refresher runs many refreshes on one shared thread", "[cache]") {
  manual_clock clock;
  sluice::cache_options o = one_shard(1000);
  o.refresh_after = 10s;
  o.expire_after_write = 1h;
  str_cache c(o, clock);
  sluice::detail::mutex mu;
  std::set<std::thread::id> threads;
  std::atomic<int> calls{0};
  auto loader = [&](const std::string& k) -> absl::StatusOr<std::string> {
    {
      sluice::detail::mutex_lock lock(mu);
      threads.insert(std::this_thread::get_id());
    }
    calls.fetch_add(1);
    return k;
  };
  for (int i = 0; i < 200; ++i) REQUIRE(c.get_or_load(std::to_string(i), loader).ok());
  clock.advance(11s);
  for (int i = 0; i < 200; ++i) REQUIRE(c.get_or_load(std::to_string(i), loader).ok());
  CHECK(eventually([&] { return calls.load() == 400; }));
  sluice::detail::mutex_lock lock(mu);
  // The 200 initial loads ran here; every reload ran on the one background thread.
  CHECK(threads.size() == 2);
}

TEST_CASE("cache: an epoch read section holds back reclamation until it ends", "[cache]") {
  auto& domain = sluice::detail::cache_epoch::instance();
  std::uint64_t tag = 0;
  {
    sluice::detail::cache_epoch_guard outer;
    tag = domain.advance();  // something retired while this thread reads
    const std::uint64_t held = domain.oldest_active();
    CHECK(held <= tag);  // the batch tagged `tag` may not be freed yet
    {
      sluice::detail::cache_epoch_guard inner;  // nesting keeps the outer epoch
      CHECK(domain.oldest_active() == held);
    }
    CHECK(domain.oldest_active() == held);
    // Another thread entering now announces a newer epoch and does not hold the batch back.
    std::uint64_t other = 0;
    std::thread([&] {
      sluice::detail::cache_epoch_guard g;
      other = domain.oldest_active();
    }).join();
    CHECK(other == held);
  }
  // No thread of this test reads any more: the batch may go (no other test's thread reads now).
  CHECK(domain.oldest_active() > tag);
}

TEST_CASE("cache: the read index finds, replaces and erases under probing", "[cache]") {
  using sluice::detail::cache_node_base;
  using cache_read_index = sluice::detail::cache_read_index<false>;
  cache_read_index index;
  std::vector<cache_node_base> nodes(200);
  std::vector<cache_read_index::table*> retired;
  // Every node gets the same hash: they all probe one run of slots, and only `match` tells them
  // apart (probes cross erased slots).
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    nodes[i].hash = 5;
    if (auto* t = index.insert(nodes[i].hash, &nodes[i])) retired.push_back(t);
  }
  const auto find = [&](std::size_t i) {
    return index.find(nodes[i].hash, [&](const cache_node_base* n) { return n == &nodes[i]; });
  };
  for (std::size_t i = 0; i < nodes.size(); ++i) REQUIRE(find(i) == &nodes[i]);
  for (std::size_t i = 0; i < nodes.size(); i += 2) index.erase(nodes[i].hash, &nodes[i]);
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    REQUIRE((find(i) != nullptr) == (i % 2 == 1));
  }
  cache_node_base other;
  other.hash = nodes[1].hash;
  index.replace(nodes[1].hash, &nodes[1], &other);
  CHECK(index.find(other.hash, [&](const cache_node_base* n) { return n == &other; }) == &other);
  CHECK(index.size() == 100);
  const std::size_t before = index.capacity();
  for (std::size_t i = 3; i < nodes.size(); i += 2) index.erase(nodes[i].hash, &nodes[i]);
  if (auto* t = index.shrink_to_fit()) retired.push_back(t);
  CHECK(index.capacity() < before);
  CHECK(index.find(other.hash, [&](const cache_node_base* n) { return n == &other; }) == &other);
  for (auto* t : retired) cache_read_index::free_table(t);
}

TEST_CASE("cache: the inline read index answers from valid copies only", "[cache]") {
  using sluice::detail::cache_inline_copies;
  using sluice::detail::cache_node_base;
  using index_type = sluice::detail::cache_read_index<true>;
  index_type index;
  std::vector<cache_node_base> nodes(100);
  std::vector<index_type::table*> retired;
  // Keys i, values 1000 + i, all with one hash; odd entries have no valid copies.
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    nodes[i].hash = 9;
    const cache_inline_copies copies{i % 2 == 0, i, 1000 + i};
    if (auto* t = index.insert(nodes[i].hash, &nodes[i], copies)) retired.push_back(t);
  }
  const auto find = [&](std::size_t i) {
    return index.find_fast(
        9, [&](std::uint64_t k) { return k == i; },
        [&](const cache_node_base* n) { return n == &nodes[i]; });
  };
  // The table grew several times on the way: the copies moved with the entries.
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    const auto r = find(i);
    REQUIRE(r.node == &nodes[i]);
    REQUIRE(r.fast == (i % 2 == 0));
    if (r.fast) REQUIRE(r.value == 1000 + i);
  }
  // Replaced by an entry without copies, then by one with new copies.
  cache_node_base a, b;
  a.hash = b.hash = 9;
  index.replace(9, &nodes[4], &a);
  auto r = index.find_fast(
      9, [](std::uint64_t k) { return k == 4; }, [&](const cache_node_base* n) { return n == &a; });
  CHECK((r.node == &a && !r.fast));
  index.replace(9, &a, &b, cache_inline_copies{true, 4, 7});
  r = index.find_fast(
      9, [](std::uint64_t k) { return k == 4; }, [&](const cache_node_base* n) { return n == &b; });
  CHECK((r.node == &b && r.fast && r.value == 7));
  // An erased slot's copies are not answered from, and the slot is reused with fresh ones.
  index.erase(9, &nodes[6]);
  CHECK(find(6).node == nullptr);
  cache_node_base c;
  c.hash = 9;
  if (auto* t = index.insert(9, &c, cache_inline_copies{true, 6, 66})) retired.push_back(t);
  r = index.find_fast(
      9, [](std::uint64_t k) { return k == 6; }, [&](const cache_node_base* n) { return n == &c; });
  CHECK((r.node == &c && r.fast && r.value == 66));
  CHECK(index.find(9, [&](const cache_node_base* n) { return n == &c; }) == &c);
  for (auto* t : retired) index_type::free_table(t);
}

TEST_CASE("cache: integer gets race replacing puts and never see a torn, foreign or older value",
          "[cache][stress]") {
  // Integer keys and values are answered from the read index's copies: a reader racing writers
  // that replace, erase and evict must get a value written for its key, or nothing, and never a
  // value older than one it saw before for that key (each slot's word is read with acquire).
  using u64_cache = sluice::cache<std::uint64_t, std::uint64_t>;
  static_assert(u64_cache::inline_copies);
  u64_cache c({.max_entries = 16, .shards = 1, .background_sweep = false});
  constexpr std::uint64_t keys = 32;
  std::atomic<bool> stop{false};
  std::atomic<long> hits{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&, r] {
      std::mt19937_64 rng(static_cast<unsigned>(7 + r));
      std::array<std::uint64_t, keys> last_round{};
      while (!stop.load(std::memory_order_relaxed)) {
        const std::uint64_t k = rng() % keys;
        if (auto v = c.get(k)) {
          // Values are (round << 8) | key; rounds only grow.
          if ((*v & 0xFF) != k) std::abort();
          const std::uint64_t round = *v >> 8;
          if (round < last_round[k]) std::abort();
          last_round[k] = round;
          hits.fetch_add(1, std::memory_order_relaxed);
        }
      }
    });
  }
  std::mt19937_64 rng(3);
  // At least 200k writes, and on until the readers have hit 1000 times (bounded).
  std::uint64_t i = 0;
  for (; i < 200'000 || (hits.load() < 1000 && i < 100'000'000); ++i) {
    const std::uint64_t k = rng() % keys;
    if (rng() % 8 == 0) {
      c.erase(k);
    } else {
      c.put(k, (i << 8) | k);
    }
  }
  stop = true;
  for (auto& t : readers) t.join();
  INFO("writes " << i << ", reader hits " << hits.load());
  REQUIRE(hits.load() >= 1000);
  CHECK(c.size() <= 16);
  for (std::uint64_t k = 0; k < keys; ++k) {
    if (auto v = c.get(k)) CHECK((*v & 0xFF) == k);
  }
}

TEST_CASE("cache: integer entries with a ttl or a cached miss are not answered from copies",
          "[cache]") {
  // The index keeps copies only for entries whose answer does not depend on time and that hold a
  // value; these are the cases that must still go to the entry.
  static_assert(int_cache::inline_copies);
  static_assert(!str_cache::inline_copies);
  struct padded {
    std::uint32_t a;
    std::uint16_t b;
  };
  static_assert(!sluice::cache<int, padded>::inline_copies);
  static_assert(sluice::cache<int, double>::inline_copies);
  manual_clock clock;
  sluice::cache_options o = one_shard(100);
  o.negative_ttl = 5s;
  int_cache c(o, clock);
  c.put(1, 10, 100ms);
  c.put(2, 20);
  CHECK(c.get(1) == std::optional<int>(10));
  clock.advance(100ms);
  CHECK_FALSE(c.get(1).has_value());
  CHECK(c.get(2) == std::optional<int>(20));
  // A replace with a ttl takes the copies away; a replace without one gives them back.
  c.put(2, 21, 1s);
  CHECK(c.get(2) == std::optional<int>(21));
  clock.advance(1s);
  CHECK_FALSE(c.get(2).has_value());
  c.put(2, 22);
  clock.advance(1h);
  CHECK(c.get(2) == std::optional<int>(22));
  // A cached "not found" holds no value: get() misses and counts a negative hit.
  int calls = 0;
  auto missing = [&](const int&) -> absl::StatusOr<int> {
    ++calls;
    return absl::NotFoundError("none");
  };
  CHECK(absl::IsNotFound(c.get_or_load(3, missing).status()));
  const auto before = c.stats();
  CHECK_FALSE(c.get(3).has_value());
  CHECK(c.stats().negative_hits == before.negative_hits + 1);
  CHECK(calls == 1);
  // After a put, the same slot answers from the copies.
  c.put(3, 30);
  CHECK(c.get(3) == std::optional<int>(30));
  // expire_after_access: every get goes to the entry (a hit moves the deadline).
  sluice::cache_options a = one_shard(100);
  a.expire_after_access = 1s;
  int_cache ca(a, clock);
  ca.put(1, 1);
  clock.advance(900ms);
  CHECK(ca.get(1) == std::optional<int>(1));
  clock.advance(900ms);
  CHECK(ca.get(1) == std::optional<int>(1));
  clock.advance(1s);
  CHECK_FALSE(ca.get(1).has_value());
}

namespace {
// Uses a cache from its destructor, which a thread runs after the cache's own per-thread state
// was torn down when this object was created first.
struct uses_cache_at_thread_exit {
  sluice::cache<int, int>* c = nullptr;
  ~uses_cache_at_thread_exit() {
    if (c == nullptr) return;
    c->put(1, 2);
    if (c->get(1) != std::optional<int>(2)) std::abort();
  }
};
}  // namespace

TEST_CASE("cache: a thread_local destructor may still use a cache", "[cache]") {
  sluice::cache<int, int> c({.max_entries = 100, .shards = 1, .background_sweep = false});
  std::thread([&c] {
    thread_local uses_cache_at_thread_exit user;
    user.c = &c;
    // Registers this thread's epoch slot after `user` (no Catch2 assertion off the main thread).
    if (c.get(0).has_value()) std::abort();
  }).join();
  CHECK(c.get(1) == std::optional<int>(2));
}
