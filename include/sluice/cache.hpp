// sluice/cache.hpp
//
// `sluice::cache<Key, Value>` is a bounded, concurrent, in-memory cache: W-TinyLFU (or LRU)
// eviction, expiry after write or access with prompt background removal, an optional weigher,
// single-flight loading with negative caching, refresh-ahead and stale-while-revalidate.
//
// Eviction: `eviction_policy::tinylfu` (the default) keeps the entries that are requested most
// often recently (a count-min sketch decides whether a newcomer may replace an old entry), with
// a small LRU window that an adaptive climber grows when recency pays better; it matches LRU on
// recency-heavy traces and beats it widely on frequency-heavy ones (see bench/RESULTS.md).
// `eviction_policy::lru` is plain least-recently-used.
//
// Expiry: entries expire `expire_after_write` after their last write (or after the `ttl` given to
// `put`), and, when `expire_after_access` is set, that long after their last read. An expired
// entry is never returned by get(). Expired entries are removed without a timer per entry: each
// shard keeps a hierarchical timer wheel, and the process-wide `cache_sweeper` thread (see
// <sluice/cache/sweeper.hpp>) advances every wheel each 50 ms, holding a shard lock for at most
// `sweep_batch` entries at a time. Writes also remove entries that fell due; `cleanup()` removes
// every due entry at once (deterministic tests).
//
// Loading: `get_or_load(key, loader)` returns the cached value or runs `loader(key)` once for all
// concurrent callers missing the same key (single flight); the others wait for its result. A
// loader answering absl::NotFoundError is cached as "not found" for `negative_ttl`. With
// `refresh_after`, a hit on an entry older than that returns the current value at once and starts
// ONE background reload (refresh-ahead). With `stale_for`, an expired entry is kept that much
// longer: get_or_load serves it while ONE background reload runs (stale-while-revalidate), and
// `get_stale()` returns it marked stale (serve the last known value while a backend is down).
// Reloads run on `cache_options::refresh_executor`: by default one process-wide background
// thread with a bounded queue (a full queue skips the refresh, counted in stats()), or any
// executor you pass (a thread pool, an Asio strand: a callback that takes the task).
//
// Thread safety: all member functions may be called concurrently. Entries are split over shards
// (a power of two), each with its own lock for writes. get() and peek() take no lock and write
// nothing another thread reads on the hit path but the calling thread's own stripe: they probe
// the shard's published read index inside an epoch read section (entries are immutable once
// published; a write publishes a new entry, and removed entries are freed only after every
// reader that could see them has left: see detail/cache_epoch.hpp), and note the hit in the
// thread's stripe of a lossy read buffer that is replayed into the eviction policy under the
// shard lock (`cache_options::maintenance`): by default by one process-wide maintenance thread
// that a reader asks for a pass when its stripe is half full (detail/cache_maintainer.hpp; a
// reader that outruns it drops hits, never values), or with `cache_maintenance::caller` 16 hits
// at a time by whichever reader fills the stripe, if the lock is free, and by every write before
// it changes the shard. With expire_after_access, get() takes the shard lock (a
// hit moves the deadline). get_or_load, get_stale and all writes take the shard lock. Values are
// returned by copy: use a cheap-to-copy Value (a shared_ptr for big ones). Small keys and values
// (trivially copyable, at most 8 bytes each, no padding: integers, enums, pointers; see
// `cache::inline_copies`) are also copied into the read index, so a hit on an entry without
// expiry reads one index slot and not the entry (one cache miss instead of two; 16 more bytes
// per index slot). Memory: a removed or
// replaced entry is freed with its shard's next batch of 64 removals (or the next sweep) once no
// reader can still hold it, so its memory outlives its removal briefly; cleanup() and the sweeper
// free everything readers have left. Freed entries' memory goes to a per-thread pool (up to 256
// entries per thread and entry type, released when the thread exits) that later writes reuse.
// The loader, the weigher and the removal listener are called without any cache lock held,
// except the weigher, which is called before the lock is taken. None of them may destroy the
// cache; the listener may call the cache.
// Time: read from the injected clock, only for entries or options that expire (a cache without
// expiry never reads the clock on get, and get() reads it once). Only monotonic time is used:
// wall-clock jumps cannot expire or revive entries. `sluice::coarse_clock` makes timed reads
// ~20 ns cheaper at ~4 ms resolution.
// Errors: a miss is std::nullopt, never an error. get_or_load returns the loader's status
// (NotFound for "not found", cached or not); a loader that throws makes get_or_load rethrow for
// the caller that ran it and return absl::InternalError to the callers that waited. Invalid
// options: `create()` returns InvalidArgument; the constructor's precondition is
// `options.validate().ok()` (violations are clamped to the nearest valid value).
//
// Example:
//   sluice::cache<std::string, std::string> users({.max_entries = 10'000,
//                                                  .expire_after_write = std::chrono::minutes(5)});
//   users.put("42", "Ada");
//   if (auto name = users.get("42")) use(*name);
//   absl::StatusOr<std::string> u = users.get_or_load("7", [&](const std::string& id) {
//     return db.find_user(id);  // absl::StatusOr<std::string>; NotFound is cached negatively
//   });
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <new>
#include <optional>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/functional/any_invocable.h"
#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "sluice/cache/sweeper.hpp"
#include "sluice/detail/cache_epoch.hpp"
#include "sluice/detail/cache_line.hpp"
#include "sluice/detail/cache_maintainer.hpp"
#include "sluice/detail/cache_node.hpp"
#include "sluice/detail/cache_node_pool.hpp"
#include "sluice/detail/cache_policy.hpp"
#include "sluice/detail/cache_read_index.hpp"
#include "sluice/detail/cache_refresher.hpp"
#include "sluice/detail/cache_timer_wheel.hpp"
#include "sluice/detail/mutex.hpp"

// Keeps a rarely taken path out of its caller (a short hit path lets the CPU overlap more of
// consecutive lookups' cache misses).
#if defined(__GNUC__)
#define SLUICE_CACHE_COLD __attribute__((noinline, cold))
#else
#define SLUICE_CACHE_COLD
#endif

