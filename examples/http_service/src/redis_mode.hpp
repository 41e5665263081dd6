// redis_mode.hpp: sluice-service with `--redis URL`: one Redis shared by every instance holds the
// users (hashes `user:<id>`, fields `name` and `email`), the /api/data pages (`SET ... EX`) and
// the per-client rate limits (sluice::redis::gcra_limiter), so that N instances behind a proxy
// answer the same data and enforce one quota per client.
//
// The Redis client runs on its own I/O thread. A keeper coroutine there (re)connects with paced
// backoff and checks Redis every half second; each time Redis comes (back) up, or has lost the
// seeding marker (`sluice:users-seeded:<N>`: a Redis that restarted empty), it seeds users
// 1..--seed-users that are missing (HSET only where the key is absent: existing data is kept).
// Handlers co_await commands from their own loop: the reply resumes them there, nothing blocks a
// loop.
//
// When Redis is down, commands fail at once (`unavailable`; a stalled server: after
// --redis-timeout-ms): /users falls back to the users cache (STALE) or 503 + Retry-After behind
// the circuit breaker, /api/data serves its last local copy or a freshly built page (kept only
// locally, for a second), and the rate limiter decides with a local limiter per client (fail open
// to a per-instance quota).
//
// Thread safety: every member may be called concurrently from any loop.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <absl/status/statusor.h>
#include <boost/asio/awaitable.hpp>

#include "primitives.hpp"
#include "service.hpp"
#include "user_store.hpp"

namespace service {

class redis_mode {
 public:
  // Builds a page's JSON body (handlers.cpp's build_page).
  using page_builder = std::string (*)(std::int64_t page);

  // Parses a.cfg.redis_url, starts the Redis thread and waits up to `wait` for the first
  // connection and seeding, then returns either way (a Redis that is down at start-up is
  // retried in the background; /readyz says 503 until it answers). Registers the Redis metrics on
  // *a.metrics and the distributed limiter when a.cfg.rate_limit > 0. InvalidArgument for a bad
  // URL or limit.
  static absl::StatusOr<std::unique_ptr<redis_mode>> create(app& a, std::chrono::milliseconds wait);
  // Stops the keeper, closes the client and joins the Redis thread. Call after the loops stopped.
  ~redis_mode();
  redis_mode(const redis_mode&) = delete;
  redis_mode& operator=(const redis_mode&) = delete;

  // Returns a store reading hashes `user:<id>` through this client (asynchronous: async_get).
  // The store must not outlive this object.
  std::unique_ptr<user_store> make_user_store();

  // Returns true while the keeper's last health check (EXISTS on the seeding marker) was answered
  // and the users are seeded.
  bool up() const;

  // Returns page `page` through the two-level page cache (sluice::redis::l2_cache): a fresh
  // local copy (at most 1 s old), else Redis (key `sluice:page:<page>`), else `build(page)`, SET
  // in Redis with the cache TTL (EX 60 by default) before it is returned. Concurrent misses of a
  // page in this process share one Redis lookup and one build (single flight). While Redis is
  // down: the last local copy (stale), else a freshly built page. `x_cache` is set to "HIT"
  // (either level, or the stale local copy during an outage) or "MISS" (built). Unavailable only
  // if even that fails.
  boost::asio::awaitable<absl::StatusOr<body_ptr>> get_page(std::int64_t page, page_builder build,
                                                            const char*& x_cache);

  // Returns true if the distributed limiter is on (--rate-limit > 0).
  bool limits_requests() const;
  // Decides whether `client` may make one more request, against the quota shared by every
  // instance using this Redis; on refusal fills `res` with the 429 answer and returns false.
  // While Redis is down, decides with this instance's local limiter for `client`.
  boost::asio::awaitable<bool> admit(std::string_view client, response& res);

  // The state behind it (redis_mode.cpp only).
  struct impl;

 private:
  explicit redis_mode(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

}  // namespace service
