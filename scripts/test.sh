#!/usr/bin/env bash
# Runs every sluice test on a fresh Debian 12 machine:
#   1. installs what is missing (scripts/bootstrap.sh),
#   2. checks formatting,
#   3. AddressSanitizer+UBSan build (gcc): unit and integration tests,
#   4. ThreadSanitizer build (clang, also -Wthread-safety -Werror): unit and integration tests,
#   5. libFuzzer targets (clang), each run for a bounded time,
#   6. the dev build: unit, integration (redis-server on a free loopback port), every public header
#      alone, the examples, the example service end to end, cache hit ratios, benchmarks smoke,
#      and the package-consumption tests (find_package core-only/all, add_subdirectory).
# The last line printed is ctest's summary of the dev run.
#
#   ./scripts/test.sh                 everything
#   SLUICE_TEST_QUICK=1 ./scripts/test.sh   the dev build only
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=$(nproc 2>/dev/null || echo 2)
log_dir=build/test-logs
step() { printf '\n==== %s\n' "$*"; }

# Runs ctest quietly into a log; prints the failures' output and stops on failure, else the summary.
run_ctest() {
  local name=$1
  shift
  local log="$log_dir/ctest-$name.log"
  if ! ctest "$@" --no-label-summary >"$log" 2>&1; then
    cat "$log" | tail -n 300
    echo "test.sh: $name tests failed (full log: $log)"
    exit 1
  fi
  grep -E '^[0-9]+% tests passed' "$log" || true
}

step "bootstrap"
./scripts/bootstrap.sh
mkdir -p "$log_dir"

step "format"
./scripts/format.sh --check

# Builds a preset quietly (the log is kept and shown on failure).
build_preset() {
  local preset=$1
  shift
  local log="$log_dir/build-$preset.log"
  if ! { cmake --preset "$preset" "$@" && cmake --build --preset "$preset" -j "$jobs"; } >"$log" 2>&1; then
    tail -n 80 "$log"
    echo "test.sh: build of preset '$preset' failed (full log: $log)"
    exit 1
  fi
  echo "built preset $preset"
}

if [ "${SLUICE_TEST_QUICK:-0}" != "1" ]; then
  step "asan: build and run unit + integration tests"
  build_preset asan
  run_ctest asan --preset asan -L 'unit|integration' -j "$jobs"

  step "tsan: build (clang, -Wthread-safety -Werror) and run unit + integration tests"
  build_preset tsan
  run_ctest tsan --preset tsan -L 'unit|integration' -j "$jobs"

  if [ -f tests/fuzz/CMakeLists.txt ]; then
    step "fuzz: libFuzzer targets, bounded runs"
    log="$log_dir/build-fuzz.log"
    if ! { cmake -S . -B build/fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Debug \
      -DSLUICE_BUILD_FUZZ=ON -DSLUICE_BUILD_EXAMPLES=OFF -DSLUICE_BUILD_BENCH=OFF \
      -DSLUICE_HEADER_CHECK=OFF -DSLUICE_TEST_ONLY=manual_clock &&
      cmake --build build/fuzz -j "$jobs"; } >"$log" 2>&1; then
      tail -n 80 "$log"
      echo "test.sh: fuzz build failed (full log: $log)"
      exit 1
    fi
    run_ctest fuzz --test-dir build/fuzz -L fuzz --output-on-failure
  fi
fi

step "dev: build everything and run every test"
build_preset dev
set +e
ctest --preset dev -j "$jobs" --no-label-summary 2>&1 | tee "$log_dir/ctest-dev.log"
status=${PIPESTATUS[0]}
set -e
# ctest's own summary line, last, so CI and humans read the verdict at the bottom.
grep -E '^[0-9]+% tests passed' "$log_dir/ctest-dev.log" | tail -n 1
exit "$status"
