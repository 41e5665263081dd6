// sluice/detail/redis_reader.hpp
//
// Internal; not part of the public API. Wraps hiredis's RESP parser (`redisReader`) and command
// formatter (`redisFormatCommandArgv`), the only parts of hiredis sluice uses, so that the rest of
// the Redis component never touches hiredis's C types and works with hiredis 0.14 and 1.x alike.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <utility>

#include <hiredis/hiredis.h>

#include "sluice/redis/reply.hpp"

namespace sluice::detail {

// Converts one hiredis reply tree to a sluice reply. RESP3 kinds (hiredis 1.x only; sluice never
// sends HELLO 3, so they do not occur) are mapped to their RESP2 shape.
inline redis::reply convert_reply(const redisReply* r) {
  switch (r->type) {
    case REDIS_REPLY_STRING:
      return redis::reply::string(std::string(r->str, r->len));
    case REDIS_REPLY_STATUS:
      return redis::reply::status(std::string(r->str, r->len));
    case REDIS_REPLY_ERROR:
      return redis::reply::error(std::string(r->str, r->len));
    case REDIS_REPLY_INTEGER:
      return redis::reply::integer(r->integer);
    case REDIS_REPLY_NIL:
      return redis::reply::nil();
    case REDIS_REPLY_ARRAY: {
      std::vector<redis::reply> elements;
      elements.reserve(r->elements);
      for (std::size_t i = 0; i < r->elements; ++i)
        elements.push_back(convert_reply(r->element[i]));
      return redis::reply::array(std::move(elements));
    }
    default:
      // hiredis 1.x RESP3 kinds: double/bignum/verbatim carry text, bool an integer, map/set/push
      // elements.
      if (r->element != nullptr || r->elements > 0) {
        std::vector<redis::reply> elements;
        for (std::size_t i = 0; i < r->elements; ++i) {
          elements.push_back(convert_reply(r->element[i]));
        }
        return redis::reply::array(std::move(elements));
      }
      if (r->str != nullptr) return redis::reply::string(std::string(r->str, r->len));
      return redis::reply::integer(r->integer);
  }
}

// Owns a `redisReader`: feed bytes, take complete replies in order.
class resp_reader {
 public:
  // The outcome of `next`.
  enum class result { reply, need_more, protocol_error };

  // Creates the parser; throws std::bad_alloc when hiredis cannot allocate it.
  resp_reader() : reader_(redisReaderCreate()) {
    if (reader_ == nullptr) throw std::bad_alloc();
  }
  resp_reader(const resp_reader&) = delete;
  resp_reader& operator=(const resp_reader&) = delete;
  ~resp_reader() { redisReaderFree(reader_); }

  // Appends bytes received from the server; false when the reader is in an error state or out of
  // memory.
  bool feed(const char* data, std::size_t size) {
    return redisReaderFeed(reader_, data, size) == REDIS_OK;
  }

  // Takes the next complete reply: converted into `out` unless `discard`.
  result next(redis::reply* out, bool discard = false) {
    void* raw = nullptr;
    if (redisReaderGetReply(reader_, &raw) != REDIS_OK) return result::protocol_error;
    if (raw == nullptr) return result::need_more;
    std::unique_ptr<redisReply, void (*)(void*)> owned(static_cast<redisReply*>(raw),
                                                       &freeReplyObject);
    if (!discard && out != nullptr) *out = convert_reply(owned.get());
    return result::reply;
  }

  // Returns hiredis's description of a protocol error.
  [[nodiscard]] std::string error_text() const { return std::string(reader_->errstr); }

  // Discards all buffered bytes and any half-parsed reply (used when a connection is reset).
  void reset() {
    redisReader* fresh = redisReaderCreate();
    if (fresh == nullptr) throw std::bad_alloc();
    redisReaderFree(reader_);
    reader_ = fresh;
  }

 private:
  redisReader* reader_;
};

// Frees a buffer hiredis formatted.
struct hiredis_command_deleter {
  void operator()(char* p) const noexcept { redisFreeCommand(p); }
};
using hiredis_command = std::unique_ptr<char, hiredis_command_deleter>;

// Formats argv as one RESP command with hiredis; returns the buffer and its size. Binary-safe.
// Throws std::bad_alloc when hiredis cannot allocate.
template <class Range>
std::pair<hiredis_command, std::size_t> format_command(const Range& args) {
  constexpr std::size_t inline_args = 16;
  const char* argv_inline[inline_args];
  std::size_t len_inline[inline_args];
  std::unique_ptr<const char*[]> argv_heap;
  std::unique_ptr<std::size_t[]> len_heap;
  const std::size_t n = static_cast<std::size_t>(std::size(args));
  const char** argv = argv_inline;
  std::size_t* lens = len_inline;
  if (n > inline_args) {
    argv_heap = std::make_unique<const char*[]>(n);
    len_heap = std::make_unique<std::size_t[]>(n);
    argv = argv_heap.get();
    lens = len_heap.get();
  }
  std::size_t i = 0;
  for (const auto& a : args) {
    const std::string_view v(a);
    argv[i] = v.data();
    lens[i] = v.size();
    ++i;
  }
  char* target = nullptr;
  const int len = redisFormatCommandArgv(&target, static_cast<int>(n), argv, lens);
  if (len < 0 || target == nullptr) throw std::bad_alloc();
  return {hiredis_command(target), static_cast<std::size_t>(len)};
}

// Formats argv as one RESP command and appends it to `out`.
template <class Range>
void format_command_append(const Range& args, std::string& out) {
  auto [buffer, size] = format_command(args);
  out.append(buffer.get(), size);
}

}  // namespace sluice::detail
