// sluice/metrics/limiter_metrics.hpp
//
// Publishes rate limiters' figures through a `sluice::metrics::registry`. Limiters keep no
// counters of their own (a decision is a single atomic operation and stays that way), so their
// decisions are counted where they are made, by `limiter_decisions`, at the cost of one counter
// increment (about a nanosecond, no locked instruction); a keyed limiter's tracked keys are read at
// scrape time.
//
//   sluice_rate_limiter_decisions_total{limiter,decision}  counter  allowed|limited
//   sluice_rate_limiter_keys{limiter}                      gauge    keys tracked (keyed_limiter)
//
// Thread safety: `limiter_decisions::record` may be called concurrently. The keyed collector is as
// the registry's collectors; keep its registration while the limiter lives and destroy it first.
//
// Example:
//   auto decisions = sluice::metrics::limiter_decisions::create(registry, "api");
//   if (!decisions.ok()) return decisions.status();
//   if (auto r = decisions->record(limiter.try_acquire()); !r) return reply_429(r.retry_after);
#pragma once

#include <string>
#include <utility>

#include "absl/status/statusor.h"

#include "sluice/keyed_limiter.hpp"
#include "sluice/metrics/counter.hpp"
#include "sluice/metrics/registry.hpp"

namespace sluice::metrics {

// Counts the decisions of one limiter (any limiter whose result converts to bool: allowed).
// Copyable handle over two counters owned by the registry.
class limiter_decisions {
 public:
  // Registers (or finds) the decision counters for limiter=`name`. Errors as the registry's
  // factories (AlreadyExists if the family was registered with another shape).
  static absl::StatusOr<limiter_decisions> create(registry& r, const std::string& name) {
    auto family =
        r.add_counter_family("sluice_rate_limiter_decisions_total",
                             "Rate limiter decisions by outcome.", {"limiter", "decision"});
    if (!family.ok()) return family.status();
    return limiter_decisions(&(*family)->with({name, "allowed"}),
                             &(*family)->with({name, "limited"}));
  }

  // Counts `result` as allowed or limited and returns it unchanged. Lock-free, no allocation.
  template <class Result>
  const Result& record(const Result& result) noexcept {
    (static_cast<bool>(result) ? allowed_ : limited_)->inc();
    return result;
  }

  // Returns the number of allowed decisions counted.
  std::uint64_t allowed() const noexcept { return allowed_->value(); }
  // Returns the number of limited decisions counted.
  std::uint64_t limited() const noexcept { return limited_->value(); }

 private:
  limiter_decisions(counter* allowed, counter* limited) noexcept
      : allowed_(allowed), limited_(limited) {}

  counter* allowed_;
  counter* limited_;
};

// Registers a collector publishing how many keys `limiter` tracks, with the label limiter=`name`.
// The scrape takes each shard lock in turn (keyed_limiter::size()).
template <class Key, class Limiter, class Hash, class Eq>
[[nodiscard]] collector_registration publish(registry& r, std::string name,
                                             const keyed_limiter<Key, Limiter, Hash, Eq>& limiter) {
  return r.add_collector([&limiter, name = std::move(name)](sample_sink& sink) {
    sink.gauge("sluice_rate_limiter_keys", "Keys tracked by the keyed rate limiter.",
               static_cast<double>(limiter.size()), {{"limiter", name}});
  });
}

}  // namespace sluice::metrics
