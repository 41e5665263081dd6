// sluice/redis/error.hpp
//
// What a Redis call's outcome means for sluice's resilience policies (breaker, retry), and its
// absl::Status form.
//
//   outcome     when                                              breaker        retry
//   success     a reply that is not an error                      success        -
//   failure     connection refused/lost, protocol error, timeout  failure        yes (other conn.)
//   retryable   -LOADING, -BUSY, -TRYAGAIN, -MASTERDOWN           failure        yes, after a pause
//   rejected    any other error reply (-WRONGTYPE, -ERR, ...)     success (the   no: the request
//                                                                 server works)  is wrong
//   cancelled   the caller cancelled or closed the connection     ignore         no
//
// Pool-level errors of sluice::redis::connection_pool (`unavailable`: backend down or pool
// closed, `deadline_exceeded`: no connection in time, `resource_exhausted`: waiter queue full)
// are failures too. `breaks_connection(ec)` says whether a connection that completed a command
// with `ec` should be discarded rather than reused.
//
// Thread safety: stateless.
//
// Example:
//   auto [ec, r] = co_await redis::async_get(conn, key, as_tuple(use_awaitable));
//   switch (redis::classify(ec, r)) {
//     case redis::outcome::failure: permit.record_failure(); break;
//     ...
//   }
#pragma once

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include <boost/asio/error.hpp>
#include <boost/system/error_code.hpp>

#include "sluice/asio/error.hpp"
#include "sluice/redis/reply.hpp"

namespace sluice::redis {

// The meaning of a call's outcome (see the file comment).
enum class outcome { success, failure, retryable, rejected, cancelled };

// Classifies an error reply's prefix word alone ("LOADING", "WRONGTYPE").
[[nodiscard]] inline outcome classify_error_prefix(std::string_view prefix) noexcept {
  if (prefix == "LOADING" || prefix == "BUSY" || prefix == "TRYAGAIN" || prefix == "MASTERDOWN") {
    return outcome::retryable;
  }
  return outcome::rejected;
}

// Classifies a completion (error_code, reply).
[[nodiscard]] inline outcome classify(const boost::system::error_code& ec,
                                      const reply& r) noexcept {
  if (ec) {
    if (ec == boost::asio::error::operation_aborted ||
        ec == sluice::asio::make_error_code(sluice::asio::error::cancelled)) {
      return outcome::cancelled;
    }
    return outcome::failure;
  }
  if (r.is_error()) return classify_error_prefix(r.error_prefix());
  return outcome::success;
}

// Returns whether a command's error_code means its connection should not be reused: anything
// but success and the caller's own cancellation (operation_aborted). Socket errors, `data_loss`
// (a protocol error), `unavailable` / `cancelled` (the connection is down or was closed) and
// `deadline_exceeded` (the server may be stalled; a late reply would still be drained, but a
// fresh connection is the safer bet) all do. A Redis error reply is not an error_code and never
// does. sluice::redis::connection_pool discards leases on these.
[[nodiscard]] inline bool breaks_connection(const boost::system::error_code& ec) noexcept {
  return ec && ec != boost::asio::error::operation_aborted;
}

// Converts a completion to a status: OK for a non-error reply; the error_code's status
// (sluice::asio::to_status: timeouts DeadlineExceeded, I/O Unavailable, cancellation Cancelled);
// retryable error replies Unavailable; WRONGTYPE FailedPrecondition; NOAUTH/WRONGPASS
// Unauthenticated; NOPERM PermissionDenied; other error replies InvalidArgument. The message is
// Redis's error text.
[[nodiscard]] inline absl::Status to_status(const boost::system::error_code& ec, const reply& r) {
  if (ec) return sluice::asio::to_status(ec);
  if (!r.is_error()) return absl::OkStatus();
  const std::string_view prefix = r.error_prefix();
  if (classify_error_prefix(prefix) == outcome::retryable) return absl::UnavailableError(r.str());
  if (prefix == "WRONGTYPE") return absl::FailedPreconditionError(r.str());
  if (prefix == "NOAUTH" || prefix == "WRONGPASS") return absl::UnauthenticatedError(r.str());
  if (prefix == "NOPERM") return absl::PermissionDeniedError(r.str());
  return absl::InvalidArgumentError(r.str());
}

}  // namespace sluice::redis
