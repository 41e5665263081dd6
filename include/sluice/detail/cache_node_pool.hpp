// sluice/detail/cache_node_pool.hpp
//
// Internal; not part of the public API. A per-thread stack of freed cache entries' memory blocks
// of one size, so a cache's writes reuse the memory its reclamation frees instead of going
// through malloc for every entry. It exists because of how reclamation frees: a batch of up to 64
// entries at a time, often allocated by another thread. glibc keeps only 7 freed blocks per size
// per thread; the rest of each batch goes back to the allocating thread's arena under that
// arena's lock, which two writing threads then contend for (Zipf at two threads: 2.2x the mutex
// LRU with plain malloc, 2.7x with glibc's per-thread cache raised to 1000 blocks; see
// bench/RESULTS.md).
//
// Each thread keeps at most `capacity` blocks per entry size; the rest are freed. A thread's
// blocks are freed when it exits (a thread_local destructor); a block freed after that (a cache
// used from a later thread_local destructor) goes straight to operator delete.
//
// Thread safety: each thread uses only its own stack; allocate() and deallocate() may be called
// concurrently from any threads, and a block may be freed by another thread than allocated it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>

namespace sluice::detail {

template <std::size_t Size, std::size_t Align>
class cache_node_pool {
 public:
  // Blocks a thread keeps: more than a reclamation batch (64), so a batch freed by one thread is
  // reused by its next writes; at most 256 * Size bytes (~32 KiB for small entries) per thread.
  static constexpr std::uint32_t capacity = 256;

  // Returns a block of Size bytes aligned to Align (throws std::bad_alloc like operator new).
  static void* allocate() {
    state& st = local();
    if (block* b = st.head; b != nullptr) {
      st.head = b->next;
      --st.count;
      return b;
    }
    if constexpr (over_aligned) {
      return ::operator new (Size, std::align_val_t{Align});
    } else {
      return ::operator new(Size);
    }
  }

  // Takes back a block from allocate() (on any thread).
  static void deallocate(void* p) noexcept {
    state& st = local();
    if (st.count < capacity && !st.exited) {
      if (!st.registered) register_thread(st);
      block* b = static_cast<block*>(p);
      b->next = st.head;
      st.head = b;
      ++st.count;
      return;
    }
    release(p);
  }

 private:
  static constexpr bool over_aligned = Align > __STDCPP_DEFAULT_NEW_ALIGNMENT__;
  static_assert(Size >= sizeof(void*), "a block holds the free list's link");

  struct block {
    block* next;
  };

  // Trivial (constant-initialised, no destructor): reading it costs no initialisation check,
  // and it stays usable while the thread's other thread_locals are destroyed.
  struct state {
    block* head = nullptr;
    std::uint32_t count = 0;
    bool registered = false;
    bool exited = false;
  };

  static state& local() noexcept {
    thread_local state st;
    return st;
  }

  static void release(void* p) noexcept {
    if constexpr (over_aligned) {
      ::operator delete (p, std::align_val_t{Align});
    } else {
      ::operator delete(p);
    }
  }

  // Frees the thread's blocks when it exits.
  struct holder {
    holder() = default;
    holder(const holder&) = delete;
    holder& operator=(const holder&) = delete;
    ~holder() {
      state& st = local();
      st.exited = true;
      while (st.head != nullptr) {
        block* b = st.head;
        st.head = b->next;
        release(b);
      }
      st.count = 0;
    }
  };

  static void register_thread(state& st) noexcept {
    thread_local holder h;
    (void)h;
    st.registered = true;
  }
};

}  // namespace sluice::detail
