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
// Inline keys and values (`Inline` = true, for a cache whose key and value are trivially copyable,
// unpadded and at most 8 bytes each, e.g. integers; see cache::inline_copies): each slot also
// holds a copy of its entry's key and value, so a hit reads one slot and never the entry (one
// cache miss instead of two: with 100k resident entries BM_cache_get_hit went 33 -> 27 ns, see
// bench/RESULTS.md). The copies are valid only
// while the slot's word carries `fast_bit` (the writer sets it for an entry with a value and no
// expiry) and are read as a seqlock whose sequence is that word: a reader loads the word, the
// copies, then the word again, and uses the copies only if it did not change. An entry pointer
// cannot come back to a slot while a reader is in its epoch read section (the entry cannot be
// freed and reused before), so an unchanged word means unchanged copies. A writer clears the bit
// (or puts a tombstone) and issues a release fence before it writes a slot's copies. When the
// copies cannot be used, the reader follows the pointer as in the plain index.
//
// Thread safety: find() and find_fast() may run concurrently with everything; the other members
// need the owner's lock (one writer at a time).
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>

#include "sluice/detail/cache_line.hpp"
#include "sluice/detail/cache_node.hpp"

namespace sluice::detail {

// The inline copies a writer gives with an entry (cache_read_index<true>): `fast` when the reader
// may answer from them (a value and no expiry).
struct cache_inline_copies {
  bool fast = false;
  std::uint64_t key = 0;
  std::uint64_t value = 0;
};

template <bool Inline>
class cache_read_index {
 public:
  struct plain_slot {
    // The entry's hash; only a filter (the reader compares keys), so it may be read torn from a
    // slot being reused.
    std::atomic<std::uint64_t> hash{0};
    // The entry's address (| fast_bit), 0 (never used) or the tombstone's address.
    std::atomic<std::uintptr_t> word{0};
  };
  struct inline_slot : plain_slot {
    // Copies of the entry's key and value, valid while `word` has fast_bit (see the top).
    std::atomic<std::uint64_t> key{0};
    std::atomic<std::uint64_t> value{0};
  };
  using slot = std::conditional_t<Inline, inline_slot, plain_slot>;

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

  // What find_fast() found: the entry (nullptr: none), and, when `fast`, its value's copy.
  struct fast_result {
    cache_node_base* node = nullptr;
    bool fast = false;
    std::uint64_t value = 0;
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
      const std::uintptr_t w = slots[i].word.load(std::memory_order_acquire);
      if (w == 0) return nullptr;
      // Relaxed: a filter only; a stale hash at worst skips an entry being replaced concurrently.
      if (w != tombstone_word() && slots[i].hash.load(std::memory_order_relaxed) == hash &&
          match(entry(w))) {
        return entry(w);
      }
    }
    return nullptr;
  }

  // find() answered from the slots' copies where they are valid: `key_match(key_copy)` tells a
  // slot's copy of the key from others; `match(entry)` is used for a slot without valid copies.
  // Lock-free; call inside a read section.
  template <class KeyMatch, class Match>
  requires Inline fast_result find_fast(std::uint64_t hash, KeyMatch&& key_match, Match&& match)
  const {
    const table* t = current_.load(std::memory_order_acquire);
    const slot* const slots = t->slots.get();
    const std::size_t mask = t->mask;
    std::size_t i = t->home(hash);
    for (std::size_t probes = 0; probes <= mask; ++probes, i = (i + 1) & mask) {
      const slot& sl = slots[i];
      // Acquire: pairs with the writer's release store of the word, after its copies.
      const std::uintptr_t w = sl.word.load(std::memory_order_acquire);
      if (w == 0) return {};
      if (w == tombstone_word() || sl.hash.load(std::memory_order_relaxed) != hash) continue;
      if ((w & fast_bit) != 0) {
        // Relaxed loads, then an acquire fence and the word again (seqlock read): copies written
        // after the word changed make the second load see the change (the writer's release
        // fence precedes them).
        const std::uint64_t k = sl.key.load(std::memory_order_relaxed);
        const std::uint64_t v = sl.value.load(std::memory_order_relaxed);
        std::atomic_thread_fence(std::memory_order_acquire);
        if (sl.word.load(std::memory_order_relaxed) == w) {
          if (key_match(k)) return {entry(w), true, v};
          continue;
        }
        // Changed under us: the entry `w` names is still readable (read section), and its
        // key and value never change; answer from it.
      }
      if (match(entry(w))) return {entry(w), false, 0};
    }
    return {};
  }

  // Adds `n` (whose key is not in the index) with its inline copies. Returns a replaced table to
  // retire, or nullptr.
  [[nodiscard]] table* insert(std::uint64_t hash, cache_node_base* n,
                              const cache_inline_copies& copies = {}) {
    table* old = nullptr;
    table* t = current_.load(std::memory_order_relaxed);
    // Rebuild past 5/8 full (tombstones included): linear probes stay short, mostly in one line.
    if ((used_ + 1) * 8 > (t->mask + 1) * 5) {
      old = rebuild(capacity_for(live_ + 1));
      t = current_.load(std::memory_order_relaxed);
    }
    place(*t, hash, n, copies);
    ++live_;
    return old;
  }

