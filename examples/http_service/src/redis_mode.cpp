// redis_mode.cpp: the Redis client and its keeper, the Redis user store, the Redis-backed
// /api/data pages and the distributed rate limiter (see redis_mode.hpp).
#include "redis_mode.hpp"

#include <algorithm>
#include <atomic>
#include <future>
#include <random>
#include <thread>
#include <tuple>
#include <utility>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

#include <sluice/asio/error.hpp>
#include <sluice/metrics/registry.hpp>
#include <sluice/rate_limit.hpp>
#include <sluice/redis/command.hpp>
#include <sluice/redis/error.hpp>
#include <sluice/redis/gcra_limiter.hpp>
#include <sluice/redis/l2_cache.hpp>
#include <sluice/redis/pool.hpp>
#include <sluice/redis/url.hpp>

#include "metrics.hpp"
#include "offloaded.hpp"

namespace service {
namespace {

namespace net = boost::asio;
namespace redis = sluice::redis;

constexpr auto tok = net::as_tuple(net::use_awaitable);

// ---- The client --------------------------------------------------------------------------------
// A sluice::redis::connection_pool shared by every loop: up to 16 connections, health-checked,
// reconnected with paced backoff after an outage, failing fast (`unavailable`) while Redis is
// down, a connection that broke or stalled replaced. (A single pipelined sluice::redis::connection
// also fits the code below: the same async_exec; the keeper would then have to reconnect it.)
using redis_client = redis::connection_pool;

absl::StatusOr<std::shared_ptr<redis_client>> make_client(const net::any_io_executor& ex,
                                                          const redis::endpoint& ep,
                                                          const config& cfg) {
  redis::connection_pool_options o;
  o.server = ep;
  // A Redis on the same network connects in well under a millisecond; waiting longer only delays
  // the pool's next attempt.
  o.connection.connect_timeout = std::chrono::milliseconds(500);
  o.connection.command_timeout = cfg.redis_timeout;
  // Waiting for a free connection longer than for a reply would only move the wait elsewhere.
  o.acquire_timeout = cfg.redis_timeout;
  return redis::connection_pool::make(ex, std::move(o));
}
// -------------------------------------------------------------------------------------------------

// Fills users ARGV[1]..ARGV[2] that are missing (HSET only where the key is absent), in one
// atomic step per chunk, then, on the last chunk, sets the marker KEYS[1] that the keeper's health
// check looks for. Returns how many users it created.
constexpr std::string_view kSeedScript = R"lua(
local created = 0
for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do
  local key = 'user:' .. i
  if redis.call('EXISTS', key) == 0 then
    local name = 'user' .. i
    redis.call('HSET', key, 'name', name, 'email', name .. '@example.com')
    created = created + 1
  end
end
if ARGV[3] == '1' then redis.call('SET', KEYS[1], '1') end
return created
)lua";
// Users per seeding script: ~10 ms of Redis time, short enough not to stall other clients.
constexpr int kSeedChunk = 10'000;
// The keeper's check period while Redis answers, and the backoff bounds while it does not.
constexpr std::chrono::milliseconds kCheckEvery{500};
constexpr std::chrono::milliseconds kBackoffMin{50};
constexpr std::chrono::milliseconds kBackoffMax{1000};

// Stores a page's JSON as is; the value in the process is shared, not copied.
struct page_codec {
  // Returns the bytes to store.
  std::string encode(const body_ptr& page) const { return *page; }
  // Returns the page the bytes stand for (never fails).
  absl::StatusOr<body_ptr> decode(std::string_view bytes) const {
    return std::make_shared<const std::string>(bytes);
  }
};

using page_cache = redis::l2_cache<body_ptr, redis_client, page_codec>;

net::awaitable<absl::StatusOr<body_ptr>> build_page_async(redis_mode::page_builder build,
                                                          std::int64_t page) {
  co_return std::make_shared<const std::string>(build(page));
}

redis::l2_cache_options page_cache_options(const config& cfg) {
  redis::l2_cache_options o;
  o.key_prefix = "sluice:page:";
  o.redis_ttl = cfg.cache_ttl;  // the contract's 60 s by default
  // A hot page stays off the network for at most a second (and never past its Redis TTL).
  o.local_ttl = std::min(cfg.cache_ttl, std::chrono::milliseconds(1000));
  o.max_stale = cfg.stale_for;
  // 1000 pages of ~5 KB: ~5 MB at most in the process, as in the embedded mode.
  o.max_local_entries = 1000;
  o.command_timeout = cfg.redis_timeout;
  // The page can always be built: an outage of the cache tier must not fail /api/data.
  o.load_when_unavailable = true;
  // The same pacing as the user store's breaker: Redis is used again soon after it returns.
  o.breaker.window.window_size = 20;
  o.breaker.minimum_calls = 10;
  o.breaker.failure_rate_threshold = 0.5;
  o.breaker.half_open_probes = 3;
  o.breaker.open_duration = cfg.breaker_open;
  o.breaker.max_open_duration = cfg.breaker_open * 8;
  o.breaker.reset_open_duration_after = cfg.breaker_open * 4;
  return o;
}

}  // namespace

