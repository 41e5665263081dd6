// metrics.hpp: the service's Prometheus metrics on sluice::metrics: http_requests_total and the
// http_request_duration_seconds histogram by method, route template and status code, open
// connections, dropped log lines, the process_* metrics, and whatever the sluice primitives
// publish through collectors registered on the same registry.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "service.hpp"

namespace sluice::metrics {
class registry;
}

namespace service {

// Thread safety: observe(), connection_*() and render() may be called concurrently. observe()
// takes no lock once a thread has seen a (route, method, status) combination: each thread keeps
// the metric children it used in a small thread-local table (one service_metrics per process).
class service_metrics {
 public:
  service_metrics();
  ~service_metrics();
  service_metrics(const service_metrics&) = delete;
  service_metrics& operator=(const service_metrics&) = delete;

  // Counts one finished request. `route` must point at static storage (a route pattern or a
  // literal): its address is part of the per-thread cache key.
  void observe(std::string_view route, method verb, unsigned status, double seconds);
  // Tracks open connections (a gauge).
  void connection_opened();
  void connection_closed();
  // Returns the exposition text (Prometheus text format 0.0.4).
  std::string render() const;
  // Returns the registry, for the primitives' collectors.
  sluice::metrics::registry& registry();

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

// The Content-Type of render()'s output.
extern const std::string_view metrics_content_type;

}  // namespace service
