// sluice/sluice.hpp
//
// Includes every public header of the `sluice::core` component (standard library and Abseil only;
// no Boost, no hiredis). The Asio adapters are in <sluice/asio.hpp>, the Redis parts in
// <sluice/redis.hpp>.
//
// Example:
//   #include <sluice/sluice.hpp>
#pragma once

#include "sluice/clock.hpp"
#include "sluice/testing/manual_clock.hpp"
#include "sluice/version.hpp"
