// primitives.cpp: construction of the sluice primitives, their metrics, the rate-limit middleware
// and the offload glue (see primitives.hpp and offloaded.hpp).
#include "primitives.hpp"

#include <cerrno>
#include <exception>

#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>
#include <spdlog/spdlog.h>

#include <sluice/asio/offload.hpp>
#include <sluice/metrics/registry.hpp>
#include <sluice/rate_limit.hpp>

#include "metrics.hpp"
#include "offloaded.hpp"

namespace service {
namespace {

namespace net = boost::asio;

sluice::cache_options users_cache_options(const config& c) {
  sluice::cache_options o;
  o.max_entries = 10'000;  // the figure: every hot user of a typical service
  o.expire_after_write = c.cache_ttl;
  o.stale_for = c.stale_for;  // the last known value, served as STALE while the store is down
  return o;
}

sluice::cache_options pages_cache_options(const config& c) {
  sluice::cache_options o;
  // A page is ~5 KB: 1000 pages bound the cache near 5 MB, inside the service's memory budget.
  o.max_entries = 1'000;
  o.expire_after_write = c.cache_ttl;
  return o;
}

sluice::circuit_breaker_options breaker_options(const config& c) {
  sluice::circuit_breaker_options o;
  o.window.window_size = 20;  // the last 20 store calls: trips within a burst of failures
  o.minimum_calls = 10;
  o.failure_rate_threshold = 0.5;
  o.half_open_probes = 3;
  o.open_duration = c.breaker_open;
  o.max_open_duration = c.breaker_open * 8;
  o.reset_open_duration_after = c.breaker_open * 4;
  return o;
}

sluice::offload_options offload_options(const config& c) {
  sluice::offload_options o;
  o.threads = static_cast<std::size_t>(c.offload_threads);
  o.queue_capacity = static_cast<std::size_t>(c.offload_queue);
  o.full_policy = sluice::offload_full_policy::reject;  // shed load: 503, never block a loop
  return o;
}

void cache_samples(sluice::metrics::sample_sink& sink, std::string_view name,
                   const sluice::cache<std::int64_t, body_ptr>& c) {
  const sluice::cache_stats s = c.stats();
  const sluice::metrics::sample_sink::label l[] = {{"cache", name}};
  std::span<const sluice::metrics::sample_sink::label> labels(l);
  sink.counter("cache_hits_total", "Cache lookups that found a fresh value.",
               static_cast<double>(s.hits), labels);
  sink.counter("cache_misses_total", "Cache lookups that found nothing usable.",
               static_cast<double>(s.misses), labels);
  sink.counter("cache_stale_hits_total", "Cache lookups served an expired (stale) value.",
               static_cast<double>(s.stale_hits), labels);
  sink.counter("cache_evictions_total", "Entries evicted for capacity.",
               static_cast<double>(s.evictions), labels);
  sink.counter("cache_expirations_total", "Entries removed because they expired.",
               static_cast<double>(s.expirations), labels);
  sink.counter("cache_loads_total", "Values loaded on a miss (single flight).",
               static_cast<double>(s.loads), labels);
  sink.gauge("cache_entries", "Entries held, including expired ones not yet swept.",
             static_cast<double>(c.size()), labels);
}

sluice::offload_options file_options(const config& c) {
  sluice::offload_options o;
  // Blocking I/O, not CPU: a few threads per loop keep many transfers moving while some wait on
  // the disk.
  o.threads = static_cast<std::size_t>(2 * c.threads);
  // One chunk in flight per transferring connection: room for thousands of transfers.
  o.queue_capacity = 8192;
  o.full_policy = sluice::offload_full_policy::reject;
  return o;
}

}  // namespace

primitives::primitives(app& a)
    : users(users_cache_options(a.cfg)),
      users_breaker(breaker_options(a.cfg)),
      pages(pages_cache_options(a.cfg)),
      cpu(offload_options(a.cfg)),
      files(file_options(a.cfg)) {
  if (a.cfg.rate_limit > 0) {
    sluice::keyed_limiter<std::string>::options o;
    o.limits.rate = a.cfg.rate_limit;
    o.limits.burst = a.cfg.rate_burst;
    // 100'000 clients at ~64 bytes each: a bounded ~10 MB however many addresses a flood uses.
    o.max_keys = 100'000;
    limiter = sluice::keyed_limiter<std::string>::create(o).value();
  }
  auto& reg = a.metrics->registry();
  auto* decisions = reg.add_counter_family("rate_limit_decisions_total",
                                           "Per-client rate limit decisions.", {"decision"})
                        .value();
  limit_allowed = &decisions->with({"allowed"});
  limit_limited = &decisions->with({"limited"});

  collectors = reg.add_collector([this](sluice::metrics::sample_sink& sink) {
    cache_samples(sink, "users", users);
    cache_samples(sink, "pages", pages);

    const sluice::breaker_metrics b = users_breaker.metrics();
    for (std::size_t i = 0; i < sluice::breaker_state_count; ++i) {
      auto st = static_cast<sluice::breaker_state>(i);
      sink.gauge("circuit_breaker_state", "1 for the breaker's current state, else 0.",
                 b.state == st ? 1.0 : 0.0,
                 {{"breaker", "user_store"}, {"state", sluice::to_string(st)}});
    }
    const std::pair<const char*, std::uint64_t> calls[] = {{"success", b.successful_calls},
                                                           {"failure", b.failed_calls},
                                                           {"ignored", b.ignored_calls},
                                                           {"rejected", b.rejected_calls}};
    for (auto [outcome, n] : calls) {
      sink.counter("circuit_breaker_calls_total", "Calls through the breaker by outcome.",
                   static_cast<double>(n), {{"breaker", "user_store"}, {"outcome", outcome}});
    }

    if (limiter) {
      sink.gauge("rate_limit_clients", "Clients with a live rate limiter.",
                 static_cast<double>(limiter->size()));
      sink.counter("rate_limit_client_evictions_total",
                   "Clients evicted from the limiter table at its cap.",
                   static_cast<double>(limiter->evictions()));
    }

    const sluice::offload_stats o = cpu.stats();
    sink.gauge("offload_queue_depth", "CPU tasks waiting for a worker.",
               static_cast<double>(o.queue_depth));
    sink.gauge("offload_active", "Workers running a CPU task now.", static_cast<double>(o.active));
    sink.gauge("offload_threads", "Offload worker threads.", static_cast<double>(o.threads));
    const std::pair<const char*, std::uint64_t> tasks[] = {{"completed", o.completed},
                                                           {"rejected", o.rejected},
                                                           {"expired", o.expired},
                                                           {"cancelled", o.cancelled}};
    for (auto [result, n] : tasks) {
      sink.counter("offload_tasks_total", "CPU tasks by result.", static_cast<double>(n),
                   {{"result", result}});
    }
    sink.gauge("offload_queue_wait_p50_seconds", "Median sampled queue wait of CPU tasks.",
               std::chrono::duration<double>(o.queue_wait_p50).count());
    sink.gauge("offload_queue_wait_p99_seconds", "99th percentile sampled queue wait.",
               std::chrono::duration<double>(o.queue_wait_p99).count());
  });
}

primitives::~primitives() { collectors.reset(); }

bool admit(app& a, std::string_view client, response& res) {
  primitives& p = *a.prims;
  if (!p.limiter) return true;
  // The key is a std::string; an IPv4 or short IPv6 address fits its small-string buffer, so
  // reusing one per thread costs no allocation.
  thread_local std::string key;
  key.assign(client.data(), client.size());
  const sluice::rate_limit_result r = p.limiter->try_acquire(key);
  if (r) {
    p.limit_allowed->inc();
    return true;
  }
  p.limit_limited->inc();
  reject_rate_limited(r, res);
  return false;
}

void reject_rate_limited(const sluice::rate_limit_result& r, response& res) {
  res.error(429, "rate limited");
  res.set("Retry-After", sluice::retry_after_value(r).str());
  res.set("RateLimit-Limit", sluice::ratelimit_limit_value(r).str());
  res.set("RateLimit-Remaining", sluice::ratelimit_remaining_value(r).str());
  res.set("RateLimit-Reset", sluice::ratelimit_reset_value(r).str());
}

net::awaitable<void> run_offloaded(app& a, handler_fn handler, const request& req, response& res) {
  auto [ep] = co_await sluice::asio::offload(
      a.prims->cpu, [&a, handler, &req, &res] { handler(a, req, res); },
      net::as_tuple(net::use_awaitable));
  if (!ep) co_return;
  res = response();
  try {
    std::rethrow_exception(ep);
  } catch (const boost::system::system_error& e) {
    if (e.code() == sluice::asio::error::resource_exhausted) {
      res.set("Retry-After", "1");
      res.error(503, "overloaded: CPU queue full");
      co_return;
    }
    SPDLOG_LOGGER_ERROR(a.log, "\"msg\":\"offload failed\",\"error\":\"{}\"", e.what());
    res.set("Retry-After", "1");
    res.error(503, "CPU work not run");
  } catch (const std::exception& e) {
    SPDLOG_LOGGER_ERROR(a.log, "\"msg\":\"handler failed\",\"error\":\"{}\"", e.what());
    res.error(500, "internal error");
  }
}

net::awaitable<long> read_offloaded(app& a, int fd, char* data, std::size_t size, off_t offset) {
  auto [ep, n] = co_await sluice::asio::offload(
      a.prims->files,
      [fd, data, size, offset]() -> long {
        for (;;) {
          ssize_t got = ::pread(fd, data, size, offset);
          if (got < 0 && errno == EINTR) continue;
          return static_cast<long>(got);
        }
      },
      net::as_tuple(net::use_awaitable));
  co_return ep ? -1 : n;
}

net::awaitable<bool> write_offloaded(app& a, int fd, const char* data, std::size_t size,
                                     sha256& digest) {
  auto [ep, ok] = co_await sluice::asio::offload(
      a.prims->files,
      [fd, data, size, &digest] {
        const char* p = data;
        std::size_t left = size;
        while (left > 0) {
          ssize_t n = ::write(fd, p, left);
          if (n < 0) {
            if (errno == EINTR) continue;
            return false;
          }
          p += n;
          left -= static_cast<std::size_t>(n);
        }
        digest.update(data, size);
        return true;
      },
      net::as_tuple(net::use_awaitable));
  co_return !ep && ok;
}

net::awaitable<bool> gzip_offloaded(app& a, std::string_view in, std::string& out) {
  auto [ep, ok] = co_await sluice::asio::offload(
      a.prims->cpu, [in, &out] { return gzip(in, out); }, net::as_tuple(net::use_awaitable));
  co_return !ep && ok;
}

}  // namespace service
