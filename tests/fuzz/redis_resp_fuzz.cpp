// libFuzzer target: sluice's RESP reply reader (hiredis's redisReader behind
// sluice::detail::resp_reader, plus the conversion to sluice::redis::reply) on arbitrary bytes.
//
// The first input byte chooses how the rest is cut into feeds (a reply may arrive in any number of
// socket reads); the rest is the server's byte stream. Every input is also fed truncated, as a
// connection that dies mid-reply leaves it. Properties checked: no crash, no sanitizer report, the
// reader either yields replies, asks for more, or reports a protocol error (after which it is
// reset and must parse a clean reply again).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "sluice/detail/redis_reader.hpp"
#include "sluice/redis/reply.hpp"

namespace {

// Walks a reply tree so every element is touched (ASan sees any bad conversion).
std::size_t weigh(const sluice::redis::reply& r, int depth = 0) {
  if (depth > 64) std::abort();  // hiredis nests at most 7 levels
  std::size_t total = r.str().size() + 1;
  for (const auto& e : r.elements()) total += weigh(e, depth + 1);
  return total;
}

void parse(const std::uint8_t* data, std::size_t size, std::size_t chunk) {
  sluice::detail::resp_reader reader;
  std::size_t pos = 0;
  while (pos < size) {
    const std::size_t n = chunk < size - pos ? chunk : size - pos;
    if (!reader.feed(reinterpret_cast<const char*>(data) + pos, n)) return;
    pos += n;
    for (;;) {
      sluice::redis::reply r;
      const auto res = reader.next(&r, (pos & 1) != 0);
      if (res == sluice::detail::resp_reader::result::need_more) break;
      if (res == sluice::detail::resp_reader::result::protocol_error) {
        if (reader.error_text().empty()) std::abort();
        reader.reset();
        if (!reader.feed(":1\r\n", 4)) std::abort();
        sluice::redis::reply one;
        if (reader.next(&one) != sluice::detail::resp_reader::result::reply) std::abort();
        if (!(one == sluice::redis::reply::integer(1))) std::abort();
        return;
      }
      (void)weigh(r);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t chunk = 1 + data[0] % 17;
  ++data;
  --size;
  parse(data, size, size == 0 ? 1 : size);     // one read
  parse(data, size, chunk);                    // many small reads
  if (size > 1) parse(data, size / 2, chunk);  // truncated
  return 0;
}
