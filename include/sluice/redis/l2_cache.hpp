// sluice/redis/l2_cache.hpp
//
// `sluice::redis::l2_cache<Value>` is a two-level cache: a local, in-process `sluice::cache`
// (TTL + W-TinyLFU, level 1) in front of Redis (level 2, shared by every instance of a service).
// A read is answered by the local copy when it is fresh, else by Redis (which then fills the local
// copy), else by your loader (whose value is written to both levels).
//
//   async_get(key)                  local -> Redis -> "not found" (std::nullopt); each local
//                                   miss is its own Redis lookup (no single flight)
//   async_get_or_load(key, loader)  local -> Redis -> loader, single flight per key: concurrent
//                                   misses of one key in this process cause ONE Redis lookup and
//                                   at most ONE load; the other callers wait for its result
//   async_put(key, value)           SET in Redis (with its TTL), then the local copy, then PUBLISH
//   async_erase(key)                the local copy, DEL in Redis, then PUBLISH
//
// Times to live: Redis keeps a value `redis_ttl` (SET ... EX/PX). A local copy lives `local_ttl`, but
// never longer than the Redis copy it was read from had left (the lookup reads GET and PTTL in one
// script), so an instance never serves a value Redis has already dropped. An expired local copy is
// kept `max_stale` longer for one purpose only: to be served, marked stale, while Redis is down.
//
// Redis failures: every Redis call goes through a `sluice::circuit_breaker` (connection errors,
// timeouts and LOADING/BUSY are failures; error replies such as WRONGTYPE are not: the server
// works). When a lookup fails or the breaker is open, the cache falls back to the local copy,
// fresh or stale (`l2_source::stale`: answer `X-Cache: STALE`); with no local copy it fails fast
// with `sluice::asio::error::unavailable` and does not call the loader, unless
// `load_when_unavailable` is set (by default a Redis outage must not turn every instance's misses
// into backend load at once). A loader failure also falls back to a stale copy when there is one.
//
// Invalidation across instances (optional): with `invalidation_channel` set, async_put and
// async_erase PUBLISH "<instance id>:<key>" on it. Each instance runs `async_listen` on a
// dedicated `sluice::redis::subscriber`; it erases the local copy of every key another instance
// changed and ignores its own messages. Pub/sub does not store messages: while a subscriber is
// disconnected, other instances' local copies can stay stale for at most `local_ttl`.
//
// Values: encoded with `Codec`, an object with
//   std::string encode(const Value&) const;
//   absl::StatusOr<Value> decode(std::string_view bytes) const;
// `l2_codec<std::string>` (the default for std::string) stores the bytes as they are. A value
// that fails to decode counts as a miss (and is overwritten by the next load). Value must be
// copyable and default-constructible (errors complete with a default `l2_result`); use a
// shared_ptr for big values, since the local level returns copies.
//
// Client: `Client` is anything with `async_exec(command, std::chrono::milliseconds timeout,
// token)` completing with void(boost::system::error_code, sluice::redis::reply) and
// `get_executor()`: a `sluice::redis::connection` (the default) or a pool of them. The cache holds
// a reference: the client must outlive the cache.
//
// Completion: async_get void(error_code, std::optional<l2_result<Value>>) (nullopt: not found);
// async_get_or_load void(error_code, l2_result<Value>) (a loader's NotFound is
// `sluice::asio::error::not_found`); async_put, async_erase, async_subscribe_invalidations and
// async_listen void(error_code). Any completion token (callbacks, use_awaitable, use_future,
// deferred). The handler runs on its associated executor (else the client's), never inside the
// initiating function; a work guard is held on it while the operation runs. A local hit completes
// with one post, without touching Redis.
//
// The loader: `loader(const std::string& key)` returns `boost::asio::awaitable<
// absl::StatusOr<Value>>` (as for sluice::asio::get_or_load). It runs on the client's executor,
// once per flight; it may use the key until it finishes. NotFound is returned to every waiter and
// not cached (neither level); another error falls back to a stale copy, else is returned as its
// error_code. A loader that throws counts as absl::InternalError. After a successful load the
// value is SET in Redis before the callers complete (one SET per flight), so when
// async_get_or_load completes, other instances can read the value. Single flight is per process:
// instances that miss the same key at the same moment each load it once (the last SET wins).
//
// Errors: `unavailable` (Redis failed -- connection lost, command timeout, LOADING -- or the
// breaker is open, and there is no local copy), the client's error when the client cancelled the
// command (e.g. it was closed), the status of a Redis error reply (sluice::redis::to_status), the
// loader's status. async_put failing leaves Redis unchanged as far as the caller knows; it erases
// the local copy, so this instance does not keep serving a value it was told is outdated.
// async_erase erases the local copy even when Redis fails (and reports the failure); other
// instances then keep theirs until their local TTL passes.
// Cancellation: none per operation; every Redis command is bounded by `command_timeout`, bound the
// loader with its own timeout.
//
// Thread safety: all member functions may be called concurrently from any thread. The cache must
// outlive its operations (it is not reference-counted): destroy it after the executor's work has
// finished. A put or erase that races with a load of the same key in this process may be
// overwritten locally by the loaded value (bounded by local_ttl).
// Time: local expiry and the breaker read the injected clock (default std::chrono::steady_clock);
// Redis TTLs are Redis's; command deadlines are the client's (real time).
// Cost: a local hit is one sluice::cache::get (lock-free, see sluice/cache.hpp) plus the post of
// the completion; a miss is a coroutine and one Redis round trip.
//
// Example:
//   auto l2 = sluice::redis::l2_cache<std::string>::create(
//       conn, {.redis_ttl = std::chrono::minutes(10), .local_ttl = std::chrono::seconds(30)});
//   auto [ec, r] = co_await (*l2)->async_get_or_load(
//       "user:42", [&](const std::string& k) { return db.async_find_user(k); },
//       as_tuple(use_awaitable));
//   if (!ec) respond(r.value, r.stale() ? "STALE" : r.hit() ? "HIT" : "MISS");  // X-Cache
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/error_code.hpp>

