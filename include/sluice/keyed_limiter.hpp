// sluice/keyed_limiter.hpp
//
// `sluice::keyed_limiter<Key, Limiter>` keeps one rate limiter per key (client id, IP address, API
// token) in bounded memory, like nginx's limit_req zones: a hard cap on the number of keys, the
// least recently seen key evicted when a new one arrives at the cap, idle keys swept, and per-key
// quota overrides. An attacker sending a million distinct keys cannot grow it past the cap; it can
// only push out the least recently seen clients (who then start again from a full limiter).
//
// Layout: `shards` independent shards, each a mutex, an absl::flat_hash_map from key to a slot,
// a slot array and an intrusive LRU list through the slots. A key lives in the shard picked by
// its hash; each shard holds at most max_keys / shards keys, so the total never exceeds max_keys.
// LRU order is per shard, and a seen key is moved to the front only once it has drifted an eighth
// of the shard's cap from it (saving two random memory writes per decision): a key seen among the
// 7/8 x cap most recently seen keys of its shard is never the one evicted.
//
// `Limiter` is any sluice limiter with `options`, a `(options, clock)` constructor, a move
// constructor, `try_acquire(n, now)`, `set_limits(options)` and `reset()`: gcra_limiter (the
// default; a key then takes one 64-byte cache line with an 8-byte key), token_bucket,
// sliding_window_limiter. Keys must be copy-constructible and copy-assignable (a key is stored once,
// in its slot); `Hash` and `Eq` must be stateless (default-constructed where needed), as
// absl::Hash and std::equal_to are. The clock is read once per decision.
//
// Idle keys: a key not seen for `idle_timeout` is removed, a few at a time on every decision
// (from the cold end of its shard's LRU list) and all at once by `sweep()`. Choose idle_timeout at
// least as long as a limiter takes to refill completely (burst * interval): an entry idle that long
// is full, so dropping it changes no decision.
//
// Thread safety: all member functions may be called concurrently; calls on keys in different
//   shards do not contend. The per-shard mutex is held for one map lookup and one limiter decision.
// Time: one read of the injected clock per call (or the caller's `now`); with manual_clock,
//   sweeping and eviction are deterministic.
// Errors: refusals are `rate_limit_result` values; bad options are InvalidArgument from `create()`
//   and `set_override()`. Decisions on existing keys neither allocate nor throw; a new key may
//   allocate while its shard's table grows to its cap (never after).
//
// Example:
//   auto per_client = sluice::keyed_limiter<std::string>::create(
//       {.limits = {.rate = 10, .burst = 20}, .max_keys = 100'000});
//   if (auto r = per_client->try_acquire(client_ip); !r) return reply_429(r);
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/hash/hash.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "sluice/detail/cache_line.hpp"
#include "sluice/detail/mutex.hpp"
#include "sluice/detail/random.hpp"
#include "sluice/gcra_limiter.hpp"
#include "sluice/rate_limit.hpp"

namespace sluice {

template <class Key, class Limiter = gcra_limiter<>, class Hash = absl::Hash<Key>,
          class Eq = std::equal_to<Key>>
class keyed_limiter {
 public:
  using key_type = Key;
  using limiter_type = Limiter;
  using clock_type = typename Limiter::clock_type;
  using time_point = typename clock_type::time_point;
  using limiter_options = typename Limiter::options;

  struct options {
    // The quota every key gets unless overridden. No usable default (a policy decision);
    // validated by `create()`.
    limiter_options limits{};
    // The most keys held at once. 100'000: with the default GCRA limiter about 10 MB, enough for
    // the distinct clients a single service sees in an idle_timeout, small enough that a flood of
    // random keys costs a bounded, known amount of memory.
    std::size_t max_keys = 100'000;
    // Independent shards (rounded up to a power of two). 16: enough that a few cores rarely meet
    // on one mutex, few enough that per-shard LRU stays close to global LRU.
    std::size_t shards = 16;
    // A key unseen this long is removed. One minute: longer than typical per-client refill times
    // (burst / rate), so removed entries were full anyway.
    std::chrono::nanoseconds idle_timeout = std::chrono::minutes(1);
  };

