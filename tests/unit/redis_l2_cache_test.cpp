// clang-format off: the header under test comes first (it must compile on its own).
#include "sluice/redis/l2_cache.hpp"
// clang-format on

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "sluice/asio/error.hpp"
#include "sluice/detail/mutex.hpp"
#include "sluice/testing/manual_clock.hpp"

#include "catch.hpp"

namespace net = boost::asio;
namespace redis = sluice::redis;
using net::awaitable;
using net::use_awaitable;
using sluice::testing::manual_clock;
using namespace std::chrono_literals;

namespace {

constexpr auto tuple = net::as_tuple(use_awaitable);

// Splits a RESP command (what redis::command::wire() holds) into its arguments.
std::vector<std::string> decode_argv(std::string_view wire) {
  std::vector<std::string> argv;
  std::size_t pos = wire.find("\r\n") + 2;  // "*N\r\n"
  while (pos < wire.size()) {
    const std::size_t eol = wire.find("\r\n", pos);
    const std::size_t len = std::stoul(std::string(wire.substr(pos + 1, eol - pos - 1)));
    argv.emplace_back(wire.substr(eol + 2, len));
    pos = eol + 2 + len + 2;
  }
  return argv;
}

// An in-memory stand-in for Redis with the client interface l2_cache needs: GET+PTTL (the lookup
// script), SET EX/PX, DEL, PUBLISH. `down` makes every command fail as a dead server would.
class fake_redis {
 public:
  explicit fake_redis(net::any_io_executor ex) : ex_(std::move(ex)) {}

  net::any_io_executor get_executor() const { return ex_; }

  // Runs `cmd` with the client's default deadline (recorded as -1 in timeouts()).
  template <class CompletionToken>
  auto async_exec(redis::command cmd, CompletionToken&& token) {
    return async_exec(std::move(cmd), std::chrono::milliseconds(-1),
                      std::forward<CompletionToken>(token));
  }

  template <class CompletionToken>
  auto async_exec(redis::command cmd, std::chrono::milliseconds timeout, CompletionToken&& token) {
    {
      sluice::detail::mutex_lock lock(mu_);
      timeouts_.push_back(timeout.count());
    }
    return net::async_initiate<CompletionToken, void(boost::system::error_code, redis::reply)>(
        [](auto handler, fake_redis* self, redis::command c) {
          auto [ec, r] = self->answer(decode_argv(c.wire()));
          net::post(self->ex_, [h = std::move(handler), ec = ec, r = std::move(r)]() mutable {
            std::move(h)(ec, std::move(r));
          });
        },
        token, this, std::move(cmd));
  }

  // Stores `value` with `pttl` ms left (-1: no expiry).
  void store(const std::string& key, std::string value, std::int64_t pttl) {
    sluice::detail::mutex_lock lock(mu_);
    data_[key] = {std::move(value), pttl};
  }
  std::optional<std::pair<std::string, std::int64_t>> load(const std::string& key) {
    sluice::detail::mutex_lock lock(mu_);
    auto it = data_.find(key);
    if (it == data_.end()) return std::nullopt;
    return it->second;
  }
  void set_down(bool down) {
    sluice::detail::mutex_lock lock(mu_);
    down_ = down;
  }
  // Returns how many commands named `verb` were received (all of them for "").
  std::size_t count(const std::string& verb = "") {
    sluice::detail::mutex_lock lock(mu_);
    std::size_t n = 0;
    for (const auto& argv : log_) n += (verb.empty() || argv[0] == verb) ? 1 : 0;
    return n;
  }
  std::vector<std::vector<std::string>> log() {
    sluice::detail::mutex_lock lock(mu_);
    return log_;
  }
  // Returns the deadline each command was given, in ms (-1: the client's default).
  std::vector<std::int64_t> timeouts() {
    sluice::detail::mutex_lock lock(mu_);
    return timeouts_;
  }