#include "sluice/asio/error.hpp"
#include "sluice/cache.hpp"
#include "sluice/circuit_breaker.hpp"
#include "sluice/detail/mutex.hpp"
#include "sluice/detail/random.hpp"
#include "sluice/redis/command.hpp"
#include "sluice/redis/commands.hpp"
#include "sluice/redis/connection.hpp"
#include "sluice/redis/error.hpp"
#include "sluice/redis/reply.hpp"
#include "sluice/redis/subscriber.hpp"

namespace sluice::detail {

// Internal; whether `client.async_exec(command, token)` exists (a client's own default deadline).
template <class Client, class Token, class = void>
struct l2_has_default_exec : std::false_type {};
template <class Client, class Token>
struct l2_has_default_exec<Client, Token,
                           std::void_t<decltype(std::declval<Client&>().async_exec(
                               std::declval<redis::command>(), std::declval<Token>()))>>
    : std::true_type {};

}  // namespace sluice::detail

namespace sluice::redis {

// Encodes values for Redis; specialize it, or pass your own Codec (see the file comment).
template <class Value>
struct l2_codec;

// Stores strings as they are (binary-safe).
template <>
struct l2_codec<std::string> {
  // Returns the bytes to store.
  [[nodiscard]] std::string encode(const std::string& value) const { return value; }
  // Returns the value the bytes stand for (never fails).
  [[nodiscard]] absl::StatusOr<std::string> decode(std::string_view bytes) const {
    return std::string(bytes);
  }
};

// Where a value came from.
enum class l2_source : std::uint8_t {
  local,   // the local copy, fresh
  redis,   // Redis (the local copy was filled from it)
  loaded,  // the loader (both levels were filled)
  stale,   // the local copy past its local TTL, served because Redis or the loader failed
};

// Returns the source's name ("local", "redis", "loaded", "stale").
constexpr const char* to_string(l2_source s) noexcept {
  switch (s) {
    case l2_source::local:
      return "local";
    case l2_source::redis:
      return "redis";
    case l2_source::loaded:
      return "loaded";
    case l2_source::stale:
      return "stale";
  }
  return "unknown";
}

// A value and where it came from.
template <class Value>
struct l2_result {
  // The value (default-constructed when the operation failed).
  Value value{};
  // Where it came from.
  l2_source source = l2_source::local;

