// Counts the heap allocations of each thread (see alloc_counter.hpp).
//
// Normally by replacing the global allocation functions. Clang links its sanitizer runtimes
// statically, and they define operator new themselves (a replacement would be a duplicate symbol),
// so under clang's sanitizers the count comes from the runtime's malloc hook instead, which sees
// every allocation operator new makes.
#include "alloc_counter.hpp"

#include <cstdlib>
#include <new>

#if defined(__clang__) && defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define SLUICE_TEST_ALLOC_HOOK 1
#endif
#endif

namespace {
thread_local std::uint64_t g_thread_allocations = 0;
}  // namespace

namespace sluice_test {
std::uint64_t thread_allocations() noexcept { return g_thread_allocations; }
}  // namespace sluice_test

#if defined(SLUICE_TEST_ALLOC_HOOK)
#include <sanitizer/allocator_interface.h>

namespace {
void on_malloc(const volatile void*, std::size_t) { ++g_thread_allocations; }
void on_free(const volatile void*) {}
[[maybe_unused]] const int g_hooks_installed =
    __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
}  // namespace
#else
namespace {

void* counted_alloc(std::size_t size) {
  ++g_thread_allocations;
  if (size == 0) size = 1;
  if (void* p = std::malloc(size)) return p;
  throw std::bad_alloc();
}

void* counted_aligned_alloc(std::size_t size, std::align_val_t align) {
  ++g_thread_allocations;
  auto a = static_cast<std::size_t>(align);
  if (size == 0) size = a;
  size = (size + a - 1) / a * a;
  if (void* p = std::aligned_alloc(a, size)) return p;
  throw std::bad_alloc();
}
}  // namespace

void* operator new(std::size_t size) { return counted_alloc(size); }
void* operator new[](std::size_t size) { return counted_alloc(size); }
void* operator new(std::size_t size, std::align_val_t a) { return counted_aligned_alloc(size, a); }
void* operator new[](std::size_t size, std::align_val_t a) {
  return counted_aligned_alloc(size, a);
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  ++g_thread_allocations;
  return std::malloc(size == 0 ? 1 : size);
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  ++g_thread_allocations;
  return std::malloc(size == 0 ? 1 : size);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
#endif
