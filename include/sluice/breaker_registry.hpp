// sluice/breaker_registry.hpp
//
// `sluice::breaker_registry` keeps one `sluice::circuit_breaker` per key -- per downstream host,
// endpoint or tenant -- with a hard cap on how many keys it holds, so an unbounded key space (many
// hosts, a scan of user-supplied URLs) cannot grow memory without bound.
//
// Eviction keeps only what is safe to forget: an entry is evictable when its breaker is closed, not
// ramping, its window holds no failure and no slow call ("closed and clean"), and nobody outside
// the registry holds it. Open, half-open, forced-open, disabled and unhealthy closed breakers are
// never evicted -- forgetting them would silently re-admit traffic to a sick dependency.
//   - `evict_idle()` removes evictable entries not looked up for `idle_timeout` (call it
//     periodically, e.g. from a sweeper; it is also run on a shard when the cap is reached).
//   - When the cap is reached, `get` of a new key evicts the least recently used evictable entry
//     (idle or not); if there is none, it returns ResourceExhausted and creates nothing.
//
// Breakers are handed out as std::shared_ptr: an entry evicted while a caller still holds it is not
// evicted (see above), and a caller's copy always stays valid. A permit does not keep its breaker
// alive: hold the shared_ptr while a permit is outstanding.
//
// Cost: `get` hashes the key, locks one of `shards` shard mutexes and copies a shared_ptr
// (~40-60 ns); hot callers keep the shared_ptr. A get that hits the cap scans shards for a victim:
// O(entries), rare by construction.
//
// Thread safety: all member functions may be called concurrently. The registry must outlive the
//                calls into it; breakers it handed out may outlive it. Eviction checks a breaker's
//                state under a shard lock, which can deliver that breaker's transition events:
//                listeners of registry breakers must not call the registry.
// Time: the registry's clock (shared with its breakers) stamps lookups for idle eviction.
// Errors: `create` returns InvalidArgument for bad options (the constructor throws
//         std::invalid_argument); `get` returns ResourceExhausted at the cap.
//
// Example:
//   sluice::breaker_registry<> breakers({.max_keys = 1000});
//   absl::StatusOr<std::shared_ptr<sluice::circuit_breaker<>>> b = breakers.get(host);
//   if (!b.ok()) return b.status();   // at the cap with nothing evictable
//   absl::StatusOr<std::string> body = (*b)->execute([&] { return fetch(host, path); });
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "sluice/circuit_breaker.hpp"
#include "sluice/detail/cache_line.hpp"
#include "sluice/detail/mutex.hpp"

namespace sluice {

// How a breaker_registry is bounded, and how it configures the breakers it creates.
template <class Key = std::string>
struct breaker_registry_options {
  // Options for every breaker the registry creates (unless `options_for` is set).
  circuit_breaker_options breaker = {};
  // If set, returns the options for the breaker of a new key (overrides `breaker`). Called under a
  // shard lock: it must not call into the registry. Invalid options make `get` return
  // InvalidArgument.
  std::function<circuit_breaker_options(const Key&)> options_for = {};
  // The hard cap on keys. 10'000: a few MB of breakers, more downstreams than a service usually
  // talks to, small enough that a flood of unknown keys cannot exhaust memory.
  std::size_t max_keys = 10'000;
  // How many independently locked shards hold the keys (rounded up to a power of two). 16: lookups
  // from many threads rarely meet on one lock.
  std::size_t shards = 16;
  // A closed-and-clean entry not looked up for this long is removed by evict_idle(). 10 min: a
  // downstream quiet for that long loses nothing worth keeping.
  std::chrono::nanoseconds idle_timeout = std::chrono::minutes(10);
};

template <class Clock = std::chrono::steady_clock, class Key = std::string>
class breaker_registry {
 public:
  using breaker_type = circuit_breaker<Clock>;
  using options_type = breaker_registry_options<Key>;
  // Called once per created breaker, under its shard lock, right after creation, so that listeners
  // can be attached before anyone uses it. Must not call the registry.
  using create_hook = std::function<void(const Key&, breaker_type&)>;

  // Returns OK if `opts` are valid, else InvalidArgument.
  [[nodiscard]] static absl::Status validate(const options_type& opts) {
    if (absl::Status st = breaker_type::validate(opts.breaker); !st.ok()) return st;
    if (opts.max_keys == 0) return absl::InvalidArgumentError("breaker_registry: max_keys >= 1");
    if (opts.shards == 0 || opts.shards > 4096) {
      return absl::InvalidArgumentError("breaker_registry: shards must be in [1, 4096]");
    }
    if (opts.idle_timeout.count() < 0) {
      return absl::InvalidArgumentError("breaker_registry: idle_timeout must be >= 0");
    }
    return absl::OkStatus();
  }