  // Returns a keyed limiter, or InvalidArgument when the limits, max_keys (0), shards (0) or
  // idle_timeout (not positive) are invalid.
  static absl::StatusOr<std::unique_ptr<keyed_limiter>> create(const options& opts,
                                                               clock_type clock = clock_type()) {
    if (auto s = opts.limits.validate(); !s.ok()) return s;
    if (opts.max_keys == 0 || opts.shards == 0) {
      return absl::InvalidArgumentError(std::string("keyed_limiter: max_keys and shards >= 1"));
    }
    if (opts.idle_timeout.count() <= 0) {
      return absl::InvalidArgumentError(std::string("keyed_limiter: idle_timeout must be > 0"));
    }
    return std::make_unique<keyed_limiter>(opts, std::move(clock));
  }

  // Creates an empty keyed limiter. Precondition: options valid (see `create()`). When max_keys
  // is smaller than shards, the shard count is reduced so that every shard holds at least one key.
  explicit keyed_limiter(const options& opts, clock_type clock = clock_type())
      : opts_(opts), clock_(std::move(clock)) {
    std::size_t n = detail::next_pow2(opts.shards == 0 ? 1 : opts.shards);
    const std::size_t max_keys = opts.max_keys == 0 ? 1 : opts.max_keys;
    while (n > 1 && max_keys / n == 0) n /= 2;
    shard_mask_ = n - 1;
    per_shard_cap_ = static_cast<std::uint32_t>(max_keys / n);
    promote_distance_ = per_shard_cap_ / 8;
    shards_ = std::make_unique<shard[]>(n);
  }

  keyed_limiter(const keyed_limiter&) = delete;
  keyed_limiter& operator=(const keyed_limiter&) = delete;

  // Decides `n` units for `key` now; an unseen key starts from a full limiter with its override
  // or the default limits. Takes the key's shard mutex.
  rate_limit_result try_acquire(const Key& key, std::uint64_t n = 1) {
    return try_acquire(key, n, clock_.now());
  }

  // As `try_acquire(key, n)` at the caller's time `now`.
  rate_limit_result try_acquire(const Key& key, std::uint64_t n, time_point now) {
    shard& s = shard_for(hash_(key));
    detail::mutex_lock lock(s.mu);
    const std::uint32_t slot = find_or_insert(s, key, now);
    Limiter& limiter = s.nodes[slot].limiter;
    rate_limit_result r;
    if constexpr (requires { limiter.try_acquire_unshared(n, now); }) {
      r = limiter.try_acquire_unshared(n, now);  // the shard lock serialises this key
    } else {
      r = limiter.try_acquire(n, now);
    }
    expire_some(s, now, slot);
    return r;
  }

  // Sets `key`'s quota (validated: InvalidArgument and no change when bad). Applies at once to
  // the key's live limiter if it has one (keeping its state, see the limiter's set_limits), and
  // to the key whenever it is created later. Overrides are kept until `clear_override` and do not
  // count against max_keys: they are configuration, not traffic.
  absl::Status set_override(const Key& key, const limiter_options& limits) {
    if (auto st = limits.validate(); !st.ok()) return st;
    shard& s = shard_for(hash_(key));
    detail::mutex_lock lock(s.mu);
    s.overrides.insert_or_assign(key, limits);
    if (auto it = s.index.find(key); it != s.index.end()) {
      return s.nodes[it->i].limiter.set_limits(limits);
    }
    return absl::OkStatus();
  }

  // Removes `key`'s override; its live limiter switches back to the default limits. Returns
  // whether there was one.
  bool clear_override(const Key& key) {
    shard& s = shard_for(hash_(key));
    detail::mutex_lock lock(s.mu);
    if (s.overrides.erase(key) == 0) return false;
    if (auto it = s.index.find(key); it != s.index.end()) {
      (void)s.nodes[it->i].limiter.set_limits(opts_.limits);
    }
    return true;
  }

  // Removes every key idle for at least idle_timeout; returns how many. Takes each shard mutex in
  // turn; O(removed + shards).
  std::size_t sweep() { return sweep(clock_.now()); }

  // As `sweep()` at the caller's time `now`.
  std::size_t sweep(time_point now) {
    std::size_t removed = 0;
    for (std::size_t i = 0; i <= shard_mask_; ++i) {
      shard& s = shards_[i];
      detail::mutex_lock lock(s.mu);
      while (s.tail != npos && is_idle(s.nodes[s.tail], now)) {
        remove(s, s.tail);
        ++removed;
      }
    }
    return removed;
  }

