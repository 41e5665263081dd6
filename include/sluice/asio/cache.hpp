// sluice/asio/cache.hpp
//
// `co_await sluice::asio::get_or_load(cache, key, loader)` is `sluice::cache::get_or_load` for
// coroutines: a hit returns at once; on a miss, the first caller co_awaits `loader(key)` (an
// asynchronous fetch) and every concurrent caller for the same key, coroutine or thread, waits for
// that one load without blocking a thread (single flight). NotFound is cached for `negative_ttl`
// as with the synchronous call.
//
// `loader(key)` returns `boost::asio::awaitable<absl::StatusOr<Value>>`.
// Result: `boost::asio::awaitable<absl::StatusOr<Value>>` (the loader's status on failure).
// A loader that throws: the exception propagates to the coroutine that ran it; the callers that
// waited get absl::InternalError.
//
// `async_wait_load(cache, ticket, token)` is the building block: it waits for a load joined with
// `cache.begin_load()`. Completion signature: void(absl::StatusOr<Value>). The handler is never
// invoked from inside the initiating function; it runs on its associated executor, with a work
// guard held on it while waiting. Cancellation: none (the wait ends when the load ends; bound the
// loader itself with a timeout).
//
// Thread safety: as `sluice::cache`: any number of concurrent calls, from any threads.
// Not provided here: refresh-ahead and stale-while-revalidate reloads (the synchronous
// get_or_load hands those to its refresh executor); a stale entry is not served here.
//
// Example:
//   boost::asio::awaitable<void> handle(sluice::cache<std::string, std::string>& users) {
//     absl::StatusOr<std::string> user = co_await sluice::asio::get_or_load(
//         users, std::string("42"),
//         [&](const std::string& id) -> boost::asio::awaitable<absl::StatusOr<std::string>> {
//           co_return co_await db.async_find(id);
//         });
//   }
#pragma once

#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "sluice/cache.hpp"

namespace sluice::asio {

// Waits, without blocking, for the load `ticket` joined (`!ticket.leader() && !ticket.answer()`).
// `cache` and `ticket` must outlive the operation.
template <class Cache, class CompletionToken>
auto async_wait_load(Cache& cache, typename Cache::load_ticket& ticket, CompletionToken&& token) {
  using result_type = absl::StatusOr<typename Cache::value_type>;
  return boost::asio::async_initiate<CompletionToken, void(result_type)>(
      [](auto handler, Cache* c, typename Cache::load_ticket* t) {
        using handler_type = decltype(handler);
        auto executor = boost::asio::get_associated_executor(handler);
        auto work = boost::asio::make_work_guard(executor);
        // std::function needs a copyable callable; the handler is move-only.
        auto shared = std::make_shared<handler_type>(std::move(handler));
        c->when_loaded(*t, [shared, work](const result_type& r) mutable {
          auto ex = work.get_executor();
          boost::asio::post(ex, [shared, r, work]() mutable {
            std::move (*shared)(r);
            work.reset();
          });
        });
      },
      token, &cache, &ticket);
}

// Returns the value of `key` from `cache`, loading it with the awaitable `loader(key)` on a miss,
// once for all concurrent callers.
template <class Key, class Value, class Clock, class Hash, class Eq, class AsyncLoader>
boost::asio::awaitable<absl::StatusOr<Value>> get_or_load(
    sluice::cache<Key, Value, Clock, Hash, Eq>& cache, Key key, AsyncLoader loader) {
  auto ticket = cache.begin_load(key);
  if (ticket.answer()) co_return *ticket.answer();
  if (!ticket.leader())
    co_return co_await async_wait_load(cache, ticket, boost::asio::use_awaitable);
  absl::StatusOr<Value> r = absl::InternalError("sluice::cache: the loader threw");
  try {
    r = co_await loader(key);
  } catch (...) {
    cache.complete_load(ticket, r);
    throw;
  }
  cache.complete_load(ticket, r);
  co_return r;
}

}  // namespace sluice::asio
