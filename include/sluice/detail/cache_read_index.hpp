// sluice/detail/cache_read_index.hpp
//
// Internal; not part of the public API. A cache shard's index of its entries: an open-addressing
// table (linear probing) of {hash, entry pointer} slots that writers, holding the shard's lock,
// search and change, and that readers probe without the lock. It is the shard's only hash table:
// absl::flat_hash_map cannot be read during a write, and keeping one beside this index cost every
// write a second table's lookups and cache misses (Zipf at two threads: 2.7x -> 3.0x the mutex
// LRU, bench/RESULTS.md).
//
// Readers: `find()` inside a cache_epoch read section. Erased slots become tombstones (never
// emptied in place, so a probe never stops early); when live entries plus tombstones would pass
// 5/8 of the slots, the writer builds a new table and publishes it (copy-and-publish); the old one
// is returned to be retired through cache_epoch, like erased entries.
//
// Thread safety: find() may run concurrently with everything; the other members need the owner's
// lock (one writer at a time).
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "sluice/detail/cache_line.hpp"
#include "sluice/detail/cache_node.hpp"

namespace sluice::detail {

class cache_read_index {
 public:
  struct slot {
    // The entry's hash; only a filter (the reader compares keys), so it may be read torn from a
    // slot being reused.
    std::atomic<std::uint64_t> hash{0};
    // The entry, nullptr (never used) or tombstone().
    std::atomic<cache_node_base*> node{nullptr};
  };

  struct table {
    explicit table(std::size_t capacity)
        : mask(capacity - 1),
          shift(64 - static_cast<unsigned>(std::countr_zero(capacity))),
          slots(new slot[capacity]) {}
    // The slot an entry's probe starts at: the top bits of its hash times an odd constant
    // (Fibonacci hashing). The hash's own low bits are not used directly: absl::Hash of nearby
    // integers clusters there (linear probes averaged 1.57 slots and reached 32 for the keys
    // 0..99,999, against 1.0-1.2 with the product's top bits; BM_cache_get_hit 35 -> 32 ns), and
    // an identity hash (std::hash of an integer) would be worse.
    std::size_t home(std::uint64_t hash) const noexcept {
      return static_cast<std::size_t>((hash * 0x9E3779B97F4A7C15ULL) >> shift);
    }
    std::size_t mask;
    unsigned shift;
    std::unique_ptr<slot[]> slots;
  };

  // Frees a table retired through cache_epoch.
  static void free_table(void* t) { delete static_cast<table*>(t); }

  cache_read_index() : current_(new table(min_capacity)) {}
  ~cache_read_index() { delete current_.load(std::memory_order_relaxed); }
  cache_read_index(const cache_read_index&) = delete;
  cache_read_index& operator=(const cache_read_index&) = delete;

  // Returns the entry with `hash` for which `match(entry)` holds, or nullptr. Lock-free; call
  // inside a read section. Expected O(1): the table is at most 5/8 full.
  template <class Match>
  cache_node_base* find(std::uint64_t hash, Match&& match) const {
    // Acquire (both loads): the table's and the entry's contents were written before they were
    // published with release stores.
    const table* t = current_.load(std::memory_order_acquire);
    const slot* const slots = t->slots.get();
    const std::size_t mask = t->mask;
    std::size_t i = t->home(hash);
    for (std::size_t probes = 0; probes <= mask; ++probes, i = (i + 1) & mask) {
      cache_node_base* n = slots[i].node.load(std::memory_order_acquire);
      if (n == nullptr) return nullptr;
      // Relaxed: a filter only; a stale hash at worst skips an entry being replaced concurrently.
      if (n != tombstone() && slots[i].hash.load(std::memory_order_relaxed) == hash && match(n)) {
        return n;
      }
    }
    return nullptr;
  }

  // Adds `n` (whose key is not in the index). Returns a replaced table to retire, or nullptr.
  [[nodiscard]] table* insert(std::uint64_t hash, cache_node_base* n) {
    table* old = nullptr;
    table* t = current_.load(std::memory_order_relaxed);
    // Rebuild past 5/8 full (tombstones included): linear probes stay short, mostly in one line.
    if ((used_ + 1) * 8 > (t->mask + 1) * 5) {
      old = rebuild(capacity_for(live_ + 1));
      t = current_.load(std::memory_order_relaxed);
    }
    place(*t, hash, n);
    ++live_;
    return old;
  }

