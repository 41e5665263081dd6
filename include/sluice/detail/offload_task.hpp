// sluice/detail/offload_task.hpp
//
// Internal; not part of the public API. A move-only, type-erased `void(const absl::Status&)`
// callable with inline storage, so that queueing a small lambda into an offload executor does not
// allocate (std::function copies and, beyond its tiny buffer, allocates; std::move_only_function
// is C++23).
//
// Thread safety: as a value; one owner at a time.
#pragma once

#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"

namespace sluice::detail {

class offload_task {
 public:
  // Callables up to this size (and alignment of a pointer pair) are stored inline: 48 bytes
  // holds a lambda capturing six pointers, e.g. a handler, its executor and a result slot.
  static constexpr std::size_t inline_size = 48;

  offload_task() noexcept = default;

  // Wraps `fn`, which is called at most once with the task's fate (OK: run; else: dropped).
  template <class F, class D = std::decay_t<F>,
            class = std::enable_if_t<!std::is_same_v<D, offload_task>>>
  explicit offload_task(F&& fn) {
    if constexpr (fits<D>) {
      ::new (static_cast<void*>(buf_)) D(std::forward<F>(fn));
      ops_ = &inline_ops<D>;
    } else {
      ::new (static_cast<void*>(buf_)) D*(new D(std::forward<F>(fn)));
      ops_ = &heap_ops<D>;
    }
  }

  offload_task(offload_task&& other) noexcept { take(other); }
  offload_task& operator=(offload_task&& other) noexcept {
    if (this != &other) {
      clear();
      take(other);
    }
    return *this;
  }
  offload_task(const offload_task&) = delete;
  offload_task& operator=(const offload_task&) = delete;
  ~offload_task() { clear(); }

  // Returns whether a callable is held.
  explicit operator bool() const noexcept { return ops_ != nullptr; }

  // Calls the callable with `fate`, then destroys it (the task is empty afterwards).
  void operator()(const absl::Status& fate) {
    const ops* o = std::exchange(ops_, nullptr);
    struct destroy_after {
      const ops* o;
      void* p;
      ~destroy_after() { o->destroy(p); }
    } guard{o, buf_};
    o->call(buf_, fate);
  }

 private:
  struct ops {
    void (*call)(void*, const absl::Status&);
    void (*move)(void* dst, void* src) noexcept;  // move-constructs into dst, destroys src
    void (*destroy)(void*) noexcept;
  };

  template <class D>
  static constexpr bool fits =
      sizeof(D) <= inline_size &&
      alignof(D) <= alignof(std::max_align_t) && std::is_nothrow_move_constructible_v<D>;

  template <class D>
  static constexpr ops inline_ops = {
      [](void* p, const absl::Status& s) { (*static_cast<D*>(p))(s); },
      [](void* dst, void* src) noexcept {
        ::new (dst) D(std::move(*static_cast<D*>(src)));
        static_cast<D*>(src)->~D();
      },
      [](void* p) noexcept { static_cast<D*>(p)->~D(); },
  };

  template <class D>
  static constexpr ops heap_ops = {
      [](void* p, const absl::Status& s) { (**static_cast<D**>(p))(s); },
      [](void* dst, void* src) noexcept { ::new (dst) D*(*static_cast<D**>(src)); },
      [](void* p) noexcept { delete *static_cast<D**>(p); },
  };

  void take(offload_task& other) noexcept {
    ops_ = std::exchange(other.ops_, nullptr);
    if (ops_ != nullptr) ops_->move(buf_, other.buf_);
  }
  void clear() noexcept {
    if (ops_ != nullptr) std::exchange(ops_, nullptr)->destroy(buf_);
  }

  alignas(std::max_align_t) unsigned char buf_[inline_size];
  const ops* ops_ = nullptr;
};

}  // namespace sluice::detail