namespace sluice {

// Which entries a full cache evicts.
enum class eviction_policy {
  // Least recently used.
  lru,
  // Window TinyLFU: keeps the recently most frequently used; never much worse than LRU.
  tinylfu,
};

// Why an entry left the cache (passed to the removal listener and counted in stats).
enum class removal_cause {
  // erase() or clear().
  erased,
  // A put() or a reload replaced the value (the listener receives the old value).
  replaced,
  // Its time to live passed (plus `stale_for`).
  expired,
  // The cache was full and the policy chose it.
  evicted,
};

// Who replays the hits that lock-free get() calls buffer into the eviction policy.
enum class cache_maintenance {
  // One process-wide thread shared by all caches (started with the first cache that needs it,
  // stopped with the last): a get() only notes its hit and returns, and writes do not replay
  // the readers' hits either (Caffeine's design: its executor does this work). The hits of a
  // reader that outruns the thread are dropped (the buffers are lossy; values never are).
  background,
  // The reader that fills its buffer (16 hits), when the shard lock is free, and every write
  // before it changes the shard: no thread, and a single thread's policy sees exactly its own
  // sequence of reads and writes (deterministic: what bench/cache_sim replays traces with).
  caller,
};

// How a cache is configured. Durations of zero mean "off".
struct cache_options {
  // The capacity in entries. 10'000: large enough to matter, small enough (~1 MB of overhead)
  // that forgetting to set it never hurts. With a weigher it is the expected number of entries
  // (it sizes the frequency sketch) and `max_weight` bounds the cache instead.
  std::size_t max_entries = 10'000;
  // The capacity in weight units when a weigher is given (e.g. bytes); 0 without a weigher.
  std::uint64_t max_weight = 0;
  // The eviction policy. TinyLFU: the better hit ratio on every trace measured, at the same cost.
  eviction_policy policy = eviction_policy::tinylfu;
  // The time to live after a write, for put() without a ttl and for loaded values. Off: entries
  // live until evicted, and reads never cost a clock read.
  std::chrono::nanoseconds expire_after_write{0};
  // The time to live after the last read or write (sliding expiry). Off by default: it makes
  // every read read the clock.
  std::chrono::nanoseconds expire_after_access{0};
  // How long a loader's NotFound is remembered. Off: a missing key reaches the loader each time.
  std::chrono::nanoseconds negative_ttl{0};
  // The age after which a get_or_load hit also starts one background reload. Off by default:
  // reloads need a loader and put load on the backend that plain expiry does not.
  std::chrono::nanoseconds refresh_after{0};
  // How long an expired entry is kept for get_stale() and stale-while-revalidate. Off: expired
  // entries are freed as soon as they are swept.
  std::chrono::nanoseconds stale_for{0};
  // The number of shards (rounded up to a power of two). 0: about 16 per hardware thread (at most
  // 256), so two threads rarely want the same shard lock even under skewed (Zipf) keys; fewer for
  // small caches (each shard keeps at least 64 entries so eviction stays accurate). Each shard
  // holds at most max_entries / shards, so a sharded cache may evict a little before it holds
  // max_entries when keys spread unevenly; shards = 1 makes the bound exact.
  std::size_t shards = 0;
  // Whether the process-wide sweeper removes expired entries in the background. On: memory
  // returns to its baseline after a burst of short-lived entries without any user call.
  bool background_sweep = true;
  // Runs the background reloads of refresh-ahead and stale-while-revalidate. It receives the
  // reload as a task and returns whether it accepted it: true means it will run the task exactly
  // once, on any thread (inline too, but then get_or_load waits for the reload); false means it
  // will not run it, and the refresh is skipped (counted in cache_stats::refreshes_skipped; the
  // entry keeps its current value and a later hit tries again). It must run every accepted task
  // before the cache is destroyed (the destructor waits for them). It is called without any cache
  // lock held and must not throw (a throw counts as declined).
  // Empty (the default): one process-wide background thread shared by all caches, with a queue
  // of 1024 reloads (a full queue declines): bounded threads and memory even when a backend
  // stalls, with no setup.
  std::function<bool(absl::AnyInvocable<void()>&&)> refresh_executor{};
  // Who replays buffered hits into the eviction policy. Background (the default): a hit is a
  // lookup and a store into the reader's own buffer (BM_cache_get_hit 70 -> 35 ns, Zipf at two
  // threads 1.5x -> 2.2x the mutex LRU, see bench/RESULTS.md) and the policy's work moves to one
  // thread per process. `caller` when a process must not have that thread, or for replays that
  // must be exact and deterministic (the hit ratios in bench/RESULTS.md are measured so).
  cache_maintenance maintenance = cache_maintenance::background;

  // Returns InvalidArgument naming the first invalid field, else OK.
  [[nodiscard]] absl::Status validate() const {
    if (max_entries == 0)
      return absl::InvalidArgumentError("cache_options: max_entries must be > 0");
    if (expire_after_write.count() < 0 || expire_after_access.count() < 0 ||
        negative_ttl.count() < 0 || refresh_after.count() < 0 || stale_for.count() < 0) {
      return absl::InvalidArgumentError("cache_options: durations must not be negative");
    }
    if (shards > (std::size_t{1} << 16)) {
      return absl::InvalidArgumentError("cache_options: shards must be <= 65536");
    }
    return absl::OkStatus();
  }
};

// Counters since the cache was created. Read with cache::stats(); each field is exact for its
// shard, and the shards are read one after another (not one atomic snapshot).
struct cache_stats {
  // get/get_or_load/get_stale calls that found a fresh value.
  std::uint64_t hits = 0;
  // Calls that found nothing usable (absent, expired, or only stale).
  std::uint64_t misses = 0;
  // Calls that found a cached "not found".
  std::uint64_t negative_hits = 0;
  // Calls served an expired value (get_stale, stale-while-revalidate).
  std::uint64_t stale_hits = 0;
  // Loader calls that returned a value.
  std::uint64_t loads = 0;
  // Loader calls that returned NotFound.
  std::uint64_t loads_not_found = 0;
  // Loader calls that failed otherwise or threw.
  std::uint64_t load_failures = 0;
  // Background reloads started (refresh-ahead and stale-while-revalidate).
  std::uint64_t refreshes = 0;
  // Background reloads the executor declined (its queue was full): the entry kept its value.
  std::uint64_t refreshes_skipped = 0;
  // Entries evicted for capacity, and their total weight.
  std::uint64_t evictions = 0;
  std::uint64_t evicted_weight = 0;
  // Entries removed because they expired.
  std::uint64_t expirations = 0;
  // Entries removed by erase() or clear().
  std::uint64_t erasures = 0;
  // Values replaced by put() or a reload.
  std::uint64_t replacements = 0;

  // Returns hits / (hits + misses), or 0 before any lookup.
  double hit_ratio() const noexcept {
    const std::uint64_t total = hits + misses;
    return total == 0 ? 0.0 : static_cast<double>(hits) / static_cast<double>(total);
  }
};

template <class Key, class Value, class Clock = std::chrono::steady_clock,
          class Hash = absl::Hash<Key>, class Eq = std::equal_to<Key>>
class cache final : private detail::cache_sweepable, private detail::cache_maintainable {
 public:
  using key_type = Key;
  using value_type = Value;
  using clock_type = Clock;
  using duration = std::chrono::nanoseconds;
  // Returns an entry's weight (clamped to [1, 2^32-1]); called before the shard lock is taken.
  using weigher_type = std::function<std::uint64_t(const Key&, const Value&)>;
  // Receives every removed value with its cause, after the shard lock is released. Not called
  // for cached "not found" entries nor when the cache is destroyed.
  using listener_type = std::function<void(const Key&, const Value&, removal_cause)>;

  // Whether a hit is answered from copies of the key and value in the read index (see
  // detail/cache_read_index.hpp): for trivially copyable ones of at most 8 bytes each without
  // padding bits (integers, enums, pointers, floating point), which a reader can copy racily and
  // check afterwards. Larger, padded or owning types (strings) are read from the entry, which a
  // read section keeps alive.
  template <class T>
  static constexpr bool inline_copyable = std::is_trivially_copyable_v<T> && sizeof(T) <= 8 &&
                                          (std::has_unique_object_representations_v<T> ||
                                           std::is_floating_point_v<T>);
  static constexpr bool inline_copies = inline_copyable<Key> && inline_copyable<Value>;

  // Callbacks that depend on the key and value types.
  struct hooks {
    // Required with `max_weight`, forbidden without it.
    weigher_type weigher;
    listener_type listener;
  };

  // What get_stale() returns: the value and whether it is past its time to live.
  struct stale_result {
    Value value;
    bool stale = false;
  };

  // At most this many entries are visited per shard lock acquisition when sweeping: ~10 us of work.
  static constexpr std::uint64_t sweep_batch = 256;

  // Creates a cache. Precondition: `opts.validate().ok()`, and a weigher exactly when
  // `max_weight > 0` (see create() for a checked version).
  explicit cache(const cache_options& opts = {}, Clock clock = Clock(), hooks h = {})
      : opts_(sanitize(opts, h)), clock_(std::move(clock)), hooks_(std::move(h)) {
    const std::uint64_t capacity = hooks_.weigher ? opts_.max_weight : opts_.max_entries;
    const std::size_t hw = std::max<unsigned>(1, std::thread::hardware_concurrency());
    std::size_t n = opts_.shards;
    if (n == 0) {
      n = std::min<std::size_t>(detail::next_pow2(16 * hw), 256);
      while (n > 1 && opts_.max_entries / n < 64) n /= 2;
    }
    n = detail::next_pow2(n);
    shard_mask_ = n - 1;
    shards_ = std::make_unique<shard[]>(n);
    stripe_mask_ = std::min<std::size_t>(detail::next_pow2(2 * hw), max_stripes) - 1;
    stripes_ = std::make_unique<read_stripe[]>(n * (stripe_mask_ + 1));
    for (std::size_t i = 0; i < n; ++i) shards_[i].stripes = &stripes_[i * (stripe_mask_ + 1)];
    timed_ = opts_.expire_after_write.count() > 0 || opts_.expire_after_access.count() > 0 ||
             opts_.refresh_after.count() > 0;
    for (std::size_t i = 0; i < n; ++i) {
      shard& s = shards_[i];
      detail::mutex_lock lock(s.mu);
      s.policy.init(opts_.policy == eviction_policy::tinylfu, (capacity + n - 1) / n,
                    (opts_.max_entries + n - 1) / n);
    }
    background_ = opts_.maintenance == cache_maintenance::background;
    ring_threshold_ = background_ ? read_ring / 2 : read_ring;
    if (background_) marks_ = std::make_unique<std::atomic<std::uint64_t>[]>((n + 63) / 64);
    if (opts_.background_sweep) cache_sweeper::instance().add(this);
    uses_refresher_ =
        !opts_.refresh_executor && (opts_.refresh_after.count() > 0 || opts_.stale_for.count() > 0);
    if (uses_refresher_) detail::cache_refresher::instance().add();
    // Last: nothing after it can throw, so a registered cache always reaches its destructor.
    if (background_) {
      maintainer_ok_.store(detail::cache_maintainer::instance().add(this),
                           std::memory_order_relaxed);
    }
  }

