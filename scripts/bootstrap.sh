#!/usr/bin/env bash
# Installs every Debian package sluice needs to build, test, benchmark and demo.
# Idempotent: installs only what is missing, quietly; uses sudo when not root.
set -euo pipefail

packages=(
  # toolchain
  g++ cmake make pkgconf clang libclang-rt-14-dev clang-format
  # core, asio and redis components
  libabsl-dev libboost1.81-dev libboost-json1.81-dev libhiredis-dev
  # tests and benchmarks
  catch2 libbenchmark-dev prometheus-cpp-dev
  # example service
  libspdlog-dev libfmt-dev zlib1g-dev libssl-dev
  # servers and tools the tests and benchmarks drive
  redis-server redis-tools nginx prometheus wrk curl procps
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi

echo "bootstrap: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# Packaged daemons (redis, nginx, prometheus) must not start on install: the tests start their
# own instances on free loopback ports.
$sudo env RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
