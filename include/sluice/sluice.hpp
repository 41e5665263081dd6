// sluice/sluice.hpp
//
// Includes every public header of the `sluice::core` component (standard library and Abseil only;
// no Boost, no hiredis). The Asio adapters are in <sluice/asio.hpp>, the Redis parts in
// <sluice/redis.hpp>. Including single headers (<sluice/circuit_breaker.hpp>) compiles faster.
//
// Example:
//   #include <sluice/sluice.hpp>
#pragma once

// Time
#include "sluice/clock.hpp"
#include "sluice/deadline.hpp"
#include "sluice/testing/manual_clock.hpp"
#include "sluice/version.hpp"

// Resilience
#include "sluice/breaker_registry.hpp"
#include "sluice/bulkhead.hpp"
#include "sluice/circuit_breaker.hpp"
#include "sluice/fallback.hpp"
#include "sluice/health_recorder.hpp"
#include "sluice/pipeline.hpp"
#include "sluice/policy.hpp"
#include "sluice/retry.hpp"
#include "sluice/retry_budget.hpp"
#include "sluice/timeout.hpp"

// Caches
#include "sluice/cache.hpp"
#include "sluice/cache/sweeper.hpp"

// Rate and concurrency limits
#include "sluice/adaptive_limiter.hpp"
#include "sluice/concurrency_limiter.hpp"
#include "sluice/gcra_limiter.hpp"
#include "sluice/keyed_limiter.hpp"
#include "sluice/load_shedder.hpp"
#include "sluice/rate_limit.hpp"
#include "sluice/sliding_window_limiter.hpp"
#include "sluice/token_bucket.hpp"

// Pools and offload
#include "sluice/offload.hpp"
#include "sluice/pool.hpp"

// Metrics (the per-primitive bindings are in <sluice/metrics/*_metrics.hpp>)
#include "sluice/metrics.hpp"
#include "sluice/metrics/cache_metrics.hpp"
#include "sluice/metrics/circuit_breaker_metrics.hpp"
#include "sluice/metrics/limiter_metrics.hpp"
#include "sluice/metrics/offload_metrics.hpp"
#include "sluice/metrics/pool_metrics.hpp"
