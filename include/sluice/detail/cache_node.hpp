// sluice/detail/cache_node.hpp
//
// Internal; not part of the public API. The part of a cache entry that the eviction policy and the
// expiry wheel see, and the intrusive lists that thread entries together. Intrusive links let a
// shard move an entry between queues and timer buckets without allocating.
//
// Thread safety: none; everything here is used under the owning shard's lock.
#pragma once

#include <cstdint>
#include <limits>

namespace sluice::detail {

// "Never": the deadline of an entry without expiry. Times are nanoseconds since the clock's epoch.
inline constexpr std::int64_t cache_never = std::numeric_limits<std::int64_t>::max();

// Links of the policy queue an entry is in (window, probation, protected, or the LRU list).
struct cache_policy_link {
  cache_policy_link* prev = nullptr;
  cache_policy_link* next = nullptr;
};

// Links of the timer-wheel bucket an entry is in.
struct cache_timer_link {
  cache_timer_link* prev = nullptr;
  cache_timer_link* next = nullptr;
};

// Which policy queue an entry is in.
enum class cache_queue : std::uint8_t { none, window, probation, protected_ };

// The fields of an entry that do not change while it is published (expires_at and remove_at
// excepted with expire-after-access, when readers take the shard lock too).
struct cache_node_fixed {
  // The map's hash of the key (the sketch re-mixes it).
  std::uint64_t hash = 0;
  // Until when the entry is fresh (returned by get); cache_never without expiry.
  std::int64_t expires_at = cache_never;
  // When the entry is removed from memory: expires_at, or later when stale values are kept.
  std::int64_t remove_at = cache_never;
  // The expire-after-write deadline (expires_at may be earlier with expire-after-access).
  std::int64_t write_deadline = cache_never;
  // When the value was written (for refresh-ahead); 0 when not tracked.
  std::int64_t written_at = 0;
  // The entry's share of the capacity (1 without a weigher).
  std::uint32_t weight = 1;
};

// The policy- and expiry-visible part of an entry; the cache derives its node (key, value) from it
// and puts the key and value first. The fixed fields come next and the links last: the links are
// written on every hit the maintenance thread replays, and 48 bytes of fields that readers never
// see changing keep them off the cache line a lock-free reader reads the key and value from
// (for a 32-byte key and value, e.g. two integers, at every 16-byte aligned address; sharing it
// made each read of a hot entry a cross-core miss: 64 -> 34 ns per Zipf get, bench/RESULTS.md).
struct cache_node_base : cache_node_fixed, cache_policy_link, cache_timer_link {
  // Which policy queue the entry is in.
  cache_queue queue = cache_queue::none;
};

// A circular doubly linked list with a sentinel, over one of the two link types.
// Not copyable or movable: the sentinel's address is part of the list.
template <class Link>
class cache_list {
 public:
  cache_list() noexcept { head_.prev = head_.next = &head_; }
  cache_list(const cache_list&) = delete;
  cache_list& operator=(const cache_list&) = delete;

  // Returns whether the list is empty.
  bool empty() const noexcept { return head_.next == &head_; }
  // Returns the first (oldest) element, or nullptr.
  Link* front() noexcept { return empty() ? nullptr : head_.next; }
  // Returns the element after `n`, or nullptr at the end.
  Link* next_of(Link* n) noexcept { return n->next == &head_ ? nullptr : n->next; }

  // Appends `n` (which must not be linked) at the back.
  void push_back(Link* n) noexcept {
    n->prev = head_.prev;
    n->next = &head_;
    head_.prev->next = n;
    head_.prev = n;
  }

  // Inserts `n` (which must not be linked) at the front.
  void push_front(Link* n) noexcept {
    n->next = head_.next;
    n->prev = &head_;
    head_.next->prev = n;
    head_.next = n;
  }

  // Unlinks `n` from whatever list it is in.
  static void unlink(Link* n) noexcept {
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = nullptr;
  }

  // Puts `nw` (not linked) where `old` is, leaving `old` unlinked; nothing when `old` is unlinked.
  static void replace(Link* old, Link* nw) noexcept {
    if (old->next == nullptr) return;
    nw->prev = old->prev;
    nw->next = old->next;
    nw->prev->next = nw;
    nw->next->prev = nw;
    old->prev = old->next = nullptr;
  }

  // Returns whether `n` is in some list.
  static bool linked(const Link* n) noexcept { return n->next != nullptr; }

  // Moves `n` (in this list) to the back.
  void move_to_back(Link* n) noexcept {
    if (n->next == &head_) return;
    unlink(n);
    push_back(n);
  }

  // Moves every element of `other` to the front of this list, keeping their order.
  void splice_front(cache_list& other) noexcept {
    if (other.empty()) return;
    Link* first = other.head_.next;
    Link* last = other.head_.prev;
    other.head_.prev = other.head_.next = &other.head_;
    last->next = head_.next;
    head_.next->prev = last;
    head_.next = first;
    first->prev = &head_;
  }

  // Moves every element of `other` to the back of this list, keeping their order.
  void splice_back(cache_list& other) noexcept {
    if (other.empty()) return;
    Link* first = other.head_.next;
    Link* last = other.head_.prev;
    other.head_.prev = other.head_.next = &other.head_;
    first->prev = head_.prev;
    head_.prev->next = first;
    head_.prev = last;
    last->next = &head_;
  }

 private:
  Link head_;
};

// Returns the node a policy link belongs to.
inline cache_node_base* node_of(cache_policy_link* l) noexcept {
  return static_cast<cache_node_base*>(l);
}
// Returns the node a timer link belongs to.
inline cache_node_base* node_of(cache_timer_link* l) noexcept {
  return static_cast<cache_node_base*>(l);
}

}  // namespace sluice::detail