  // Returns whether `key` currently has a limiter (does not touch its LRU position).
  bool contains(const Key& key) const {
    const shard& s = shard_for(hash_(key));
    detail::mutex_lock lock(s.mu);
    return s.index.find(key) != s.index.end();
  }

  // Returns the number of keys held. Takes every shard mutex in turn; O(shards).
  std::size_t size() const {
    std::size_t total = 0;
    for (std::size_t i = 0; i <= shard_mask_; ++i) {
      detail::mutex_lock lock(shards_[i].mu);
      total += shards_[i].index.size();
    }
    return total;
  }

  // Returns the hard cap on keys: max_keys rounded down to a multiple of the shard count.
  std::size_t capacity() const noexcept { return per_shard_cap_ * (shard_mask_ + 1); }

  // Returns how many keys were evicted to make room (not counting idle removals).
  std::uint64_t evictions() const {
    std::uint64_t total = 0;
    for (std::size_t i = 0; i <= shard_mask_; ++i) {
      detail::mutex_lock lock(shards_[i].mu);
      total += shards_[i].evictions;
    }
    return total;
  }

  // Returns the clock decisions read.
  const clock_type& clock() const noexcept { return clock_; }

 private:
  static constexpr std::uint32_t npos = ~std::uint32_t{0};
  // How many idle keys a decision removes at most: enough to keep up with arrivals (one new key
  // per decision at most), bounded so no single call pays for a large sweep.
  static constexpr int lazy_sweep_batch = 2;

  struct node_fields {
    node_fields(const Key& k, const limiter_options& o, const clock_type& c)
        : key(k), limiter(o, c) {}
    node_fields(node_fields&&) noexcept = default;
    Key key;
    Limiter limiter;
    std::int64_t last_seen = 0;  // ns of the clock
    std::uint32_t prev = npos;   // towards the most recently seen end (head)
    std::uint32_t next = npos;   // towards the least recently seen end (tail); free list link
    std::uint32_t stamp = 0;     // the shard's tick when last moved to the head
  };
  // One cache line per key when it fits (the default GCRA limiter with an 8-byte key does), so a
  // decision on a cold key costs one miss for its state.
  struct alignas(sizeof(node_fields) <= detail::cache_line_size ? detail::cache_line_size
                                                                : alignof(node_fields)) node
      : node_fields {
    using node_fields::node_fields;
  };

  // The table stores 4-byte slot numbers, not keys: it stays small enough to live in the L2
  // cache with 100k keys, and the key is compared in the node, which is read anyway.
  struct slot_ref {
    std::uint32_t i;
  };
  struct shard;
  struct slot_hash {
    using is_transparent = void;
    const shard* s;
    std::size_t operator()(slot_ref r) const ABSL_NO_THREAD_SAFETY_ANALYSIS {
      return Hash{}(s->nodes[r.i].key);
    }
    std::size_t operator()(const Key& k) const { return Hash{}(k); }
  };
  struct slot_eq {
    using is_transparent = void;
    const shard* s;
    // The table is only used with the shard's mutex held; the analysis cannot see through it.
    bool operator()(slot_ref a, slot_ref b) const { return a.i == b.i; }
    bool operator()(slot_ref a, const Key& k) const ABSL_NO_THREAD_SAFETY_ANALYSIS {
      return Eq{}(s->nodes[a.i].key, k);
    }
    bool operator()(const Key& k, slot_ref a) const ABSL_NO_THREAD_SAFETY_ANALYSIS {
      return Eq{}(s->nodes[a.i].key, k);
    }
  };

  struct alignas(detail::cache_line_size) shard {
    shard() : index(0, slot_hash{this}, slot_eq{this}) {}
    mutable detail::mutex mu;
    absl::flat_hash_set<slot_ref, slot_hash, slot_eq> index ABSL_GUARDED_BY(mu);
    std::vector<node> nodes ABSL_GUARDED_BY(mu);
    absl::flat_hash_map<Key, limiter_options, Hash, Eq> overrides ABSL_GUARDED_BY(mu);
    std::uint32_t head ABSL_GUARDED_BY(mu) = npos;  // most recently seen
    std::uint32_t tail ABSL_GUARDED_BY(mu) = npos;  // least recently seen
    std::uint32_t free ABSL_GUARDED_BY(mu) = npos;  // unused slots, linked through `next`
    std::uint32_t tick ABSL_GUARDED_BY(mu) = 0;     // moves to the head so far (wraps)
    std::uint64_t evictions ABSL_GUARDED_BY(mu) = 0;
  };

