// The allocation counter behind every "zero allocations" test must really count, in every build
// (plain, ASan, TSan with gcc or clang): otherwise those tests would pass vacuously.
#include "alloc_counter.hpp"

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "catch.hpp"

TEST_CASE("alloc_counter: counts this thread's allocations only", "[alloc_counter]") {
  sluice_test::alloc_scope scope;
  CHECK(scope.allocations() == 0);
  auto p = std::make_unique<std::vector<int>>(100);
  CHECK(scope.allocations() == 2);
  std::thread other([] { auto q = std::make_unique<std::string>(1000, 'x'); });
  other.join();
  // The thread's own allocations (and its start-up, which the std::thread object makes here) are
  // what we see: at least the thread state, never the other thread's string.
  const auto after_thread = scope.allocations();
  CHECK(after_thread >= 2);
  CHECK(after_thread <= 4);
}
