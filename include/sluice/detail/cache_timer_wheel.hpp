// sluice/detail/cache_timer_wheel.hpp
//
// Internal; not part of the public API. A hierarchical timer wheel (Varghese & Lauck, 1987) that
// finds a cache shard's expired entries in amortised O(1) per entry, without a timer per entry and
// without scanning the live ones. It exists so the sweeper can remove expired entries promptly
// while holding a shard's lock only for a bounded amount of work.
//
// Five levels of buckets; an entry sits in the level whose span covers its remaining lifetime:
//   level 0: 64 buckets of 2^26 ns (~67 ms)  -> lifetimes up to ~4.3 s
//   level 1: 64 buckets of 2^32 ns (~4.3 s)  -> up to ~4.6 min
//   level 2: 64 buckets of 2^38 ns (~4.6 min)-> up to ~4.9 h
//   level 3: 64 buckets of 2^44 ns (~4.9 h)  -> up to ~13 days
//   level 4: one overflow bucket             -> beyond
// As time advances, the buckets it passes are emptied: due entries are expired, the others move
// down to a finer level (each entry cascades at most four times in its life).
//
// Thread safety: none; the owner (one cache shard) calls it under its lock.
#pragma once

#include <array>
#include <cstdint>

#include "sluice/detail/cache_node.hpp"

namespace sluice::detail {

class cache_timer_wheel {
 public:
  static constexpr std::size_t levels = 5;

  // Starts the wheel at time `now` (nanoseconds since the clock's epoch).
  explicit cache_timer_wheel(std::int64_t now) noexcept : cursor_(now) {
    // Level 0's current bucket is revisited on every advance (entries due within the current tick
    // land there); a coarser level's bucket is visited once, when time enters its tick.
    next_tick_[0] = now >> shift[0];
    for (std::size_t i = 1; i < levels; ++i) next_tick_[i] = (now >> shift[i]) + 1;
  }
  cache_timer_wheel(const cache_timer_wheel&) = delete;
  cache_timer_wheel& operator=(const cache_timer_wheel&) = delete;

  // Returns how many entries are scheduled.
  std::uint64_t size() const noexcept { return size_; }

  // Returns the wheel's notion of now (the time of the last advance).
  std::int64_t cursor() const noexcept { return cursor_; }

  // Returns whether advancing to `now` would visit a bucket not visited yet (cheap check for
  // opportunistic sweeping on writes).
  bool due(std::int64_t now) const noexcept { return (now >> shift[0]) != (cursor_ >> shift[0]); }

  // Schedules `n` (not scheduled) for removal at n->remove_at.
  void schedule(cache_node_base* n) noexcept {
    bucket_for(n->remove_at).push_back(n);
    ++size_;
  }

  // Unschedules `n` if it is scheduled.
  void unschedule(cache_node_base* n) noexcept {
    if (!list::linked(n)) return;
    list::unlink(n);
    --size_;
  }

  // Moves `n` (scheduled or not) to the bucket of its current remove_at.
  void reschedule(cache_node_base* n) noexcept {
    unschedule(n);
    schedule(n);
  }

  // Advances to `now`, calling `expire(node)` (after unscheduling it) for every entry with
  // remove_at <= now, at most `budget` of them (decremented by the entries expired). Returns true
  // when it caught up with `now`, false when the budget ran out (call again; the work done so far
  // is kept). Entries not due that it passes move to a finer level or a later bucket: each
  // entry is passed over at most a few times in its life (amortised O(1)).
  template <class F>
  bool advance(std::int64_t now, std::uint64_t& budget, F&& expire) {
    if (now < cursor_) now = cursor_;
    cursor_ = now;
    // Coarse levels first, so entries they hand down are seen by the finer levels at once.
    for (std::size_t l = levels; l-- > 0;) {
      const std::int64_t target = now >> shift[l];
      std::int64_t& tick = next_tick_[l];
      const std::int64_t width = bucket_count(l);
      // Every bucket is visited at most once per pass, even after a long pause.
      if (target - tick >= width) tick = target - width + 1;
      while (tick <= target) {
        if (!drain_bucket(bucket(l, tick), now, budget, expire)) return false;
        if (l == 0 && tick == target) break;
        ++tick;
      }
    }
    return true;
  }

  // Calls `f(node)` for every scheduled entry and leaves the wheel empty (the owner frees them).
  template <class F>
  void clear(F&& f) {
    for (auto& level : buckets_) {
      for (auto& b : level) {
        while (!b.empty()) {
          cache_timer_link* l = b.front();
          list::unlink(l);
          f(node_of(l));
        }
      }
    }
    size_ = 0;
  }

 private:
  using list = cache_list<cache_timer_link>;
  static constexpr std::array<int, levels> shift = {26, 32, 38, 44, 50};

  static constexpr std::int64_t bucket_count(std::size_t level) noexcept {
    return level == levels - 1 ? 1 : 64;
  }
  list& bucket(std::size_t level, std::int64_t tick) noexcept {
    return buckets_[level][static_cast<std::size_t>(tick & (bucket_count(level) - 1))];
  }

  list& bucket_for(std::int64_t when) noexcept {
    // An entry already due goes to the bucket of the cursor, which the next advance visits.
    if (when < cursor_) when = cursor_;
    const std::int64_t delta = when - cursor_;
    for (std::size_t level = 0; level < levels - 1; ++level) {
      if (delta < (std::int64_t{1} << shift[level + 1])) return bucket(level, when >> shift[level]);
    }
    return bucket(levels - 1, 0);
  }

  template <class F>
  bool drain_bucket(list& b, std::int64_t now, std::uint64_t& budget, F& expire) {
    if (b.empty()) return true;
    list pending;
    pending.splice_back(b);
    list later;
    bool finished = true;
    while (!pending.empty()) {
      cache_timer_link* l = pending.front();
      cache_node_base* n = node_of(l);
      if (n->remove_at <= now) {
        if (budget == 0) {
          finished = false;
          break;
        }
        --budget;
        list::unlink(l);
        --size_;
        expire(n);
      } else {
        list::unlink(l);
        later.push_back(l);
      }
    }
    // Unvisited entries go first so the next call makes progress on them.
    b.splice_front(pending);
    while (!later.empty()) {
      cache_timer_link* l = later.front();
      list::unlink(l);
      bucket_for(node_of(l)->remove_at).push_back(l);
    }
    return finished;
  }

  std::int64_t cursor_;
  std::array<std::int64_t, levels> next_tick_{};
  std::uint64_t size_ = 0;
  std::array<std::array<list, 64>, levels> buckets_;
};

}  // namespace sluice::detail