  // Validates `opts` and `h`, then creates a cache (heap-allocated: a cache cannot move).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<cache>> create(const cache_options& opts,
                                                                     Clock clock = Clock(),
                                                                     hooks h = {}) {
    if (absl::Status st = opts.validate(); !st.ok()) return st;
    if ((opts.max_weight > 0) != static_cast<bool>(h.weigher)) {
      return absl::InvalidArgumentError("cache_options: max_weight and a weigher go together");
    }
    return std::make_unique<cache>(opts, std::move(clock), std::move(h));
  }

  cache(const cache&) = delete;
  cache& operator=(const cache&) = delete;

  // Unregisters from the sweeper, waits for background reloads to finish, frees every entry
  // (without calling the listener).
  ~cache() {
    if (opts_.background_sweep) cache_sweeper::instance().remove(this);
    {
      detail::mutex_lock lock(refresh_mu_);
      while (refreshing_ != 0) refresh_cv_.wait(refresh_mu_);
    }
    if (uses_refresher_) detail::cache_refresher::instance().remove();
    // After the sweeps and reloads, whose removal listeners may still read the cache (and so
    // ask for a pass); remove() also makes any later request fail instead of queueing.
    if (background_) detail::cache_maintainer::instance().remove(this);
    for (std::size_t i = 0; i <= shard_mask_; ++i) {
      shard& s = shards_[i];
      detail::mutex_lock lock(s.mu);
      s.index.for_each([](detail::cache_node_base* n) { destroy_node(static_cast<node*>(n)); });
      for (const detail::cache_epoch::retired& r : s.retired) r.free(r.p);
      for (const retired_batch& b : s.limbo) {
        for (const detail::cache_epoch::retired& r : b.items) r.free(r.p);
      }
    }
  }

  // Returns the fresh value of `key`, or nullopt (absent, expired, or cached as not found).
  // Records the access for the eviction policy. Never blocks: lock-free (asking the maintenance
  // thread for a pass takes its lock briefly, once per half stripe; with caller maintenance a
  // full read buffer only try_locks the shard), unless expire_after_access is set (then it takes
  // the key's shard lock briefly). Reads the clock once, only for an entry that expires. Does
  // not allocate unless copying Value does (a thread's first call anywhere registers it, once).
  std::optional<Value> get(const Key& key) {
    const std::size_t h = hash_(key);
    shard& s = shard_for(h);
    if (access_expiry()) return get_locked(s, key, h);
    // Lock-free: find the entry in the shard's published index inside an epoch read section (the
    // entry cannot be freed before the section ends), copy the value, and note the hit in this
    // thread's stripe of the shard's read buffer.
    detail::cache_epoch_guard guard;
    read_stripe& rs = s.stripes[guard.thread_index() & stripe_mask_];
    const node* n;
    if constexpr (inline_copies) {
      // Small trivially copyable keys and values: a hit on an entry with a value and no expiry
      // is answered from the index slot's copies, without reading the entry.
      const auto r = s.index.find_fast(
          h, [&](std::uint64_t k) { return eq_(from_bits<Key>(k), key); },
          [&](const detail::cache_node_base* b) {
            return eq_(static_cast<const node*>(b)->key, key);
          });
      if (r.fast) [[likely]] {
        bump(rs.hits);
        std::optional<Value> out(from_bits<Value>(r.value));
        record_read(s, rs, static_cast<const node*>(r.node));
        return out;
      }
      n = static_cast<const node*>(r.node);
    } else {
      n = find_node(s, key, h);
    }
    // The common case first and short (a hit on an entry without expiry): fewer instructions per
    // get let the CPU overlap more of consecutive gets' cache misses.
    if (n == nullptr || n->fresh_until != detail::cache_never || !n->value) [[unlikely]] {
      if (n == nullptr || (n->fresh_until != detail::cache_never && now_ns() >= n->fresh_until)) {
        bump(rs.misses);
        return std::nullopt;
      }
      if (!n->value) {
        bump(rs.negative_hits);
        return std::nullopt;
      }
    }
    // Every hit is recorded (the policy's hit ratio depends on it: sampling 1 in 2 cost ~6 points
    // on the LIRS glimpse trace); only a shard too busy to drain drops some.
    bump(rs.hits);
    std::optional<Value> out(n->value);
    record_read(s, rs, n);
    return out;
  }

  // Returns the fresh value of `key` without recording an access or counting a hit or miss.
  // Lock-free, like get().
  std::optional<Value> peek(const Key& key) const {
    const std::size_t h = hash_(key);
    const shard& s = shard_for(h);
    detail::cache_epoch_guard guard;
    const node* n = find_node(s, key, h);
    if (n == nullptr) return std::nullopt;
    if (access_expiry()) {
      // expires_at slides under the shard lock: read it there.
      detail::mutex_lock lock(s.mu);
      n = find_locked(s, key, h);
      if (n == nullptr) return std::nullopt;
      if (n->expires_at != detail::cache_never && now_ns() >= n->expires_at) return std::nullopt;
      return n->value;
    }
    if (n->fresh_until != detail::cache_never && now_ns() >= n->fresh_until) return std::nullopt;
    return n->value;
  }

  // Returns the value of `key` even if it expired less than `stale_for` ago, with `stale` telling
  // which. For "serve the last known value while the backend is down". Counts a hit (fresh), a
  // stale hit, or a miss.
  std::optional<stale_result> get_stale(const Key& key) {
    const std::size_t h = hash_(key);
    shard& s = shard_for(h);
    detail::mutex_lock lock(s.mu);
    node* n = find_locked(s, key, h);
    if (n == nullptr) return miss_stale(s);
    const std::int64_t now = n->remove_at != detail::cache_never ? now_ns() : 0;
    if (now >= n->remove_at || !n->value) return miss_stale(s);
    const bool stale = now >= n->expires_at;
    if (stale) {
      ++s.c.stale_hits;
    } else {
      ++s.c.hits;
      touch_expiry(s, n, now);
      record_read_locked(s, n);
    }
    return stale_result{*n->value, stale};
  }

  // Returns whether `key` has a fresh value (no access recorded).
  bool contains(const Key& key) const { return peek(key).has_value(); }

  // Stores `value` for `key` with the default time to live (`expire_after_write`), replacing any
  // previous value (the listener sees it with removal_cause::replaced). May evict entries.
  void put(const Key& key, Value value) {
    put_impl(key, std::optional<Value>(std::move(value)), opts_.expire_after_write);
  }

  // Stores `value` for `key` for `ttl` (instead of the default). A ttl <= 0 stores nothing and
  // erases the key (the value would be expired at once).
  template <class Rep, class Period>
  void put(const Key& key, Value value, std::chrono::duration<Rep, Period> ttl) {
    const auto d = std::chrono::duration_cast<duration>(ttl);
    if (d.count() <= 0) {
      erase(key);
      return;
    }
    put_impl(key, std::optional<Value>(std::move(value)), d);
  }

  // Removes `key`; returns whether it was present (expired entries count as present until swept).
  bool erase(const Key& key) {
    const std::size_t h = hash_(key);
    shard& s = shard_for(h);
    detail::cache_epoch_guard guard;
    pending p;
    bool found = false;
    {
      detail::mutex_lock lock(s.mu);
      drain_for_write(s);
      if (node* n = find_locked(s, key, h); n != nullptr) {
        found = true;
        erase_locked(s, n, p);
      }
      maybe_reclaim(s, p);
    }
    finish(p);
    return found;
  }