  static std::int64_t to_ns(time_point t) noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  }

  shard& shard_for(std::size_t h) const noexcept {
    // Remix: the table uses the low bits of the same hash; the shard uses an independent mix.
    return shards_[static_cast<std::size_t>(detail::mix64(h)) & shard_mask_];
  }

  bool is_idle(const node& nd, time_point now) const noexcept {
    return to_ns(now) - nd.last_seen >= opts_.idle_timeout.count();
  }

  void unlink(shard& s, std::uint32_t i) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    node& nd = s.nodes[i];
    if (nd.prev != npos)
      s.nodes[nd.prev].next = nd.next;
    else
      s.head = nd.next;
    if (nd.next != npos)
      s.nodes[nd.next].prev = nd.prev;
    else
      s.tail = nd.prev;
    nd.prev = nd.next = npos;
  }

  void push_front(shard& s, std::uint32_t i) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    node& nd = s.nodes[i];
    nd.stamp = ++s.tick;
    nd.prev = npos;
    nd.next = s.head;
    if (s.head != npos)
      s.nodes[s.head].prev = i;
    else
      s.tail = i;
    s.head = i;
  }

  void remove(shard& s, std::uint32_t i) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    unlink(s, i);
    node& nd = s.nodes[i];
    s.index.erase(slot_ref{i});
    nd.next = s.free;
    s.free = i;
  }

  std::uint32_t find_or_insert(shard& s, const Key& key, time_point now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    if (auto it = s.index.find(key); it != s.index.end()) {
      const std::uint32_t i = it->i;
      node& nd = s.nodes[i];
      // Lazy promotion: a node promoted fewer than promote_distance_ promotions ago is still
      // within that many places of the head, so moving it again would not change which keys
      // are evicted soon; skipping the move saves touching two neighbours on the hot path.
      if (s.tick - nd.stamp >= promote_distance_ && s.head != i) {
        unlink(s, i);
        push_front(s, i);
      }
      nd.last_seen = to_ns(now);
      return i;
    }
    if (s.index.size() >= per_shard_cap_) {
      remove(s, s.tail);  // the least recently seen key makes room
      ++s.evictions;
    }
    const auto ov = s.overrides.find(key);
    const limiter_options& limits = ov != s.overrides.end() ? ov->second : opts_.limits;
    std::uint32_t i;
    if (s.free != npos) {
      // Reuse a slot: its limiter is made full again with this key's limits.
      i = s.free;
      node& nd = s.nodes[i];
      s.free = nd.next;
      nd.key = key;
      nd.limiter.reset();
      (void)nd.limiter.set_limits(limits);
    } else {
      i = static_cast<std::uint32_t>(s.nodes.size());
      if (s.nodes.size() == s.nodes.capacity()) {
        // Grow geometrically but never past the cap, so slot memory is bounded by it exactly.
        const std::size_t want = s.nodes.size() < 8 ? 16 : s.nodes.size() * 2;
        s.nodes.reserve(want < per_shard_cap_ ? want : per_shard_cap_);
      }
      s.nodes.emplace_back(key, limits, clock_);
    }
    s.nodes[i].last_seen = to_ns(now);
    s.index.insert(slot_ref{i});
    push_front(s, i);
    return i;
  }

  void expire_some(shard& s, time_point now, std::uint32_t keep)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    for (int k = 0; k < lazy_sweep_batch; ++k) {
      if (s.tail == npos || s.tail == keep || !is_idle(s.nodes[s.tail], now)) return;
      remove(s, s.tail);
    }
  }

  const options opts_;
  clock_type clock_;
  Hash hash_{};
  std::size_t shard_mask_ = 0;
  std::uint32_t per_shard_cap_ = 1;
  // A seen key is moved to its shard's head only when it has drifted this many moves from it:
  // cap / 8, so eviction order is exact LRU for caps below 8 per shard and otherwise never evicts
  // a key seen among the last 7/8 of the cap's most recent keys.
  std::uint32_t promote_distance_ = 0;
  std::unique_ptr<shard[]> shards_;
};

}  // namespace sluice
