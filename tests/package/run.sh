#!/usr/bin/env bash
# Proves the three ways users consume sluice: install it to a temporary prefix, then build and run
#  1. a find_package consumer asking for COMPONENTS core, with Boost, hiredis and pkg-config hidden
#     (a machine with only Abseil installed),
#  2. a find_package consumer asking for every component,
#  3. a consumer that uses add_subdirectory() on the source tree,
# and check the installed pkg-config file compiles a core program.
# Usage: run.sh <sluice source dir> <sluice build dir> <c++ compiler>
set -euo pipefail
src=$1 bin=$2 cxx=$3
work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-package.XXXXXX")
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"
quiet() { "$@" >"$work/log" 2>&1 || { cat "$work/log"; echo "package test: FAILED: $*"; exit 1; }; }

quiet cmake --install "$bin" --prefix "$prefix"

echo "-- find_package(sluice COMPONENTS core), Boost/hiredis/pkg-config hidden"
quiet cmake -S "$src/tests/package" -B "$work/core" -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_PREFIX_PATH="$prefix" -DSLUICE_COMPONENTS=core \
  -DCMAKE_DISABLE_FIND_PACKAGE_Boost=ON -DCMAKE_DISABLE_FIND_PACKAGE_hiredis=ON \
  -DCMAKE_DISABLE_FIND_PACKAGE_PkgConfig=ON
quiet cmake --build "$work/core"
"$work/core/consumer"

echo "-- find_package(sluice COMPONENTS core asio redis)"
quiet cmake -S "$src/tests/package" -B "$work/all" -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_PREFIX_PATH="$prefix" "-DSLUICE_COMPONENTS=core;asio;redis"
quiet cmake --build "$work/all"
"$work/all/consumer"

echo "-- find_package(sluice COMPONENTS nonsense) must fail"
if cmake -S "$src/tests/package" -B "$work/bad" -DCMAKE_PREFIX_PATH="$prefix" \
  -DSLUICE_COMPONENTS=nonsense >"$work/log" 2>&1; then
  echo "package test: FAILED: an unknown component was accepted"; exit 1
fi
grep -q "unknown component 'nonsense'" "$work/log" || { cat "$work/log"; exit 1; }

echo "-- add_subdirectory(sluice)"
quiet cmake -S "$src/tests/package/add_subdirectory" -B "$work/sub" -DCMAKE_CXX_COMPILER="$cxx" \
  -DSLUICE_SOURCE_DIR="$src"
quiet cmake --build "$work/sub"
"$work/sub/consumer"

echo "-- pkg-config sluice"
flags=$(PKG_CONFIG_PATH="$prefix/share/pkgconfig" pkg-config --cflags --libs sluice)
# shellcheck disable=SC2086
quiet "$cxx" -o "$work/pc" "$src/tests/package/main.cpp" $flags
"$work/pc"
echo "-- packaging manifests parse (vcpkg JSON, conan recipes)"
for j in "$src/vcpkg.json" "$src/packaging/vcpkg/ports/sluice/vcpkg.json"; do
  python3 -m json.tool "$j" >/dev/null || { echo "package test: FAILED: $j is not valid JSON"; exit 1; }
done
for py in "$src/conanfile.py" "$src/packaging/conan/conanfile.py" "$src/packaging/conan/test_package/conanfile.py"; do
  python3 -c "import ast,sys; ast.parse(open(sys.argv[1]).read())" "$py" ||
    { echo "package test: FAILED: $py does not parse"; exit 1; }
done
# The conan test_package's CMake project is a plain find_package consumer: build it too.
quiet cmake -S "$src/packaging/conan/test_package" -B "$work/conan_tp" -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_PREFIX_PATH="$prefix"
quiet cmake --build "$work/conan_tp"
"$work/conan_tp/test_package"
echo "package test: passed"