  // Puts `nw` in the slot of `old` (same key and hash), atomically for readers.
  void replace(std::uint64_t hash, cache_node_base* old, cache_node_base* nw) {
    // Release: publishes `nw`'s contents to readers that load it.
    find_slot(hash, old).node.store(nw, std::memory_order_release);
  }

  // Removes `n` (in the index), leaving a tombstone.
  void erase(std::uint64_t hash, cache_node_base* n) {
    // Release is not needed for a tombstone (readers never dereference it); relaxed would do,
    // but keep the slot's stores uniform.
    find_slot(hash, n).node.store(tombstone(), std::memory_order_release);
    --live_;
  }

  // Removes everything (the entries are the caller's to retire). Returns the table to retire.
  [[nodiscard]] table* clear() {
    live_ = 0;
    return rebuild(min_capacity);
  }

  // Rebuilds a table left mostly empty or full of tombstones at a fitting size. Returns the old
  // table to retire, or nullptr when nothing changed.
  [[nodiscard]] table* shrink_to_fit() {
    const std::size_t cap = current_.load(std::memory_order_relaxed)->mask + 1;
    const std::size_t want = capacity_for(live_);
    // Four times too big, or a quarter of the slots tombstones (probes grow long).
    if (want * 4 <= cap || (used_ - live_) * 4 > cap) return rebuild(want);
    return nullptr;
  }

  // Calls `f(entry)` for every entry (owner's lock). `f` may erase entries, not insert them.
  template <class F>
  void for_each(F&& f) const {
    const table* t = current_.load(std::memory_order_relaxed);
    for (std::size_t i = 0; i <= t->mask; ++i) {
      cache_node_base* n = t->slots[i].node.load(std::memory_order_relaxed);
      if (n != nullptr && n != tombstone()) f(n);
    }
  }

  // Returns the number of slots (for tests: memory returns to its baseline).
  std::size_t capacity() const noexcept {
    return current_.load(std::memory_order_relaxed)->mask + 1;
  }

  // Returns the number of live entries.
  std::size_t size() const noexcept { return live_; }

 private:
  // 16 slots (256 bytes): small enough for hundreds of shards, large enough to skip the first
  // few rebuilds.
  static constexpr std::size_t min_capacity = 16;

  static cache_node_base* tombstone() noexcept {
    static cache_node_base dead;
    return &dead;
  }

  // Room for `live` entries at a quarter to half load, so the table absorbs at least as many
  // inserts again before the next rebuild.
  static std::size_t capacity_for(std::size_t live) noexcept {
    const std::size_t want = next_pow2(live * 2);
    return want < min_capacity ? min_capacity : want;
  }

  void place(table& t, std::uint64_t hash, cache_node_base* n) {
    std::size_t i = t.home(hash);
    for (;; i = (i + 1) & t.mask) {
      cache_node_base* cur = t.slots[i].node.load(std::memory_order_relaxed);
      if (cur == nullptr || cur == tombstone()) {
        if (cur == nullptr) ++used_;
        // Relaxed then release: a reader that loads `n` sees its hash too.
        t.slots[i].hash.store(hash, std::memory_order_relaxed);
        t.slots[i].node.store(n, std::memory_order_release);
        return;
      }
    }
  }

  slot& find_slot(std::uint64_t hash, const cache_node_base* n) {
    table* t = current_.load(std::memory_order_relaxed);
    std::size_t i = t->home(hash);
    while (t->slots[i].node.load(std::memory_order_relaxed) != n) i = (i + 1) & t->mask;
    return t->slots[i];
  }

  table* rebuild(std::size_t capacity) {
    table* old = current_.load(std::memory_order_relaxed);
    auto fresh = std::make_unique<table>(capacity);
    used_ = 0;
    for (std::size_t i = 0; i <= old->mask; ++i) {
      cache_node_base* n = old->slots[i].node.load(std::memory_order_relaxed);
      if (live_ != 0 && n != nullptr && n != tombstone()) {
        place(*fresh, old->slots[i].hash.load(std::memory_order_relaxed), n);
      }
    }
    // Release: readers that load the new table see its slots.
    current_.store(fresh.release(), std::memory_order_release);
    return old;
  }

  // Read by every lookup; written only when a table is rebuilt: alone on its line, away from the
  // writer's counters.
  alignas(cache_line_size) std::atomic<table*> current_;
  // Live entries, and live entries plus tombstones, in the current table (owner's lock).
  alignas(cache_line_size) std::size_t live_ = 0;
  std::size_t used_ = 0;
};

}  // namespace sluice::detail
