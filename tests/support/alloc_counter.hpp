// tests/support/alloc_counter.hpp
//
// Counts heap allocations made by the calling thread, so tests can prove a hot path allocates
// nothing. The test executables replace the global operator new (alloc_counter.cpp) to count.
//
// Example:
//   sluice_test::alloc_scope scope;
//   breaker.execute([] {});
//   REQUIRE(scope.allocations() == 0);
#pragma once

#include <cstdint>

namespace sluice_test {

// Returns how many allocations the calling thread has made since it started.
std::uint64_t thread_allocations() noexcept;

// Measures the allocations the calling thread makes during its lifetime.
class alloc_scope {
 public:
  alloc_scope() noexcept : start_(thread_allocations()) {}
  // Returns the allocations made by this thread since construction.
  std::uint64_t allocations() const noexcept { return thread_allocations() - start_; }

 private:
  std::uint64_t start_;
};

}  // namespace sluice_test
