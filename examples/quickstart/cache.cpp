// Shows: a bounded cache in front of a slow backend — get/put with a time to live, get_or_load
// with single flight and negative caching, and serving the last known value while the backend
// is down.
// Needs: sluice::core (<sluice/cache.hpp>).
#include <chrono>
#include <cstdio>
#include <string>

#include "absl/status/statusor.h"

#include <sluice/cache.hpp>
#include <sluice/testing/manual_clock.hpp>

namespace {

// A stand-in for a database: knows users 1..100, and can be switched off.
struct user_db {
  bool up = true;
  int queries = 0;
  absl::StatusOr<std::string> find(int id) {
    ++queries;
    if (!up) return absl::UnavailableError("database unreachable");
    if (id < 1 || id > 100) return absl::NotFoundError("no such user");
    return "user-" + std::to_string(id);
  }
};

}  // namespace

int main() {
  using namespace std::chrono_literals;
  // A manual clock makes the example's timing exact; production code leaves the default clock.
  sluice::testing::manual_clock clock;
  user_db db;
  sluice::cache<int, std::string, sluice::testing::manual_clock> users(
      {.max_entries = 10'000,
       .expire_after_write = 5min,  // fresh for 5 minutes
       .negative_ttl = 30s,         // remember "no such user" for 30 s
       .stale_for = 1h},            // keep expired values an hour for outages
      clock);

  auto load = [&](int id) { return db.find(id); };

  // The first lookup loads, the second is a hit.
  std::printf("%s\n", users.get_or_load(7, load).value().c_str());
  std::printf("%s\n", users.get_or_load(7, load).value().c_str());
  // Unknown users reach the database once, then the cached NotFound answers.
  for (int i = 0; i < 3; ++i) {
    if (auto r = users.get_or_load(1000, load); !r.ok()) {
      std::printf("1000: %s\n", r.status().ToString().c_str());
    }
  }
  std::printf("database queries so far: %d (expected 2)\n", db.queries);

  // Ten minutes later the entry has expired and the database is down: get() misses, but
  // get_stale() still has the last known value (an HTTP service would send X-Cache: STALE).
  clock.advance(10min);
  db.up = false;
  if (!users.get(7)) std::printf("7: expired\n");
  if (auto last = users.get_stale(7); last && last->stale) {
    std::printf("7: serving stale %s\n", last->value.c_str());
  }

  const sluice::cache_stats st = users.stats();
  std::printf("hits %llu, misses %llu, negative hits %llu, loads %llu\n",
              static_cast<unsigned long long>(st.hits), static_cast<unsigned long long>(st.misses),
              static_cast<unsigned long long>(st.negative_hits),
              static_cast<unsigned long long>(st.loads));
  return db.queries == 2 ? 0 : 1;
}
