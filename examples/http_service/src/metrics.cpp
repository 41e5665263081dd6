// metrics.cpp: the service's metrics on sluice::metrics (see metrics.hpp).
#include "metrics.hpp"

#include <absl/container/flat_hash_map.h>
#include <spdlog/async.h>
#include <spdlog/details/thread_pool.h>

#include <sluice/metrics.hpp>

namespace service {

const std::string_view metrics_content_type = sluice::metrics::registry::content_type;

namespace {

std::string_view method_label(method m) {
  switch (m) {
    case method::get:
      return "GET";
    case method::head:
      return "HEAD";
    case method::post:
      return "POST";
    case method::put:
      return "PUT";
    case method::del:
      return "DELETE";
    case method::other:
      break;
  }
  return "other";
}

struct children {
  sluice::metrics::counter* requests = nullptr;
  sluice::metrics::histogram* duration = nullptr;
};

}  // namespace

struct service_metrics::impl {
  sluice::metrics::registry reg;
  sluice::metrics::counter_family* requests = nullptr;
  sluice::metrics::histogram_family* duration = nullptr;
  sluice::metrics::gauge* connections = nullptr;
  sluice::metrics::collector_registration process;
  sluice::metrics::collector_registration logs;
};

service_metrics::service_metrics() : impl_(std::make_unique<impl>()) {
  auto& reg = impl_->reg;
  // Registration of fixed, valid names cannot fail; value() would throw if it ever did.
  impl_->requests = reg.add_counter_family("http_requests_total", "HTTP requests answered.",
                                           {"method", "route", "status"})
                        .value();
  impl_->duration =
      reg.add_histogram_family("http_request_duration_seconds",
                               "Time from a request's first byte to its last response byte.",
                               {"method", "route", "status"},
                               sluice::metrics::histogram::default_bounds())
          .value();
  impl_->connections =
      reg.add_gauge("http_open_connections", "Client connections currently open.").value();
  impl_->process = reg.add_collector(sluice::metrics::process_collector{});
  impl_->logs = reg.add_collector([](sluice::metrics::sample_sink& sink) {
    if (auto pool = spdlog::thread_pool()) {
      sink.counter("log_lines_dropped_total",
                   "Log lines dropped because the asynchronous log queue was full.",
                   static_cast<double>(pool->overrun_counter()));
      sink.gauge("log_queue_depth", "Log lines waiting for the log thread.",
                 static_cast<double>(pool->queue_size()));
    }
  });
}

service_metrics::~service_metrics() = default;

void service_metrics::observe(std::string_view route, method verb, unsigned status,
                              double seconds) {
  // Distinct (route address, method, status) triples give distinct keys: the address is shifted
  // above 16 bits, the method bit (< 64) takes bits 10..15, the status (< 1000) bits 0..9.
  const std::uint64_t key = (reinterpret_cast<std::uintptr_t>(route.data()) << 16) ^
                            (static_cast<std::uint64_t>(verb) << 10) ^ (status & 1023u);
  thread_local absl::flat_hash_map<std::uint64_t, children> cache;
  auto it = cache.find(key);
  if (it == cache.end()) {
    const std::string code = std::to_string(status);
    const std::string_view m = method_label(verb);
    children c;
    c.requests = &impl_->requests->with({m, route, code});
    c.duration = &impl_->duration->with({m, route, code});
    it = cache.emplace(key, c).first;
  }
  it->second.requests->inc();
  it->second.duration->observe(seconds);
}

void service_metrics::connection_opened() { impl_->connections->inc(); }
void service_metrics::connection_closed() { impl_->connections->dec(); }

std::string service_metrics::render() const { return impl_->reg.render(); }

sluice::metrics::registry& service_metrics::registry() { return impl_->reg; }

}  // namespace service
