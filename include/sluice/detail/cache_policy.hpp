// sluice/detail/cache_policy.hpp
//
// Internal; not part of the public API. The eviction policies of one cache shard: plain LRU, and
// W-TinyLFU (Einziger, Friedman & Manes, "TinyLFU: A Highly Efficient Cache Admission Policy",
// 2017). It exists apart from the cache so the replay tool and the tests can drive the policy
// decisions exactly as the cache does.
//
// W-TinyLFU in short: new entries enter a small LRU "window" (1% of the capacity at first). When the
// window overflows, its oldest entry becomes a candidate for the main space, a segmented LRU
// (probation 20%, protected 80%). If the main space is full, the candidate competes with the
// main space's oldest probation entry: the one the frequency sketch has seen more often stays.
// A probation entry that is hit again moves to protected. A hill climber resizes the window every
// sample (5x the capacity in requests): if the hit ratio improved since the last sample it keeps
// moving the window size in the same direction, else it reverses, with a decaying step, so
// recency-heavy workloads get a large window (LRU-like) and frequency-heavy ones a small one.
//
// Weights: every quantity (window, protected, total) is counted in entry weights, so a weighted
// cache bounds bytes the same way an unweighted one bounds entries.
//
// Thread safety: none; the owner (one cache shard) calls it under its lock.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "sluice/detail/cache_node.hpp"
#include "sluice/detail/cache_sketch.hpp"
#include "sluice/detail/random.hpp"

namespace sluice::detail {

class cache_policy {
 public:
  cache_policy() = default;
  cache_policy(const cache_policy&) = delete;
  cache_policy& operator=(const cache_policy&) = delete;

  // Configures an empty policy: LRU or W-TinyLFU, the capacity in weight units, the expected number
  // of entries (sizes the sketch), and whether the window adapts.
  void init(bool tinylfu, std::uint64_t max_weight, std::uint64_t expected_entries,
            bool adaptive = true) {
    tinylfu_ = tinylfu;
    adaptive_ = adaptive && tinylfu;
    max_ = max_weight;
    if (tinylfu_) {
      // 1%: the window size that suits frequency-skewed workloads, the common case; the climber
      // grows it when recency pays more.
      window_max_ = std::max<std::uint64_t>(1, max_ / 100);
      protected_max_ = (max_ - std::min(max_, window_max_)) * 8 / 10;
      sketch_.resize(static_cast<std::size_t>(std::max<std::uint64_t>(expected_entries, 1)));
      // 5x the capacity in requests: half of Caffeine's sample. On the ARC and LIRS traces it
      // adapts fast enough for large caches on short traces (OLTP at 10k entries) while staying
      // as accurate at 1k entries (bench/RESULTS.md).
      sample_size_ = std::max<std::uint64_t>(5 * std::max<std::uint64_t>(expected_entries, 1), 64);
      // Shrink first: the 1% window is already recency-light; the first sample tells which way
      // pays.
      step_ = -step_percent * static_cast<double>(max_);
    } else {
      window_max_ = max_;
    }
  }

  // Returns the capacity in weight units.
  std::uint64_t max_weight() const noexcept { return max_; }
  // Returns the total weight of the entries the policy holds.
  std::uint64_t weight() const noexcept { return total_; }
  // Returns the current window capacity (for tests and the replay tool).
  std::uint64_t window_max() const noexcept { return window_max_; }
  // Returns the sketch (for tests).
  const cache_sketch& sketch() const noexcept { return sketch_; }

  // Returns the address of the sketch block of `hash` (for prefetching before a batch of hits).
  const void* sketch_address(std::uint64_t hash) const noexcept {
    return tinylfu_ ? sketch_.block_address(hash) : nullptr;
  }

  // Records a lookup that found nothing (the climber's hit ratio needs the misses too).
  void record_miss() noexcept { ++misses_in_sample_; }
  // Records `count` lookups that found nothing.
  void record_misses(std::uint64_t count) noexcept { misses_in_sample_ += count; }

  // Puts `nw` (a new node for the same key, not linked) in the place of `old` with weight
  // `new_weight`, leaving `old` unlinked. Call evict() afterwards.
  void on_replace(cache_node_base* old, cache_node_base* nw, std::uint32_t new_weight) noexcept {
    nw->queue = old->queue;
    nw->weight = old->weight;
    list::replace(old, nw);
    old->queue = cache_queue::none;
    if (nw->queue != cache_queue::none) on_reweigh(nw, new_weight);
    nw->weight = new_weight;
  }

