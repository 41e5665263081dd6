// sluice/redis/reply.hpp
//
// `sluice::redis::reply` is one Redis reply as a small typed value: nil, integer, string (bulk),
// status (`+OK`), error (`-ERR ...`) or array of replies. Strings are binary-safe (`std::string`
// holds any bytes, including NUL).
//
// A Redis error reply is a value, not a failure of the call: a command that reached the server
// and got `-WRONGTYPE ...` completes with an empty error_code and a reply whose kind is `error`.
// `sluice::redis::classify` (sluice/redis/error.hpp) says what it means for resilience policies.
//
// Thread safety: a plain value; distinct objects may be used concurrently.
//
// Example:
//   auto [ec, r] = co_await conn.async_exec(redis::command{"GET", key}, as_tuple(use_awaitable));
//   if (!ec && r.is_string()) use(r.str());
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sluice::redis {

// The six kinds of RESP2 reply.
enum class reply_kind : std::uint8_t { nil, integer, string, status, error, array };

// One Redis reply (see the file comment).
class reply {
 public:
  // Constructs a nil reply.
  reply() = default;

  // Makes a nil reply (a missing key, a timed-out BLPOP).
  [[nodiscard]] static reply nil() { return reply(); }
  // Makes an integer reply.
  [[nodiscard]] static reply integer(std::int64_t v) {
    reply r;
    r.kind_ = reply_kind::integer;
    r.integer_ = v;
    return r;
  }
  // Makes a bulk-string reply holding `bytes`.
  [[nodiscard]] static reply string(std::string bytes) {
    return reply(reply_kind::string, std::move(bytes));
  }
  // Makes a status reply (`+OK` is status "OK").
  [[nodiscard]] static reply status(std::string text) {
    return reply(reply_kind::status, std::move(text));
  }
  // Makes an error reply (`-ERR x` is error "ERR x").
  [[nodiscard]] static reply error(std::string text) {
    return reply(reply_kind::error, std::move(text));
  }
  // Makes an array reply.
  [[nodiscard]] static reply array(std::vector<reply> elements) {
    reply r;
    r.kind_ = reply_kind::array;
    r.elements_ = std::move(elements);
    return r;
  }

  // Returns the kind of reply.
  [[nodiscard]] reply_kind kind() const noexcept { return kind_; }
  // Tests the kind.
  [[nodiscard]] bool is_nil() const noexcept { return kind_ == reply_kind::nil; }
  [[nodiscard]] bool is_integer() const noexcept { return kind_ == reply_kind::integer; }
  [[nodiscard]] bool is_string() const noexcept { return kind_ == reply_kind::string; }
  [[nodiscard]] bool is_status() const noexcept { return kind_ == reply_kind::status; }
  [[nodiscard]] bool is_error() const noexcept { return kind_ == reply_kind::error; }
  [[nodiscard]] bool is_array() const noexcept { return kind_ == reply_kind::array; }

  // Returns the integer of an integer reply; 0 for any other kind.
  [[nodiscard]] std::int64_t as_integer() const noexcept { return integer_; }
  // Returns the bytes of a string reply, or the text of a status or error reply; empty otherwise.
  [[nodiscard]] const std::string& str() const& noexcept { return str_; }
  // Moves the bytes out (no copy for large values).
  [[nodiscard]] std::string&& str() && noexcept { return std::move(str_); }
  // Returns the elements of an array reply; empty otherwise.
  [[nodiscard]] const std::vector<reply>& elements() const& noexcept { return elements_; }
  [[nodiscard]] std::vector<reply>&& elements() && noexcept { return std::move(elements_); }

  // Returns the error's prefix word ("WRONGTYPE", "NOSCRIPT", "ERR"); empty unless an error.
  [[nodiscard]] std::string_view error_prefix() const noexcept {
    if (kind_ != reply_kind::error) return {};
    const std::string_view s = str_;
    return s.substr(0, s.find(' '));
  }
  // Tests for a status reply equal to `text` ("OK", "PONG").
  [[nodiscard]] bool is_status(std::string_view text) const noexcept {
    return kind_ == reply_kind::status && std::string_view(str_) == text;
  }

  friend bool operator==(const reply& a, const reply& b) {
    return a.kind_ == b.kind_ && a.integer_ == b.integer_ && a.str_ == b.str_ &&
           a.elements_ == b.elements_;
  }

 private:
  reply(reply_kind kind, std::string s) : kind_(kind), str_(std::move(s)) {}

  reply_kind kind_ = reply_kind::nil;
  std::int64_t integer_ = 0;
  std::string str_;
  std::vector<reply> elements_;
};

}  // namespace sluice::redis