  // Removes every entry (listener cause: erased). O(size).
  void clear() {
    for (std::size_t i = 0; i <= shard_mask_; ++i) {
      shard& s = shards_[i];
      detail::cache_epoch_guard guard;
      pending p;
      {
        detail::mutex_lock lock(s.mu);
        drain_reads(s);
        std::vector<detail::cache_node_base*> all;
        all.reserve(s.index.size());
        s.index.for_each([&all](detail::cache_node_base* b) { all.push_back(b); });
        // Everything that can throw before the first entry is unlinked: an entry is retired
        // only once no lookup can reach it.
        p.removed.reserve(all.size());
        s.retired.reserve(s.retired.size() + all.size());
        retire_table(s, s.index.clear());
        for (detail::cache_node_base* b : all) {
          node* n = static_cast<node*>(b);
          s.policy.on_remove(n);
          if (s.wheel) s.wheel->unschedule(n);
          ++s.c.erasures;
          p.removed.emplace_back(n, removal_cause::erased);
          retire(s, n);
        }
        maybe_reclaim(s, p);
      }
      finish(p);
    }
  }

  // Returns the value of `key`, loading it with `loader(key)` on a miss. `loader` returns
  // absl::StatusOr<Value> (or something convertible). Concurrent misses on one key run the loader
  // once; the others block until it returns and get its result. NotFound is cached for
  // `negative_ttl`; other errors are not cached. With refresh_after/stale_for, may start one
  // background reload on `cache_options::refresh_executor` (the loader is copied into the task;
  // it must then be copyable).
  template <class Loader>
  absl::StatusOr<Value> get_or_load(const Key& key, Loader&& loader) {
    constexpr bool copyable = std::is_copy_constructible_v<std::decay_t<Loader>>;
    const std::size_t h = hash_(key);
    shard& s = shard_for(h);
    probe pr = probe_or_join(s, key, h, copyable);
    if (pr.refresh) {
      if constexpr (copyable) start_refresh(s, key, h, pr.f, std::decay_t<Loader>(loader));
    }
    if (pr.answer) return *std::move(pr.answer);
    if (!pr.leader) {
      detail::mutex_lock lock(pr.f->mu);
      while (!pr.f->done) pr.f->cv.wait(pr.f->mu);
      return pr.f->result;
    }
    absl::StatusOr<Value> r = absl::InternalError("sluice::cache: the loader threw");
    try {
      r = loader(key);
    } catch (...) {
      complete_load(s, key, h, pr.f, r, false);
      throw;
    }
    complete_load(s, key, h, pr.f, r, false);
    return r;
  }

 private:
  struct flight;

 public:
  // The steps of get_or_load for asynchronous adapters (see <sluice/asio/cache.hpp>), which must
  // not block a thread while another caller loads. Refresh-ahead and stale-while-revalidate are
  // left to the synchronous get_or_load (a stale entry is answered as stale data is: at once).
  class load_ticket {
   public:
    // Returns the answer when no load is needed (a hit, a cached not-found, a stale value).
    const std::optional<absl::StatusOr<Value>>& answer() const noexcept { return answer_; }
    // Returns whether the holder must run the loader and then call complete_load().
    bool leader() const noexcept { return leader_; }

   private:
    friend class cache;
    std::optional<absl::StatusOr<Value>> answer_;
    std::shared_ptr<flight> f_;
    bool leader_ = false;
    std::size_t hash_ = 0;
    std::optional<Key> key_;
  };

  // Looks `key` up; on a miss joins the key's load in flight or becomes its leader.
  load_ticket begin_load(const Key& key) {
    load_ticket t;
    t.hash_ = hash_(key);
    t.key_ = key;
    probe pr = probe_or_join(shard_for(t.hash_), key, t.hash_, false);
    t.answer_ = std::move(pr.answer);
    t.f_ = std::move(pr.f);
    t.leader_ = pr.leader;
    return t;
  }

  // Stores the leader's result `r` (as get_or_load would) and wakes every waiter of the ticket's
  // load. Precondition: `t.leader()`, called once.
  void complete_load(load_ticket& t, const absl::StatusOr<Value>& r) {
    complete_load(shard_for(t.hash_), *t.key_, t.hash_, t.f_, r, false);
  }

  // Calls `done(result)` once the load `t` joined completes: at once (on this thread) if it
  // already has, else on the thread that completes it, without any cache lock held.
  // Precondition: `!t.leader()` and `!t.answer()`.
  void when_loaded(load_ticket& t, std::function<void(const absl::StatusOr<Value>&)> done) {
    {
      detail::mutex_lock lock(t.f_->mu);
      if (!t.f_->done) {
        t.f_->waiters.push_back(std::move(done));
        return;
      }
    }
    absl::StatusOr<Value> r = absl::UnknownError("");
    {
      detail::mutex_lock lock(t.f_->mu);
      r = t.f_->result;
    }
    done(r);
  }

  // Returns the number of entries, including expired ones not yet swept. Takes every shard lock
  // in turn; O(shards).
  std::size_t size() const {
    std::size_t total = 0;
    for (std::size_t i = 0; i <= shard_mask_; ++i) {
      const shard& s = shards_[i];
      detail::mutex_lock lock(s.mu);
      total += s.index.size();
    }
    return total;
  }

  // Returns the total weight of the entries (their number without a weigher). O(shards).
  std::uint64_t weight() const {
    std::uint64_t total = 0;
    for (std::size_t i = 0; i <= shard_mask_; ++i) {
      const shard& s = shards_[i];
      detail::mutex_lock lock(s.mu);
      total += s.policy.weight();
    }
    return total;
  }

  // Returns the counters summed over the shards. O(shards).
  cache_stats stats() const {
    cache_stats total;
    for (std::size_t i = 0; i <= shard_mask_; ++i) {
      shard& s = shards_[i];
      detail::mutex_lock lock(s.mu);
      const cache_stats c = s.c;
      const read_stripe* stripes = s.stripes;
      cache_stats sum;
      for (std::size_t k = 0; k <= stripe_mask_; ++k) {
        // Relaxed: statistics, summed without a snapshot.
        sum.hits += stripes[k].hits.load(std::memory_order_relaxed);
        sum.misses += stripes[k].misses.load(std::memory_order_relaxed);
        sum.negative_hits += stripes[k].negative_hits.load(std::memory_order_relaxed);
      }
      cache_stats& peak = s.stripe_peak;
      peak.hits = std::max(peak.hits, sum.hits);
      peak.misses = std::max(peak.misses, sum.misses);
      peak.negative_hits = std::max(peak.negative_hits, sum.negative_hits);
      total.hits += c.hits + peak.hits;
      total.misses += c.misses + peak.misses;
      total.negative_hits += c.negative_hits + peak.negative_hits;
      total.stale_hits += c.stale_hits;
      total.loads += c.loads;
      total.loads_not_found += c.loads_not_found;
      total.load_failures += c.load_failures;
      total.refreshes += c.refreshes;
      total.refreshes_skipped += c.refreshes_skipped;
      total.evictions += c.evictions;
      total.evicted_weight += c.evicted_weight;
      total.expirations += c.expirations;
      total.erasures += c.erasures;
      total.replacements += c.replacements;
    }
    return total;
  }

  // Removes every entry that is due now (and shrinks shard tables left mostly empty), shard by
  // shard in batches of `sweep_batch` entries per lock. What the sweeper does, on demand.
  void cleanup() { sweep_some(std::numeric_limits<std::uint64_t>::max()); }

  // Returns the number of shards.
  std::size_t shard_count() const noexcept { return shard_mask_ + 1; }

  // Returns the options in effect (after clamping).
  const cache_options& options() const noexcept { return opts_; }

 private:
  // What a lock-free reader reads, first in the node so that (for small keys and values) one
  // cache line holds all of it.
  struct node_payload {
    node_payload(const Key& k, std::optional<Value>&& v) : key(k), value(std::move(v)) {}
    Key key;
    // nullopt: a cached "not found".
    std::optional<Value> value;
    // A copy of expires_at for lock-free readers (without expire-after-access, when it never
    // changes after publication).
    std::int64_t fresh_until = detail::cache_never;
  };

  struct node : node_payload, detail::cache_node_base {
    node(const Key& k, std::optional<Value>&& v) : node_payload(k, std::move(v)) {}
  };

  using read_index = detail::cache_read_index<inline_copies>;