  // Returns whether the value is a stale local copy.
  [[nodiscard]] bool stale() const noexcept { return source == l2_source::stale; }
  // Returns whether the value was cached at either level (not loaded, not stale): an HTTP
  // `X-Cache: HIT`.
  [[nodiscard]] bool hit() const noexcept {
    return source == l2_source::local || source == l2_source::redis;
  }
};

// How an l2_cache is configured. Validate with validate() (create() does).
struct l2_cache_options {
  // Prefixes every Redis key, so caches of different data do not collide. "sluice:l2:" names the
  // owner when someone lists the keyspace.
  std::string key_prefix = "sluice:l2:";
  // How long Redis keeps a value (SET ... PX). 10 min: long enough to absorb the misses of every
  // instance, short enough that a value nobody updates is refreshed from the source a few times
  // an hour. Must be > 0: a cache tier without TTLs only grows.
  std::chrono::milliseconds redis_ttl = std::chrono::minutes(10);
  // How long a local copy is fresh (never longer than its Redis copy had left). 30 s: saves the
  // Redis round trip for hot keys while bounding how long an instance that missed an invalidation
  // serves an old value. Must be > 0.
  std::chrono::milliseconds local_ttl = std::chrono::seconds(30);
  // How long past its local TTL a copy is kept to be served stale while Redis is down. 10 min:
  // rides out a Redis restart or failover; 0 disables stale serving.
  std::chrono::milliseconds max_stale = std::chrono::minutes(10);
  // Bounds the local level in entries. 10'000: the hot set of a typical service, a few MB.
  std::size_t max_local_entries = 10'000;
  // Bounds each Redis command. 200 ms: far above a healthy round trip (< 1 ms on a LAN), so only
  // a sick Redis hits it, and short enough that falling back to stale data is still fast.
  // 0: the client's default deadline.
  std::chrono::milliseconds command_timeout = std::chrono::milliseconds(200);
  // The breaker around Redis. Its defaults (trip at 50 % failures over 20+ calls, open 30 s)
  // suit a cache tier: a few lost lookups do not trip it, an outage does.
  circuit_breaker_options breaker = {};
  // The pub/sub channel for invalidations; empty (the default) turns them off: publishing costs a
  // round trip per write and only matters when several instances cache the same keys.
  std::string invalidation_channel;
  // Names this instance in invalidation messages (its own are ignored); must not contain ':'.
  // Empty (the default): 16 random hex digits, unique per process in practice.
  std::string instance_id;
  // Whether get_or_load calls the loader when Redis is down and no local copy exists. Off: an
  // outage of the shared tier must not send every instance's misses to the backend at once; turn
  // it on when the backend can take that load.
  bool load_when_unavailable = false;
  // Whether the process-wide sweeper frees expired local copies in the background (see
  // sluice::cache_options::background_sweep). On: memory returns to baseline by itself.
  bool background_sweep = true;

  // Returns InvalidArgument naming the first invalid field, else OK.
  [[nodiscard]] absl::Status validate() const {
    if (redis_ttl.count() <= 0)
      return absl::InvalidArgumentError("l2_cache: redis_ttl must be > 0");
    if (local_ttl.count() <= 0)
      return absl::InvalidArgumentError("l2_cache: local_ttl must be > 0");
    if (max_stale.count() < 0) {
      return absl::InvalidArgumentError("l2_cache: max_stale must not be negative");
    }
    if (command_timeout.count() < 0) {
      return absl::InvalidArgumentError("l2_cache: command_timeout must not be negative");
    }
    if (max_local_entries == 0) {
      return absl::InvalidArgumentError("l2_cache: max_local_entries must be > 0");
    }
    if (instance_id.find(':') != std::string::npos) {
      return absl::InvalidArgumentError("l2_cache: instance_id must not contain ':'");
    }
    return absl::OkStatus();
  }
};

// Counters since the cache was created (each exact; read one after another, not one snapshot).
struct l2_cache_stats {
  std::uint64_t local_hits = 0;              // answered by a fresh local copy
  std::uint64_t redis_hits = 0;              // answered by Redis
  std::uint64_t misses = 0;                  // Redis had no (decodable) value
  std::uint64_t loads = 0;                   // loader calls (one per flight at most)
  std::uint64_t load_failures = 0;           // loader calls that failed (NotFound excluded)
  std::uint64_t stale_served = 0;            // answers with a stale local copy
  std::uint64_t redis_errors = 0;            // Redis calls that failed or got an error reply
  std::uint64_t breaker_rejections = 0;      // Redis calls the open breaker refused
  std::uint64_t decode_errors = 0;           // Redis values the codec refused
  std::uint64_t invalidations_sent = 0;      // invalidations published
  std::uint64_t invalidations_received = 0;  // other instances' invalidations applied
};

// The Lua script of a lookup: GET and PTTL in one atomic round trip. Returns nil for a missing
// key, else {value, remaining milliseconds (-1: no expiry)}.
inline const script& l2_lookup_script() {
  static const script lua(R"lua(
local v = redis.call('GET', KEYS[1])
if not v then return false end
return {v, redis.call('PTTL', KEYS[1])}
)lua");
  return lua;
}

// A two-level cache (see the file comment).
template <class Value, class Client = connection, class Codec = l2_codec<Value>,
          class Clock = std::chrono::steady_clock>
class l2_cache {
 public:
  using value_type = Value;
  using client_type = Client;
  using result_type = l2_result<Value>;
  using options = l2_cache_options;
  using executor_type = boost::asio::any_io_executor;
  using local_cache_type = sluice::cache<std::string, Value, Clock>;
  using breaker_type = circuit_breaker<Clock>;

