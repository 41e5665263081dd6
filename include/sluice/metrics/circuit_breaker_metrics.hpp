// sluice/metrics/circuit_breaker_metrics.hpp
//
// Publishes a `sluice::circuit_breaker`'s figures through a `sluice::metrics::registry`, read from
// `breaker.metrics()` at scrape time only: the breaker's call path pays nothing.
//
//   sluice_circuit_breaker_state{breaker,state}              gauge    1 for the current state
//   sluice_circuit_breaker_transitions_total{breaker,state}  counter  entries into each state
//   sluice_circuit_breaker_calls_total{breaker,outcome}      counter
//   success|failure|ignored|rejected sluice_circuit_breaker_slow_calls_total{breaker} counter  slow
//   calls
//
// Thread safety: as the registry's collectors. Lifetime: keep the returned registration while the
// breaker lives, and destroy it first (the collector reads the breaker).
//
// Example:
//   sluice::circuit_breaker<> breaker;
//   auto published = sluice::metrics::publish(registry, "payments", breaker);
#pragma once

#include <string>

#include "sluice/circuit_breaker.hpp"
#include "sluice/metrics/registry.hpp"

namespace sluice::metrics {

// Registers a collector publishing `breaker` with the label breaker=`name`. The scrape takes the
// breaker's lock briefly (breaker::metrics()).
template <class Clock>
[[nodiscard]] collector_registration publish(registry& r, std::string name,
                                             const circuit_breaker<Clock>& breaker) {
  return r.add_collector([&breaker, name = std::move(name)](sample_sink& sink) {
    const breaker_metrics m = breaker.metrics();
    for (std::size_t i = 0; i < breaker_state_count; ++i) {
      const auto state = static_cast<breaker_state>(i);
      sink.gauge("sluice_circuit_breaker_state", "Current breaker state (1) among all states.",
                 m.state == state ? 1.0 : 0.0, {{"breaker", name}, {"state", to_string(state)}});
      sink.counter(
          "sluice_circuit_breaker_transitions_total", "Transitions of the breaker into each state.",
          static_cast<double>(m.transitions[i]), {{"breaker", name}, {"state", to_string(state)}});
    }
    const std::pair<const char*, std::uint64_t> outcomes[] = {{"success", m.successful_calls},
                                                              {"failure", m.failed_calls},
                                                              {"ignored", m.ignored_calls},
                                                              {"rejected", m.rejected_calls}};
    for (const auto& [outcome, count] : outcomes) {
      sink.counter("sluice_circuit_breaker_calls_total", "Calls through the breaker by outcome.",
                   static_cast<double>(count), {{"breaker", name}, {"outcome", outcome}});
    }
    sink.counter("sluice_circuit_breaker_slow_calls_total",
                 "Calls slower than the breaker's slow-call threshold.",
                 static_cast<double>(m.slow_calls), {{"breaker", name}});
  });
}

}  // namespace sluice::metrics