  // Records that the key with `hash` was requested but not admitted (counts its frequency).
  void record_frequency(std::uint64_t hash) noexcept {
    if (tinylfu_) sketch_.increment(hash);
  }

  // Adds a new entry (weight set, not linked). Call evict() afterwards.
  void on_insert(cache_node_base* n) noexcept {
    if (tinylfu_) sketch_.increment(n->hash);
    n->queue = cache_queue::window;
    window_.push_back(n);
    window_w_ += n->weight;
    total_ += n->weight;
  }

  // Records a hit on `n`: counts its frequency and refreshes its position.
  void on_access(cache_node_base* n) noexcept {
    ++hits_in_sample_;
    if (!tinylfu_) {
      window_.move_to_back(n);
      return;
    }
    sketch_.increment(n->hash);
    switch (n->queue) {
      case cache_queue::window:
        window_.move_to_back(n);
        break;
      case cache_queue::probation:
        list::unlink(n);
        n->queue = cache_queue::protected_;
        protected_.push_back(n);
        protected_w_ += n->weight;
        demote_protected();
        break;
      case cache_queue::protected_:
        protected_.move_to_back(n);
        break;
      case cache_queue::none:
        break;
    }
  }

  // Removes `n` (erase, expiry, or a victim chosen by evict()).
  void on_remove(cache_node_base* n) noexcept {
    if (n->queue == cache_queue::none) return;
    list::unlink(n);
    if (n->queue == cache_queue::window) window_w_ -= n->weight;
    if (n->queue == cache_queue::protected_) protected_w_ -= n->weight;
    total_ -= n->weight;
    n->queue = cache_queue::none;
  }

  // Changes the weight of `n` (a value replaced by one of another size). Call evict() afterwards.
  void on_reweigh(cache_node_base* n, std::uint32_t new_weight) noexcept {
    if (n->queue == cache_queue::window) window_w_ = window_w_ - n->weight + new_weight;
    if (n->queue == cache_queue::protected_) protected_w_ = protected_w_ - n->weight + new_weight;
    total_ = total_ - n->weight + new_weight;
    n->weight = new_weight;
  }

  // Evicts until the total weight fits the capacity, calling `victim(node)` for each evicted
  // node after unlinking it. Also runs the climber. Amortised O(1) per inserted entry.
  template <class F>
  void evict(F&& victim) {
    if (!tinylfu_) {
      while (total_ > max_) {
        cache_node_base* n = node_of(window_.front());
        on_remove(n);
        victim(n);
      }
      return;
    }
    climb();
    cache_node_base* first_candidate = nullptr;
    while (window_w_ > window_max_ && !window_.empty()) {
      cache_node_base* n = node_of(window_.front());
      list::unlink(n);
      window_w_ -= n->weight;
      n->queue = cache_queue::probation;
      probation_.push_back(n);
      if (first_candidate == nullptr) first_candidate = n;
    }
    while (total_ > max_) {
      cache_node_base* v = front_of(probation_);
      if (v == nullptr) {
        v = front_of(protected_);
        if (v == nullptr) v = front_of(window_);
        on_remove(v);
        victim(v);
        continue;
      }
      cache_node_base* c = first_candidate;
      if (c == v) c = next_in_probation(v);
      if (c == nullptr) {
        if (v == first_candidate) first_candidate = nullptr;
        on_remove(v);
        victim(v);
        continue;
      }
      if (admit(c, v)) {
        if (v == first_candidate) first_candidate = c;
        on_remove(v);
        victim(v);
      } else {
        if (c == first_candidate) first_candidate = next_in_probation(c);
        on_remove(c);
        victim(c);
      }
    }
  }

 private:
  using list = cache_list<cache_policy_link>;

  // The climber's constants (Caffeine's, which its authors tuned over many traces).
  static constexpr double restart_threshold = 0.05;
  static constexpr double step_percent = 0.0625;
  static constexpr double step_decay = 0.98;
  // At most this many entries move between window and main per adjustment, bounding the work
  // done under the shard lock.
  static constexpr int transfer_limit = 1000;

  static cache_node_base* front_of(list& l) noexcept {
    cache_policy_link* f = l.front();
    return f == nullptr ? nullptr : node_of(f);
  }
  cache_node_base* next_in_probation(cache_node_base* n) noexcept {
    cache_policy_link* f = probation_.next_of(n);
    return f == nullptr ? nullptr : node_of(f);
  }