  // Returns a cache over `client`, or InvalidArgument when `opts` (or its breaker options) are
  // invalid. Heap-allocated: operations refer to it, so it cannot move.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<l2_cache>> create(Client& client,
                                                                        options opts = {},
                                                                        Codec codec = Codec(),
                                                                        Clock clock = Clock()) {
    if (absl::Status st = opts.validate(); !st.ok()) return st;
    if (absl::Status st = breaker_type::validate(opts.breaker); !st.ok()) return st;
    return std::unique_ptr<l2_cache>(
        new l2_cache(client, std::move(opts), std::move(codec), std::move(clock)));
  }

  l2_cache(const l2_cache&) = delete;
  l2_cache& operator=(const l2_cache&) = delete;

  // Looks `key` up: a fresh local copy, else Redis (filling the local copy), else not found.
  // Falls back to a stale local copy when Redis fails. Completion:
  // void(error_code, std::optional<l2_result<Value>>).
  template <class CompletionToken>
  auto async_get(std::string key, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, get_signature>(
        [](auto handler, l2_cache* self, std::string k) {
          if (std::optional<Value> v = self->local_.get(k)) {
            self->count(self->stats_.local_hits);
            self->deliver(std::move(handler), boost::system::error_code{},
                          std::optional<result_type>(result_type{std::move(*v), l2_source::local}));
            return;
          }
          waiter<get_signature> w = self->make_waiter<get_signature>(std::move(handler));
          boost::asio::co_spawn(self->ex_, self->run_get(std::move(k)),
                                [w = std::move(w)](std::exception_ptr e, get_outcome out) mutable {
                                  if (e) out = get_outcome{internal_error(), std::nullopt};
                                  w.complete(out.first, std::move(out.second));
                                });
        },
        token, this, std::move(key));
  }

  // Returns the value of `key` from either level, or loads it with `loader(key)` (an awaitable
  // returning absl::StatusOr<Value>, see the file comment), SETs it in Redis and keeps it locally.
  // Single flight: concurrent callers missing the same key share one lookup and one load.
  // Completion: void(error_code, l2_result<Value>).
  template <class Loader, class CompletionToken>
  auto async_get_or_load(std::string key, Loader loader, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, load_signature>(
        [](auto handler, l2_cache* self, std::string k, Loader l) {
          if (std::optional<Value> v = self->local_.get(k)) {
            self->count(self->stats_.local_hits);
            self->deliver(std::move(handler), boost::system::error_code{},
                          result_type{std::move(*v), l2_source::local});
            return;
          }
          waiter<load_signature> w = self->make_waiter<load_signature>(std::move(handler));
          bool leader = false;
          {
            detail::mutex_lock lock(self->flights_mu_);
            auto [it, inserted] = self->flights_.try_emplace(k);
            it->second.push_back(std::move(w));
            leader = inserted;
          }
          if (!leader) return;
          std::string flight_key = k;
          boost::asio::co_spawn(
              self->ex_, self->run_load(std::move(k), std::move(l)),
              [self, fk = std::move(flight_key)](std::exception_ptr e, load_outcome out) {
                if (e) out = load_outcome{internal_error(), result_type{}};
                self->finish_flight(fk, out);
              });
        },
        token, this, std::move(key), std::move(loader));
  }

  // SETs `key` to `value` in Redis (for redis_ttl), then stores the local copy and publishes an
  // invalidation. On failure, erases the local copy. Completion: void(error_code).
  template <class CompletionToken>
  auto async_put(std::string key, Value value, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, status_signature>(
        [](auto handler, l2_cache* self, std::string k, Value v) {
          self->spawn_status(std::move(handler), self->run_put(std::move(k), std::move(v)));
        },
        token, this, std::move(key), std::move(value));
  }

  // Erases the local copy, DELetes `key` in Redis and publishes an invalidation.
  // Completion: void(error_code).
  template <class CompletionToken>
  auto async_erase(std::string key, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, status_signature>(
        [](auto handler, l2_cache* self, std::string k) {
          self->spawn_status(std::move(handler), self->run_erase(std::move(k)));
        },
        token, this, std::move(key));
  }

  // SUBSCRIBEs `sub` to the invalidation channel and completes once Redis confirmed it (or with
  // `unavailable` when `sub` is disconnected: the channel is remembered for its next connect).
  // `invalid_argument` when no channel is configured. `sub` must outlive the operation.
  // Completion: void(error_code).
  template <class CompletionToken>
  auto async_subscribe_invalidations(subscriber& sub, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, status_signature>(
        [](auto handler, l2_cache* self, subscriber* s) {
          self->spawn_status(std::move(handler), self->run_subscribe(s));
        },
        token, this, &sub);
  }

