// sluice/redis/commands.hpp
//
// Helpers for the common commands on a `sluice::redis::connection` or a
// `sluice::redis::connection_pool` (any client with `get_executor()` and
// `async_exec(command, timeout, token)`): GET, SET (EX/PX, NX/XX), DEL, EXPIRE, HGETALL, HSET,
// INCR, PING, PUBLISH, and Lua scripts by SHA with a fallback to EVAL when the server does not
// know the script yet (NOSCRIPT, e.g. after a restart or SCRIPT FLUSH). Each is the client's
// `async_exec` with the command built for you; keys and values are binary-safe. (Through a pool,
// EVALSHA and its EVAL fallback may run on two different connections; both go to one server.)
//
// Completion: void(boost::system::error_code, sluice::redis::reply), as async_exec. The reply
// kinds to expect are named on each helper; a Redis error reply arrives as a reply of kind
// error (classify it with sluice/redis/error.hpp).
//
// Thread safety: as the client (any thread). Every helper takes the client by reference: keep it
// alive until the operation completes.
// Time: each command has the connection's command_timeout.
//
// Example:
//   co_await redis::async_set(conn, "k", bytes, {.ttl = std::chrono::seconds(30)}, use_awaitable);
//   redis::reply r = co_await redis::async_get(conn, "k", use_awaitable);  // string or nil
//
//   static const redis::script incr_by("return redis.call('INCRBY', KEYS[1], ARGV[1])");
//   r = co_await redis::async_evalsha(conn, incr_by, {"counter"}, {"5"}, use_awaitable);
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/asio/compose.hpp>
#include <boost/system/error_code.hpp>

#include "sluice/detail/redis_sha1.hpp"
#include "sluice/redis/command.hpp"
#include "sluice/redis/connection.hpp"
#include "sluice/redis/reply.hpp"

namespace sluice::detail {

// True for a type the helpers accept as a Redis client: one with `get_executor()` and
// `async_exec(command, std::chrono::milliseconds, token)` (redis::connection,
// redis::connection_pool).
struct redis_client_probe_handler {
  void operator()(boost::system::error_code, redis::reply) const {}
};
template <class Client, class = void>
struct is_redis_client : std::false_type {};
template <class Client>
struct is_redis_client<Client, std::void_t<decltype(std::declval<Client&>().get_executor()),
                                           decltype(std::declval<Client&>().async_exec(
                                               std::declval<redis::command>(),
                                               std::declval<std::chrono::milliseconds>(),
                                               redis_client_probe_handler{}))>> : std::true_type {};
template <class Client>
using enable_if_redis_client = std::enable_if_t<is_redis_client<Client>::value, int>;

}  // namespace sluice::detail

