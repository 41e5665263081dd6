# Finds hiredis and provides one target, hiredis::hiredis, whichever way it is installed:
# - hiredis 1.x, vcpkg and conan ship a CMake config that defines hiredis::hiredis;
# - hiredis 0.14 (Debian 12) ships a config file that defines no target, and a pkg-config file.
# Used by sluice's own build and by the installed sluice-config.cmake.
if(TARGET hiredis::hiredis)
  return()
endif()

find_package(hiredis CONFIG QUIET)
if(TARGET hiredis::hiredis)
  return()
endif()

find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(SLUICE_HIREDIS QUIET IMPORTED_TARGET hiredis)
endif()

if(TARGET PkgConfig::SLUICE_HIREDIS)
  add_library(hiredis::hiredis INTERFACE IMPORTED)
  target_link_libraries(hiredis::hiredis INTERFACE PkgConfig::SLUICE_HIREDIS)
  set(hiredis_FOUND TRUE)
else()
  set(hiredis_FOUND FALSE)
  if(sluice_FIND_REQUIRED OR NOT DEFINED sluice_FIND_REQUIRED)
    message(FATAL_ERROR "sluice: hiredis not found (neither a hiredis CMake config with "
                        "hiredis::hiredis nor a hiredis pkg-config file). Install libhiredis-dev "
                        "or hiredis 1.x, or build sluice with -DSLUICE_WITH_REDIS=OFF.")
  endif()
endif()
