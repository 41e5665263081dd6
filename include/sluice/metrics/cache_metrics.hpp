// sluice/metrics/cache_metrics.hpp
//
// Publishes a `sluice::cache`'s figures through a `sluice::metrics::registry`, read from
// `cache.stats()`, `size()` and `weight()` at scrape time only: lookups pay nothing.
//
//   sluice_cache_lookups_total{cache,result}   counter  hit|miss|negative_hit|stale_hit
//   sluice_cache_loads_total{cache,result}     counter  value|not_found|failure
//   sluice_cache_refreshes_total{cache}        counter  background reloads started
//   sluice_cache_evictions_total{cache}        counter  entries evicted for capacity
//   sluice_cache_evicted_weight_total{cache}   counter  their total weight
//   sluice_cache_removals_total{cache,cause}   counter  expired|erased|replaced
//   sluice_cache_entries{cache}                gauge    entries (expired ones not yet swept too)
//   sluice_cache_weight{cache}                 gauge    total weight of the entries
//
// Thread safety: as the registry's collectors. Lifetime: keep the returned registration while the
// cache lives, and destroy it first (the collector reads the cache).
//
// Example:
//   sluice::cache<std::string, std::string> users({.max_weight = 10'000});
//   auto published = sluice::metrics::publish(registry, "users", users);
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "sluice/cache.hpp"
#include "sluice/metrics/registry.hpp"

namespace sluice::metrics {

// Registers a collector publishing `c` with the label cache=`name`. The scrape takes each shard
// lock in turn, three times (stats, size, weight): O(shards).
template <class Key, class Value, class Clock, class Hash, class Eq>
[[nodiscard]] collector_registration publish(registry& r, std::string name,
                                             const cache<Key, Value, Clock, Hash, Eq>& c) {
  return r.add_collector([&c, name = std::move(name)](sample_sink& sink) {
    const cache_stats s = c.stats();
    const auto count = [&](const char* metric, const char* help, std::uint64_t v,
                           const char* label = nullptr, const char* value = nullptr) {
      if (label == nullptr) {
        sink.counter(metric, help, static_cast<double>(v), {{"cache", name}});
      } else {
        sink.counter(metric, help, static_cast<double>(v), {{"cache", name}, {label, value}});
      }
    };
    const char* lookups = "Cache lookups by result.";
    count("sluice_cache_lookups_total", lookups, s.hits, "result", "hit");
    count("sluice_cache_lookups_total", lookups, s.misses, "result", "miss");
    count("sluice_cache_lookups_total", lookups, s.negative_hits, "result", "negative_hit");
    count("sluice_cache_lookups_total", lookups, s.stale_hits, "result", "stale_hit");
    const char* loads = "Loader calls by result.";
    count("sluice_cache_loads_total", loads, s.loads, "result", "value");
    count("sluice_cache_loads_total", loads, s.loads_not_found, "result", "not_found");
    count("sluice_cache_loads_total", loads, s.load_failures, "result", "failure");
    count("sluice_cache_refreshes_total", "Background reloads started.", s.refreshes);
    count("sluice_cache_evictions_total", "Entries evicted for capacity.", s.evictions);
    count("sluice_cache_evicted_weight_total", "Total weight of the evicted entries.",
          s.evicted_weight);
    const char* removals = "Entries removed other than by eviction, by cause.";
    count("sluice_cache_removals_total", removals, s.expirations, "cause", "expired");
    count("sluice_cache_removals_total", removals, s.erasures, "cause", "erased");
    count("sluice_cache_removals_total", removals, s.replacements, "cause", "replaced");
    sink.gauge("sluice_cache_entries", "Entries in the cache.", static_cast<double>(c.size()),
               {{"cache", name}});
    sink.gauge("sluice_cache_weight", "Total weight of the entries in the cache.",
               static_cast<double>(c.weight()), {{"cache", name}});
  });
}

}  // namespace sluice::metrics
