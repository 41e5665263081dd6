// sluice/redis.hpp
//
// Includes every public header of the `sluice::redis` component: the Asio component plus the
// hiredis-based Redis client. Needs hiredis 0.14 or newer.
//
// Example:
//   #include <sluice/redis.hpp>
#pragma once

#include "sluice/asio.hpp"
