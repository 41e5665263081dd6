// sluice/metrics/pool_metrics.hpp
//
// Publishes a `sluice::pool`'s figures through a `sluice::metrics::registry`, read from
// `pool.stats()` at scrape time only (lock-free reads): acquires pay nothing.
//
//   sluice_pool_connections{pool,state}      gauge    idle|in_use|pending (connects in progress)
//   sluice_pool_size{pool}                   gauge    open connections plus connects in progress
//   sluice_pool_waiters{pool}                gauge    callers queued for a connection
//   sluice_pool_backend_down{pool}           gauge    1 while the backend is considered down
//   sluice_pool_acquires_total{pool}         counter  successful acquires
//   sluice_pool_acquire_failures_total{pool,reason}  counter  timeout|exhausted
//   sluice_pool_connections_created_total{pool}      counter
//   sluice_pool_connections_closed_total{pool}       counter
//   sluice_pool_create_failures_total{pool}          counter
//   sluice_pool_validation_failures_total{pool}      counter
//   sluice_pool_leaks_total{pool}                    counter  leases reported as leaked
//
// (Acquire wait times are not in pool_stats; time them at the call site with a latency_histogram.)
//
// Thread safety: as the registry's collectors. Lifetime: keep the returned registration while the
// pool object lives at the same address (do not move the pool), and destroy it first.
//
// Example:
//   auto db = sluice::pool<connection>::make(factory, {.max_size = 8});
//   auto published = sluice::metrics::publish(registry, "db", *db);
#pragma once

#include <string>
#include <utility>

#include "sluice/metrics/registry.hpp"
#include "sluice/pool.hpp"

namespace sluice::metrics {

// Registers a collector publishing `p` with the label pool=`name`.
template <class Connection, class Clock>
[[nodiscard]] collector_registration publish(registry& r, std::string name,
                                             const pool<Connection, Clock>& p) {
  return r.add_collector([&p, name = std::move(name)](sample_sink& sink) {
    const pool_stats s = p.stats();
    const char* connections = "Connections by state.";
    sink.gauge("sluice_pool_connections", connections, static_cast<double>(s.idle),
               {{"pool", name}, {"state", "idle"}});
    sink.gauge("sluice_pool_connections", connections, static_cast<double>(s.in_use),
               {{"pool", name}, {"state", "in_use"}});
    sink.gauge("sluice_pool_connections", connections, static_cast<double>(s.pending_creates),
               {{"pool", name}, {"state", "pending"}});
    sink.gauge("sluice_pool_size", "Open connections plus connects in progress.",
               static_cast<double>(s.size), {{"pool", name}});
    sink.gauge("sluice_pool_waiters", "Callers queued for a connection.",
               static_cast<double>(s.waiters), {{"pool", name}});
    sink.gauge("sluice_pool_backend_down", "1 while the backend is considered down.",
               s.backend_down ? 1.0 : 0.0, {{"pool", name}});
    sink.counter("sluice_pool_acquires_total", "Successful acquires.",
                 static_cast<double>(s.acquired), {{"pool", name}});
    const char* failures = "Acquires that failed, by reason.";
    sink.counter("sluice_pool_acquire_failures_total", failures, static_cast<double>(s.timeouts),
                 {{"pool", name}, {"reason", "timeout"}});
    sink.counter("sluice_pool_acquire_failures_total", failures, static_cast<double>(s.exhausted),
                 {{"pool", name}, {"reason", "exhausted"}});
    sink.counter("sluice_pool_connections_created_total", "Connections opened.",
                 static_cast<double>(s.created), {{"pool", name}});
    sink.counter("sluice_pool_connections_closed_total", "Connections closed.",
                 static_cast<double>(s.closed), {{"pool", name}});
    sink.counter("sluice_pool_create_failures_total", "Connects that failed.",
                 static_cast<double>(s.create_failures), {{"pool", name}});
    sink.counter("sluice_pool_validation_failures_total", "Connections that failed validation.",
                 static_cast<double>(s.validation_failures), {{"pool", name}});
    sink.counter("sluice_pool_leaks_total", "Leases reported as leaked.",
                 static_cast<double>(s.leaks), {{"pool", name}});
  });
}

}  // namespace sluice::metrics
