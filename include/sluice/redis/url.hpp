// sluice/redis/url.hpp
//
// `sluice::redis::endpoint` says where a Redis server is and how to log in to it;
// `sluice::redis::parse_url` reads one from a `redis://[[user]:password@]host[:port][/db]` URL.
//
//   redis://localhost                     host localhost, port 6379, db 0, no AUTH
//   redis://:secret@10.0.0.5:6380/2       AUTH secret, then SELECT 2
//   redis://app:secret@[::1]:6379         AUTH app secret (Redis 6 ACL user), IPv6 literal
//
// Percent-escapes (%40 for '@', %3A for ':') are decoded in the user and password, so any password
// can be written. A URL with `rediss://` (TLS) or a unix socket is rejected: sluice's client speaks
// plain TCP only.
//
// Thread safety: stateless; `endpoint` is a plain value.
// Errors: a malformed URL is `absl::StatusCode::kInvalidArgument` whose message names the part
// that is wrong (scheme, host, port, database, escape).
//
// Example:
//   absl::StatusOr<sluice::redis::endpoint> ep =
//       sluice::redis::parse_url("redis://:pw@cache:6379/1");
//   if (!ep.ok()) return ep.status();
//   co_await conn.async_connect(*ep, use_awaitable);
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace sluice::redis {

// Where a Redis server listens and the login the client performs right after connecting.
struct endpoint {
  // Names the server: a host name, an IPv4 address, or an IPv6 address without brackets.
  std::string host = "127.0.0.1";
  // Names the TCP port; 6379 because that is Redis's registered port.
  std::uint16_t port = 6379;
  // Names the ACL user for `AUTH user password`; empty sends `AUTH password` (the default user).
  std::string user;
  // Holds the password; empty means no AUTH is sent.
  std::string password;
  // Selects the logical database; 0 (Redis's default) means no SELECT is sent.
  int db = 0;

  friend bool operator==(const endpoint&, const endpoint&) = default;
};

}  // namespace sluice::redis

namespace sluice::detail {

inline int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Decodes %XX escapes; false on a truncated or non-hex escape.
inline bool percent_decode(std::string_view in, std::string& out) {
  out.clear();
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out.push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size()) return false;
    const int hi = hex_value(in[i + 1]);
    const int lo = hex_value(in[i + 2]);
    if (hi < 0 || lo < 0) return false;
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return true;
}

// Parses a decimal number of at most `max`; false on empty, non-digit or overflow.
inline bool parse_decimal(std::string_view s, std::uint32_t max, std::uint32_t& out) noexcept {
  if (s.empty() || s.size() > 10) return false;
  std::uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  if (v > max) return false;
  out = static_cast<std::uint32_t>(v);
  return true;
}

}  // namespace sluice::detail

namespace sluice::redis {

// Parses `redis://[[user]:password@]host[:port][/db]` into an endpoint.
// Returns InvalidArgument naming the faulty part when the URL is malformed: another scheme,
// an empty host, a port outside 1..65535, a database that is not a number in 0..2^31-1, a bad
// percent-escape, or anything after the database (query strings are not supported).
[[nodiscard]] inline absl::StatusOr<endpoint> parse_url(std::string_view url) {
  constexpr std::string_view scheme = "redis://";
  if (url.substr(0, scheme.size()) != scheme) {
    return absl::InvalidArgumentError("redis url: scheme must be redis:// in '" + std::string(url) +
                                      "'");
  }
  std::string_view rest = url.substr(scheme.size());
  endpoint ep;

  // Credentials end at the last '@' before the path (a password may contain an escaped '@' only).
  const std::size_t slash = rest.find('/');
  const std::string_view authority = rest.substr(0, slash);
  const std::string_view path =
      slash == std::string_view::npos ? std::string_view{} : rest.substr(slash + 1);
  std::string_view hostport = authority;
  if (const std::size_t at = authority.rfind('@'); at != std::string_view::npos) {
    const std::string_view userinfo = authority.substr(0, at);
    hostport = authority.substr(at + 1);
    const std::size_t colon = userinfo.find(':');
    const std::string_view user = userinfo.substr(0, colon);
    const std::string_view password =
        colon == std::string_view::npos ? std::string_view{} : userinfo.substr(colon + 1);
    if (colon == std::string_view::npos) {
      // "redis://secret@host" is how many tools write a bare password.
      if (!sluice::detail::percent_decode(user, ep.password)) {
        return absl::InvalidArgumentError("redis url: bad percent-escape in the password");
      }
    } else {
      if (!sluice::detail::percent_decode(user, ep.user)) {
        return absl::InvalidArgumentError("redis url: bad percent-escape in the user");
      }
      if (!sluice::detail::percent_decode(password, ep.password)) {
        return absl::InvalidArgumentError("redis url: bad percent-escape in the password");
      }
    }
  }

  std::string_view host;
  std::string_view port;
  if (!hostport.empty() && hostport.front() == '[') {
    const std::size_t close = hostport.find(']');
    if (close == std::string_view::npos) {
      return absl::InvalidArgumentError("redis url: unterminated IPv6 host");
    }
    host = hostport.substr(1, close - 1);
    const std::string_view after = hostport.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return absl::InvalidArgumentError("redis url: junk after host");
      port = after.substr(1);
      if (port.empty()) return absl::InvalidArgumentError("redis url: empty port");
    }
  } else {
    const std::size_t colon = hostport.find(':');
    host = hostport.substr(0, colon);
    if (colon != std::string_view::npos) {
      port = hostport.substr(colon + 1);
      if (port.empty()) return absl::InvalidArgumentError("redis url: empty port");
    }
  }
  if (host.empty()) return absl::InvalidArgumentError("redis url: empty host");
  ep.host = std::string(host);
  if (!port.empty()) {
    std::uint32_t p = 0;
    if (!sluice::detail::parse_decimal(port, 65535, p) || p == 0) {
      return absl::InvalidArgumentError("redis url: port must be a number in 1..65535, got '" +
                                        std::string(port) + "'");
    }
    ep.port = static_cast<std::uint16_t>(p);
  }
  if (!path.empty()) {
    std::uint32_t db = 0;
    if (!sluice::detail::parse_decimal(path, 0x7fffffff, db)) {
      return absl::InvalidArgumentError("redis url: database must be a number, got '" +
                                        std::string(path) + "'");
    }
    ep.db = static_cast<int>(db);
  }
  return ep;
}

}  // namespace sluice::redis
