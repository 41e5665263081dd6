// Shows: testing time-dependent code without sleeping, with sluice::testing::manual_clock.
// Needs: sluice::core.
//
// Every sluice primitive that reads time takes a Clock template parameter and a clock object.
// Production code uses the default (std::chrono::steady_clock) or sluice::coarse_clock; tests pass
// a manual_clock and move time by hand. Here a tiny session-expiry check is written the same way.
#include <chrono>
#include <cstdio>

#include <sluice/clock.hpp>
#include <sluice/testing/manual_clock.hpp>

template <class Clock>
class session {
 public:
  session(std::chrono::seconds idle_limit, Clock clock = Clock())
      : idle_limit_(idle_limit), clock_(clock), last_seen_(clock_.now()) {}
  void touch() { last_seen_ = clock_.now(); }
  bool expired() const { return clock_.now() - last_seen_ >= idle_limit_; }

 private:
  std::chrono::seconds idle_limit_;
  Clock clock_;
  typename Clock::time_point last_seen_;
};

int main() {
  using namespace std::chrono_literals;

  sluice::testing::manual_clock clock;
  session<sluice::testing::manual_clock> s(30s, clock);

  clock.advance(29s);
  if (s.expired()) return std::puts("expired too early"), 1;
  s.touch();
  clock.advance(30s);
  if (!s.expired()) return std::puts("did not expire"), 1;

  // Sleeps through a manual clock are simulated: they move time and return at once.
  clock.sleep_for(2min);
  std::printf("simulated %lld s of sleep in %llu call(s)\n",
              static_cast<long long>(
                  std::chrono::duration_cast<std::chrono::seconds>(clock.slept()).count()),
              static_cast<unsigned long long>(clock.sleeps()));

  // The same class in production, on the cheap coarse clock.
  session<sluice::coarse_clock> live(30s);
  std::printf("live session expired: %s\n", live.expired() ? "yes" : "no");
  return 0;
}
