// Proves the packaged headers and their Abseil dependency resolve: a manual clock advanced by hand.
#include <chrono>
#include <cstdio>

#include <sluice/sluice.hpp>

int main() {
  using namespace std::chrono_literals;
  sluice::testing::manual_clock clock;
  const auto t0 = clock.now();
  clock.advance(1s);
  std::printf("sluice %s: %s\n", sluice::version_string, clock.now() - t0 == 1s ? "ok" : "bad");
  return clock.now() - t0 == 1s ? 0 : 1;
}
