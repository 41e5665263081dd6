# vcpkg overlay port for sluice, built from this source tree:
#   vcpkg install sluice[asio,redis] --overlay-ports=<sluice>/packaging/vcpkg/ports
# Header-only: one release configuration, no libraries.
set(SOURCE_PATH "${CMAKE_CURRENT_LIST_DIR}/../../../..")
set(VCPKG_BUILD_TYPE release)

vcpkg_check_features(
  OUT_FEATURE_OPTIONS FEATURE_OPTIONS
  FEATURES
    asio SLUICE_WITH_ASIO
    redis SLUICE_WITH_REDIS)

vcpkg_cmake_configure(
  SOURCE_PATH "${SOURCE_PATH}"
  OPTIONS
    ${FEATURE_OPTIONS}
    -DSLUICE_BUILD_TESTS=OFF
    -DSLUICE_BUILD_EXAMPLES=OFF
    -DSLUICE_BUILD_BENCH=OFF
    -DSLUICE_INSTALL=ON)
vcpkg_cmake_install()
vcpkg_cmake_config_fixup(PACKAGE_NAME sluice CONFIG_PATH share/sluice)
vcpkg_fixup_pkgconfig()

file(REMOVE_RECURSE "${CURRENT_PACKAGES_DIR}/lib" "${CURRENT_PACKAGES_DIR}/debug")
file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