struct redis_mode::impl {
  app& a;
  redis::endpoint ep;
  std::string marker;  // set once users 1..--seed-users are in Redis
  net::io_context ioc{1};
  std::shared_ptr<redis_client> client;
  net::steady_timer pause{ioc};  // the keeper's sleeps; cancelled at shutdown
  std::unique_ptr<redis::gcra_limiter> limiter;
  std::unique_ptr<page_cache> pages;  // /api/data: local level + Redis
  std::thread thread;

  // Relaxed atomics below: each is a flag or a counter read on its own; none publishes data.
  std::atomic<bool> up{false};
  std::atomic<bool> stopping{false};
  std::atomic<bool> keeper_done{false};
  std::atomic<std::uint64_t> outages{0};
  std::atomic<std::uint64_t> commands_ok{0};      // user reads Redis answered
  std::atomic<std::uint64_t> commands_failed{0};  // user reads that failed (down, timeout)
  std::atomic<std::uint64_t> seeded{0};

  std::promise<void> first_up;  // set once by the keeper (its thread only)
  bool first_up_set = false;
  sluice::metrics::collector_registration collectors;

  impl(app& ap, redis::endpoint e)
      : a(ap),
        ep(std::move(e)),
        marker("sluice:users-seeded:" + std::to_string(a.cfg.seed_users)) {}

  // Runs a user read with the --redis-timeout-ms deadline and counts its outcome; resumes on the
  // caller's executor.
  net::awaitable<std::tuple<boost::system::error_code, redis::reply>> read_user(redis::command c) {
    auto result = co_await client->async_exec(std::move(c), a.cfg.redis_timeout, tok);
    const auto o = redis::classify(std::get<0>(result), std::get<1>(result));
    (o == redis::outcome::success || o == redis::outcome::rejected ? commands_ok : commands_failed)
        .fetch_add(1, std::memory_order_relaxed);
    co_return result;
  }

  // Marks Redis down; counts and logs the transition from up.
  void mark_down(std::string_view why) {
    if (up.exchange(false, std::memory_order_relaxed)) {
      outages.fetch_add(1, std::memory_order_relaxed);
      SPDLOG_LOGGER_WARN(a.log, "\"msg\":\"redis down\",\"error\":\"{}\"", why);
    }
  }

  // Suspends the keeper for `d` (shutdown cancels the timer).
  net::awaitable<void> sleep(std::chrono::milliseconds d) {
    pause.expires_after(d);
    co_await pause.async_wait(tok);
  }

