// sluice/version.hpp
//
// The version of the sluice headers in use, as macros (for preprocessor checks) and as constants.
//
// Thread safety: constants only.
//
// Example:
//   static_assert(sluice::version_major == 0);
//   #if SLUICE_VERSION >= 100  // 0.1.0
#pragma once

#define SLUICE_VERSION_MAJOR 0
#define SLUICE_VERSION_MINOR 1
#define SLUICE_VERSION_PATCH 0
// Encodes major.minor.patch as MMmmpp, e.g. 0.1.0 -> 100.
#define SLUICE_VERSION \
  (SLUICE_VERSION_MAJOR * 10000 + SLUICE_VERSION_MINOR * 100 + SLUICE_VERSION_PATCH)

namespace sluice {

inline constexpr int version_major = SLUICE_VERSION_MAJOR;
inline constexpr int version_minor = SLUICE_VERSION_MINOR;
inline constexpr int version_patch = SLUICE_VERSION_PATCH;
inline constexpr const char* version_string = "0.1.0";

}  // namespace sluice