  // Receives messages on `sub` and applies the invalidations of other instances, until the
  // subscriber fails or is closed (`sub.close()` stops it): completes with that error. Call
  // async_subscribe_invalidations first. `sub` must outlive the operation. To survive a lost
  // connection, loop: `sub.async_connect` (which subscribes again to the channel), then
  // `local().clear()` (messages published meanwhile are lost), then async_listen again.
  // Completion: void(error_code).
  template <class CompletionToken>
  auto async_listen(subscriber& sub, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, status_signature>(
        [](auto handler, l2_cache* self, subscriber* s) {
          self->spawn_status(std::move(handler), self->run_listen(s));
        },
        token, this, &sub);
  }

  // Applies one invalidation payload ("<instance id>:<key>"): erases the local copy of the key
  // unless this instance sent it. Returns whether it was applied (false for own or malformed
  // messages).
  bool apply_invalidation(std::string_view payload) {
    const std::size_t colon = payload.find(':');
    if (colon == std::string_view::npos) return false;
    if (payload.substr(0, colon) == std::string_view(opts_.instance_id)) return false;
    local_.erase(std::string(payload.substr(colon + 1)));
    count(stats_.invalidations_received);
    return true;
  }

  // Returns the fresh local copy of `key` without asking Redis (no stats counted).
  [[nodiscard]] std::optional<Value> peek_local(const std::string& key) const {
    return local_.peek(key);
  }

  // Returns the counters. Each is read with a relaxed load (see stats_).
  [[nodiscard]] l2_cache_stats stats() const noexcept {
    l2_cache_stats s;
    s.local_hits = stats_.local_hits.load(std::memory_order_relaxed);
    s.redis_hits = stats_.redis_hits.load(std::memory_order_relaxed);
    s.misses = stats_.misses.load(std::memory_order_relaxed);
    s.loads = stats_.loads.load(std::memory_order_relaxed);
    s.load_failures = stats_.load_failures.load(std::memory_order_relaxed);
    s.stale_served = stats_.stale_served.load(std::memory_order_relaxed);
    s.redis_errors = stats_.redis_errors.load(std::memory_order_relaxed);
    s.breaker_rejections = stats_.breaker_rejections.load(std::memory_order_relaxed);
    s.decode_errors = stats_.decode_errors.load(std::memory_order_relaxed);
    s.invalidations_sent = stats_.invalidations_sent.load(std::memory_order_relaxed);
    s.invalidations_received = stats_.invalidations_received.load(std::memory_order_relaxed);
    return s;
  }

  // Returns the local level (e.g. for its stats, or to clear it).
  [[nodiscard]] local_cache_type& local() noexcept { return local_; }
  // Returns the breaker around Redis (e.g. to publish its state as a metric).
  [[nodiscard]] breaker_type& breaker() noexcept { return breaker_; }
  // Returns the options in effect (instance_id filled in).
  [[nodiscard]] const options& get_options() const noexcept { return opts_; }
  // Returns the id this instance puts in its invalidation messages.
  [[nodiscard]] const std::string& instance_id() const noexcept { return opts_.instance_id; }
  // Returns the executor the cache's work runs on (the client's).
  [[nodiscard]] executor_type get_executor() const noexcept { return ex_; }

 private:
  using get_signature = void(boost::system::error_code, std::optional<result_type>);
  using load_signature = void(boost::system::error_code, result_type);
  using status_signature = void(boost::system::error_code);
  using get_outcome = std::pair<boost::system::error_code, std::optional<result_type>>;
  using load_outcome = std::pair<boost::system::error_code, result_type>;

  // A type-erased handler with outstanding work on its executor.
  template <class Signature>
  struct waiter {
    boost::asio::any_completion_handler<Signature> handler;
    executor_type work;

    // Posts the handler with `args` to its executor (never runs it here).
    template <class... Args>
    void complete(Args&&... args) {
      executor_type ex = std::move(work);
      boost::asio::post(ex, [h = std::move(handler),
                             tup = std::make_tuple(std::forward<Args>(args)...)]() mutable {
        std::apply([&h](auto&&... a) { std::move(h)(std::move(a)...); }, std::move(tup));
      });
    }
  };

  // What a Redis call meant (redis::outcome folded for the callers).
  struct call_result {
    enum class kind { ok, down, rejected } k = kind::ok;
    boost::system::error_code ec;
    reply r;
  };

  // Relaxed counters: each is a statistic read on its own; nothing is published through them.
  struct counters {
    std::atomic<std::uint64_t> local_hits{0};
    std::atomic<std::uint64_t> redis_hits{0};
    std::atomic<std::uint64_t> misses{0};
    std::atomic<std::uint64_t> loads{0};
    std::atomic<std::uint64_t> load_failures{0};
    std::atomic<std::uint64_t> stale_served{0};
    std::atomic<std::uint64_t> redis_errors{0};
    std::atomic<std::uint64_t> breaker_rejections{0};
    std::atomic<std::uint64_t> decode_errors{0};
    std::atomic<std::uint64_t> invalidations_sent{0};
    std::atomic<std::uint64_t> invalidations_received{0};
  };

