// user_store.hpp: where /users/:id reads from. The embedded store (the default, no Redis) holds
// users 1..N in memory; its fault switch makes every read fail so tests can drive the circuit
// breaker and the stale-cache fallback. The Redis store (redis_mode.cpp, hashes `user:<id>`) is
// asynchronous: /users/:id is then a coroutine route that co_awaits async_get() on its loop.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <absl/status/statusor.h>
#include <boost/asio/awaitable.hpp>

namespace service {

struct user {
  std::int64_t id = 0;
  std::string name;
  std::string email;
};

// Thread safety: get() and ping() may be called concurrently from every loop thread.
class user_store {
 public:
  virtual ~user_store() = default;
  // Returns the user, std::nullopt if there is none; Unavailable when the store cannot answer.
  // Synchronous stores only (see synchronous()); an asynchronous one returns Unimplemented.
  virtual absl::StatusOr<std::optional<user>> get(std::int64_t id) = 0;
  // Returns what get() returns, without blocking the calling loop: the default runs get().
  // Resumes on the caller's executor.
  virtual boost::asio::awaitable<absl::StatusOr<std::optional<user>>> async_get(std::int64_t id);
  // Returns true if get() answers at once (no I/O): the routes then call it directly, which
  // costs no coroutine frame per request.
  virtual bool synchronous() const { return true; }
  // Returns OK if the store can answer reads now.
  virtual absl::Status ping() = 0;
  // Returns "embedded" or "redis", for /readyz.
  virtual std::string_view kind() const = 0;
};

// Creates the in-process store seeded with users 1..seed_users ("user<id>",
// "user<id>@example.com"). While `fault_file` is non-empty and that file exists, every call
// returns Unavailable (one stat() per call; the switch is for tests).
std::unique_ptr<user_store> make_embedded_store(int seed_users, std::string fault_file);

}  // namespace service
