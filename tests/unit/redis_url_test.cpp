#include "sluice/redis/url.hpp"

#include "catch.hpp"

using sluice::redis::endpoint;
using sluice::redis::parse_url;

TEST_CASE("redis_url: host only takes the defaults", "[redis_url]") {
  auto ep = parse_url("redis://cache.internal");
  REQUIRE(ep.ok());
  CHECK(ep->host == "cache.internal");
  CHECK(ep->port == 6379);
  CHECK(ep->password.empty());
  CHECK(ep->user.empty());
  CHECK(ep->db == 0);
}

TEST_CASE("redis_url: password, port and database", "[redis_url]") {
  auto ep = parse_url("redis://:s3cret@10.0.0.5:6380/2");
  REQUIRE(ep.ok());
  CHECK(ep->host == "10.0.0.5");
  CHECK(ep->port == 6380);
  CHECK(ep->user.empty());
  CHECK(ep->password == "s3cret");
  CHECK(ep->db == 2);
}

TEST_CASE("redis_url: ACL user, IPv6 literal, percent-escapes", "[redis_url]") {
  auto ep = parse_url("redis://app:p%40ss%3Aword@[::1]:7000/15");
  REQUIRE(ep.ok());
  CHECK(ep->host == "::1");
  CHECK(ep->port == 7000);
  CHECK(ep->user == "app");
  CHECK(ep->password == "p@ss:word");
  CHECK(ep->db == 15);

  auto bare = parse_url("redis://onlypassword@h");
  REQUIRE(bare.ok());
  CHECK(bare->password == "onlypassword");
  CHECK(bare->user.empty());

  auto v6 = parse_url("redis://[fe80::1]");
  REQUIRE(v6.ok());
  CHECK(v6->host == "fe80::1");
  CHECK(v6->port == 6379);
}

TEST_CASE("redis_url: malformed URLs are InvalidArgument", "[redis_url]") {
  const char* bad =
      GENERATE("http://h:1", "rediss://h", "redis://", "redis://:pw@", "redis://h:", "redis://h:0",
               "redis://h:65536", "redis://h:12x", "redis://h/x", "redis://h/1/2", "redis://h/-1",
               "redis://[::1", "redis://[::1]x", "redis://:p%4@h", "redis://:p%zz@h",
               "redis://h:99999999999");
  INFO(bad);
  auto ep = parse_url(bad);
  REQUIRE_FALSE(ep.ok());
  CHECK(ep.status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("redis_url: error messages name the faulty part", "[redis_url]") {
  CHECK(std::string(parse_url("redis://h:x").status().message()).find("port") != std::string::npos);
  CHECK(std::string(parse_url("redis://h/x").status().message()).find("database") !=
        std::string::npos);
  CHECK(std::string(parse_url("tcp://h").status().message()).find("scheme") != std::string::npos);
}