  l2_cache(Client& client, options opts, Codec codec, Clock clock)
      : client_(client),
        ex_(client.get_executor()),
        opts_(std::move(opts)),
        codec_(std::move(codec)),
        local_(local_options(opts_), clock),
        breaker_(opts_.breaker, clock) {
    if (opts_.instance_id.empty()) {
      static constexpr char hex[] = "0123456789abcdef";
      std::uint64_t bits = detail::thread_rng()();
      for (int i = 0; i < 16; ++i, bits >>= 4) opts_.instance_id.push_back(hex[bits & 0xf]);
    }
  }

  static cache_options local_options(const options& o) {
    cache_options c;
    c.max_entries = o.max_local_entries;
    c.expire_after_write = o.local_ttl;
    c.stale_for = o.max_stale;
    c.background_sweep = o.background_sweep;
    return c;
  }

  static boost::system::error_code internal_error() noexcept {
    return sluice::asio::make_error_code(sluice::asio::error::internal);
  }
  static boost::system::error_code unavailable_error() noexcept {
    return sluice::asio::make_error_code(sluice::asio::error::unavailable);
  }

  static void count(std::atomic<std::uint64_t>& c) noexcept {
    c.fetch_add(1, std::memory_order_relaxed);
  }

  template <class Signature, class Handler>
  waiter<Signature> make_waiter(Handler&& handler) {
    executor_type ex = boost::asio::get_associated_executor(handler, ex_);
    executor_type work = boost::asio::prefer(ex, boost::asio::execution::outstanding_work.tracked);
    return waiter<Signature>{boost::asio::any_completion_handler<Signature>(std::move(handler)),
                             std::move(work)};
  }

  // Posts `handler(args...)` to the handler's executor.
  template <class Handler, class... Args>
  void deliver(Handler&& handler, Args&&... args) {
    executor_type ex = boost::asio::get_associated_executor(handler, ex_);
    boost::asio::post(
        ex, [h = std::move(handler), tup = std::make_tuple(std::forward<Args>(args)...)]() mutable {
          std::apply([&h](auto&&... a) { std::move(h)(std::move(a)...); }, std::move(tup));
        });
  }

  template <class Handler>
  void spawn_status(Handler&& handler, boost::asio::awaitable<boost::system::error_code> body) {
    waiter<status_signature> w = make_waiter<status_signature>(std::move(handler));
    boost::asio::co_spawn(
        ex_, std::move(body),
        [w = std::move(w)](std::exception_ptr e, boost::system::error_code ec) mutable {
          w.complete(e ? internal_error() : ec);
        });
  }

  std::chrono::milliseconds write_ttl() const noexcept {
    return std::min(opts_.local_ttl, opts_.redis_ttl);
  }

  std::string redis_key(std::string_view key) const {
    std::string k;
    k.reserve(opts_.key_prefix.size() + key.size());
    k.append(opts_.key_prefix);
    k.append(key);
    return k;
  }

  // Sends `cmd` with command_timeout, or, when it is 0, with the client's own default deadline
  // (its two-argument async_exec; a client without one gets 0). Completion as async_exec.
  template <class CompletionToken>
  auto exec(command cmd, CompletionToken&& token) {
    if constexpr (detail::l2_has_default_exec<Client, CompletionToken>::value) {
      if (opts_.command_timeout.count() == 0) {
        return client_.async_exec(std::move(cmd), std::forward<CompletionToken>(token));
      }
    }
    return client_.async_exec(std::move(cmd), opts_.command_timeout,
                              std::forward<CompletionToken>(token));
  }

  // Runs `cmd` through the breaker and classifies the outcome.
  boost::asio::awaitable<call_result> call(command cmd) {
    call_result out;
    auto permit = breaker_.try_acquire();
    if (!permit) {
      count(stats_.breaker_rejections);
      out.k = call_result::kind::down;
      out.ec = unavailable_error();
      co_return out;
    }
    auto [ec, r] = co_await exec(std::move(cmd), boost::asio::as_tuple(boost::asio::use_awaitable));
    co_return judge(*permit, ec, std::move(r));
  }

  call_result judge(typename breaker_type::permit& permit, boost::system::error_code ec, reply r) {
    call_result out;
    switch (classify(ec, r)) {
      case outcome::success:
        permit.record_success();
        out.r = std::move(r);
        return out;
      case outcome::rejected:
        // The server works; the request was wrong.
        permit.record_success();
        count(stats_.redis_errors);
        out.k = call_result::kind::rejected;
        out.ec = sluice::asio::to_error_code(to_status(ec, r));
        return out;
      case outcome::cancelled:
        permit.record_ignored();
        out.k = call_result::kind::rejected;
        out.ec = ec;
        return out;
      case outcome::failure:
      case outcome::retryable:
        break;
    }
    permit.record_failure();
    count(stats_.redis_errors);
    out.k = call_result::kind::down;
    out.ec = ec ? ec : unavailable_error();
    return out;
  }

