// sluice/redis/gcra_limiter.hpp
//
// `sluice::redis::gcra_limiter` is the GCRA rate limiter of sluice/gcra_limiter.hpp with its state
// in Redis, so that every instance of a service shares one quota per key. Each decision is one
// Lua script run atomically on the server (EVALSHA, EVAL on NOSCRIPT) that reads the server's
// clock (`TIME`): clients' clocks never matter, and two clients asking at once are serialized by
// Redis. The script performs the steps of sluice/detail/gcra.hpp (the in-process limiter's
// arithmetic) in microseconds, so it decides exactly as the in-process limiter does whenever the
// emission interval (period / rate) is a whole number of microseconds; otherwise the interval is
// rounded down to one.
//
// The stored state is one string per key (`key_prefix + key`, the TAT in server microseconds) that
// expires when the limiter would be full again, so idle keys cost nothing.
//
// When Redis is unreachable (connection down, timeout, LOADING/BUSY), `when_unreachable` decides:
// `local` (default) decides with an in-process sluice::gcra_limiter per key, so each instance
// enforces the quota alone (the total may reach instances x quota, but abuse is still bounded);
// `closed` refuses, for quotas that must never be exceeded (the completion carries the error).
//
// Completion: void(boost::system::error_code, sluice::rate_limit_result). The error_code is empty
// for a decision (by Redis or, when unreachable and `local`, by the local limiter); with `closed`,
// the Redis failure (the result then refuses with retry_after 0). A script error (e.g. the key
// holds another type) completes with sluice::asio::error::internal.
//
// Thread safety: async_acquire may be called concurrently from any thread. The connection (or
// the sluice::redis::connection_pool it was created with) must outlive the limiter's operations.
// Time: Redis server time for Redis decisions; std::chrono::steady_clock for local ones.
//
// Example:
//   auto limiter = sluice::redis::gcra_limiter::create(
//       conn, {.limits = {.rate = 100, .burst = 20}});
//   auto [ec, r] = co_await (*limiter)->async_acquire(client_ip, 1, as_tuple(use_awaitable));
//   if (!r.allowed) co_return reply_429(r.retry_after);
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include <boost/asio/compose.hpp>
#include <boost/system/error_code.hpp>

#include "sluice/asio/error.hpp"
#include "sluice/detail/mutex.hpp"
#include "sluice/gcra_limiter.hpp"
#include "sluice/rate_limit.hpp"
#include "sluice/redis/commands.hpp"
#include "sluice/redis/connection.hpp"
#include "sluice/redis/error.hpp"
#include "sluice/redis/pool.hpp"

namespace sluice::redis {

// Options of the distributed limiter.
struct gcra_limiter_options {
  // Sets rate, period and burst, as for sluice::gcra_limiter (validated by create()).
  rate_limit_options limits;
  // Prefixes every Redis key, so limiters of different quotas do not share state.
  // "sluice:gcra:" names the owner when someone lists the keyspace.
  std::string key_prefix = "sluice:gcra:";
  // Chooses what happens when Redis cannot decide (see the file comment).
  enum class unreachable { local, closed } when_unreachable = unreachable::local;
  // Bounds the local fallback limiters (one per key); beyond it they are all dropped and start
  // full again. 10000: enough for the hot keys of an outage, a few MB at most.
  std::size_t max_local_keys = 10000;
};

// The Lua port of detail::gcra::decide (microseconds; see sluice/detail/gcra.hpp).
// KEYS[1] = state key; ARGV = emission interval (us), burst, n.
// Returns {verdict (0 allowed, 1 limited, 2 exceeds burst), remaining, retry_after (us, -1 never),
// reset_after (us)}.
inline const script& gcra_script() {
  static const script lua(R"lua(
local T = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local capacity = burst * T
local base = math.max(tat, now)
local function remaining_at(b)
  local room = now + capacity - b
  if room <= 0 then return 0 end
  return math.floor(room / T)
end
if n > burst then
  return {2, remaining_at(base), -1, base - now}
end
local new_tat = base + n * T
local allow_at = new_tat - capacity
if allow_at > now then
  return {1, remaining_at(base), allow_at - now, base - now}
end
if n > 0 then
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX',
             string.format('%.0f', math.floor((new_tat - now) / 1000) + 1))
end
return {0, remaining_at(new_tat), 0, new_tat - now}
)lua");
  return lua;
}

// A distributed GCRA limiter (see the file comment).
class gcra_limiter {
 public:
  using options = gcra_limiter_options;

  // Returns a limiter using `conn`, or InvalidArgument when `opts.limits.validate()` fails.
  static absl::StatusOr<std::unique_ptr<gcra_limiter>> create(connection& conn, options opts) {
    if (auto s = opts.limits.validate(); !s.ok()) return s;
    return std::unique_ptr<gcra_limiter>(new gcra_limiter(&conn, nullptr, std::move(opts)));
  }

  // Returns a limiter running its script through `pool` (each decision on a pooled connection),
  // or InvalidArgument when `opts.limits.validate()` fails. The pool must outlive the limiter's
  // operations. A pool that fails fast (backend down) counts as Redis unreachable.
  static absl::StatusOr<std::unique_ptr<gcra_limiter>> create(connection_pool& pool, options opts) {
    if (auto s = opts.limits.validate(); !s.ok()) return s;
    return std::unique_ptr<gcra_limiter>(new gcra_limiter(nullptr, &pool, std::move(opts)));
  }

