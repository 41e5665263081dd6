#include <boost/asio/error.hpp>

#include "sluice/redis/error.hpp"

#include "catch.hpp"

using sluice::redis::classify;
using sluice::redis::outcome;
using sluice::redis::reply;

TEST_CASE("redis_error: transport errors and timeouts are failures", "[redis_error]") {
  CHECK(classify(boost::asio::error::connection_reset, reply()) == outcome::failure);
  CHECK(classify(boost::asio::error::eof, reply()) == outcome::failure);
  CHECK(classify(sluice::asio::error::deadline_exceeded, reply()) == outcome::failure);
  CHECK(classify(sluice::asio::error::unavailable, reply()) == outcome::failure);
  CHECK(classify(sluice::asio::error::data_loss, reply()) == outcome::failure);
}

TEST_CASE("redis_error: cancellation is neither success nor failure", "[redis_error]") {
  CHECK(classify(boost::asio::error::operation_aborted, reply()) == outcome::cancelled);
  CHECK(classify(sluice::asio::error::cancelled, reply()) == outcome::cancelled);
}

TEST_CASE("redis_error: LOADING, BUSY, TRYAGAIN are retryable; WRONGTYPE is not", "[redis_error]") {
  const char* retryable = GENERATE("LOADING Redis is loading the dataset in memory",
                                   "BUSY Redis is busy running a script", "TRYAGAIN Multiple keys",
                                   "MASTERDOWN Link with MASTER is down");
  CHECK(classify({}, reply::error(retryable)) == outcome::retryable);
  CHECK(sluice::redis::to_status({}, reply::error(retryable)).code() ==
        absl::StatusCode::kUnavailable);
  CHECK(classify({}, reply::error("WRONGTYPE Operation against a key")) == outcome::rejected);
  CHECK(classify({}, reply::error("ERR unknown command")) == outcome::rejected);
  CHECK(classify({}, reply::nil()) == outcome::success);
  CHECK(classify({}, reply::string("v")) == outcome::success);
}

TEST_CASE("redis_error: to_status maps codes", "[redis_error]") {
  using sluice::redis::to_status;
  CHECK(to_status({}, reply::status("OK")).ok());
  CHECK(to_status({}, reply::error("WRONGTYPE x")).code() == absl::StatusCode::kFailedPrecondition);
  CHECK(to_status({}, reply::error("NOAUTH x")).code() == absl::StatusCode::kUnauthenticated);
  CHECK(to_status({}, reply::error("NOPERM x")).code() == absl::StatusCode::kPermissionDenied);
  CHECK(to_status({}, reply::error("ERR syntax")).code() == absl::StatusCode::kInvalidArgument);
  CHECK(to_status(sluice::asio::error::deadline_exceeded, reply()).code() ==
        absl::StatusCode::kDeadlineExceeded);
  CHECK(to_status(boost::asio::error::operation_aborted, reply()).code() ==
        absl::StatusCode::kCancelled);
  CHECK(to_status(boost::asio::error::connection_refused, reply()).code() ==
        absl::StatusCode::kUnavailable);
}
