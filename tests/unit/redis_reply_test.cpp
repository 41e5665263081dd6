#include <string>
#include <vector>

#include "sluice/detail/redis_reader.hpp"
#include "sluice/detail/redis_sha1.hpp"
#include "sluice/redis/command.hpp"
#include "sluice/redis/commands.hpp"
#include "sluice/redis/reply.hpp"

#include "catch.hpp"

using sluice::redis::command;
using sluice::redis::reply;
using sluice::redis::reply_kind;
using reader = sluice::detail::resp_reader;

TEST_CASE("redis_reply: kinds and accessors", "[redis_reply]") {
  CHECK(reply().is_nil());
  CHECK(reply::integer(-7).as_integer() == -7);
  CHECK(reply::string(std::string("a\0b", 3)).str().size() == 3);
  CHECK(reply::status("OK").is_status("OK"));
  CHECK_FALSE(reply::string("OK").is_status("OK"));
  const reply err = reply::error("WRONGTYPE Operation against a key");
  CHECK(err.is_error());
  CHECK(err.error_prefix() == "WRONGTYPE");
  CHECK(reply::error("NOSCRIPT").error_prefix() == "NOSCRIPT");
  CHECK(reply::string("x").error_prefix().empty());
  const reply arr = reply::array({reply::integer(1), reply::nil()});
  CHECK(arr.kind() == reply_kind::array);
  CHECK(arr.elements().size() == 2);
  CHECK(arr == reply::array({reply::integer(1), reply()}));
  CHECK_FALSE(arr == reply::array({reply::integer(2), reply()}));
}

TEST_CASE("redis_reply: commands are encoded as binary-safe RESP", "[redis_reply]") {
  CHECK(command{"PING"}.wire() == "*1\r\n$4\r\nPING\r\n");
  const std::string value("v\0\r\n", 4);
  static constexpr char expected[] = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\nv\0\r\n\r\n";
  CHECK(command{"SET", "k", value}.wire() == std::string_view(expected, sizeof(expected) - 1));
  std::vector<std::string> many(40, "a");
  many[0] = "DEL";
  const command big = command::from_args(many);
  CHECK(big.wire().substr(0, 5) == "*40\r\n");
}

TEST_CASE("redis_reply: SET options pick EX, PX, NX, XX", "[redis_reply]") {
  using sluice::redis::make_set;
  using sluice::redis::set_options;
  CHECK(make_set("k", "v").wire() == command{"SET", "k", "v"}.wire());
  CHECK(make_set("k", "v", {.ttl = std::chrono::seconds(30)}).wire() ==
        command{"SET", "k", "v", "EX", "30"}.wire());
  CHECK(make_set("k", "v", {.ttl = std::chrono::milliseconds(1500)}).wire() ==
        command{"SET", "k", "v", "PX", "1500"}.wire());
  CHECK(make_set("k", "v", {.when = set_options::condition::if_absent}).wire() ==
        command{"SET", "k", "v", "NX"}.wire());
  CHECK(make_set("k", "v",
                 {.ttl = std::chrono::seconds(1), .when = set_options::condition::if_present})
            .wire() == command{"SET", "k", "v", "EX", "1", "XX"}.wire());
}

TEST_CASE("redis_reply: the reader parses every kind, split at any byte", "[redis_reply]") {
  static constexpr char wire[] =
      "+OK\r\n-ERR bad\r\n:42\r\n$-1\r\n$5\r\nhe\0lo\r\n*2\r\n:1\r\n*1\r\n$1\r\nx\r\n*0\r\n";
  const std::string bytes(wire, sizeof(wire) - 1);
  const std::vector<reply> expected = {
      reply::status("OK"),
      reply::error("ERR bad"),
      reply::integer(42),
      reply(),
      reply::string(std::string("he\0lo", 5)),
      reply::array({reply::integer(1), reply::array({reply::string("x")})}),
      reply::array({})};
  const std::size_t split = GENERATE(range<std::size_t>(0, 64));
  reader r;
  std::vector<reply> got;
  const std::size_t cut = std::min(split, bytes.size());
  REQUIRE(r.feed(bytes.data(), cut));
  for (;;) {
    reply out;
    auto res = r.next(&out);
    REQUIRE(res != reader::result::protocol_error);
    if (res == reader::result::need_more) break;
    got.push_back(out);
  }
  REQUIRE(r.feed(bytes.data() + cut, bytes.size() - cut));
  for (;;) {
    reply out;
    auto res = r.next(&out);
    REQUIRE(res != reader::result::protocol_error);
    if (res == reader::result::need_more) break;
    got.push_back(out);
  }
  CHECK(got == expected);
}

TEST_CASE("redis_reply: a protocol error is reported, reset recovers", "[redis_reply]") {
  reader r;
  REQUIRE(r.feed("?what\r\n", 7));
  reply out;
  CHECK(r.next(&out) == reader::result::protocol_error);
  CHECK_FALSE(r.error_text().empty());
  r.reset();
  REQUIRE(r.feed(":5\r\n", 4));
  CHECK(r.next(&out) == reader::result::reply);
  CHECK(out == reply::integer(5));
}

TEST_CASE("redis_reply: SHA-1 of scripts matches known digests", "[redis_reply]") {
  using sluice::detail::sha1_hex;
  CHECK(sha1_hex("") == "da39a3ee5e6b4b0d3255bfef95601890afd80709");
  CHECK(sha1_hex("abc") == "a9993e364706816aba3e25717850c26c9cd0d89d");
  CHECK(sha1_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
  CHECK(sha1_hex(std::string(1000000, 'a')) == "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
  // What `redis-cli SCRIPT LOAD "return 1"` answers.
  CHECK(sluice::redis::script("return 1").sha1() == "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
}