  // Puts `nw` (with its inline copies) in the slot of `old` (same key and hash), atomically for
  // readers: they find either entry.
  void replace(std::uint64_t hash, cache_node_base* old, cache_node_base* nw,
               const cache_inline_copies& copies = {}) {
    slot& sl = find_slot(hash, old);
    if constexpr (Inline) {
      const std::uintptr_t cur = sl.word.load(std::memory_order_relaxed);
      // The old copies stop being valid before new ones are written (readers fall back to the
      // old entry meanwhile). Release, like every store of an entry's pointer: a reader that
      // loads this word dereferences `old`, and a relaxed store would end the release sequence
      // that published it.
      if ((cur & fast_bit) != 0) sl.word.store(cur & ~fast_bit, std::memory_order_release);
      if (copies.fast) write_copies(sl, copies);
    }
    // Release: publishes `nw`'s contents (and the copies) to readers that load it.
    sl.word.store(word_of(nw, copies), std::memory_order_release);
  }

  // Removes `n` (in the index), leaving a tombstone.
  void erase(std::uint64_t hash, cache_node_base* n) {
    // Release is not needed for a tombstone (readers never dereference it); relaxed would do,
    // but keep the slot's stores uniform.
    find_slot(hash, n).word.store(tombstone_word(), std::memory_order_release);
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
      const std::uintptr_t w = t->slots[i].word.load(std::memory_order_relaxed);
      if (w != 0 && w != tombstone_word()) f(entry(w));
    }
  }

  // Returns the number of slots (for tests: memory returns to its baseline).
  std::size_t capacity() const noexcept {
    return current_.load(std::memory_order_relaxed)->mask + 1;
  }

  // Returns the number of live entries.
  std::size_t size() const noexcept { return live_; }

 private:
  // 16 slots (256 or 512 bytes): small enough for hundreds of shards, large enough to skip the
  // first few rebuilds.
  static constexpr std::size_t min_capacity = 16;
  // In a slot's word: its inline copies are valid (entries are at least 8-byte aligned).
  static constexpr std::uintptr_t fast_bit = 1;

  static std::uintptr_t tombstone_word() noexcept {
    static cache_node_base dead;
    return reinterpret_cast<std::uintptr_t>(&dead);
  }
  static cache_node_base* entry(std::uintptr_t w) noexcept {
    return reinterpret_cast<cache_node_base*>(w & ~fast_bit);
  }
  static std::uintptr_t word_of(cache_node_base* n, const cache_inline_copies& copies) noexcept {
    const auto w = reinterpret_cast<std::uintptr_t>(n);
    return Inline && copies.fast ? w | fast_bit : w;
  }

  // Writes a slot's copies; the slot's word must not carry fast_bit.
  static void write_copies(slot& sl, const cache_inline_copies& copies) noexcept {
    if constexpr (Inline) {
      // Release fence: a reader whose loads of the copies see these stores sees the word that
      // invalidated the old copies in its second load of the word (seqlock write).
      std::atomic_thread_fence(std::memory_order_release);
      sl.key.store(copies.key, std::memory_order_relaxed);
      sl.value.store(copies.value, std::memory_order_relaxed);
    }
  }

  // Returns the copies held in `sl` (owner's lock), to move them to another table.
  static cache_inline_copies copies_of(const slot& sl, std::uintptr_t w) noexcept {
    cache_inline_copies c;
    if constexpr (Inline) {
      c.fast = (w & fast_bit) != 0;
      c.key = sl.key.load(std::memory_order_relaxed);
      c.value = sl.value.load(std::memory_order_relaxed);
    }
    return c;
  }

  // Room for `live` entries at a quarter to half load, so the table absorbs at least as many
  // inserts again before the next rebuild.
  static std::size_t capacity_for(std::size_t live) noexcept {
    const std::size_t want = next_pow2(live * 2);
    return want < min_capacity ? min_capacity : want;
  }

  void place(table& t, std::uint64_t hash, cache_node_base* n, const cache_inline_copies& copies) {
    std::size_t i = t.home(hash);
    for (;; i = (i + 1) & t.mask) {
      slot& sl = t.slots[i];
      const std::uintptr_t cur = sl.word.load(std::memory_order_relaxed);
      if (cur == 0 || cur == tombstone_word()) {
        if (cur == 0) ++used_;
        // Relaxed then release: a reader that loads the word sees the hash and copies too.
        sl.hash.store(hash, std::memory_order_relaxed);
        if (copies.fast) write_copies(sl, copies);
        sl.word.store(word_of(n, copies), std::memory_order_release);
        return;
      }
    }
  }

  slot& find_slot(std::uint64_t hash, const cache_node_base* n) {
    table* t = current_.load(std::memory_order_relaxed);
    std::size_t i = t->home(hash);
    while (entry(t->slots[i].word.load(std::memory_order_relaxed)) != n) i = (i + 1) & t->mask;
    return t->slots[i];
  }

  table* rebuild(std::size_t capacity) {
    table* old = current_.load(std::memory_order_relaxed);
    auto fresh = std::make_unique<table>(capacity);
    used_ = 0;
    for (std::size_t i = 0; i <= old->mask; ++i) {
      const slot& sl = old->slots[i];
      const std::uintptr_t w = sl.word.load(std::memory_order_relaxed);
      if (live_ != 0 && w != 0 && w != tombstone_word()) {
        place(*fresh, sl.hash.load(std::memory_order_relaxed), entry(w), copies_of(sl, w));
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