  // The bits of a trivially copyable object of at most 8 bytes, and back.
  template <class T>
  static std::uint64_t to_bits(const T& v) noexcept {
    std::uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    return bits;
  }
  template <class T>
  static T from_bits(std::uint64_t bits) noexcept {
    std::array<unsigned char, sizeof(T)> bytes;
    std::memcpy(bytes.data(), &bits, sizeof(T));
    return std::bit_cast<T>(bytes);
  }

  // The copies the read index keeps of `n` (set_deadlines() has run): valid for readers when `n`
  // holds a value that never expires (expire-after-access moves deadlines under the lock).
  detail::cache_inline_copies copies_of(const node* n) const noexcept {
    detail::cache_inline_copies c;
    if constexpr (inline_copies) {
      if (n->value && n->fresh_until == detail::cache_never && !access_expiry()) {
        c.fast = true;
        c.key = to_bits(n->key);
        c.value = to_bits(*n->value);
      }
    }
    return c;
  }

  using node_pool = detail::cache_node_pool<sizeof(node), alignof(node)>;

  static void destroy_node(node* n) noexcept {
    n->~node();
    node_pool::deallocate(n);
  }

  struct node_deleter {
    void operator()(node* n) const noexcept { destroy_node(n); }
  };
  using node_ptr = std::unique_ptr<node, node_deleter>;

  struct flight {
    detail::mutex mu;
    detail::cond_var cv;
    bool done ABSL_GUARDED_BY(mu) = false;
    absl::StatusOr<Value> result ABSL_GUARDED_BY(mu) = absl::UnknownError("");
    // Asynchronous waiters (when_loaded), called after the result is set.
    std::vector<std::function<void(const absl::StatusOr<Value>&)>> waiters ABSL_GUARDED_BY(mu);
  };

  // Hits a thread's stripe of a shard's read buffer holds before it is replayed into the policy
  // (caller maintenance: by the reader that fills it, if the shard lock is free; background: the
  // reader asks the maintenance thread at half full; a full stripe drops hits). 16: a replay
  // every 8-16 hits amortises the lock and the policy's cache misses while keeping the batch
  // short (32 and 64 measured: fewer passes, but longer lock holds that writers wait for, and
  // Zipf at two threads 2.2x -> 2.0x / 1.7x); a power of two.
  static constexpr std::uint32_t read_ring = 16;
  // At most this many stripes per shard (one per reading thread, modulo the count).
  static constexpr std::size_t max_stripes = 16;
  // Retired nodes a shard collects before it tries to free a batch: one epoch advance and one
  // process-wide barrier per 64 removals.
  static constexpr std::size_t retire_batch = 64;

  // One thread's lossy buffer of hits in one shard, and its counters. Written by readers without
  // the shard lock (each thread mostly alone on its stripe), drained under the lock.
  struct alignas(detail::cache_line_size) read_stripe {
    // Hits written (readers) and hits drained (the drainer, under the lock). Relaxed/acquire
    // as commented at their uses.
    std::atomic<std::uint32_t> head{0};
    std::atomic<std::uint32_t> tail{0};
    // Counted with a load and a store, not a read-modify-write: exact while one thread uses the
    // stripe; two threads sharing one may lose a count now and then (stats() and the policy only
    // ever see the sums grow: see shard::stripe_peak).
    std::atomic<std::uint64_t> hits{0};
    std::atomic<std::uint64_t> misses{0};
    std::atomic<std::uint64_t> negative_hits{0};
    alignas(detail::cache_line_size)
        std::array<std::atomic<detail::cache_node_base*>, read_ring> ring{};
  };

  // Retired objects tagged with the epoch after which no reader can hold them.
  struct retired_batch {
    std::uint64_t tag = 0;
    std::vector<detail::cache_epoch::retired> items;
  };

  struct alignas(detail::cache_line_size) shard {
    // Read without the lock (its own cache lines).
    read_index index;
    // This shard's stripes of the read buffer (cache::stripes_), set once at construction.
    read_stripe* stripes = nullptr;
    alignas(detail::cache_line_size) mutable detail::mutex mu;
    cache_stats c ABSL_GUARDED_BY(mu);
    // The stripes' miss counts already handed to the policy.
    std::uint64_t misses_seen ABSL_GUARDED_BY(mu) = 0;
    // The highest stripe sums stats() has reported. Two threads sharing a stripe can lose a
    // count (load + store) and so make a sum step back; reported counters never do.
    cache_stats stripe_peak ABSL_GUARDED_BY(mu);
    detail::cache_policy policy ABSL_GUARDED_BY(mu);
    std::unique_ptr<detail::cache_timer_wheel> wheel ABSL_GUARDED_BY(mu);
    absl::flat_hash_map<Key, std::shared_ptr<flight>, Hash, Eq> loading ABSL_GUARDED_BY(mu);
    // Unlinked nodes and tables not yet tagged, and tagged batches waiting for readers to leave.
    std::vector<detail::cache_epoch::retired> retired ABSL_GUARDED_BY(mu);
    std::vector<retired_batch> limbo ABSL_GUARDED_BY(mu);
  };

  // Removed nodes (alive until the caller's epoch guard ends), handed to the listener after
  // unlocking, and retired objects to free then.
  struct pending {
    absl::InlinedVector<std::pair<detail::cache_node_base*, removal_cause>, 4> removed;
    node* replaced = nullptr;
    std::vector<detail::cache_epoch::retired> freed;
  };

  // What a lookup for get_or_load found: an answer, or a flight to lead or wait for (and with
  // `refresh`, both: an answer plus a reload to start).
  struct probe {
    std::optional<absl::StatusOr<Value>> answer;
    std::shared_ptr<flight> f;
    bool leader = false;
    bool refresh = false;
  };

  probe probe_or_join(shard& s, const Key& key, std::size_t h, bool can_refresh) {
    probe pr;
    detail::mutex_lock lock(s.mu);
    std::optional<Value> current;
    bool refresh = false;
    if (node* n = find_locked(s, key, h); n != nullptr) {
      const std::int64_t now = (n->remove_at != detail::cache_never || timed_) ? now_ns() : 0;
      if (now < n->expires_at) {
        if (!n->value) {
          ++s.c.negative_hits;
          pr.answer = absl::NotFoundError("sluice::cache: key not found (cached)");
          return pr;
        }
        ++s.c.hits;
        touch_expiry(s, n, now);
        record_read_locked(s, n);
        current = n->value;
        refresh = opts_.refresh_after.count() > 0 && n->written_at != 0 &&
                  now - n->written_at >= opts_.refresh_after.count();
      } else if (now < n->remove_at && n->value) {
        ++s.c.stale_hits;
        current = n->value;
        refresh = true;
      }
    }
    if (current) {
      pr.answer = *std::move(current);
      if (!refresh || !can_refresh) return pr;
      auto [fit, inserted] = s.loading.try_emplace(key);
      if (!inserted) return pr;  // a reload is already running
      fit->second = std::make_shared<flight>();
      pr.f = fit->second;
      pr.refresh = true;
      ++s.c.refreshes;
      return pr;
    }
    ++s.c.misses;
    s.policy.record_miss();
    auto [fit, inserted] = s.loading.try_emplace(key);
    if (inserted) {
      fit->second = std::make_shared<flight>();
      pr.leader = true;
    }
    pr.f = fit->second;
    return pr;
  }

  static cache_options sanitize(cache_options o, const hooks& h) {
    if (o.max_entries == 0) o.max_entries = 1;
    if (h.weigher && o.max_weight == 0) o.max_weight = o.max_entries;
    const auto clamp = [](duration& d) {
      if (d.count() < 0) d = duration::zero();
    };
    clamp(o.expire_after_write);
    clamp(o.expire_after_access);
    clamp(o.negative_ttl);
    clamp(o.refresh_after);
    clamp(o.stale_for);
    o.shards = std::min<std::size_t>(o.shards, std::size_t{1} << 16);
    return o;
  }

  std::int64_t now_ns() const {
    return std::chrono::duration_cast<duration>(clock_.now().time_since_epoch()).count();
  }

  // Bits 32.. of the hash times an odd constant (a different one from the index's, which uses
  // the product's top bits): spread even for an identity hash of small integers.
  shard& shard_for(std::size_t h) const noexcept {
    return shards_[((static_cast<std::uint64_t>(h) * 0xD6E8FEB86659FD93ULL) >> 32) & shard_mask_];
  }