  // Creates an empty registry, or returns InvalidArgument.
  [[nodiscard]] static absl::StatusOr<breaker_registry> create(options_type opts,
                                                               Clock clock = Clock(),
                                                               create_hook on_create = {}) {
    if (absl::Status st = validate(opts); !st.ok()) return st;
    return breaker_registry(std::move(opts), clock, std::move(on_create), valid_tag{});
  }

  // Creates an empty registry; throws std::invalid_argument for invalid options.
  explicit breaker_registry(options_type opts = {}, Clock clock = Clock(),
                            create_hook on_create = {})
      : breaker_registry(checked(std::move(opts)), clock, std::move(on_create), valid_tag{}) {}

  breaker_registry(breaker_registry&&) noexcept = default;
  breaker_registry& operator=(breaker_registry&&) noexcept = default;

  // Returns the breaker for `key`, creating it (closed) if absent. At the cap, first evicts the
  // least recently used evictable entry; returns ResourceExhausted if there is none, and
  // InvalidArgument if `options_for` gave invalid options. An exception from `options_for` or the
  // creation hook propagates and leaves no entry (and no reserved capacity) behind. Takes one
  // shard lock at a time.
  [[nodiscard]] absl::StatusOr<std::shared_ptr<breaker_type>> get(const Key& key) {
    const std::size_t h = absl::Hash<Key>{}(key);
    shard& s = shard_for(h);
    const std::int64_t now = now_ns();
    {
      detail::mutex_lock lock(s.mu);
      if (auto it = s.map.find(key); it != s.map.end()) {
        it->second.last_used_ns = now;
        return it->second.breaker;
      }
    }
    // A new key. Reserve room under the cap first (never over it, even transiently).
    if (!reserve_slot()) {
      if (!evict_one_for_room()) {
        state_->rejected.fetch_add(1, std::memory_order_relaxed);
        return absl::ResourceExhaustedError(
            "breaker_registry: at max_keys and no breaker is closed, clean and unused");
      }
    }
    // The reserved slot goes back unless the new entry is inserted: on every early return and
    // when options_for, on_create or an allocation throws, so no failure shrinks the capacity.
    struct slot_guard {
      breaker_registry* self;
      bool keep = false;
      ~slot_guard() {
        if (!keep) self->release_slot();
      }
    } slot{this};
    detail::mutex_lock lock(s.mu);
    if (auto it = s.map.find(key); it != s.map.end()) {  // another thread created it meanwhile
      it->second.last_used_ns = now;
      return it->second.breaker;
    }
    circuit_breaker_options bo =
        state_->opts.options_for ? state_->opts.options_for(key) : state_->opts.breaker;
    absl::StatusOr<breaker_type> created = breaker_type::create(std::move(bo), state_->clock);
    if (!created.ok()) return created.status();
    auto b = std::make_shared<breaker_type>(*std::move(created));
    if (state_->on_create) state_->on_create(key, *b);
    s.map.emplace(key, entry{b, now});
    slot.keep = true;
    return b;
  }

  // Returns the breaker for `key` if present (without creating or touching its idle time), else
  // nullptr.
  std::shared_ptr<breaker_type> find(const Key& key) const {
    shard& s = shard_for(absl::Hash<Key>{}(key));
    detail::mutex_lock lock(s.mu);
    auto it = s.map.find(key);
    return it == s.map.end() ? nullptr : it->second.breaker;
  }

  // Removes every evictable entry (see the header) not looked up for idle_timeout. Returns how
  // many were removed. O(entries); locks one shard at a time.
  std::size_t evict_idle() {
    const std::int64_t cutoff = now_ns() - state_->opts.idle_timeout.count();
    std::size_t removed = 0;
    for (std::size_t i = 0; i < state_->shard_count; ++i) {
      shard& s = state_->shards[i].value;
      detail::mutex_lock lock(s.mu);
      for (auto it = s.map.begin(); it != s.map.end();) {
        if (it->second.last_used_ns <= cutoff && evictable(it->second)) {
          s.map.erase(it++);
          ++removed;
        } else {
          ++it;
        }
      }
    }
    if (removed != 0) {
      state_->size.fetch_sub(removed, std::memory_order_relaxed);
      state_->evicted.fetch_add(removed, std::memory_order_relaxed);
    }
    return removed;
  }

  // Removes `key` whatever its state (an operator action); returns whether it was present.
  bool erase(const Key& key) {
    shard& s = shard_for(absl::Hash<Key>{}(key));
    detail::mutex_lock lock(s.mu);
    if (s.map.erase(key) == 0) return false;
    release_slot();
    return true;
  }