 private:
  std::pair<boost::system::error_code, redis::reply> answer(std::vector<std::string> argv) {
    sluice::detail::mutex_lock lock(mu_);
    log_.push_back(argv);
    if (down_) return {net::error::connection_refused, redis::reply()};
    const std::string& verb = argv[0];
    if (verb == "EVALSHA") {
      auto it = data_.find(argv[3]);
      if (it == data_.end()) return {{}, redis::reply::nil()};
      std::vector<redis::reply> pair{redis::reply::string(it->second.first),
                                     redis::reply::integer(it->second.second)};
      return {{}, redis::reply::array(std::move(pair))};
    }
    if (verb == "SET") {
      if (argv.size() != 5 || (argv[3] != "PX" && argv[3] != "EX")) {
        return {{}, redis::reply::error("ERR bad SET")};
      }
      data_[argv[1]] = {argv[2], std::stoll(argv[4]) * (argv[3] == "EX" ? 1000 : 1)};
      return {{}, redis::reply::status("OK")};
    }
    if (verb == "DEL") return {{}, redis::reply::integer(data_.erase(argv[1]) > 0 ? 1 : 0)};
    if (verb == "PUBLISH") return {{}, redis::reply::integer(0)};
    return {{}, redis::reply::error("ERR unknown command")};
  }

  net::any_io_executor ex_;
  sluice::detail::mutex mu_;
  std::map<std::string, std::pair<std::string, std::int64_t>> data_ ABSL_GUARDED_BY(mu_);
  std::vector<std::vector<std::string>> log_ ABSL_GUARDED_BY(mu_);
  std::vector<std::int64_t> timeouts_ ABSL_GUARDED_BY(mu_);
  bool down_ ABSL_GUARDED_BY(mu_) = false;
};

using l2 = redis::l2_cache<std::string, fake_redis, redis::l2_codec<std::string>, manual_clock>;

redis::l2_cache_options test_options() {
  redis::l2_cache_options o;
  o.redis_ttl = 1h;
  o.local_ttl = 10s;
  o.max_stale = 1min;
  o.background_sweep = false;
  o.breaker.minimum_calls = 2;
  o.breaker.window.window_size = 4;
  o.breaker.open_duration = 30s;
  o.breaker.open_duration_jitter = 0;
  o.breaker.open_duration_multiplier = 1.0;
  o.breaker.half_open_probes = 1;
  return o;
}

// Runs `body` on a fresh single-threaded io_context until it finishes.
template <class Body>
void run(net::io_context& io, Body body) {
  bool done = false;
  std::exception_ptr error;
  net::co_spawn(io, std::move(body), [&](std::exception_ptr e) {
    done = true;
    error = e;
  });
  io.run();
  REQUIRE(done);
  if (error) std::rethrow_exception(error);
}

awaitable<absl::StatusOr<std::string>> constant(std::string v) { co_return v; }

}  // namespace

