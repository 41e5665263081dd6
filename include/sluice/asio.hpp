// sluice/asio.hpp
//
// Includes every public header of the `sluice::asio` component: the core headers plus the
// Boost.Asio adapters (completion-token operations for the primitives). Needs Boost 1.81 or newer.
//
// Example:
//   #include <sluice/asio.hpp>
#pragma once

#include "sluice/asio/cache.hpp"
#include "sluice/asio/error.hpp"
#include "sluice/asio/offload.hpp"
#include "sluice/asio/pipeline.hpp"
#include "sluice/asio/pool.hpp"
#include "sluice/asio/rate_limiter.hpp"
#include "sluice/asio/timeout.hpp"
#include "sluice/sluice.hpp"