  // Calls `fn(key, breaker)` for every entry, one shard at a time under its lock (fn must not call
  // the registry).
  template <class F>
  void for_each(F&& fn) const {
    for (std::size_t i = 0; i < state_->shard_count; ++i) {
      shard& s = state_->shards[i].value;
      detail::mutex_lock lock(s.mu);
      for (const auto& [k, e] : s.map) fn(k, *e.breaker);
    }
  }

  // Returns how many keys the registry holds.
  std::size_t size() const noexcept { return state_->size.load(std::memory_order_relaxed); }
  // Returns how many entries have been evicted (idle or for room) since creation.
  std::uint64_t evicted() const noexcept { return state_->evicted.load(std::memory_order_relaxed); }
  // Returns how many gets were refused at the cap since creation.
  std::uint64_t rejected() const noexcept {
    return state_->rejected.load(std::memory_order_relaxed);
  }
  // Returns the options.
  const options_type& options() const noexcept { return state_->opts; }

 private:
  struct valid_tag {};

  struct entry {
    std::shared_ptr<breaker_type> breaker;
    std::int64_t last_used_ns = 0;
  };

  struct shard {
    mutable detail::mutex mu;
    absl::flat_hash_map<Key, entry, absl::Hash<Key>> map ABSL_GUARDED_BY(mu);
  };

  struct state {
    options_type opts;
    Clock clock;
    create_hook on_create;
    std::size_t shard_count = 1;
    std::unique_ptr<detail::padded<shard>[]> shards;
    // The number of keys (or reserved slots). Relaxed: a counter checked against the cap with a
    // CAS loop; the maps themselves are guarded by their shard locks.
    std::atomic<std::size_t> size{0};
    // Relaxed: statistics only.
    std::atomic<std::uint64_t> evicted{0};
    std::atomic<std::uint64_t> rejected{0};
  };

  static options_type checked(options_type opts) {
    if (absl::Status st = validate(opts); !st.ok()) {
      throw std::invalid_argument(std::string(st.message()));
    }
    return opts;
  }

  breaker_registry(options_type opts, Clock clock, create_hook on_create, valid_tag)
      : state_(std::make_unique<state>()) {
    state_->opts = std::move(opts);
    state_->clock = clock;
    state_->on_create = std::move(on_create);
    state_->shard_count = detail::next_pow2(state_->opts.shards);
    state_->opts.shards = state_->shard_count;
    state_->shards = std::make_unique<detail::padded<shard>[]>(state_->shard_count);
  }

  std::int64_t now_ns() const noexcept { return detail::breaker_ns<Clock>(state_->clock.now()); }

  shard& shard_for(std::size_t h) const noexcept {
    // The high bits: absl::Hash mixes well, and the map itself uses the low ones.
    return state_->shards[(h >> 20) & (state_->shard_count - 1)].value;
  }

  bool reserve_slot() noexcept {
    std::size_t cur = state_->size.load(std::memory_order_relaxed);
    while (cur < state_->opts.max_keys) {
      if (state_->size.compare_exchange_weak(cur, cur + 1, std::memory_order_relaxed)) return true;
    }
    return false;
  }

  void release_slot() noexcept { state_->size.fetch_sub(1, std::memory_order_relaxed); }

  // Closed, not ramping, a window without failures or slow calls, and held by nobody else.
  static bool evictable(const entry& e) {
    if (e.breaker.use_count() != 1) return false;
    const breaker_type& b = *e.breaker;
    if (b.state() != breaker_state::closed || b.ramping()) return false;
    const health_snapshot w = b.window();
    return w.failures == 0 && w.slow_calls == 0;
  }

  // Evicts the least recently used evictable entry (scanning shard by shard) and moves its slot to
  // the caller. Returns false if nothing is evictable.
  bool evict_one_for_room() {
    for (int attempt = 0; attempt < 4; ++attempt) {
      std::size_t best_shard = state_->shard_count;
      std::int64_t best_time = 0;
      for (std::size_t i = 0; i < state_->shard_count; ++i) {
        shard& s = state_->shards[i].value;
        detail::mutex_lock lock(s.mu);
        for (const auto& [k, e] : s.map) {
          if ((best_shard == state_->shard_count || e.last_used_ns < best_time) && evictable(e)) {
            best_shard = i;
            best_time = e.last_used_ns;
          }
        }
      }
      if (best_shard == state_->shard_count) return false;
      shard& s = state_->shards[best_shard].value;
      detail::mutex_lock lock(s.mu);
      // Re-check under the lock: the entry may have been used or removed since the scan.
      for (auto it = s.map.begin(); it != s.map.end(); ++it) {
        if (it->second.last_used_ns == best_time && evictable(it->second)) {
          s.map.erase(it);
          state_->evicted.fetch_add(1, std::memory_order_relaxed);
          return true;  // its slot now belongs to the caller: size unchanged
        }
      }
    }
    return false;
  }

  std::unique_ptr<state> state_;
};

}  // namespace sluice
