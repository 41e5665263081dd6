// sluice/metrics.hpp
//
// Includes sluice's metrics: lock-free counters, gauges, fixed-bucket and log-linear latency
// histograms, the registry that renders them in the Prometheus text format 0.0.4, pull-based
// collectors, and the process metrics collector. Standard library and Abseil only.
//
// The bindings that publish a primitive's own figures are separate headers, so that including
// the metrics never pulls in every primitive: <sluice/metrics/circuit_breaker_metrics.hpp>,
// cache_metrics.hpp, pool_metrics.hpp, offload_metrics.hpp and limiter_metrics.hpp, each with a
// `sluice::metrics::publish(registry, name, primitive)` overload.
//
// Example:
//   #include <sluice/metrics.hpp>
//   sluice::metrics::registry registry;
//   auto served = registry.add_counter("requests_total", "Requests served.");
//   if (served.ok()) (*served)->inc();
//   std::string body = registry.render();  // serve with registry::content_type
#pragma once

#include "sluice/metrics/counter.hpp"
#include "sluice/metrics/gauge.hpp"
#include "sluice/metrics/histogram.hpp"
#include "sluice/metrics/latency_histogram.hpp"
#include "sluice/metrics/process_collector.hpp"
#include "sluice/metrics/registry.hpp"