namespace sluice::redis {

// Options of SET.
struct set_options {
  // Sets the key's time to live; zero keeps the key forever. Sent as EX when it is whole
  // seconds, else as PX (millisecond precision).
  std::chrono::milliseconds ttl{0};
  // Chooses when SET writes: always (default, what plain SET does), only if the key is absent
  // (NX: locks, first writer wins) or only if present (XX).
  enum class condition { always, if_absent, if_present } when = condition::always;
};

// Builds `SET key value [EX s|PX ms] [NX|XX]`.
[[nodiscard]] inline command make_set(std::string_view key, std::string_view value,
                                      const set_options& options = {}) {
  std::vector<std::string_view> args{"SET", key, value};
  std::string ttl;
  if (options.ttl.count() > 0) {
    if (options.ttl.count() % 1000 == 0) {
      ttl = std::to_string(options.ttl.count() / 1000);
      args.push_back("EX");
    } else {
      ttl = std::to_string(options.ttl.count());
      args.push_back("PX");
    }
    args.push_back(ttl);
  }
  if (options.when == set_options::condition::if_absent) args.push_back("NX");
  if (options.when == set_options::condition::if_present) args.push_back("XX");
  return command::from_args(args);
}

// GETs `key`. Reply: string, or nil when the key does not exist.
template <class Client, class CompletionToken, detail::enable_if_redis_client<Client> = 0>
auto async_get(Client& conn, std::string_view key, CompletionToken&& token) {
  return conn.async_exec(command{"GET", key}, std::forward<CompletionToken>(token));
}

// SETs `key` to `value`. Reply: status OK, or nil when NX/XX prevented the write.
template <class Client, class CompletionToken, detail::enable_if_redis_client<Client> = 0>
auto async_set(Client& conn, std::string_view key, std::string_view value,
               const set_options& options, CompletionToken&& token) {
  return conn.async_exec(make_set(key, value, options), std::forward<CompletionToken>(token));
}

// DELetes `key`. Reply: integer, 1 when the key existed.
template <class Client, class CompletionToken, detail::enable_if_redis_client<Client> = 0>
auto async_del(Client& conn, std::string_view key, CompletionToken&& token) {
  return conn.async_exec(command{"DEL", key}, std::forward<CompletionToken>(token));
}

// DELetes every key of `keys` (a range of strings or string_views). Reply: integer, the number
// of keys that existed. With GCC 12, pass a named range, not a braced list, inside co_await.
template <class Client, class Range, class CompletionToken,
          std::enable_if_t<!std::is_convertible_v<const Range&, std::string_view>, int> = 0,
          detail::enable_if_redis_client<Client> = 0>
auto async_del(Client& conn, const Range& keys, CompletionToken&& token) {
  std::vector<std::string_view> args{"DEL"};
  for (const auto& k : keys) args.emplace_back(k);
  return conn.async_exec(command::from_args(args), std::forward<CompletionToken>(token));
}

// Sets a time to live of `ttl` (whole seconds) on `key` with EXPIRE. Reply: integer 1, or 0 when
// the key does not exist.
template <class Client, class CompletionToken, detail::enable_if_redis_client<Client> = 0>
auto async_expire(Client& conn, std::string_view key, std::chrono::seconds ttl,
                  CompletionToken&& token) {
  const std::string seconds = std::to_string(ttl.count());
  return conn.async_exec(command{"EXPIRE", key, seconds}, std::forward<CompletionToken>(token));
}

// Reads every field of hash `key` with HGETALL. Reply: array field, value, field, value...
// (empty when the key does not exist).
template <class Client, class CompletionToken, detail::enable_if_redis_client<Client> = 0>
auto async_hgetall(Client& conn, std::string_view key, CompletionToken&& token) {
  return conn.async_exec(command{"HGETALL", key}, std::forward<CompletionToken>(token));
}

// Sets `field` of hash `key` to `value` with HSET. Reply: integer, 1 when the field is new.
template <class Client, class CompletionToken, detail::enable_if_redis_client<Client> = 0>
auto async_hset(Client& conn, std::string_view key, std::string_view field, std::string_view value,
                CompletionToken&& token) {
  return conn.async_exec(command{"HSET", key, field, value}, std::forward<CompletionToken>(token));
}

// INCRements `key`. Reply: integer, the new value; error when the value is not an integer.
template <class Client, class CompletionToken, detail::enable_if_redis_client<Client> = 0>
auto async_incr(Client& conn, std::string_view key, CompletionToken&& token) {
  return conn.async_exec(command{"INCR", key}, std::forward<CompletionToken>(token));
}

// PINGs the server. Reply: status PONG.
template <class Client, class CompletionToken, detail::enable_if_redis_client<Client> = 0>
auto async_ping(Client& conn, CompletionToken&& token) {
  return conn.async_exec(command{"PING"}, std::forward<CompletionToken>(token));
}

// PUBLISHes `payload` on `channel`. Reply: integer, the number of subscribers that received it.
template <class Client, class CompletionToken, detail::enable_if_redis_client<Client> = 0>
auto async_publish(Client& conn, std::string_view channel, std::string_view payload,
                   CompletionToken&& token) {
  return conn.async_exec(command{"PUBLISH", channel, payload},
                         std::forward<CompletionToken>(token));
}

// A Lua script and its SHA-1, the name EVALSHA calls it by. Cheap to copy (shared, immutable).
class script {
 public:
  // Holds `source` and computes its SHA-1 (O(size of source)).
  explicit script(std::string source)
      : state_(std::make_shared<const state>(state{detail::sha1_hex(source), std::move(source)})) {}

  // Returns the Lua source.
  [[nodiscard]] const std::string& source() const noexcept { return state_->source; }
  // Returns the lower-case hex SHA-1 of the source.
  [[nodiscard]] const std::string& sha1() const noexcept { return state_->sha1; }

 private:
  struct state {
    std::string sha1;
    std::string source;
  };
  std::shared_ptr<const state> state_;
};

}  // namespace sluice::redis

namespace sluice::detail {

template <class Client>
struct evalsha_op {
  Client* conn;
  redis::script lua;
  std::vector<std::string> tail;  // numkeys, keys..., args...
  bool fell_back = false;

  redis::command build(std::string_view verb, std::string_view body) const {
    std::vector<std::string_view> args{verb, body};
    args.insert(args.end(), tail.begin(), tail.end());
    return redis::command::from_args(args);
  }

  template <class Self>
  void operator()(Self& self) {
    conn->async_exec(build("EVALSHA", lua.sha1()), std::move(self));
  }

  template <class Self>
  void operator()(Self& self, boost::system::error_code ec, redis::reply r) {
    if (!fell_back && !ec && r.is_error() && r.error_prefix() == "NOSCRIPT") {
      fell_back = true;
      // EVAL runs the script and caches it, so the next EVALSHA succeeds.
      conn->async_exec(build("EVAL", lua.source()), std::move(self));
      return;
    }
    self.complete(ec, std::move(r));
  }
};

}  // namespace sluice::detail

namespace sluice::redis {

// Runs `lua` with EVALSHA, and on NOSCRIPT once more with EVAL (which also caches it on the
// server). Reply: whatever the script returns (Lua numbers become integers, tables arrays, nil
// nil), or the script's error. With GCC 12, pass named vectors, not braced lists, inside co_await.
template <class Client, class CompletionToken, detail::enable_if_redis_client<Client> = 0>
auto async_evalsha(Client& conn, const script& lua, const std::vector<std::string>& keys,
                   const std::vector<std::string>& args, CompletionToken&& token) {
  std::vector<std::string> tail;
  tail.reserve(1 + keys.size() + args.size());
  tail.push_back(std::to_string(keys.size()));
  tail.insert(tail.end(), keys.begin(), keys.end());
  tail.insert(tail.end(), args.begin(), args.end());
  return boost::asio::async_compose<CompletionToken, void(boost::system::error_code, reply)>(
      detail::evalsha_op<Client>{&conn, lua, std::move(tail)}, token, conn.get_executor());
}

}  // namespace sluice::redis