  // Decides whether candidate `c` should replace victim `v` in the main space.
  bool admit(cache_node_base* c, cache_node_base* v) noexcept {
    const unsigned cf = sketch_.frequency(c->hash);
    const unsigned vf = sketch_.frequency(v->hash);
    if (cf > vf) return true;
    // A warm candidate sometimes wins a tie or a loss: without this, an attacker who makes one
    // victim look hot (hash flooding) could keep every newcomer out. Rare enough not to matter
    // otherwise (1 in 128).
    if (cf <= 5) return false;
    return (rng_() & 127) == 0;
  }

  void demote_protected() noexcept {
    while (protected_w_ > protected_max_ && !protected_.empty()) {
      cache_node_base* n = node_of(protected_.front());
      list::unlink(n);
      protected_w_ -= n->weight;
      n->queue = cache_queue::probation;
      probation_.push_back(n);
    }
  }

  // Adapts the window size once per sample (hill climbing on the hit ratio). Samples start once
  // the cache is half full: the hit ratio of a filling cache says nothing about its window.
  void climb() noexcept {
    if (!adaptive_) return;
    if (total_ < max_ / 2 && !warmed_) {
      hits_in_sample_ = misses_in_sample_ = 0;
      return;
    }
    warmed_ = true;
    const std::uint64_t requests = hits_in_sample_ + misses_in_sample_;
    if (requests >= sample_size_) {
      const double hit_rate = static_cast<double>(hits_in_sample_) / static_cast<double>(requests);
      const double change = hit_rate - previous_hit_rate_;
      const double amount = change >= 0 ? step_ : -step_;
      const double next_step =
          std::fabs(change) >= restart_threshold
              ? step_percent * static_cast<double>(max_) * (amount >= 0 ? 1 : -1)
              : step_decay * amount;
      previous_hit_rate_ = hit_rate;
      adjustment_ = static_cast<std::int64_t>(amount);
      step_ = next_step;
      hits_in_sample_ = misses_in_sample_ = 0;
    }
    if (adjustment_ > 0) {
      grow_window();
    } else if (adjustment_ < 0) {
      shrink_window();
    }
  }

  // Moves up to `adjustment_` weight from the main space to the window; what cannot move yet
  // stays in `adjustment_` for the next call.
  void grow_window() noexcept {
    if (protected_max_ == 0) return;
    std::uint64_t quota = std::min(static_cast<std::uint64_t>(adjustment_), protected_max_);
    protected_max_ -= quota;
    window_max_ += quota;
    demote_protected();
    for (int i = 0; i < transfer_limit; ++i) {
      cache_node_base* n = front_of(probation_);
      if (n == nullptr || quota < n->weight) n = front_of(protected_);
      if (n == nullptr || quota < n->weight) break;
      quota -= n->weight;
      if (n->queue == cache_queue::protected_) protected_w_ -= n->weight;
      list::unlink(n);
      n->queue = cache_queue::window;
      window_.push_back(n);
      window_w_ += n->weight;
    }
    protected_max_ += quota;
    window_max_ -= quota;
    adjustment_ = static_cast<std::int64_t>(quota);
  }

  // Moves up to -`adjustment_` weight from the window to probation (the window keeps >= 1).
  void shrink_window() noexcept {
    if (window_max_ <= 1) return;
    std::uint64_t quota = std::min(static_cast<std::uint64_t>(-adjustment_), window_max_ - 1);
    window_max_ -= quota;
    protected_max_ += quota;
    for (int i = 0; i < transfer_limit; ++i) {
      cache_policy_link* f = window_.front();
      if (f == nullptr) break;
      cache_node_base* n = node_of(f);
      if (quota < n->weight) break;
      quota -= n->weight;
      list::unlink(n);
      window_w_ -= n->weight;
      n->queue = cache_queue::probation;
      probation_.push_back(n);
    }
    protected_max_ -= quota;
    window_max_ += quota;
    adjustment_ = -static_cast<std::int64_t>(quota);
  }

  bool tinylfu_ = true;
  bool adaptive_ = true;
  std::uint64_t max_ = 0;
  std::uint64_t total_ = 0;
  std::uint64_t window_max_ = 0;
  std::uint64_t window_w_ = 0;
  std::uint64_t protected_max_ = 0;
  std::uint64_t protected_w_ = 0;
  list window_;
  list probation_;
  list protected_;
  cache_sketch sketch_;
  // Deterministic, so a replay gives the same hit ratio every run.
  fast_rng rng_{0x2545F4914F6CDD1DULL};
  std::uint64_t sample_size_ = 0;
  std::uint64_t hits_in_sample_ = 0;
  std::uint64_t misses_in_sample_ = 0;
  double previous_hit_rate_ = 0;
  double step_ = 0;
  std::int64_t adjustment_ = 0;
  bool warmed_ = false;
};

}  // namespace sluice::detail