  // The Redis level of a lookup: a value (also stored locally), a miss, Redis down, or an error.
  struct lookup {
    enum class kind { hit, miss, down, error } k = kind::miss;
    std::optional<Value> value;
    boost::system::error_code ec;
  };

  boost::asio::awaitable<lookup> redis_lookup(std::string key) {
    lookup out;
    const std::string rk = redis_key(key);
    const script& lua = l2_lookup_script();
    auto permit = breaker_.try_acquire();
    if (!permit) {
      count(stats_.breaker_rejections);
      out.k = lookup::kind::down;
      out.ec = unavailable_error();
      co_return out;
    }
    command evalsha{"EVALSHA", lua.sha1(), "1", rk};
    auto [ec, r] =
        co_await exec(std::move(evalsha), boost::asio::as_tuple(boost::asio::use_awaitable));
    if (!ec && r.is_error() && r.error_prefix() == "NOSCRIPT") {
      // EVAL runs the script and caches it on the server: the next EVALSHA succeeds.
      command eval{"EVAL", lua.source(), "1", rk};
      auto [ec2, r2] =
          co_await exec(std::move(eval), boost::asio::as_tuple(boost::asio::use_awaitable));
      ec = ec2;
      r = std::move(r2);
    }
    call_result c = judge(*permit, ec, std::move(r));
    if (c.k != call_result::kind::ok) {
      out.k = c.k == call_result::kind::down ? lookup::kind::down : lookup::kind::error;
      out.ec = c.ec;
      co_return out;
    }
    if (c.r.is_nil()) co_return out;  // miss
    if (!c.r.is_array() || c.r.elements().size() != 2 || !c.r.elements()[0].is_string()) {
      count(stats_.redis_errors);
      out.k = lookup::kind::error;
      out.ec = sluice::asio::make_error_code(sluice::asio::error::data_loss);
      co_return out;
    }
    absl::StatusOr<Value> v = codec_.decode(c.r.elements()[0].str());
    if (!v.ok()) {
      count(stats_.decode_errors);
      co_return out;  // miss: the next load overwrites it
    }
    const std::int64_t pttl = c.r.elements()[1].as_integer();
    std::chrono::milliseconds ttl = opts_.local_ttl;
    if (pttl > 0) ttl = std::min(ttl, std::chrono::milliseconds(pttl));
    if (pttl > 0 || pttl == -1) local_.put(key, *v, ttl);
    out.k = lookup::kind::hit;
    out.value = *std::move(v);
    co_return out;
  }

  // Returns the local copy, fresh or stale, for when Redis (or the loader) failed.
  std::optional<result_type> fallback(const std::string& key) {
    auto s = local_.get_stale(key);
    if (!s) return std::nullopt;
    if (s->stale) {
      count(stats_.stale_served);
      return result_type{std::move(s->value), l2_source::stale};
    }
    count(stats_.local_hits);
    return result_type{std::move(s->value), l2_source::local};
  }

  boost::asio::awaitable<get_outcome> run_get(std::string key) {
    lookup l = co_await redis_lookup(key);
    switch (l.k) {
      case lookup::kind::hit:
        count(stats_.redis_hits);
        co_return get_outcome{{}, result_type{*std::move(l.value), l2_source::redis}};
      case lookup::kind::miss:
        count(stats_.misses);
        co_return get_outcome{{}, std::nullopt};
      case lookup::kind::error:
        co_return get_outcome{l.ec, std::nullopt};
      case lookup::kind::down:
        break;
    }
    if (std::optional<result_type> f = fallback(key)) co_return get_outcome{{}, std::move(f)};
    co_return get_outcome{unavailable_error(), std::nullopt};
  }

