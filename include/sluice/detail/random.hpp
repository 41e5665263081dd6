// sluice/detail/random.hpp
//
// Internal; not part of the public API. A fast per-thread pseudo-random source for jitter and
// sampling (backoff jitter, probe jitter, sketch hashing seeds). Not for anything security related.
#pragma once

#include <chrono>
#include <cstdint>
#include <random>

namespace sluice::detail {

// splitmix64: a full-period 64-bit mixer, used to seed and to hash.
constexpr std::uint64_t mix64(std::uint64_t x) noexcept {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// xoshiro256+ state, one per thread, seeded once from std::random_device.
class fast_rng {
 public:
  using result_type = std::uint64_t;
  static constexpr result_type min() noexcept { return 0; }
  static constexpr result_type max() noexcept { return ~result_type{0}; }

  explicit fast_rng(std::uint64_t seed) noexcept {
    for (auto& w : s_) w = seed = mix64(seed);
  }

  // Returns the next 64 random bits.
  result_type operator()() noexcept {
    const std::uint64_t result = s_[0] + s_[3];
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = (s_[3] << 45) | (s_[3] >> 19);
    return result;
  }

 private:
  std::uint64_t s_[4];
};

// Returns the calling thread's generator.
inline fast_rng& thread_rng() noexcept {
  thread_local fast_rng rng([] {
    std::random_device rd;
    return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  }());
  return rng;
}

// Returns a uniform double in [0, 1).
inline double random_unit() noexcept {
  return static_cast<double>(thread_rng()() >> 11) * 0x1.0p-53;
}

// Returns `d` scaled by a uniform factor in [1 - fraction, 1 + fraction]; fraction in [0, 1].
template <class Rep, class Period>
std::chrono::duration<Rep, Period> jitter(std::chrono::duration<Rep, Period> d,
                                          double fraction) noexcept {
  const double f = 1.0 + fraction * (2.0 * random_unit() - 1.0);
  return std::chrono::duration<Rep, Period>(static_cast<Rep>(static_cast<double>(d.count()) * f));
}

}  // namespace sluice::detail
