// sluice/detail/cache_epoch.hpp
//
// Internal; not part of the public API. Epoch-based reclamation for the cache's lock-free reads:
// it exists so that a get() can follow pointers into a shard's entries without taking the shard's
// lock, while writers (under the lock) unlink entries and free them only once no reader can still
// hold them.
//
// How it works. The process has one global epoch counter and one slot per thread (registered on
// the thread's first use, reused after the thread exits, never freed). A reader announces the
// global epoch it read in its slot before it follows any pointer, and clears the slot when done
// (nested sections only count the outermost). A writer unlinks an object, then retires it in a
// batch tagged with the epoch it advances the counter from (`advance()`); the batch may be freed
// once every announced epoch is greater than its tag (`oldest_active()`): a reader that announced
// a greater epoch read the counter after the unlink, so it cannot reach the object.
//
// The announcement must be visible to the writer's scan before the reader loads a pointer (a
// store-load ordering): the reader runs a seq_cst fence after announcing and the writer one before
// scanning (Dekker). The fence is the read path's only locked instruction (~3 ns, to the thread's
// own cache line). An asymmetric variant (a compiler barrier for readers, membarrier() for the
// scanner, as liburcu does) was measured: 3-4 ns faster single-threaded, but its IPIs and the
// registration's per-context-switch cost made the whole process slower on two threads.
//
// Thread safety: all member functions may be called concurrently; a slot is used only by its
// thread.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "sluice/detail/cache_line.hpp"
#include "sluice/detail/mutex.hpp"

namespace sluice::detail {

class cache_epoch {
 public:
  // One thread's announcement.
  struct alignas(cache_line_size) slot {
    // The epoch the thread's outermost read section started in; 0 when outside any (so a section
    // that finds it set is nested). Written only by the owning thread; read by scanning writers.
    std::atomic<std::uint64_t> epoch{0};
    // A small number unique among live threads (stripe selection).
    std::uint32_t index = 0;
    // The next free slot (under the registry lock).
    slot* next_free = nullptr;
  };

  // An object (node or table) waiting to be freed, and how to free it.
  struct retired {
    void* p = nullptr;
    void (*free)(void*) = nullptr;
  };

  // Returns the process's domain (never destroyed: threads and caches of static storage duration
  // may still use it during exit).
  static cache_epoch& instance() {
    static cache_epoch* const domain = new cache_epoch();
    return *domain;
  }

  cache_epoch(const cache_epoch&) = delete;
  cache_epoch& operator=(const cache_epoch&) = delete;

  // Returns the calling thread's slot, registering it on first use (allocates once per thread).
  static slot& local() {
    // A trivial thread_local (no initialisation guard on the hot path); the holder that registers
    // and releases the slot is touched once per thread.
    thread_local slot* cached = nullptr;
    if (cached != nullptr) [[likely]]
      return *cached;
    return register_thread(cached);
  }

  // Starts a read section on `s` (the caller's slot). Pointers loaded after it stay valid until
  // the matching exit(). Returns false for a nested section (the outer one holds the epoch).
  static bool enter(slot& s) noexcept {
    // Relaxed: only this thread writes its slot.
    if (s.epoch.load(std::memory_order_relaxed) != 0) return false;
    // Acquire: pairs with advance()'s release, so a reader that sees a new epoch also sees every
    // unlink that preceded it.
    const std::uint64_t e = global_.load(std::memory_order_acquire);
    // Release: a scan that reads this value synchronizes with it, so everything this thread did
    // in earlier sections happens before the scanner frees what they used.
    s.epoch.store(e, std::memory_order_release);
    // Store-load ordering against the scanner's fence (Dekker): either its scan sees this
    // announcement or this thread's loads see its unlinks.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return true;
  }

  // Ends a read section on `s` that enter() returned `outermost` for.
  static void exit(slot& s, bool outermost) noexcept {
    // Release: every load of the section happens before a scan that reads 0.
    if (outermost) s.epoch.store(0, std::memory_order_release);
  }

