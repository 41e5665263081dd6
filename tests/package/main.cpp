// A program a sluice user would write, built against the installed package. It exercises each
// requested component for real and exits non-zero if anything misbehaves.
#include <chrono>
#include <cstdio>

#include <sluice/sluice.hpp>

// The core component promises a machine with only Abseil: its headers must not reach Boost or
// hiredis even where those happen to be installed.
#if !defined(SLUICE_CONSUMER_ASIO) && (defined(BOOST_VERSION) || defined(BOOST_ASIO_VERSION))
#error "a sluice::core header included Boost"
#endif
#if !defined(SLUICE_CONSUMER_REDIS) && defined(HIREDIS_MAJOR)
#error "a sluice::core header included hiredis"
#endif

#if defined(SLUICE_CONSUMER_ASIO)
#include <sluice/asio.hpp>
#endif
#if defined(SLUICE_CONSUMER_REDIS)
#include <sluice/redis.hpp>
#endif

namespace {
int failures = 0;
void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "consumer: FAILED: %s\n", what);
    ++failures;
  }
}
}  // namespace

int main() {
  using namespace std::chrono_literals;
  sluice::testing::manual_clock clock;
  const auto t0 = clock.now();
  clock.advance(5s);
  check(clock.now() - t0 == 5s, "manual_clock advances");
  check(sluice::coarse_clock::now().time_since_epoch().count() > 0, "coarse_clock reads");

#if defined(SLUICE_CONSUMER_ASIO)
  auto ec = sluice::asio::to_error_code(absl::ResourceExhaustedError("full"));
  check(ec == sluice::asio::error::resource_exhausted, "asio error mapping");
#endif

  std::printf("consumer: sluice %s, %s\n", sluice::version_string, failures ? "FAILED" : "ok");
  return failures == 0 ? 0 : 1;
}