  // Seeds the missing users; false if Redis failed half way (the keeper tries again later).
  net::awaitable<bool> seed() {
    std::uint64_t created = 0;
    const int n = a.cfg.seed_users;
    for (int from = 1; from <= std::max(n, 1); from += kSeedChunk) {
      const int to = std::min(n, from + kSeedChunk - 1);
      const std::string lo = std::to_string(from);
      const std::string hi = std::to_string(to);
      const std::string_view last = to >= n ? "1" : "0";
      redis::command c{"EVAL", kSeedScript, "1", marker, lo, hi, last};
      auto [ec, r] = co_await client->async_exec(std::move(c), std::chrono::seconds(5), tok);
      if (ec || !r.is_integer()) {
        SPDLOG_LOGGER_WARN(a.log, "\"msg\":\"redis seeding failed\",\"error\":\"{}\"",
                           ec ? ec.message() : r.str());
        co_return false;
      }
      created += static_cast<std::uint64_t>(r.as_integer());
    }
    seeded.fetch_add(created, std::memory_order_relaxed);
    SPDLOG_LOGGER_INFO(a.log, "\"msg\":\"redis up\",\"users_seeded\":{}", created);
    co_return true;
  }

  // Keeps the data in place and the readiness flag true. Every kCheckEvery it checks the seeding
  // marker through the pool (which itself reconnects, with its own paced backoff): a failure marks
  // Redis down (jittered exponential backoff between checks, 50 ms .. 1 s); a missing marker
  // (first start, or a Redis that restarted empty, however briefly it was gone) seeds the users
  // again before Redis is marked up.
  net::awaitable<void> keep() {
    std::chrono::milliseconds backoff = kBackoffMin;
    std::minstd_rand rng(std::random_device{}());
    auto back_off = [&backoff, &rng] {
      // Jitter over [backoff/2, backoff]: instances restarted together spread their retries.
      std::uniform_int_distribution<std::int64_t> half(0, backoff.count() / 2);
      const auto d = backoff / 2 + std::chrono::milliseconds(half(rng));
      backoff = std::min(backoff * 2, kBackoffMax);
      return d;
    };
    while (!stopping.load(std::memory_order_relaxed)) {
      redis::command check{"EXISTS", marker};
      auto [ec, r] = co_await client->async_exec(std::move(check), a.cfg.redis_timeout, tok);
      if (stopping.load(std::memory_order_relaxed)) break;
      if (ec || !r.is_integer()) {
        mark_down(ec ? "health check: " + ec.message() : "health check: " + r.str());
        co_await sleep(back_off());
        continue;
      }
      if (r.as_integer() == 0 || !up.load(std::memory_order_relaxed)) {
        if (!co_await seed()) {
          mark_down("seeding failed");
          co_await sleep(back_off());
          continue;
        }
        up.store(true, std::memory_order_relaxed);
        if (!first_up_set) {
          first_up_set = true;
          first_up.set_value();
        }
      }
      // Only now: a Redis that answers but refuses the seeding is retried with backoff too.
      backoff = kBackoffMin;
      co_await sleep(kCheckEvery);
    }
    keeper_done.store(true, std::memory_order_release);
  }