  bool access_expiry() const noexcept { return opts_.expire_after_access.count() > 0; }

  static std::int64_t add_sat(std::int64_t t, std::int64_t d) noexcept {
    if (t == detail::cache_never || d >= detail::cache_never - t) return detail::cache_never;
    return t + d;
  }

  // get() with expire-after-access: a hit slides the entry's deadline, so it takes the lock.
  SLUICE_CACHE_COLD std::optional<Value> get_locked(shard& s, const Key& key, std::size_t h) {
    detail::mutex_lock lock(s.mu);
    node* n = find_locked(s, key, h);
    if (n == nullptr) return miss(s);
    const std::int64_t now = now_ns();
    if (now >= n->expires_at) return miss(s);
    touch_expiry(s, n, now);
    if (!n->value) {
      ++s.c.negative_hits;
      return std::nullopt;
    }
    ++s.c.hits;
    record_read_locked(s, n);
    return n->value;
  }

  std::optional<Value> miss(shard& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    ++s.c.misses;
    s.policy.record_miss();
    return std::nullopt;
  }

  std::optional<stale_result> miss_stale(shard& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    ++s.c.misses;
    s.policy.record_miss();
    return std::nullopt;
  }

  // Slides the access deadline of `n` (expire_after_access). The wheel finds the entry at its old
  // deadline and reschedules it then, so a read never touches the wheel.
  void touch_expiry([[maybe_unused]] shard& s, node* n, std::int64_t now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    if (!access_expiry()) return;
    n->expires_at = std::min(n->write_deadline, add_sat(now, opts_.expire_after_access.count()));
    n->remove_at = add_sat(n->expires_at, opts_.stale_for.count());
  }

  // Adds one to a stripe counter (see read_stripe: a load and a store, no locked instruction).
  static void bump(std::atomic<std::uint64_t>& counter) noexcept {
    // Relaxed: a statistic; stats() sums it under no ordering promise.
    counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }

