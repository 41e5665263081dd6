#!/usr/bin/env bash
# Compares sluice's Redis client with redis-benchmark against the same throw-away redis-server,
# in the same run: pipelined GET throughput on one connection vs `redis-benchmark -P 16 -t get`,
# and single-GET round trip vs `redis-benchmark -t get` without pipelining (one client, so the
# latency is a round trip and not queueing behind 49 other clients; the 50-client figure is
# printed too).
#
#   flock /tmp/sluice-build.lock bench/redis/compare.sh <path to sluice_bench> [min_time]
#
# Bounded: every step runs under `timeout`. The server is stopped on exit.
set -euo pipefail

bench=${1:?usage: compare.sh <path to sluice_bench> [min_time seconds]}
min_time=${2:-1}
here=$(cd "$(dirname "$0")" && pwd)
fixture="$here/../../tests/integration/redis_fixture.sh"
dir=$(mktemp -d /tmp/sluice-redis-bench-XXXXXX)
trap '"$fixture" stop "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT

"$fixture" start "$dir" >/dev/null
port=$(cat "$dir/port")
url=$(cat "$dir/url")
redis-cli -p "$port" set key:__rand_int__ xxx >/dev/null

SLUICE_BENCH_REDIS_URL="$url" timeout 120 "$bench" \
  --benchmark_filter='BM_redis_get_(pipelined|roundtrip)' --benchmark_min_time="$min_time" \
  --benchmark_out="$dir/sluice.csv" --benchmark_out_format=csv >/dev/null

rb() { timeout 120 redis-benchmark -h 127.0.0.1 -p "$port" -t get --csv "$@" | tail -1 | tr -d '"'; }
pipelined_csv=$(rb -P 16 -n 2000000)
default_csv=$(rb -n 300000)
single_csv=$(rb -c 1 -n 60000)

# sluice_bench CSV: name,iterations,real_time,cpu_time,time_unit,bytes_per_second,items_per_second,...
sluice_field() { awk -F, -v n="\"$1\"" -v f="$2" '$1 == n { print $f }' "$dir/sluice.csv"; }
ours_pipelined=$(sluice_field BM_redis_get_pipelined/real_time 7)
ours_single_rps=$(sluice_field BM_redis_get_roundtrip/real_time 7)
theirs_pipelined=$(echo "$pipelined_csv" | cut -d, -f2)
theirs_default=$(echo "$default_csv" | cut -d, -f2)
theirs_single=$(echo "$single_csv" | cut -d, -f2)
theirs_single_avg=$(echo "$single_csv" | cut -d, -f3)

awk -v op="$ours_pipelined" -v tp="$theirs_pipelined" -v td="$theirs_default" \
    -v os="$ours_single_rps" -v ts="$theirs_single" -v tsa="$theirs_single_avg" 'BEGIN {
  ours_rt = 1e6 / os; theirs_rt = 1e6 / ts;
  printf "| measurement | sluice | redis-benchmark | ratio | target | met |\n"
  printf "|---|---:|---:|---:|---|---|\n"
  r = op / tp
  printf "| pipelined GET/s, one connection vs -P 16 (50 clients) | %.0f | %.0f | %.2f | >= 0.80 | %s |\n", op, tp, r, (r >= 0.8 ? "yes" : "no")
  printf "| GET/s without pipelining, 50 clients (reference) | - | %.0f | - | - | - |\n", td
  d = ours_rt / theirs_rt
  printf "| single GET round trip, us (1 client) | %.1f | %.1f (avg %.3f ms) | %.2f | <= 1.20 | %s |\n", ours_rt, theirs_rt, tsa, d, (d <= 1.2 ? "yes" : "no")
}'
