// sluice/redis.hpp
//
// Includes every public header of the `sluice::redis` component: the Asio component plus the
// Redis client built on Asio with hiredis as RESP parser and formatter. Needs hiredis 0.14 or
// newer.
//
//   sluice/redis/url.hpp           redis://[[user]:password@]host[:port][/db] -> endpoint
//   sluice/redis/reply.hpp         the typed reply value (nil, integer, string, status, error, array)
//   sluice/redis/command.hpp       a command encoded once (binary-safe)
//   sluice/redis/error.hpp         outcome classification for breakers and retries, to_status
//   sluice/redis/connection.hpp    one pipelined, non-blocking connection (timeouts, cancellation)
//   sluice/redis/pool.hpp          connection_pool on sluice::pool: PING health checks, paced
//                                  reconnects, fails fast while Redis is down
//   sluice/redis/commands.hpp      GET, SET (EX/PX/NX/XX), DEL, EXPIRE, HGETALL, HSET, INCR, PING,
//                                  PUBLISH, EVALSHA with EVAL fallback
//   sluice/redis/subscriber.hpp    SUBSCRIBE on a dedicated connection
//   sluice/redis/gcra_limiter.hpp  the distributed GCRA rate limiter (one Lua script, server time)
//   sluice/redis/l2_cache.hpp      two-level cache: sluice::cache in front of Redis, single flight,
//                                  breaker with stale fallback, pub/sub invalidation
//
// Example:
//   #include <sluice/redis.hpp>
//   sluice::redis::connection conn(io.get_executor());
//   co_await conn.async_connect(*sluice::redis::parse_url("redis://127.0.0.1:6379"), use_awaitable);
//   auto value = co_await sluice::redis::async_get(conn, "user:42", use_awaitable);
#pragma once

#include "sluice/asio.hpp"
#include "sluice/redis/command.hpp"
#include "sluice/redis/commands.hpp"
#include "sluice/redis/connection.hpp"
#include "sluice/redis/error.hpp"
#include "sluice/redis/gcra_limiter.hpp"
#include "sluice/redis/l2_cache.hpp"
#include "sluice/redis/pool.hpp"
#include "sluice/redis/reply.hpp"
#include "sluice/redis/subscriber.hpp"
#include "sluice/redis/url.hpp"
