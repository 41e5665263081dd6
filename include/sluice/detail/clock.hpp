// sluice/detail/clock.hpp
//
// Internal; not part of the public API. Sleeping and waiting "through the clock": the helpers every
// blocking primitive uses so that the same code waits on real time with a real clock and on manual
// time with `sluice::testing::manual_clock`.
#pragma once

#include <chrono>
#include <thread>
#include <type_traits>

#include "sluice/detail/mutex.hpp"

namespace sluice::detail {

// True for clocks whose time only moves by hand (they declare `static constexpr bool is_manual`).
template <class Clock, class = void>
struct is_manual_clock : std::false_type {};
template <class Clock>
struct is_manual_clock<Clock, std::enable_if_t<Clock::is_manual>> : std::true_type {};
template <class Clock>
inline constexpr bool is_manual_clock_v = is_manual_clock<Clock>::value;

// How long a waiter on a manual clock blocks in real time before it looks at the clock again.
// One millisecond keeps tests fast without spinning a core.
inline constexpr std::chrono::milliseconds manual_clock_poll{1};

// Sleeps until `t` on `clock`: the clock's own `sleep_until` if it has one (manual clocks), else a
// real sleep for the remaining duration.
template <class Clock>
void sleep_until(Clock& clock, typename Clock::time_point t) {
  if constexpr (requires { clock.sleep_until(t); }) {
    clock.sleep_until(t);
  } else {
    const auto remaining = t - clock.now();
    if (remaining > Clock::duration::zero()) std::this_thread::sleep_for(remaining);
  }
}

// Waits on `cv` (with `mu` held) until `pred()` is true or `deadline` on `clock` passes.
// Returns the final value of `pred()`. The deadline is judged on `clock` only.
template <class Clock, class Pred>
bool wait_until(Clock& clock, cond_var& cv, mutex& mu, typename Clock::time_point deadline,
                Pred pred) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
  while (!pred()) {
    const auto now = clock.now();
    if (now >= deadline) return pred();
    if constexpr (is_manual_clock_v<Clock>) {
      cv.wait_for(mu, manual_clock_poll);
    } else {
      // An infinite deadline (time_point::max()) must not overflow when turned into a steady
      // clock time: waits longer than a century are plain waits for a notification.
      constexpr auto century = std::chrono::hours(24 * 365 * 100);
      const auto remaining = deadline - now;
      if (remaining >= std::chrono::duration_cast<typename Clock::duration>(century)) {
        cv.wait(mu);
      } else {
        cv.wait_until(
            mu, std::chrono::steady_clock::now() +
                    std::chrono::duration_cast<std::chrono::steady_clock::duration>(remaining));
      }
    }
  }
  return true;
}

}  // namespace sluice::detail
