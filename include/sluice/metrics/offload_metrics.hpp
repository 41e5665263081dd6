// sluice/metrics/offload_metrics.hpp
//
// Publishes a `sluice::basic_offload_executor`'s figures through a `sluice::metrics::registry`,
// read from `executor.stats()` at scrape time only: submissions pay nothing.
//
//   sluice_offload_threads{executor}                 gauge    worker threads
//   sluice_offload_queue_depth{executor}             gauge    tasks queued, not yet running
//   sluice_offload_active{executor}                  gauge    workers running a task now
//   sluice_offload_queue_wait_p50_seconds{executor}  gauge    sampled submit-to-start latency
//   sluice_offload_queue_wait_p99_seconds{executor}  gauge
//   sluice_offload_tasks_total{executor,outcome}     counter  submitted|completed|failed|rejected|
//                                                             expired|cancelled
//
// Thread safety: as the registry's collectors. Lifetime: keep the returned registration while the
// executor lives, and destroy it first (the collector reads the executor).
//
// Example:
//   sluice::offload_executor workers({.threads = 4});
//   auto published = sluice::metrics::publish(registry, "blocking_io", workers);
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>

#include "sluice/metrics/registry.hpp"
#include "sluice/offload.hpp"

namespace sluice::metrics {

// Registers a collector publishing `executor` with the label executor=`name`. The scrape takes
// the executor's lock briefly (stats()).
template <class Clock>
[[nodiscard]] collector_registration publish(registry& r, std::string name,
                                             const basic_offload_executor<Clock>& executor) {
  return r.add_collector([&executor, name = std::move(name)](sample_sink& sink) {
    const offload_stats s = executor.stats();
    const auto seconds = [](std::chrono::nanoseconds d) {
      return std::chrono::duration<double>(d).count();
    };
    sink.gauge("sluice_offload_threads", "Worker threads.", static_cast<double>(s.threads),
               {{"executor", name}});
    sink.gauge("sluice_offload_queue_depth", "Tasks queued, not yet running.",
               static_cast<double>(s.queue_depth), {{"executor", name}});
    sink.gauge("sluice_offload_active", "Workers running a task now.",
               static_cast<double>(s.active), {{"executor", name}});
    sink.gauge("sluice_offload_queue_wait_p50_seconds", "Median sampled queue wait.",
               seconds(s.queue_wait_p50), {{"executor", name}});
    sink.gauge("sluice_offload_queue_wait_p99_seconds", "99th percentile sampled queue wait.",
               seconds(s.queue_wait_p99), {{"executor", name}});
    const std::pair<const char*, std::uint64_t> outcomes[] = {
        {"submitted", s.submitted}, {"completed", s.completed}, {"failed", s.failed},
        {"rejected", s.rejected},   {"expired", s.expired},     {"cancelled", s.cancelled}};
    for (const auto& [outcome, count] : outcomes) {
      sink.counter("sluice_offload_tasks_total", "Tasks by outcome.", static_cast<double>(count),
                   {{"executor", name}, {"outcome", outcome}});
    }
  });
}

}  // namespace sluice::metrics
