// Shows: a connection pool lending RAII leases, typed failures, and an Asio coroutine awaiting one.
// Needs: sluice::core (sluice/pool.hpp) and sluice::asio (sluice/asio/pool.hpp).
//
// The "database" is simulated: a connection is a number; `query` fails for broken ones. A real
// factory would connect with its deadline, ping in `validate`, and roll back in `reset`.
#include <chrono>
#include <cstdio>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <sluice/asio/pool.hpp>
#include <sluice/pool.hpp>

struct db_connection {
  int id;
  bool query(const char* sql) const { return sql[0] != '\0'; }
};

int main() {
  using namespace std::chrono_literals;
  int next_id = 0;
  sluice::pool_factory<db_connection> factory;
  factory.create = [&](auto /*deadline*/) -> absl::StatusOr<db_connection> {
    return db_connection{++next_id};
  };
  factory.validate = [](db_connection&) { return absl::OkStatus(); };  // a ping
  auto made =
      sluice::pool<db_connection>::make(std::move(factory), {.max_size = 2, .max_waiters = 0});
  if (!made.ok()) return std::printf("bad options: %s\n", made.status().ToString().c_str()), 1;
  auto& pool = *made;

  {
    auto lease = pool.acquire(100ms);  // opens connection 1
    if (!lease.ok()) return std::printf("%s\n", lease.status().ToString().c_str()), 1;
    if (!(*lease)->query("SELECT 1")) lease->mark_broken();  // a broken one is discarded
  }                                                          // returned here
  auto a = pool.acquire(100ms);                              // reuses connection 1
  auto b = pool.acquire(100ms);                              // opens connection 2
  auto c = pool.acquire(100ms);  // max_size reached, no waiting allowed: typed failure
  std::printf("a=%d b=%d c: %s\n", (*a)->id, (*b)->id, c.status().ToString().c_str());
  a->release();

  // From an Asio coroutine: wait without blocking the thread.
  boost::asio::io_context io;
  boost::asio::co_spawn(
      io,
      [&]() -> boost::asio::awaitable<void> {
        auto [ec, lease] = co_await sluice::asio::async_acquire(
            pool, 100ms, boost::asio::as_tuple(boost::asio::use_awaitable));
        if (ec) {
          std::printf("async acquire failed: %s\n", ec.message().c_str());
          co_return;
        }
        std::printf("coroutine got connection %d\n", lease->id);
      },
      boost::asio::detached);
  io.run();

  const sluice::pool_stats s = pool.stats();
  std::printf("size=%zu idle=%zu in_use=%zu created=%llu exhausted=%llu\n", s.size, s.idle,
              s.in_use, static_cast<unsigned long long>(s.created),
              static_cast<unsigned long long>(s.exhausted));
  b->release();
  return pool.close(std::chrono::steady_clock::now() + 1s).ok() ? 0 : 1;
}