  // Publishes the Redis figures on /metrics.
  void collect(sluice::metrics::sample_sink& sink) const {
    sink.gauge("redis_up",
               "1 while Redis answers the health check and holds the seeded users, else 0.",
               up.load(std::memory_order_relaxed) ? 1.0 : 0.0);
    sink.counter("redis_outages_total", "Times Redis went from answering to not answering.",
                 static_cast<double>(outages.load(std::memory_order_relaxed)));
    sink.counter("user_store_redis_reads_total", "User reads from Redis (HGETALL) by outcome.",
                 static_cast<double>(commands_ok.load(std::memory_order_relaxed)),
                 {{"result", "ok"}});
    sink.counter("user_store_redis_reads_total", "User reads from Redis (HGETALL) by outcome.",
                 static_cast<double>(commands_failed.load(std::memory_order_relaxed)),
                 {{"result", "failed"}});
    sink.counter("redis_users_seeded_total", "Users created in Redis by start-up seeding.",
                 static_cast<double>(seeded.load(std::memory_order_relaxed)));
    const sluice::pool_stats ps = client->pool().stats();
    const std::pair<const char*, std::size_t> conns[] = {
        {"idle", ps.idle}, {"in_use", ps.in_use}, {"connecting", ps.pending_creates}};
    for (auto [state, n] : conns) {
      sink.gauge("redis_pool_connections", "Redis connections in the pool by state.",
                 static_cast<double>(n), {{"state", state}});
    }
    sink.gauge("redis_pool_waiters", "Commands waiting for a free Redis connection.",
               static_cast<double>(ps.waiters));
    sink.counter("redis_pool_connections_opened_total", "Redis connections opened.",
                 static_cast<double>(ps.created));
    sink.counter("redis_pool_connect_failures_total", "Redis connects that failed.",
                 static_cast<double>(ps.create_failures));
    sink.counter("redis_pool_acquire_timeouts_total",
                 "Commands that found no free Redis connection in time.",
                 static_cast<double>(ps.timeouts));
    const redis::l2_cache_stats st = pages->stats();
    const std::pair<const char*, std::uint64_t> l2[] = {
        {"local_hit", st.local_hits},
        {"redis_hit", st.redis_hits},
        {"miss", st.misses},
        {"stale", st.stale_served},
        {"redis_error", st.redis_errors},
        {"breaker_rejected", st.breaker_rejections}};
    for (auto [result, n] : l2) {
      sink.counter("page_cache_lookups_total",
                   "/api/data lookups in the two-level page cache (local, then Redis) by result.",
                   static_cast<double>(n), {{"result", result}});
    }
    sink.counter("page_cache_loads_total", "Pages built on a miss (one per flight).",
                 static_cast<double>(st.loads));
  }
};

namespace {

// Hashes `user:<id>` through the shared client.
class redis_store final : public user_store {
 public:
  explicit redis_store(redis_mode::impl& r) : r_(r) {}

  absl::StatusOr<std::optional<user>> get(std::int64_t) override {
    return absl::UnimplementedError("the Redis store is asynchronous: use async_get");
  }

  net::awaitable<absl::StatusOr<std::optional<user>>> async_get(std::int64_t id) override {
    redis::command c{"HGETALL", "user:" + std::to_string(id)};
    auto [ec, r] = co_await r_.read_user(std::move(c));
    if (absl::Status s = redis::to_status(ec, r); !s.ok()) co_return s;
    if (!r.is_array() || r.elements().size() % 2 != 0) {
      co_return absl::DataLossError("user:" + std::to_string(id) + " is not a hash");
    }
    if (r.elements().empty()) {
      // Until the keeper has seeded this Redis (at start-up, or after it came back empty), an
      // absent hash may be a user not written yet: unavailable (STALE or 503), not a 404.
      if (!r_.up.load(std::memory_order_relaxed)) {
        co_return absl::UnavailableError("redis not seeded yet");
      }
      co_return std::optional<user>();
    }
    user u;
    u.id = id;
    const auto& e = r.elements();
    for (std::size_t i = 0; i + 1 < e.size(); i += 2) {
      if (e[i].str() == "name") u.name = e[i + 1].str();
      if (e[i].str() == "email") u.email = e[i + 1].str();
    }
    co_return std::optional<user>(std::move(u));
  }

  absl::Status ping() override {
    if (r_.up.load(std::memory_order_relaxed)) return absl::OkStatus();
    return absl::UnavailableError("redis unreachable");
  }

  std::string_view kind() const override { return "redis"; }
  bool synchronous() const override { return false; }

