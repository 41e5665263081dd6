// sluice/redis/command.hpp
//
// `sluice::redis::command` is one Redis command already encoded in RESP (the wire form), built
// from its arguments. Arguments are binary-safe byte strings: keys and values may hold any byte,
// NUL included. Numbers are passed as text (`std::to_string`), as Redis expects.
//
// Encoding happens once, when the command is built, by hiredis's `redisFormatCommandArgv`; the
// connection then only copies the bytes into its write buffer.
//
// Thread safety: a plain value (move-only: it owns hiredis's buffer).
// Errors: building throws std::bad_alloc only when memory runs out.
//
// Example:
//   redis::command set{"SET", key, value, "PX", "1500"};
//   redis::command get = redis::command::from_args(std::vector<std::string>{"GET", key});
#pragma once

#include <array>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include "sluice/detail/redis_reader.hpp"

namespace sluice::redis {

// One encoded command (see the file comment).
class command {
 public:
  // Builds a command from its arguments (anything convertible to std::string_view), the command
  // name first: `command{"SET", key, value}`. A variadic constructor rather than an
  // initializer_list one: GCC 12 rejects a braced list inside a co_await expression ("array used
  // as initializer"), so `co_await conn.async_exec(command{"GET", key}, ...)` must not create one.
  template <class... Args,
            std::enable_if_t<(sizeof...(Args) > 0) &&
                                 (std::is_convertible_v<const Args&, std::string_view> && ...),
                             int> = 0>
  command(const Args&... args) {  // NOLINT(google-explicit-constructor): reads as a literal
    const std::array<std::string_view, sizeof...(Args)> argv{std::string_view(args)...};
    std::tie(wire_, size_) = detail::format_command(argv);
  }

  // Builds a command from any range of string-like arguments (std::string, std::string_view).
  template <class Range>
  [[nodiscard]] static command from_args(const Range& args) {
    command c;
    std::tie(c.wire_, c.size_) = detail::format_command(args);
    return c;
  }

  // Returns the RESP bytes sent to the server.
  [[nodiscard]] std::string_view wire() const noexcept { return {wire_.get(), size_}; }

 private:
  command() = default;
  detail::hiredis_command wire_;  // hiredis's buffer, kept as is: no copy
  std::size_t size_ = 0;
};

}  // namespace sluice::redis
