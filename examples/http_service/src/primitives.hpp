// primitives.hpp: the sluice primitives the service is built on, in one place: the users cache
// (with stale fallback) and the circuit breaker around the user store, the /api/data page cache
// (single-flight loading), the per-client keyed GCRA rate limiter, and the offload executor for
// CPU-heavy work. Their figures are published on the service's metrics registry.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <sluice/cache.hpp>
#include <sluice/circuit_breaker.hpp>
#include <sluice/keyed_limiter.hpp>
#include <sluice/metrics/counter.hpp>
#include <sluice/metrics/registry.hpp>
#include <sluice/offload.hpp>

#include "service.hpp"

namespace service {

// A rendered JSON body, shared between the cache and the responses being written: copying one
// out of the cache is a reference-count increment, not a string copy.
using body_ptr = std::shared_ptr<const std::string>;

// Thread safety: every member is safe for concurrent use (see each primitive's header).
struct primitives {
  // Builds everything from a.cfg and registers the collectors on *a.metrics.
  explicit primitives(app& a);
  ~primitives();
  primitives(const primitives&) = delete;
  primitives& operator=(const primitives&) = delete;

  sluice::cache<std::int64_t, body_ptr> users;  // 10000 entries, TTL, stale window
  sluice::circuit_breaker<> users_breaker;      // around every user store read
  sluice::cache<std::int64_t, body_ptr> pages;  // /api/data (embedded mode), single flight
  std::unique_ptr<sluice::keyed_limiter<std::string>> limiter;  // null: limiting off
  sluice::offload_executor cpu;                                 // /compute, gzip of large bodies
  sluice::offload_executor files;                               // blocking file reads and writes

  sluice::metrics::counter* limit_allowed = nullptr;
  sluice::metrics::counter* limit_limited = nullptr;
  sluice::metrics::collector_registration collectors;
};

}  // namespace service
