// The header under test comes first: it must compile on its own.
// clang-format off
#include <sluice/metrics/circuit_breaker_metrics.hpp>
// clang-format on

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include <sys/wait.h>
#include <unistd.h>

#include <sluice/circuit_breaker.hpp>
#include <sluice/keyed_limiter.hpp>
#include <sluice/metrics/cache_metrics.hpp>
#include <sluice/metrics/limiter_metrics.hpp>
#include <sluice/metrics/offload_metrics.hpp>
#include <sluice/metrics/pool_metrics.hpp>
#include <sluice/metrics/registry.hpp>

#include "alloc_counter.hpp"
#include "catch.hpp"

namespace m = sluice::metrics;

namespace {

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos;
}

}  // namespace

TEST_CASE("metrics_bindings: a breaker publishes state, transitions and calls", "[metrics]") {
  m::registry r;
  sluice::circuit_breaker<> breaker;
  auto published = m::publish(r, "payments", breaker);
  for (int i = 0; i < 3; ++i) {
    auto p = breaker.try_acquire();
    REQUIRE(p);
    p->record_success();
  }
  {
    auto p = breaker.try_acquire();
    REQUIRE(p);
    p->record_failure();
  }
  std::string text = r.render();
  INFO(text);
  CHECK(has_line(text, "sluice_circuit_breaker_state{breaker=\"payments\",state=\"closed\"} 1"));
  CHECK(has_line(text, "sluice_circuit_breaker_state{breaker=\"payments\",state=\"open\"} 0"));
  CHECK(has_line(text,
                 "sluice_circuit_breaker_calls_total{breaker=\"payments\",outcome=\"success\"} 3"));
  CHECK(has_line(text,
                 "sluice_circuit_breaker_calls_total{breaker=\"payments\",outcome=\"failure\"} 1"));
  CHECK(has_line(text, "sluice_circuit_breaker_slow_calls_total{breaker=\"payments\"} 0"));

  breaker.force_open();
  CHECK_FALSE(breaker.try_acquire());
  text = r.render();
  CHECK(
      has_line(text, "sluice_circuit_breaker_state{breaker=\"payments\",state=\"forced_open\"} 1"));
  CHECK(has_line(text, "sluice_circuit_breaker_state{breaker=\"payments\",state=\"closed\"} 0"));
  CHECK(has_line(
      text,
      "sluice_circuit_breaker_transitions_total{breaker=\"payments\",state=\"forced_open\"} 1"));
  CHECK(has_line(
      text, "sluice_circuit_breaker_calls_total{breaker=\"payments\",outcome=\"rejected\"} 1"));

  // A second breaker joins the same families, and nothing is published once unregistered.
  sluice::circuit_breaker<> other;
  {
    auto published_other = m::publish(r, "search", other);
    text = r.render();
    CHECK(has_line(text, "sluice_circuit_breaker_state{breaker=\"search\",state=\"closed\"} 1"));
    CHECK(text.find("# TYPE sluice_circuit_breaker_state gauge") ==
          text.rfind("# TYPE sluice_circuit_breaker_state gauge"));
  }
  published.reset();
  CHECK(r.render().find("sluice_circuit_breaker") == std::string::npos);
}

TEST_CASE("metrics_bindings: a cache publishes lookups, loads, evictions and size", "[metrics]") {
  m::registry r;
  sluice::cache<std::string, int> cache({.max_entries = 100});
  auto published = m::publish(r, "users", cache);
  cache.put("a", 1);
  cache.put("b", 2);
  CHECK(cache.get("a"));
  CHECK(cache.get("a"));
  CHECK_FALSE(cache.get("zzz"));
  const std::string text = r.render();
  INFO(text);
  CHECK(has_line(text, "sluice_cache_lookups_total{cache=\"users\",result=\"hit\"} 2"));
  CHECK(has_line(text, "sluice_cache_lookups_total{cache=\"users\",result=\"miss\"} 1"));
  CHECK(has_line(text, "sluice_cache_entries{cache=\"users\"} 2"));
  CHECK(has_line(text, "sluice_cache_weight{cache=\"users\"} 2"));
  CHECK(has_line(text, "sluice_cache_evictions_total{cache=\"users\"} 0"));
  CHECK(has_line(text, "sluice_cache_loads_total{cache=\"users\",result=\"value\"} 0"));
}

TEST_CASE("metrics_bindings: a pool publishes its connections and acquires", "[metrics]") {
  struct conn {
    int id = 0;
  };
  sluice::pool_factory<conn> factory;
  int opened = 0;
  factory.create = [&opened](std::chrono::steady_clock::time_point) -> absl::StatusOr<conn> {
    return conn{++opened};
  };
  auto p = sluice::pool<conn>::make(factory, {.max_size = 4});
  REQUIRE(p.ok());
  m::registry r;
  auto published = m::publish(r, "db", *p);
  {
    auto lease = p->acquire(std::chrono::milliseconds(100));
    REQUIRE(lease.ok());
    const std::string text = r.render();
    INFO(text);
    CHECK(has_line(text, "sluice_pool_connections{pool=\"db\",state=\"in_use\"} 1"));
    CHECK(has_line(text, "sluice_pool_connections{pool=\"db\",state=\"idle\"} 0"));
    CHECK(has_line(text, "sluice_pool_acquires_total{pool=\"db\"} 1"));
    CHECK(has_line(text, "sluice_pool_connections_created_total{pool=\"db\"} 1"));
    CHECK(has_line(text, "sluice_pool_waiters{pool=\"db\"} 0"));
  }
  const std::string text = r.render();
  CHECK(has_line(text, "sluice_pool_connections{pool=\"db\",state=\"idle\"} 1"));
  CHECK(has_line(text, "sluice_pool_connections{pool=\"db\",state=\"in_use\"} 0"));
}

