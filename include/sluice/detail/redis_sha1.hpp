// sluice/detail/redis_sha1.hpp
//
// Internal; not part of the public API. SHA-1 of a Lua script's source, as hex: the name Redis
// gives a script for EVALSHA. Exists because neither the standard library nor Abseil has SHA-1,
// and asking the server (SCRIPT LOAD) would cost a round trip before the first call.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace sluice::detail {

// Returns the lower-case hex SHA-1 (40 characters) of `data` (FIPS 180-4).
inline std::string sha1_hex(std::string_view data) {
  std::uint32_t h[5] = {0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u, 0xC3D2E1F0u};
  const auto rotl = [](std::uint32_t x, int n) { return (x << n) | (x >> (32 - n)); };
  const auto block = [&](const unsigned char* p) {
    std::uint32_t w[80];
    for (int i = 0; i < 16; ++i) {
      w[i] = (std::uint32_t{p[4 * i]} << 24) | (std::uint32_t{p[4 * i + 1]} << 16) |
             (std::uint32_t{p[4 * i + 2]} << 8) | std::uint32_t{p[4 * i + 3]};
    }
    for (int i = 16; i < 80; ++i) w[i] = rotl(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    std::uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; ++i) {
      std::uint32_t f = 0;
      std::uint32_t k = 0;
      if (i < 20) {
        f = (b & c) | (~b & d);
        k = 0x5A827999u;
      } else if (i < 40) {
        f = b ^ c ^ d;
        k = 0x6ED9EBA1u;
      } else if (i < 60) {
        f = (b & c) | (b & d) | (c & d);
        k = 0x8F1BBCDCu;
      } else {
        f = b ^ c ^ d;
        k = 0xCA62C1D6u;
      }
      const std::uint32_t t = rotl(a, 5) + f + e + k + w[i];
      e = d;
      d = c;
      c = rotl(b, 30);
      b = a;
      a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
  };

  const std::size_t full = data.size() / 64 * 64;
  for (std::size_t i = 0; i < full; i += 64) {
    block(reinterpret_cast<const unsigned char*>(data.data() + i));
  }
  std::array<unsigned char, 128> tail{};
  const std::size_t rest = data.size() - full;
  for (std::size_t i = 0; i < rest; ++i) tail[i] = static_cast<unsigned char>(data[full + i]);
  tail[rest] = 0x80;
  const std::size_t tail_len = rest + 1 + 8 <= 64 ? 64 : 128;
  const std::uint64_t bits = static_cast<std::uint64_t>(data.size()) * 8;
  for (int i = 0; i < 8; ++i) {
    tail[tail_len - 1 - static_cast<std::size_t>(i)] = static_cast<unsigned char>(bits >> (8 * i));
  }
  block(tail.data());
  if (tail_len == 128) block(tail.data() + 64);

  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(40);
  for (std::uint32_t v : h) {
    for (int shift = 28; shift >= 0; shift -= 4) out.push_back(hex[(v >> shift) & 0xfu]);
  }
  return out;
}

}  // namespace sluice::detail