  template <class Loader>
  boost::asio::awaitable<load_outcome> run_load(std::string key, Loader loader) {
    // A flight that ended between the caller's local miss and this one's start filled it.
    if (std::optional<Value> v = local_.peek(key)) {
      count(stats_.local_hits);
      co_return load_outcome{{}, result_type{*std::move(v), l2_source::local}};
    }
    lookup l = co_await redis_lookup(key);
    if (l.k == lookup::kind::hit) {
      count(stats_.redis_hits);
      co_return load_outcome{{}, result_type{*std::move(l.value), l2_source::redis}};
    }
    if (l.k == lookup::kind::error) co_return load_outcome{l.ec, result_type{}};
    const bool down = l.k == lookup::kind::down;
    if (down) {
      if (std::optional<result_type> f = fallback(key)) co_return load_outcome{{}, *std::move(f)};
      if (!opts_.load_when_unavailable) co_return load_outcome{unavailable_error(), result_type{}};
    } else {
      count(stats_.misses);
    }
    count(stats_.loads);
    absl::StatusOr<Value> loaded = absl::InternalError("sluice::redis::l2_cache: the loader threw");
    try {
      loaded = co_await loader(key);
    } catch (...) {
      loaded = absl::InternalError("sluice::redis::l2_cache: the loader threw");
    }
    if (!loaded.ok()) {
      if (absl::IsNotFound(loaded.status())) {
        co_return load_outcome{sluice::asio::make_error_code(sluice::asio::error::not_found),
                               result_type{}};
      }
      count(stats_.load_failures);
      if (std::optional<result_type> f = fallback(key)) co_return load_outcome{{}, *std::move(f)};
      co_return load_outcome{sluice::asio::to_error_code(loaded.status()), result_type{}};
    }
    local_.put(key, *loaded, write_ttl());
    if (!down) {
      // The callers get the value even when the SET fails (counted in redis_errors).
      (void)co_await call(
          make_set(redis_key(key), codec_.encode(*loaded), {.ttl = opts_.redis_ttl}));
    }
    co_return load_outcome{{}, result_type{*std::move(loaded), l2_source::loaded}};
  }

  // Ends the flight of `key`: every caller that joined it gets `out`.
  void finish_flight(const std::string& key, const load_outcome& out) {
    std::vector<waiter<load_signature>> waiters;
    {
      detail::mutex_lock lock(flights_mu_);
      auto it = flights_.find(key);
      if (it == flights_.end()) return;
      waiters = std::move(it->second);
      flights_.erase(it);
    }
    for (auto& w : waiters) w.complete(out.first, out.second);
  }

  boost::asio::awaitable<boost::system::error_code> run_put(std::string key, Value value) {
    call_result c =
        co_await call(make_set(redis_key(key), codec_.encode(value), {.ttl = opts_.redis_ttl}));
    if (c.k != call_result::kind::ok) {
      local_.erase(key);
      co_return c.ec;
    }
    local_.put(key, std::move(value), write_ttl());
    co_await publish(key);
    co_return boost::system::error_code{};
  }

  boost::asio::awaitable<boost::system::error_code> run_erase(std::string key) {
    local_.erase(key);
    call_result c = co_await call(command{"DEL", redis_key(key)});
    if (c.k != call_result::kind::ok) co_return c.ec;
    co_await publish(key);
    co_return boost::system::error_code{};
  }

  // PUBLISHes the invalidation of `key` when a channel is configured. A failure is counted in
  // redis_errors and not reported: Redis already holds the new state, and other instances'
  // copies expire within local_ttl.
  boost::asio::awaitable<void> publish(const std::string& key) {
    if (opts_.invalidation_channel.empty()) co_return;
    std::string payload;
    payload.reserve(opts_.instance_id.size() + 1 + key.size());
    payload.append(opts_.instance_id).append(":").append(key);
    call_result c = co_await call(command{"PUBLISH", opts_.invalidation_channel, payload});
    if (c.k == call_result::kind::ok) count(stats_.invalidations_sent);
  }

  boost::asio::awaitable<boost::system::error_code> run_subscribe(subscriber* sub) {
    if (opts_.invalidation_channel.empty()) {
      co_return sluice::asio::make_error_code(sluice::asio::error::invalid_argument);
    }
    auto [ec, r] = co_await sub->async_subscribe(opts_.invalidation_channel,
                                                 boost::asio::as_tuple(boost::asio::use_awaitable));
    if (ec) co_return ec;
    if (r.is_error()) co_return sluice::asio::to_error_code(to_status(ec, r));
    co_return boost::system::error_code{};
  }

  boost::asio::awaitable<boost::system::error_code> run_listen(subscriber* sub) {
    if (opts_.invalidation_channel.empty()) {
      co_return sluice::asio::make_error_code(sluice::asio::error::invalid_argument);
    }
    for (;;) {
      auto [ec, m] = co_await sub->async_receive(boost::asio::as_tuple(boost::asio::use_awaitable));
      if (ec) co_return ec;
      if (m.channel == opts_.invalidation_channel) apply_invalidation(m.payload);
    }
  }

  Client& client_;
  executor_type ex_;
  options opts_;
  Codec codec_;
  local_cache_type local_;
  breaker_type breaker_;
  counters stats_;
  detail::mutex flights_mu_;
  // The callers waiting for each key's flight; the first one started the flight.
  absl::flat_hash_map<std::string, std::vector<waiter<load_signature>>> flights_
      ABSL_GUARDED_BY(flights_mu_);
};

}  // namespace sluice::redis