TEST_CASE("metrics_bindings: an offload executor publishes its queue and tasks", "[metrics]") {
  m::registry r;
  sluice::offload_executor workers({.threads = 1, .queue_capacity = 16});
  auto published = m::publish(r, "io", workers);
  for (int i = 0; i < 5; ++i) REQUIRE(workers.execute([] {}).ok());
  workers.shutdown();  // drains
  const std::string text = r.render();
  INFO(text);
  CHECK(has_line(text, "sluice_offload_threads{executor=\"io\"} 1"));
  CHECK(has_line(text, "sluice_offload_tasks_total{executor=\"io\",outcome=\"submitted\"} 5"));
  CHECK(has_line(text, "sluice_offload_tasks_total{executor=\"io\",outcome=\"completed\"} 5"));
  CHECK(has_line(text, "sluice_offload_queue_depth{executor=\"io\"} 0"));
}

TEST_CASE("metrics_bindings: limiter decisions are counted without allocating", "[metrics]") {
  m::registry r;
  auto limiter = sluice::keyed_limiter<std::string>::create(
      {.limits = {.rate = 1, .burst = 2}, .max_keys = 100});
  REQUIRE(limiter.ok());
  auto decisions = m::limiter_decisions::create(r, "api");
  REQUIRE(decisions.ok());
  auto published = m::publish(r, "api", **limiter);
  const std::string key = "client-1";
  std::uint64_t allowed = 0;
  for (int i = 0; i < 5; ++i) {
    if (decisions->record((*limiter)->try_acquire(key))) ++allowed;
  }
  CHECK(decisions->allowed() == allowed);
  CHECK(decisions->limited() == 5 - allowed);
  CHECK(decisions->limited() >= 1);  // a burst of 2 at 1/s cannot admit 5 at once
  {
    sluice::rate_limit_result refused;
    refused.allowed = false;
    sluice_test::alloc_scope scope;
    for (int i = 0; i < 100; ++i) decisions->record(refused);
    CHECK(scope.allocations() == 0);
  }
  const std::uint64_t limited = 105 - allowed;
  CHECK(decisions->limited() == limited);
  const std::string text = r.render();
  INFO(text);
  CHECK(has_line(text, "sluice_rate_limiter_keys{limiter=\"api\"} 1"));
  CHECK(
      has_line(text, "sluice_rate_limiter_decisions_total{limiter=\"api\",decision=\"limited\"} " +
                         std::to_string(limited)));
  // The same limiter name again finds the same counters.
  auto again = m::limiter_decisions::create(r, "api");
  REQUIRE(again.ok());
  CHECK(again->limited() == limited);
}

TEST_CASE("metrics_bindings: promtool accepts every binding's output", "[metrics][promtool]") {
  const char* promtool = "/usr/bin/promtool";
  INFO("promtool (Debian package `prometheus`, installed by scripts/bootstrap.sh) is required");
  REQUIRE(::access(promtool, X_OK) == 0);
  struct conn {};
  sluice::pool_factory<conn> factory;
  factory.create = [](std::chrono::steady_clock::time_point) -> absl::StatusOr<conn> {
    return conn{};
  };
  auto p = sluice::pool<conn>::make(factory, {.max_size = 2});
  REQUIRE(p.ok());
  auto limiter = sluice::keyed_limiter<std::string>::create({.limits = {.rate = 1, .burst = 1}});
  REQUIRE(limiter.ok());
  sluice::circuit_breaker<> breaker;
  sluice::cache<std::string, int> cache;
  sluice::offload_executor workers({.threads = 1});

  m::registry r;
  auto decisions = m::limiter_decisions::create(r, "api");
  REQUIRE(decisions.ok());
  decisions->record((*limiter)->try_acquire("k"));
  auto b1 = m::publish(r, "payments", breaker);
  auto b2 = m::publish(r, "users", cache);
  auto b3 = m::publish(r, "db", *p);
  auto b4 = m::publish(r, "io", workers);
  auto b5 = m::publish(r, "api", **limiter);

  const auto input = std::filesystem::temp_directory_path() /
                     ("sluice_bindings_" + std::to_string(::getpid()) + ".prom");
  {
    std::ofstream f(input, std::ios::binary);
    f << r.render();
  }
  const std::string command = std::string(promtool) + " check metrics < " + input.string() + " > " +
                              input.string() + ".out 2>&1";
  const int status = std::system(command.c_str());
  std::ifstream out(input.string() + ".out");
  const std::string output((std::istreambuf_iterator<char>(out)), std::istreambuf_iterator<char>());
  INFO("promtool said: " << output);
  REQUIRE(status != -1);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  std::filesystem::remove(input);
  std::filesystem::remove(input.string() + ".out");
}
