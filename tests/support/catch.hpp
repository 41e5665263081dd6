// tests/support/catch.hpp
//
// The one header sluice's tests include for Catch2. Debian 12 ships Catch2 2.13 (a single header);
// vcpkg and conan ship Catch2 3 (split headers). CMake defines SLUICE_CATCH2_MAJOR from the
// Catch2 package it found. Tests use only macros both versions share: TEST_CASE, SECTION, REQUIRE,
// CHECK, CHECK_FALSE, CHECK_THROWS_AS, STATIC_REQUIRE, GENERATE, TEMPLATE_TEST_CASE, INFO.
#pragma once

#if !defined(SLUICE_CATCH2_MAJOR)
#error "SLUICE_CATCH2_MAJOR must be defined by the build (2 or 3)"
#elif SLUICE_CATCH2_MAJOR >= 3
#include <catch2/catch_all.hpp>
#else
#include <catch2/catch.hpp>
#endif