TEST_CASE("redis_l2_cache: a local hit sends no command; a Redis hit fills the local copy",
          "[redis_l2_cache]") {
  net::io_context io;
  fake_redis fake(io.get_executor());
  manual_clock clock;
  auto c = l2::create(fake, test_options(), {}, clock);
  REQUIRE(c.ok());
  l2& cache = **c;
  run(io, [&]() -> awaitable<void> {
    auto [ec, r] = co_await cache.async_get("absent", tuple);
    CHECK_FALSE(ec);
    CHECK_FALSE(r.has_value());
    CHECK(cache.stats().misses == 1);

    fake.store("sluice:l2:k", "from-redis", 60'000);
    auto [ec1, r1] = co_await cache.async_get("k", tuple);
    REQUIRE_FALSE(ec1);
    REQUIRE(r1.has_value());
    CHECK(r1->value == "from-redis");
    CHECK(r1->source == redis::l2_source::redis);
    CHECK(r1->hit());
    const std::size_t sent = fake.count();

    auto [ec2, r2] = co_await cache.async_get("k", tuple);
    REQUIRE(r2.has_value());
    CHECK(r2->source == redis::l2_source::local);
    CHECK(r2->value == "from-redis");
    CHECK(fake.count() == sent);  // no Redis traffic
    CHECK(cache.stats().local_hits == 1);
    CHECK(cache.stats().redis_hits == 1);

    // After local_ttl (10 s < 60 s left in Redis) the local copy is gone: Redis again.
    clock.advance(10s);
    auto [ec3, r3] = co_await cache.async_get("k", tuple);
    REQUIRE(r3.has_value());
    CHECK(r3->source == redis::l2_source::redis);
    CHECK(fake.count() == sent + 1);
  });
}

TEST_CASE("redis_l2_cache: the local copy never outlives the Redis copy it was read from",
          "[redis_l2_cache]") {
  net::io_context io;
  fake_redis fake(io.get_executor());
  manual_clock clock;
  auto c = l2::create(fake, test_options(), {}, clock);
  REQUIRE(c.ok());
  l2& cache = **c;
  run(io, [&]() -> awaitable<void> {
    fake.store("sluice:l2:short", "v", 2'000);  // 2 s left, local_ttl 10 s
    auto [ec, r] = co_await cache.async_get("short", tuple);
    REQUIRE(r.has_value());
    CHECK(cache.peek_local("short").has_value());
    clock.advance(1999ms);
    CHECK(cache.peek_local("short").has_value());
    clock.advance(1ms);
    CHECK_FALSE(cache.peek_local("short").has_value());

    fake.store("sluice:l2:forever", "v", -1);  // no Redis expiry: local_ttl
    co_await cache.async_get("forever", tuple);
    clock.advance(9s);
    CHECK(cache.peek_local("forever").has_value());
    clock.advance(1s);
    CHECK_FALSE(cache.peek_local("forever").has_value());
  });
}

TEST_CASE("redis_l2_cache: put writes Redis with its TTL, then the local copy; erase both",
          "[redis_l2_cache]") {
  net::io_context io;
  fake_redis fake(io.get_executor());
  manual_clock clock;
  auto opts = test_options();
  opts.invalidation_channel = "inv";
  opts.instance_id = "me";
  auto c = l2::create(fake, opts, {}, clock);
  REQUIRE(c.ok());
  l2& cache = **c;
  run(io, [&]() -> awaitable<void> {
    auto [ec] = co_await cache.async_put("k", "v1", tuple);
    CHECK_FALSE(ec);
    auto stored = fake.load("sluice:l2:k");
    REQUIRE(stored.has_value());
    CHECK(stored->first == "v1");
    CHECK(stored->second == 3'600'000);  // redis_ttl (sent as EX 3600)
    CHECK(cache.peek_local("k") == std::optional<std::string>("v1"));
    // The invalidation names this instance and the key.
    auto log = fake.log();
    REQUIRE(log.back().size() == 3);
    CHECK(log.back()[0] == "PUBLISH");
    CHECK(log.back()[1] == "inv");
    CHECK(log.back()[2] == "me:k");
    CHECK(cache.stats().invalidations_sent == 1);

    auto [ec2] = co_await cache.async_erase("k", tuple);
    CHECK_FALSE(ec2);
    CHECK_FALSE(fake.load("sluice:l2:k").has_value());
    CHECK_FALSE(cache.peek_local("k").has_value());
    CHECK(fake.count("PUBLISH") == 2);

    // A failed put leaves no local copy behind.
    co_await cache.async_put("k", "v2", tuple);
    fake.set_down(true);
    auto [ec3] = co_await cache.async_put("k", "v3", tuple);
    CHECK(ec3 == net::error::connection_refused);
    CHECK_FALSE(cache.peek_local("k").has_value());
  });
}

TEST_CASE("redis_l2_cache: get_or_load runs one lookup, one load and one SET for N callers",
          "[redis_l2_cache]") {
  const int threads = GENERATE(1, 2, 4);
  const int callers = 32;
  INFO("threads " << threads);
  net::io_context io;
  fake_redis fake(io.get_executor());
  manual_clock clock;
  auto c = l2::create(fake, test_options(), {}, clock);
  REQUIRE(c.ok());
  l2& cache = **c;
  std::atomic<int> loads{0};
  std::atomic<int> done{0};
  std::atomic<int> from_load{0};
  std::atomic<int> wrong{0};  // Catch2 assertions are not thread-safe: count on the io threads
  auto loader = [&](const std::string& key) -> awaitable<absl::StatusOr<std::string>> {
    loads.fetch_add(1);
    // Yield a few times so that callers still arriving find the flight in progress.
    for (int i = 0; i < 3; ++i) co_await net::post(io.get_executor(), use_awaitable);
    co_return "loaded:" + key;
  };
  for (int i = 0; i < callers; ++i) {
    net::co_spawn(
        io,
        [&]() -> awaitable<void> {
          auto [ec, r] = co_await cache.async_get_or_load("hot", loader, tuple);
          if (ec || r.value != "loaded:hot") wrong.fetch_add(1);
          if (r.source == redis::l2_source::loaded) from_load.fetch_add(1);
          done.fetch_add(1);
        },
        net::detached);
  }
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back([&] { io.run(); });
  io.run();
  for (auto& t : pool) t.join();
  CHECK(done.load() == callers);
  CHECK(wrong.load() == 0);
  CHECK(loads.load() == 1);
  CHECK(fake.count("SET") == 1);
  CHECK(fake.count("EVALSHA") == 1);
  CHECK(cache.stats().loads == 1);
  if (threads == 1) CHECK(from_load.load() == callers);  // all joined the one flight
  auto stored = fake.load("sluice:l2:hot");
  REQUIRE(stored.has_value());
  CHECK(stored->first == "loaded:hot");
}

TEST_CASE("redis_l2_cache: a loader's NotFound is reported and not cached; a Redis hit skips it",
          "[redis_l2_cache]") {
  net::io_context io;
  fake_redis fake(io.get_executor());
  manual_clock clock;
  auto c = l2::create(fake, test_options(), {}, clock);
  REQUIRE(c.ok());
  l2& cache = **c;
  int calls = 0;
  auto missing = [&](const std::string&) -> awaitable<absl::StatusOr<std::string>> {
    ++calls;
    co_return absl::NotFoundError("no such user");
  };
  run(io, [&]() -> awaitable<void> {
    auto [ec, r] = co_await cache.async_get_or_load("nobody", missing, tuple);
    CHECK(ec == sluice::asio::error::not_found);
    auto [ec2, r2] = co_await cache.async_get_or_load("nobody", missing, tuple);
    CHECK(ec2 == sluice::asio::error::not_found);
    CHECK(calls == 2);
    CHECK(fake.count("SET") == 0);

    fake.store("sluice:l2:there", "cached", 5'000);
    auto [ec3, r3] = co_await cache.async_get_or_load("there", missing, tuple);
    CHECK_FALSE(ec3);
    CHECK(r3.source == redis::l2_source::redis);
    CHECK(r3.value == "cached");
    CHECK(calls == 2);
  });
}

TEST_CASE("redis_l2_cache: Redis down serves stale copies, opens the breaker, fails fast without",
          "[redis_l2_cache]") {
  net::io_context io;
  fake_redis fake(io.get_executor());
  manual_clock clock;
  auto c = l2::create(fake, test_options(), {}, clock);
  REQUIRE(c.ok());
  l2& cache = **c;
  int loads = 0;
  auto loader = [&](const std::string& k) -> awaitable<absl::StatusOr<std::string>> {
    ++loads;
    co_return "fresh:" + k;
  };
  run(io, [&]() -> awaitable<void> {
    co_await cache.async_put("k", "old", tuple);
    clock.advance(15s);  // past local_ttl (10 s), within max_stale (1 min)
    fake.set_down(true);

    auto [ec, r] = co_await cache.async_get("k", tuple);
    CHECK_FALSE(ec);
    REQUIRE(r.has_value());
    CHECK(r->value == "old");
    CHECK(r->source == redis::l2_source::stale);
    CHECK(r->stale());
    auto [ec2, r2] = co_await cache.async_get_or_load("k", loader, tuple);
    CHECK_FALSE(ec2);
    CHECK(r2.source == redis::l2_source::stale);
    CHECK(loads == 0);

    // Two failures of at least two calls: the breaker is open; Redis is no longer asked.
    CHECK(cache.breaker().state() == sluice::breaker_state::open);
    const std::size_t sent = fake.count();
    auto [ec3, r3] = co_await cache.async_get("k", tuple);
    CHECK(r3.has_value());
    CHECK(fake.count() == sent);
    CHECK(cache.stats().breaker_rejections >= 1);
    CHECK(cache.stats().stale_served == 3);

    // No local copy: unavailable at once, and the loader is not called.
    auto [ec4, r4] = co_await cache.async_get("other", tuple);
    CHECK(ec4 == sluice::asio::error::unavailable);
    CHECK_FALSE(r4.has_value());
    auto [ec5, r5] = co_await cache.async_get_or_load("other", loader, tuple);
    CHECK(ec5 == sluice::asio::error::unavailable);
    CHECK(loads == 0);

    // Past max_stale the copy is gone too.
    clock.advance(1min);
    auto [ec6, r6] = co_await cache.async_get("k", tuple);
    CHECK(ec6 == sluice::asio::error::unavailable);

    // Recovery: after the open duration a probe reaches Redis, which is back.
    fake.set_down(false);
    fake.store("sluice:l2:k", "new", 60'000);
    clock.advance(31s);
    auto [ec7, r7] = co_await cache.async_get("k", tuple);
    CHECK_FALSE(ec7);
    REQUIRE(r7.has_value());
    CHECK(r7->value == "new");
    CHECK(r7->source == redis::l2_source::redis);
    CHECK(cache.breaker().state() == sluice::breaker_state::closed);
  });
}

TEST_CASE("redis_l2_cache: load_when_unavailable loads without Redis; a failed load serves stale",
          "[redis_l2_cache]") {
  net::io_context io;
  fake_redis fake(io.get_executor());
  manual_clock clock;
  auto opts = test_options();
  opts.load_when_unavailable = true;
  auto c = l2::create(fake, opts, {}, clock);
  REQUIRE(c.ok());
  l2& cache = **c;
  run(io, [&]() -> awaitable<void> {
    fake.set_down(true);
    auto [ec, r] = co_await cache.async_get_or_load(
        "k", [](const std::string&) { return constant("direct"); }, tuple);
    CHECK_FALSE(ec);
    CHECK(r.source == redis::l2_source::loaded);
    CHECK(fake.count("SET") == 0);  // Redis is down: no write attempted
    CHECK(cache.peek_local("k") == std::optional<std::string>("direct"));

    fake.set_down(false);
    clock.advance(11s);  // stale now
    auto failing = [](const std::string&) -> awaitable<absl::StatusOr<std::string>> {
      co_return absl::DeadlineExceededError("db slow");
    };
    auto [ec2, r2] = co_await cache.async_get_or_load("k", failing, tuple);
    CHECK_FALSE(ec2);
    CHECK(r2.source == redis::l2_source::stale);
    CHECK(r2.value == "direct");
    auto [ec3, r3] = co_await cache.async_get_or_load("none", failing, tuple);
    CHECK(ec3 == sluice::asio::error::deadline_exceeded);
    CHECK(cache.stats().load_failures == 2);

    auto throwing = [](const std::string&) -> awaitable<absl::StatusOr<std::string>> {
      throw std::runtime_error("boom");
      co_return "unreachable";
    };
    auto [ec4, r4] = co_await cache.async_get_or_load("none", throwing, tuple);
    CHECK(ec4 == sluice::asio::error::internal);
  });
}

TEST_CASE("redis_l2_cache: invalidations of other instances erase the local copy",
          "[redis_l2_cache]") {
  net::io_context io;
  fake_redis fake(io.get_executor());
  manual_clock clock;
  auto opts = test_options();
  opts.instance_id = "a";
  auto c = l2::create(fake, opts, {}, clock);
  REQUIRE(c.ok());
  l2& cache = **c;
  run(io, [&]() -> awaitable<void> { co_await cache.async_put("k", "v", tuple); });
  CHECK_FALSE(cache.apply_invalidation("a:k"));  // our own
  CHECK(cache.peek_local("k").has_value());
  CHECK_FALSE(cache.apply_invalidation("garbage"));
  CHECK(cache.apply_invalidation("b:k"));
  CHECK_FALSE(cache.peek_local("k").has_value());
  CHECK(cache.apply_invalidation("b:k:with:colons"));
  CHECK(cache.stats().invalidations_received == 2);
}

TEST_CASE("redis_l2_cache: invalid options are rejected; an instance id is generated",
          "[redis_l2_cache]") {
  net::io_context io;
  fake_redis fake(io.get_executor());
  manual_clock clock;
  auto bad = [&](redis::l2_cache_options o) {
    auto c = l2::create(fake, std::move(o), {}, clock);
    return !c.ok() && c.status().code() == absl::StatusCode::kInvalidArgument;
  };
  auto o = test_options();
  o.redis_ttl = 0ms;
  CHECK(bad(o));
  o = test_options();
  o.local_ttl = 0ms;
  CHECK(bad(o));
  o = test_options();
  o.instance_id = "a:b";
  CHECK(bad(o));
  o = test_options();
  o.breaker.failure_rate_threshold = 2.0;
  CHECK(bad(o));
  auto ok = l2::create(fake, test_options(), {}, clock);
  REQUIRE(ok.ok());
  CHECK((*ok)->instance_id().size() == 16);
  auto other = l2::create(fake, test_options(), {}, clock);
  CHECK((*other)->instance_id() != (*ok)->instance_id());
}

TEST_CASE("redis_l2_cache: handlers run on their executor, never inside the initiating function",
          "[redis_l2_cache]") {
  net::io_context io;
  fake_redis fake(io.get_executor());
  manual_clock clock;
  auto c = l2::create(fake, test_options(), {}, clock);
  REQUIRE(c.ok());
  l2& cache = **c;
  bool put_done = false;
  cache.async_put("k", "v", [&](boost::system::error_code ec) {
    CHECK_FALSE(ec);
    put_done = true;
  });
  CHECK_FALSE(put_done);
  io.run();
  CHECK(put_done);

  // A local hit too completes through a post, not inline.
  io.restart();
  std::optional<redis::l2_result<std::string>> got;
  cache.async_get("k", [&](boost::system::error_code,
                           std::optional<redis::l2_result<std::string>> r) { got = std::move(r); });
  CHECK_FALSE(got.has_value());
  CHECK(io.run() == 1);  // exactly the posted completion
  REQUIRE(got.has_value());
  CHECK(got->source == redis::l2_source::local);

  // A second executor: the completion of a miss runs there.
  io.restart();
  net::io_context other;
  bool on_other = false;
  cache.async_get_or_load(
      "m", [](const std::string&) { return constant("x"); },
      net::bind_executor(other.get_executor(),
                         [&](boost::system::error_code ec, redis::l2_result<std::string> r) {
                           CHECK_FALSE(ec);
                           CHECK(r.value == "x");
                           on_other = other.get_executor().running_in_this_thread();
                         }));
  io.run();
  CHECK_FALSE(on_other);
  other.run();
  CHECK(on_other);
}

TEST_CASE("redis_l2_cache: command_timeout 0 gives commands the client's default deadline",
          "[redis_l2_cache]") {
  net::io_context io;
  fake_redis fake(io.get_executor());
  manual_clock clock;
  auto opts = test_options();
  opts.command_timeout = 0ms;
  auto c = l2::create(fake, opts, {}, clock);
  REQUIRE(c.ok());
  l2& cache = **c;
  opts.command_timeout = 150ms;
  auto c150 = l2::create(fake, opts, {}, clock);
  REQUIRE(c150.ok());
  run(io, [&]() -> awaitable<void> {
    // 0 must not become "no deadline" (what 0 means to sluice::redis clients): a stalled Redis
    // would then hang lookups instead of failing over to the stale copy.
    auto [ec, r] = co_await cache.async_get("k", tuple);
    CHECK_FALSE(ec);
    auto [ec2] = co_await cache.async_put("k", "v", tuple);
    CHECK_FALSE(ec2);
    CHECK(fake.timeouts() == std::vector<std::int64_t>{-1, -1});
    auto [ec3, r3] = co_await (*c150)->async_get("other", tuple);
    CHECK_FALSE(ec3);
    CHECK(fake.timeouts().back() == 150);
  });
}
