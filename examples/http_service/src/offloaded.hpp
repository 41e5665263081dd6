// offloaded.hpp: the coroutine glue between the event loops and the sluice offload executor
// (co_await sluice::asio::offload): CPU-heavy handlers and large gzip bodies run on its workers
// while the loop keeps serving other connections.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <sys/types.h>

#include <boost/asio/awaitable.hpp>

#include <sluice/rate_limit.hpp>

#include "service.hpp"

namespace service {

// Bodies at least this large are compressed on the offload executor instead of the loop.
inline constexpr std::size_t kOffloadGzipAbove = 64 * 1024;

// Runs `handler(a, req, res)` on the offload executor and resumes on the caller's loop. When the
// executor's queue is full, answers 503 with Retry-After instead (load shedding, never queueing
// without bound); an exception from the handler becomes a 500.
boost::asio::awaitable<void> run_offloaded(app& a, handler_fn handler, const request& req,
                                           response& res);

// Compresses `in` into `out` on the offload executor. Returns false when it could not (queue
// full, compression error); the caller then sends the body uncompressed.
boost::asio::awaitable<bool> gzip_offloaded(app& a, std::string_view in, std::string& out);

// Reads up to `size` bytes at `offset` of `fd` on the file executor (pread). Returns the count,
// 0 at end of file, -1 on an I/O error or when the file executor could not take the task.
boost::asio::awaitable<long> read_offloaded(app& a, int fd, char* data, std::size_t size,
                                            off_t offset);

// Writes all `size` bytes to `fd` and adds them to `digest`, on the file executor. Returns false
// on an I/O error (e.g. disk full) or when the file executor could not take the task.
boost::asio::awaitable<bool> write_offloaded(app& a, int fd, const char* data, std::size_t size,
                                             sha256& digest);

// Decides whether `client` may make one more request now; on refusal fills `res` with the 429
// answer (Retry-After and RateLimit-* headers) and returns false. Lock: the limiter's shard.
bool admit(app& a, std::string_view client, response& res);

// Fills `res` with the 429 answer for a refused rate-limit decision: JSON error, Retry-After and
// the RateLimit-Limit, -Remaining and -Reset headers.
void reject_rate_limited(const sluice::rate_limit_result& r, response& res);

}  // namespace service