  // Finds `key` under the shard lock (the read index is the shard's only map of its entries).
  node* find_locked(const shard& s, const Key& key, std::size_t h) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    return const_cast<node*>(find_node(s, key, h));
  }

  // Finds `key` in the shard's published index. Call inside an epoch read section.
  const node* find_node(const shard& s, const Key& key, std::size_t h) const {
    return static_cast<const node*>(s.index.find(h, [&](const detail::cache_node_base* b) {
      return eq_(static_cast<const node*>(b)->key, key);
    }));
  }

  // Notes a lock-free hit on `n` in the caller's stripe; has the stripe replayed into the policy
  // when it fills (see read_ring), else drops the hit (lossy, as Caffeine's read buffers: a busy
  // shard loses a little recency information, never correctness).
  void record_read(shard& s, read_stripe& rs, const node* n) {
    // Relaxed: the stripe's positions only decide where to write and when to drain; the entries
    // themselves are published with release stores below.
    const std::uint32_t head = rs.head.load(std::memory_order_relaxed);
    const std::uint32_t tail = rs.tail.load(std::memory_order_relaxed);
    if (head - tail < read_ring) {
      // Release: pairs with the drainer's acquire load (the pointer's node is published).
      rs.ring[head & (read_ring - 1)].store(const_cast<node*>(n), std::memory_order_release);
      rs.head.store(head + 1, std::memory_order_release);
      // Background: at half full, ask the maintainer for a pass, leaving it half a ring to get
      // here. Caller: replay when full.
      if (head + 1 - tail != ring_threshold_) [[likely]]
        return;
    }
    record_read_rest(s, rs, head, tail);
  }

  // record_read() past its fast path: the buffer needs a replay.
  SLUICE_CACHE_COLD void record_read_rest(shard& s, read_stripe& rs, std::uint32_t head,
                                          std::uint32_t tail) {
    if (head - tail < read_ring) {
      if (background_ && request_maintenance(s)) return;
    } else if (background_ && maintainer_ok_.load(std::memory_order_relaxed)) {
      // Full: the maintainer is behind; drop the hit (lossy), and every 16th dropped hit ask
      // again (a pass may have been missed: a thread sharing this stripe can move its head back
      // after a pass, which leaves the stripe looking full until the next one).
      if ((rs.hits.load(std::memory_order_relaxed) & (read_ring - 1)) != 0 ||
          request_maintenance(s)) {
        return;
      }
    } else if ((rs.hits.load(std::memory_order_relaxed) & (read_ring - 1)) != 0) {
      // Full and the last drain attempt failed: drop the hit, and retry the lock only every
      // 16th hit, so a contended shard's lock line is not hammered by every reader.
      return;
    }
    if (s.mu.try_lock()) {
      drain_reads(s);
      s.mu.unlock();
    }
  }

  // Records a hit found under the shard lock (get_stale, get_or_load, expire-after-access), after
  // the buffered ones so the policy sees hits roughly in order.
  void record_read_locked(shard& s, node* n) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    drain_for_write(s);
    s.policy.on_access(n);
  }

  // Before a change to the shard under its lock: with caller maintenance, replays the buffered
  // hits first (a single thread's policy then sees its exact sequence); with background
  // maintenance the thread does that (the buffered hits are applied a little later; an entry
  // removed meanwhile is skipped).
  void drain_for_write(shard& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    if (!background_) drain_reads(s);
  }

  // Marks `s` for the maintainer and queues a pass over this cache unless one is queued. Returns
  // false when the maintainer has no thread (the caller then drains like caller maintenance).
  bool request_maintenance(shard& s) {
    const std::size_t i = static_cast<std::size_t>(&s - shards_.get());
    std::atomic<std::uint64_t>& word = marks_[i / 64];
    const std::uint64_t bit = std::uint64_t{1} << (i % 64);
    // Always the read-modify-write, even when the bit is set (one locked instruction per half
    // stripe): it is what makes this thread's ring writes visible to the pass that exchanges the
    // word. seq_cst (with the load of maintenance_queued below, and the maintainer's store of
    // false before its pass reads the marks): either that pass sees this mark or this thread sees
    // the flag cleared and queues another pass.
    word.fetch_or(bit, std::memory_order_seq_cst);
    if (queue_pass()) return true;
    maintainer_ok_.store(false, std::memory_order_relaxed);
    return false;
  }

  // Queues a pass over this cache unless one is queued. Returns false when the maintainer cannot
  // take it (no thread, or this cache has unregistered).
  bool queue_pass() {
    if (maintenance_queued.load(std::memory_order_seq_cst) ||
        maintenance_queued.exchange(true, std::memory_order_seq_cst)) {
      return true;
    }
    if (detail::cache_maintainer::instance().schedule(this)) return true;
    maintenance_queued.store(false, std::memory_order_relaxed);
    return false;
  }

  // The maintainer's pass: replays the buffers of every marked shard.
  // A shard whose lock is taken (a write in progress) is not waited for: a writer that found its
  // lock held by this thread would sleep; the shard is marked again for the next pass instead.
  void maintain() override {
    const std::size_t words = (shard_mask_ + 64) / 64;
    bool busy = false;
    for (std::size_t w = 0; w < words; ++w) {
      // seq_cst: see request_maintenance.
      std::uint64_t bits = marks_[w].exchange(0, std::memory_order_seq_cst);
      while (bits != 0) {
        const int b = std::countr_zero(bits);
        bits &= bits - 1;
        shard& s = shards_[w * 64 + static_cast<std::size_t>(b)];
        if (!s.mu.try_lock()) {
          marks_[w].fetch_or(std::uint64_t{1} << b, std::memory_order_seq_cst);
          busy = true;
          continue;
        }
        drain_reads(s);
        s.mu.unlock();
      }
    }
    if (busy) {
      // Let the writer finish before the next pass.
      std::this_thread::yield();
      queue_pass();
    }
  }

  // Replays the buffered hits into the policy. Called before every structural change (so a single
  // thread's policy sees exactly its sequence of hits and writes) and, over every slot, before
  // retired nodes are freed (so no buffered pointer outlives its node: see reclaim()).
  void drain_reads(shard& s, bool every_slot = false) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    read_stripe* stripes = s.stripes;
    std::uint64_t misses = 0;
    for (std::size_t k = 0; k <= stripe_mask_; ++k) {
      read_stripe& rs = stripes[k];
      misses += rs.misses.load(std::memory_order_relaxed);
      // Acquire: the slots written before `head` are visible.
      const std::uint32_t head = rs.head.load(std::memory_order_acquire);
      const std::uint32_t tail = rs.tail.load(std::memory_order_relaxed);
      if (head == tail && !every_slot) continue;
      std::array<detail::cache_node_base*, read_ring> batch;
      std::uint32_t count = 0;
      // Every slot, oldest first: a reader delayed between reading `head` and writing may have
      // written outside [tail, head).
      for (std::uint32_t i = 0; i < read_ring; ++i) {
        auto& cell = rs.ring[(tail + i) & (read_ring - 1)];
        // Acquire: pairs with the reader's release store. A load and a store, not an exchange
        // (a locked instruction per hit): a hit written between the two is lost, which the
        // buffer allows; what matters is that every pointer written before this load is gone.
        detail::cache_node_base* n = cell.load(std::memory_order_acquire);
        if (n == nullptr) continue;
        cell.store(nullptr, std::memory_order_relaxed);
        // An entry removed since the hit is no longer in the policy (its queue is none).
        if (n->queue != detail::cache_queue::none) batch[count++] = n;
      }
      // Relaxed: readers only use it to judge whether the stripe is full.
      rs.tail.store(head, std::memory_order_relaxed);
#if defined(__GNUC__)
      // The policy's updates each touch a sketch block: start those loads together instead of
      // one after another (prefetching the nodes' neighbours too measured slower).
      for (std::uint32_t i = 0; i < count; ++i) {
        __builtin_prefetch(s.policy.sketch_address(batch[i]->hash), 1);
      }
#endif
      for (std::uint32_t i = 0; i < count; ++i) s.policy.on_access(batch[i]);
    }
    // A sum that stepped back (a lost count, see bump) reports nothing until it passes the peak.
    if (misses > s.misses_seen) {
      s.policy.record_misses(misses - s.misses_seen);
      s.misses_seen = misses;
    }
  }

  static void free_node(void* p) { destroy_node(static_cast<node*>(p)); }

  // Hands `n` (unlinked from the index and the policy) to epoch-based reclamation.
  void retire(shard& s, node* n) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    s.retired.push_back({n, &free_node});
  }

  // Hands a replaced index table (or nothing) to epoch-based reclamation.
  void retire_table(shard& s, typename read_index::table* t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    if (t != nullptr) s.retired.push_back({t, &read_index::free_table});
  }

  void maybe_reclaim(shard& s, pending& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    if (s.retired.size() >= retire_batch) reclaim(s, p);
  }

  // Tags the shard's retired objects with a new epoch and moves every batch no reader can still
  // hold to `p.freed` (freed after unlocking). O(threads) for the scan.
  void reclaim(shard& s, pending& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    detail::cache_epoch& domain = detail::cache_epoch::instance();
    if (!s.retired.empty()) {
      retired_batch b;
      b.tag = domain.advance();
      b.items.swap(s.retired);
      s.limbo.push_back(std::move(b));
    }
    if (s.limbo.empty()) return;
    const std::uint64_t oldest = domain.oldest_active();
    if (s.limbo.front().tag >= oldest) return;
    // Readers that could hold these nodes have left; the hits they buffered may still point at
    // them: replay every slot first.
    drain_reads(s, true);
    std::size_t done = 0;
    while (done < s.limbo.size() && s.limbo[done].tag < oldest) {
      std::vector<detail::cache_epoch::retired>& items = s.limbo[done].items;
      if (p.freed.empty()) {
        p.freed.swap(items);
      } else {
        p.freed.insert(p.freed.end(), items.begin(), items.end());
      }
      ++done;
    }
    s.limbo.erase(s.limbo.begin(), s.limbo.begin() + static_cast<std::ptrdiff_t>(done));
  }

  // Removes the entry `n` (erase(), a NotFound reload) and retires it.
  void erase_locked(shard& s, node* n, pending& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    unlink_node(s, n);
    ++s.c.erasures;
    p.removed.emplace_back(n, removal_cause::erased);
    retire(s, n);
  }

  // Unlinks `n` from the policy, the wheel and the read index (not from the map).
  void unlink_node(shard& s, node* n) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    s.policy.on_remove(n);
    if (s.wheel) s.wheel->unschedule(n);
    s.index.erase(n->hash, n);
  }

  // Sets the deadlines of a node written at `now` with time to live `ttl` (0: none) and
  // schedules it. Called before the node is published: lock-free readers see them unchanged.
  void set_deadlines(shard& s, node* n, std::int64_t now, std::int64_t ttl)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    n->write_deadline = ttl > 0 ? add_sat(now, ttl) : detail::cache_never;
    n->expires_at = n->write_deadline;
    if (access_expiry()) {
      n->expires_at = std::min(n->expires_at, add_sat(now, opts_.expire_after_access.count()));
    }
    n->remove_at = add_sat(n->expires_at, opts_.stale_for.count());
    n->fresh_until = n->expires_at;
    n->written_at = opts_.refresh_after.count() > 0 ? now : 0;
    if (n->remove_at != detail::cache_never) {
      if (!s.wheel) s.wheel = std::make_unique<detail::cache_timer_wheel>(now);
      s.wheel->reschedule(n);
    } else if (s.wheel) {
      s.wheel->unschedule(n);
    }
  }

  // Makes the node a write publishes, before the shard lock is taken (the allocation and the
  // copies stay out of the critical section). A write always makes a new node: lock-free readers
  // may be reading the old one, whose key, value and deadlines never change once published.
  // The memory comes from the calling thread's pool of freed nodes (detail/cache_node_pool.hpp).
  static node_ptr make_node(const Key& key, std::optional<Value>&& value) {
    void* p = node_pool::allocate();
    try {
      return node_ptr(new (p) node(key, std::move(value)));
    } catch (...) {
      node_pool::deallocate(p);
      throw;
    }
  }

  // Inserts or replaces `key` with `fresh` (the shard lock held, reads drained), evicting as
  // needed.
  void insert_locked(shard& s, const Key& key, std::size_t h, node_ptr fresh, std::uint32_t weight,
                     std::int64_t ttl, pending& p) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    const bool needs_time = ttl > 0 || timed_ || s.wheel != nullptr;
    const std::int64_t now = needs_time ? now_ns() : 0;
    node* old = find_locked(s, key, h);
    node* n = fresh.release();
    n->hash = h;
    n->weight = weight;
    if (old != nullptr) {
      if (old->value) {
        ++s.c.replacements;
        p.replaced = old;
      }
      s.policy.on_replace(old, n, weight);
      if (s.wheel) s.wheel->unschedule(old);
      set_deadlines(s, n, now, ttl);
      s.index.replace(h, old, n, copies_of(n));
      retire(s, old);
    } else {
      s.policy.on_insert(n);
      set_deadlines(s, n, now, ttl);
      retire_table(s, s.index.insert(h, n, copies_of(n)));
    }
    absl::InlinedVector<detail::cache_node_base*, 4> victims;
    s.policy.evict([&victims](detail::cache_node_base* v) { victims.push_back(v); });
    for (detail::cache_node_base* v : victims) {
      node* vn = static_cast<node*>(v);
      if (s.wheel) s.wheel->unschedule(vn);
      s.index.erase(vn->hash, vn);
      ++s.c.evictions;
      s.c.evicted_weight += vn->weight;
      p.removed.emplace_back(vn, removal_cause::evicted);
      retire(s, vn);
    }
    // Writes keep the wheel moving even without the sweeper, a little at a time.
    if (s.wheel && s.wheel->due(now)) {
      std::uint64_t budget = 16;
      expire_locked(s, now, budget, p);
    }
  }

  // Advances the shard's wheel to `now`, visiting at most `budget` entries; returns whether
  // the wheel caught up.
  bool expire_locked(shard& s, std::int64_t now, std::uint64_t& budget, pending& p)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    if (!s.wheel) return true;
    absl::InlinedVector<detail::cache_node_base*, 16> due;
    const bool done =
        s.wheel->advance(now, budget, [&due](detail::cache_node_base* n) { due.push_back(n); });
    for (detail::cache_node_base* b : due) {
      node* n = static_cast<node*>(b);
      s.policy.on_remove(n);
      s.index.erase(n->hash, n);
      ++s.c.expirations;
      p.removed.emplace_back(n, removal_cause::expired);
      retire(s, n);
    }
    return done;
  }

  void put_impl(const Key& key, std::optional<Value>&& value, duration ttl) {
    const std::uint32_t w = weigh(key, value);
    const std::size_t h = hash_(key);
    shard& s = shard_for(h);
    node_ptr fresh = make_node(key, std::move(value));
    detail::cache_epoch_guard guard;
    pending p;
    {
      detail::mutex_lock lock(s.mu);
      drain_for_write(s);
      insert_locked(s, key, h, std::move(fresh), w, ttl.count(), p);
      maybe_reclaim(s, p);
    }
    finish(p);
  }

  std::uint32_t weigh(const Key& key, const std::optional<Value>& value) const {
    if (!hooks_.weigher || !value) return 1;
    const std::uint64_t w = hooks_.weigher(key, *value);
    return static_cast<std::uint32_t>(
        std::clamp<std::uint64_t>(w, 1, std::numeric_limits<std::uint32_t>::max()));
  }

  // Calls the listener for what an operation removed (alive until the caller's epoch guard
  // ends) and frees what reclamation released. No lock held.
  void finish(pending& p) {
    if (hooks_.listener) {
      if (p.replaced != nullptr) {
        hooks_.listener(p.replaced->key, *p.replaced->value, removal_cause::replaced);
      }
      for (auto& [b, cause] : p.removed) {
        const node* n = static_cast<const node*>(b);
        if (n->value) hooks_.listener(n->key, *n->value, cause);
      }
    }
    for (const detail::cache_epoch::retired& r : p.freed) r.free(r.p);
  }

  // Stores a loader's result, retires the flight and wakes its waiters.
  void complete_load(shard& s, const Key& key, std::size_t h, const std::shared_ptr<flight>& f,
                     const absl::StatusOr<Value>& r, bool refresh) {
    detail::cache_epoch_guard guard;
    pending p;
    std::optional<Value> v;
    if (r.ok()) v = *r;
    const std::uint32_t w = weigh(key, v);
    node_ptr fresh;
    if (r.ok() || (absl::IsNotFound(r.status()) && opts_.negative_ttl.count() > 0)) {
      fresh = make_node(key, std::move(v));
    }
    {
      detail::mutex_lock lock(s.mu);
      drain_for_write(s);
      if (r.ok()) {
        ++s.c.loads;
        insert_locked(s, key, h, std::move(fresh), w, opts_.expire_after_write.count(), p);
      } else if (absl::IsNotFound(r.status())) {
        ++s.c.loads_not_found;
        if (opts_.negative_ttl.count() > 0) {
          insert_locked(s, key, h, std::move(fresh), 1, opts_.negative_ttl.count(), p);
        } else if (refresh) {
          if (node* n = find_locked(s, key, h); n != nullptr) erase_locked(s, n, p);
        }
      } else {
        // A failed reload keeps the old value (stale-if-error); a failed load caches nothing.
        ++s.c.load_failures;
      }
      forget_flight_locked(s, key, f);
      maybe_reclaim(s, p);
    }
    auto waiters = settle(*f, r);
    finish(p);
    for (auto& waiter : waiters) waiter(r);
  }

  // Removes `f` from the shard's loads in progress if it is still `key`'s flight.
  static void forget_flight_locked(shard& s, const Key& key, const std::shared_ptr<flight>& f)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    auto it = s.loading.find(key);
    if (it != s.loading.end() && it->second == f) s.loading.erase(it);
  }

  // Publishes a flight's result, wakes its blocked callers and returns its asynchronous waiters,
  // for the caller to run without any lock held.
  static std::vector<std::function<void(const absl::StatusOr<Value>&)>> settle(
      flight& f, const absl::StatusOr<Value>& r) ABSL_LOCKS_EXCLUDED(f.mu) {
    std::vector<std::function<void(const absl::StatusOr<Value>&)>> waiters;
    {
      detail::mutex_lock lock(f.mu);
      f.result = r;
      f.done = true;
      waiters.swap(f.waiters);
    }
    f.cv.notify_all();
    return waiters;
  }

  // Hands one background reload of `key` (flight `f`, already registered) to the executor.
  template <class Loader>
  void start_refresh(shard& s, const Key& key, std::size_t h, std::shared_ptr<flight> f,
                     Loader loader) {
    {
      detail::mutex_lock lock(refresh_mu_);
      ++refreshing_;
    }
    absl::AnyInvocable<void()> task = [this, &s, key, h, f, loader = std::move(loader)]() mutable {
      absl::StatusOr<Value> r = absl::InternalError("sluice::cache: the loader threw");
      try {
        r = loader(key);
      } catch (...) {
        // Reported as a failed reload; the stale value stays.
      }
      complete_load(s, key, h, f, r, true);
      refresh_done();
    };
    bool accepted = false;
    try {
      accepted = opts_.refresh_executor
                     ? opts_.refresh_executor(std::move(task))
                     : detail::cache_refresher::instance().submit(std::move(task));
    } catch (...) {
      accepted = false;
    }
    if (accepted) return;
    skip_refresh(s, key, f);
    refresh_done();
  }

  void refresh_done() ABSL_LOCKS_EXCLUDED(refresh_mu_) {
    detail::mutex_lock lock(refresh_mu_);
    --refreshing_;
    refresh_cv_.notify_all();
  }

  // Retires the flight of a reload the executor declined; the entry keeps its value.
  void skip_refresh(shard& s, const Key& key, const std::shared_ptr<flight>& f) {
    const absl::StatusOr<Value> r =
        absl::UnavailableError("sluice::cache: reload skipped (executor declined)");
    {
      detail::mutex_lock lock(s.mu);
      --s.c.refreshes;
      ++s.c.refreshes_skipped;
      forget_flight_locked(s, key, f);
    }
    for (auto& waiter : settle(*f, r)) waiter(r);
  }

  // The sweeper's entry point (and cleanup()'s): advances each shard's wheel in batches.
  bool sweep_some(std::uint64_t budget) override {
    bool all_done = true;
    for (std::size_t i = 0; i <= shard_mask_ && budget > 0; ++i) {
      shard& s = shards_[i];
      bool done = false;
      while (!done && budget > 0) {
        detail::cache_epoch_guard guard;
        pending p;
        {
          detail::mutex_lock lock(s.mu);
          if (!s.wheel) {
            done = true;
            break;
          }
          drain_reads(s);
          std::uint64_t batch = std::min(budget, sweep_batch);
          const std::uint64_t before = batch;
          done = expire_locked(s, now_ns(), batch, p);
          budget -= before - batch;
          // Give memory back after a burst: a table left mostly empty is rebuilt to fit.
          if (done) retire_table(s, s.index.shrink_to_fit());
          maybe_reclaim(s, p);
        }
        finish(p);
      }
      if (!done) all_done = false;
      // Outside any read section of this thread: free what readers have left.
      pending p;
      {
        detail::mutex_lock lock(s.mu);
        if (!s.retired.empty() || !s.limbo.empty()) reclaim(s, p);
      }
      finish(p);
    }
    return all_done;
  }

  cache_options opts_;
  mutable Clock clock_;
  hooks hooks_;
  Hash hash_{};
  Eq eq_{};
  bool timed_ = false;
  // Whether this cache registered with the shared refresher (see cache_options).
  bool uses_refresher_ = false;
  std::size_t shard_mask_ = 0;
  std::unique_ptr<shard[]> shards_;
  // Stripes of shard i: [i * (stripe_mask_ + 1), (i + 1) * (stripe_mask_ + 1)).
  std::size_t stripe_mask_ = 0;
  std::unique_ptr<read_stripe[]> stripes_;
  // Background maintenance: one bit per shard whose buffers want a pass (set by readers, cleared
  // by the maintainer), and whether the maintainer's thread could be started (false: readers
  // drain themselves, as with caller maintenance).
  bool background_ = false;
  // When a stripe asks for a replay: half full (background), full (caller).
  std::uint32_t ring_threshold_ = read_ring;
  std::unique_ptr<std::atomic<std::uint64_t>[]> marks_;
  std::atomic<bool> maintainer_ok_{true};
  detail::mutex refresh_mu_;
  detail::cond_var refresh_cv_;
  std::uint64_t refreshing_ ABSL_GUARDED_BY(refresh_mu_) = 0;
};

}  // namespace sluice
