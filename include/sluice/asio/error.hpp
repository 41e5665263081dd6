// sluice/asio/error.hpp
//
// The `boost::system::error_code` form of sluice's errors, for Asio completion handlers. Every
// sluice asynchronous operation completes with an error_code first; its values mirror
// `absl::StatusCode` one to one (`sluice::asio::error::unavailable` is
// absl::StatusCode::kUnavailable and so on), so the two forms convert without losing the reason.
//
//   error                 meaning in sluice
//   unavailable           breaker open, pool closed, backend down
//   resource_exhausted    rate limited, pool exhausted, queue full, bulkhead full
//   deadline_exceeded     the caller's deadline passed, or would pass before the work could start
//   cancelled             the operation was cancelled or its owner shut down
//   invalid_argument      bad options or arguments
//
// Thread safety: everything here is stateless or immutable.
//
// Example:
//   auto [ec, lease] = co_await pool.async_acquire(deadline, as_tuple(use_awaitable));
//   if (ec == sluice::asio::error::resource_exhausted) { ... answer 503 ... }
#pragma once

#include <string>
#include <type_traits>

#include "absl/status/status.h"
#include <boost/system/error_code.hpp>

namespace sluice::asio {

// Error values of the sluice category; numerically equal to absl::StatusCode.
enum class error {
  cancelled = 1,
  unknown = 2,
  invalid_argument = 3,
  deadline_exceeded = 4,
  not_found = 5,
  already_exists = 6,
  permission_denied = 7,
  resource_exhausted = 8,
  failed_precondition = 9,
  aborted = 10,
  out_of_range = 11,
  unimplemented = 12,
  internal = 13,
  unavailable = 14,
  data_loss = 15,
  unauthenticated = 16,
};

namespace detail {
class error_category_impl final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "sluice"; }
  std::string message(int ev) const override {
    return absl::StatusCodeToString(static_cast<absl::StatusCode>(ev));
  }
};
}  // namespace detail

// Returns the sluice error category (a single instance for the whole program).
inline const boost::system::error_category& error_category() noexcept {
  static const detail::error_category_impl instance;
  return instance;
}

// Makes an error_code of the sluice category.
inline boost::system::error_code make_error_code(error e) noexcept {
  return {static_cast<int>(e), error_category()};
}

// Converts a status to an error_code: OK becomes the empty error_code, any other code the sluice
// error of the same number. The message is not carried.
inline boost::system::error_code to_error_code(const absl::Status& status) noexcept {
  if (status.ok()) return {};
  return make_error_code(static_cast<error>(status.code()));
}

// Converts an error_code to a status. Sluice errors keep their code; Asio's operation_aborted
// becomes Cancelled, its timed_out DeadlineExceeded; anything else is Unavailable (I/O failures)
// with the error's message.
inline absl::Status to_status(const boost::system::error_code& ec) {
  if (!ec) return absl::OkStatus();
  if (ec.category() == error_category()) {
    return absl::Status(static_cast<absl::StatusCode>(ec.value()), ec.message());
  }
  if (ec == boost::system::errc::operation_canceled) return absl::CancelledError(ec.message());
  if (ec == boost::system::errc::timed_out) return absl::DeadlineExceededError(ec.message());
  return absl::UnavailableError(ec.message());
}

}  // namespace sluice::asio

template <>
struct boost::system::is_error_code_enum<sluice::asio::error> : std::true_type {};