  // Returns the options.
  [[nodiscard]] const options& get_options() const noexcept { return options_; }

  // Admits `n` units for `key` (binary-safe) or refuses; n = 0 only asks. Completion:
  // void(error_code, rate_limit_result).
  template <class CompletionToken>
  auto async_acquire(std::string_view key, std::uint64_t n, CompletionToken&& token) {
    std::vector<std::string> keys{options_.key_prefix + std::string(key)};
    std::vector<std::string> args{std::to_string(interval_us_), std::to_string(burst_),
                                  std::to_string(n)};
    return boost::asio::async_compose<CompletionToken,
                                      void(boost::system::error_code, rate_limit_result)>(
        acquire_op{this, std::string(key), n, std::move(keys), std::move(args)}, token,
        conn_ != nullptr ? conn_->get_executor() : pool_->get_executor());
  }

  // Decides with the local fallback limiter of `key` (what async_acquire does when Redis is
  // unreachable and `when_unreachable` is local). Takes the fallback map's lock.
  rate_limit_result acquire_local(std::string_view key, std::uint64_t n)
      ABSL_LOCKS_EXCLUDED(local_mu_) {
    // One lock for lookup and decision: only taken during an outage, where simplicity beats
    // the lock-free path, and it keeps a clear() from freeing a limiter in use.
    detail::mutex_lock lock(local_mu_);
    auto it = local_.find(absl::string_view(key.data(), key.size()));
    if (it == local_.end()) {
      if (local_.size() >= options_.max_local_keys) local_.clear();
      it = local_
               .emplace(std::string(key), std::make_unique<sluice::gcra_limiter<>>(options_.limits))
               .first;
    }
    return it->second->try_acquire(n);
  }

 private:
  gcra_limiter(connection* conn, connection_pool* pool, options opts)
      : conn_(conn), pool_(pool), options_(std::move(opts)) {
    const auto interval_ns = options_.limits.emission_interval().count();
    interval_us_ = interval_ns / 1000 < 1 ? 1 : interval_ns / 1000;
    burst_ = static_cast<std::int64_t>(options_.limits.burst);
  }

  rate_limit_result from_reply(const reply& r, bool& ok) const {
    rate_limit_result out;
    out.limit = static_cast<std::uint64_t>(burst_);
    ok = r.is_array() && r.elements().size() == 4;
    if (!ok) return out;
    const auto& e = r.elements();
    const std::int64_t verdict = e[0].as_integer();
    out.allowed = verdict == 0;
    out.remaining = static_cast<std::uint64_t>(e[1].as_integer() < 0 ? 0 : e[1].as_integer());
    const std::int64_t retry_us = e[2].as_integer();
    out.retry_after = retry_us < 0 ? rate_limit_result::never()
                                   : std::chrono::nanoseconds(std::chrono::microseconds(retry_us));
    out.reset_after = std::chrono::microseconds(e[3].as_integer());
    return out;
  }

  struct acquire_op {
    gcra_limiter* self;
    std::string key;
    std::uint64_t n;
    std::vector<std::string> keys;
    std::vector<std::string> args;

    template <class Self>
    void operator()(Self& op) {
      if (self->conn_ != nullptr) {
        async_evalsha(*self->conn_, gcra_script(), keys, args, std::move(op));
      } else {
        async_evalsha(*self->pool_, gcra_script(), keys, args, std::move(op));
      }
    }

    template <class Self>
    void operator()(Self& op, boost::system::error_code ec, reply r) {
      const outcome o = classify(ec, r);
      if (o == outcome::success) {
        bool ok = false;
        rate_limit_result result = self->from_reply(r, ok);
        if (!ok) {
          op.complete(sluice::asio::make_error_code(sluice::asio::error::internal),
                      rate_limit_result{});
          return;
        }
        op.complete(boost::system::error_code{}, result);
        return;
      }
      if (o == outcome::rejected) {
        op.complete(sluice::asio::make_error_code(sluice::asio::error::internal),
                    rate_limit_result{});
        return;
      }
      if (o == outcome::cancelled) {
        op.complete(ec, rate_limit_result{});
        return;
      }
      // failure or retryable: Redis cannot decide.
      if (!ec) ec = sluice::asio::make_error_code(sluice::asio::error::unavailable);
      if (self->options_.when_unreachable == options::unreachable::local) {
        op.complete(boost::system::error_code{}, self->acquire_local(key, n));
        return;
      }
      rate_limit_result refused;
      refused.limit = static_cast<std::uint64_t>(self->burst_);
      op.complete(ec, refused);
    }
  };

  // The client: exactly one is set.
  connection* conn_;
  connection_pool* pool_;
  options options_;
  std::int64_t interval_us_ = 1;
  std::int64_t burst_ = 1;
  detail::mutex local_mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<sluice::gcra_limiter<>>> local_
      ABSL_GUARDED_BY(local_mu_);
};

}  // namespace sluice::redis