 private:
  redis_mode::impl& r_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<redis_mode>> redis_mode::create(app& a,
                                                               std::chrono::milliseconds wait) {
  absl::StatusOr<redis::endpoint> ep = redis::parse_url(a.cfg.redis_url);
  if (!ep.ok()) return ep.status();
  auto p = std::make_unique<impl>(a, std::move(*ep));
  auto client = make_client(p->ioc.get_executor(), p->ep, a.cfg);
  if (!client.ok()) return client.status();
  p->client = std::move(*client);
  if (a.cfg.rate_limit > 0) {
    redis::gcra_limiter_options o;
    o.limits.rate = a.cfg.rate_limit;
    o.limits.burst = a.cfg.rate_burst;
    // Fail open to a per-instance limit: an outage of the shared store must not take the
    // service down, and each instance still bounds a client.
    o.when_unreachable = redis::gcra_limiter_options::unreachable::local;
    // A key's state (its theoretical arrival time) only means something under the quota that
    // wrote it: instances with another --rate-limit/--rate-burst keep their own keys.
    o.key_prefix =
        "sluice:rl:" + std::to_string(o.limits.rate) + ":" + std::to_string(o.limits.burst) + ":";
    auto limiter = redis::gcra_limiter::create(*p->client, std::move(o));
    if (!limiter.ok()) return limiter.status();
    p->limiter = std::move(*limiter);
  }
  auto pages = page_cache::create(*p->client, page_cache_options(a.cfg));
  if (!pages.ok()) return pages.status();
  p->pages = std::move(*pages);
  impl* raw = p.get();
  p->collectors = a.metrics->registry().add_collector(
      [raw](sluice::metrics::sample_sink& sink) { raw->collect(sink); });
  std::future<void> first = p->first_up.get_future();
  net::co_spawn(p->ioc, p->keep(), net::detached);
  p->thread = std::thread([raw] { raw->ioc.run(); });
  if (first.wait_for(wait) != std::future_status::ready) {
    SPDLOG_LOGGER_WARN(a.log,
                       "\"msg\":\"redis not reachable at start-up, retrying in the "
                       "background\",\"url_host\":\"{}\"",
                       raw->ep.host);
  }
  return std::unique_ptr<redis_mode>(new redis_mode(std::move(p)));
}

redis_mode::redis_mode(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

redis_mode::~redis_mode() {
  impl* p = impl_.get();
  p->collectors.reset();
  net::post(p->ioc, [p] {
    p->stopping.store(true, std::memory_order_relaxed);
    p->pause.cancel();
    p->client->close();
  });
  // The keeper ends at its next step (a command is bounded by its timeout) and the closed pool
  // lets go of the thread: run() returns once nothing is left to run, so no operation of the page
  // cache or the limiter outlives them (they are not reference-counted). Bounded anyway: a stuck
  // operation must not hold the process at exit.
  for (int i = 0; i < 200 && !(p->keeper_done.load(std::memory_order_acquire) && p->ioc.stopped());
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  p->ioc.stop();
  if (p->thread.joinable()) p->thread.join();
}

std::unique_ptr<user_store> redis_mode::make_user_store() {
  return std::make_unique<redis_store>(*impl_);
}

bool redis_mode::up() const { return impl_->up.load(std::memory_order_relaxed); }

net::awaitable<absl::StatusOr<body_ptr>> redis_mode::get_page(std::int64_t page, page_builder build,
                                                              const char*& x_cache) {
  auto [ec, r] = co_await impl_->pages->async_get_or_load(
      std::to_string(page),
      [build, page](const std::string&) { return build_page_async(build, page); }, tok);
  if (ec) co_return sluice::asio::to_status(ec);
  // The contract knows HIT and MISS for /api/data: a copy kept past its local TTL and served
  // during an outage still came from the cache.
  x_cache = r.hit() || r.stale() ? "HIT" : "MISS";
  co_return std::move(r.value);
}

bool redis_mode::limits_requests() const { return impl_->limiter != nullptr; }

net::awaitable<bool> redis_mode::admit(std::string_view client, response& res) {
  primitives& p = *impl_->a.prims;
  sluice::rate_limit_result r;
  if (impl_->up.load(std::memory_order_relaxed)) {
    auto [ec, decided] = co_await impl_->limiter->async_acquire(client, 1, tok);
    // An error here is a script failure (the key holds another type): decide locally.
    r = ec ? impl_->limiter->acquire_local(client, 1) : decided;
  } else {
    // Known down: no round trip to a server that is not there.
    r = impl_->limiter->acquire_local(client, 1);
  }
  if (r) {
    p.limit_allowed->inc();
    co_return true;
  }
  p.limit_limited->inc();
  reject_rate_limited(r, res);
  co_return false;
}

}  // namespace service