  // Advances the global epoch; returns the epoch before (the tag of a batch retired now).
  std::uint64_t advance() noexcept {
    // acq_rel: the release half publishes the unlinks made before it to readers that acquire the
    // new epoch (see enter()).
    return global_.fetch_add(1, std::memory_order_acq_rel);
  }

  // Returns the smallest epoch announced by a thread inside a read section (max() when none).
  // Batches tagged below it may be freed. Takes the registry lock; O(threads).
  std::uint64_t oldest_active() ABSL_LOCKS_EXCLUDED(mu_) {
    // The scanner's half of the store-load ordering (see enter()).
    std::atomic_thread_fence(std::memory_order_seq_cst);
    std::uint64_t oldest = std::numeric_limits<std::uint64_t>::max();
    detail::mutex_lock lock(mu_);
    for (const auto& s : slots_) {
      // Acquire: pairs with the readers' release stores (see enter()/exit()).
      const std::uint64_t e = s->epoch.load(std::memory_order_acquire);
      if (e != 0 && e < oldest) oldest = e;
    }
    return oldest;
  }

 private:
  struct holder {
    slot* s;
    slot** cached;
    bool* exited;
    holder(slot*& c, bool& e) : s(instance().acquire_slot()), cached(&c), exited(&e) { c = s; }
    ~holder() {
      *cached = nullptr;
      *exited = true;
      instance().release_slot(s);
    }
    holder(const holder&) = delete;
    holder& operator=(const holder&) = delete;
  };

  static slot& register_thread(slot*& cached) {
    // Trivial, so still readable while the thread's other thread_locals are destroyed.
    thread_local bool exited = false;
    if (exited) {
      // A cache used from a thread_local destructor that runs after the holder's: give the
      // thread a slot of its own for the rest of its life (never reused, so never shared).
      cached = instance().acquire_slot();
      return *cached;
    }
    thread_local holder h(cached, exited);
    return *h.s;
  }

  cache_epoch() = default;

  slot* acquire_slot() ABSL_LOCKS_EXCLUDED(mu_) {
    detail::mutex_lock lock(mu_);
    if (free_ != nullptr) {
      slot* s = free_;
      free_ = s->next_free;
      s->next_free = nullptr;
      return s;
    }
    slots_.push_back(std::make_unique<slot>());
    slots_.back()->index = static_cast<std::uint32_t>(slots_.size() - 1);
    return slots_.back().get();
  }

  void release_slot(slot* s) ABSL_LOCKS_EXCLUDED(mu_) {
    detail::mutex_lock lock(mu_);
    s->next_free = free_;
    free_ = s;
  }

  // Starts at 1: 0 in a slot means "not reading". A static member (constant-initialised, no
  // initialisation check on the read path), as the domain is one per process anyway.
  static inline std::atomic<std::uint64_t> global_{1};
  detail::mutex mu_;
  std::vector<std::unique_ptr<slot>> slots_ ABSL_GUARDED_BY(mu_);
  slot* free_ ABSL_GUARDED_BY(mu_) = nullptr;
};

// A read section for the scope (see cache_epoch::enter).
class cache_epoch_guard {
 public:
  cache_epoch_guard() : slot_(cache_epoch::local()), outermost_(cache_epoch::enter(slot_)) {}
  ~cache_epoch_guard() { cache_epoch::exit(slot_, outermost_); }
  cache_epoch_guard(const cache_epoch_guard&) = delete;
  cache_epoch_guard& operator=(const cache_epoch_guard&) = delete;

  // Returns the calling thread's small unique number (see cache_epoch::slot::index).
  std::uint32_t thread_index() const noexcept { return slot_.index; }

 private:
  cache_epoch::slot& slot_;
  bool outermost_;
};

}  // namespace sluice::detail
