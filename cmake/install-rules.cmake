# Install rules: headers, one export set per component, a package config that loads only the
# components a consumer asks for, a version file, and pkg-config files.
include(CMakePackageConfigHelpers)

set(SLUICE_CMAKE_DIR "${CMAKE_INSTALL_DATADIR}/sluice" CACHE STRING
    "Where sluice's CMake package files are installed, relative to the prefix")

# Headers: core always; asio/ and redis/ only with their components.
set(_sluice_header_excludes)
if(NOT SLUICE_WITH_ASIO)
  list(APPEND _sluice_header_excludes PATTERN "asio" EXCLUDE PATTERN "asio.hpp" EXCLUDE)
endif()
if(NOT SLUICE_WITH_REDIS)
  list(APPEND _sluice_header_excludes PATTERN "redis" EXCLUDE PATTERN "redis.hpp" EXCLUDE)
endif()
install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/sluice" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}"
        COMPONENT sluice_Development ${_sluice_header_excludes})

foreach(component IN LISTS SLUICE_COMPONENTS ITEMS sluice)
  install(TARGETS sluice_${component} EXPORT sluice-${component}-targets)
  install(
    EXPORT sluice-${component}-targets
    NAMESPACE sluice::
    DESTINATION "${SLUICE_CMAKE_DIR}"
    COMPONENT sluice_Development)
endforeach()

configure_package_config_file(
  "${PROJECT_SOURCE_DIR}/cmake/sluice-config.cmake.in" "${PROJECT_BINARY_DIR}/sluice-config.cmake"
  INSTALL_DESTINATION "${SLUICE_CMAKE_DIR}")
write_basic_package_version_file(
  "${PROJECT_BINARY_DIR}/sluice-config-version.cmake"
  COMPATIBILITY SameMajorVersion ARCH_INDEPENDENT)
install(
  FILES "${PROJECT_BINARY_DIR}/sluice-config.cmake" "${PROJECT_BINARY_DIR}/sluice-config-version.cmake"
        "${PROJECT_SOURCE_DIR}/cmake/sluice-find-hiredis.cmake"
  DESTINATION "${SLUICE_CMAKE_DIR}"
  COMPONENT sluice_Development)

# pkg-config: sluice (core), and sluice-redis for the hiredis flags. Boost ships no .pc file, so
# the asio component's only extra need (Boost headers on the include path) is documented instead.
foreach(pc IN ITEMS sluice sluice-redis)
  if(pc STREQUAL "sluice-redis" AND NOT SLUICE_WITH_REDIS)
    continue()
  endif()
  configure_file("${PROJECT_SOURCE_DIR}/cmake/${pc}.pc.in" "${PROJECT_BINARY_DIR}/${pc}.pc" @ONLY)
  install(FILES "${PROJECT_BINARY_DIR}/${pc}.pc" DESTINATION "${CMAKE_INSTALL_DATADIR}/pkgconfig"
          COMPONENT sluice_Development)
endforeach()
