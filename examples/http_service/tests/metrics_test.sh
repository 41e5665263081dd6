#!/usr/bin/env bash
# metrics_test.sh: /metrics after traffic: the request counter and latency histogram by method,
# route template and status, the process_* metrics, and `promtool check metrics` on the output.
source "$(dirname "$0")/lib.sh"

start_server
for _ in 1 2 3; do "${CURL[@]}" -o /dev/null "$BASE/hello"; done
"${CURL[@]}" -o /dev/null "$BASE/users/7"
"${CURL[@]}" -o /dev/null "$BASE/users/0"
"${CURL[@]}" -o /dev/null "$BASE/no/such/thing"
"${CURL[@]}" -o /dev/null -X DELETE "$BASE/users/7"

"${CURL[@]}" -D "$WORK/h" -o "$WORK/metrics.txt" "$BASE/metrics"
check_match "content type 0.0.4" "$(header Content-Type "$WORK/h")" "^text/plain; version=0.0.4"
m="$(cat "$WORK/metrics.txt")"
check_match "requests by route template" "$m" \
  'http_requests_total\{method="GET",route="/hello",status="200"\} 3'
check_match "404s under one label" "$m" \
  'http_requests_total\{method="GET",route="unmatched",status="404"\} 1'
check_match "400 counted" "$m" 'http_requests_total\{method="GET",route="/users/:id",status="400"\} 1'
check_match "405 under its route" "$m" \
  'http_requests_total\{method="DELETE",route="/users/:id",status="405"\} 1'
check_match "latency histogram" "$m" \
  'http_request_duration_seconds_bucket\{method="GET",route="/users/:id",status="200",le="\+Inf"\} 1'
check_match "histogram count" "$m" \
  'http_request_duration_seconds_count\{method="GET",route="/hello",status="200"\} 3'
check_match "process_resident_memory_bytes" "$m" 'process_resident_memory_bytes [0-9.e+]+'
check_match "process_cpu_seconds_total" "$m" 'process_cpu_seconds_total [0-9.e+-]+'
check_match "process_open_fds" "$m" 'process_open_fds [0-9.e+]+'
check_match "open connections gauge" "$m" 'http_open_connections [0-9]+'
check_match "log drop counter" "$m" 'log_lines_dropped_total [0-9]+'
if [ "${E2E_REDIS:-0}" = 1 ]; then
  check_match "redis_up" "$m" 'redis_up 1'
  check_match "user reads from Redis counted" "$m" 'user_store_redis_reads_total\{result="ok"\} [1-9]'
  check_match "redis outages counted" "$m" 'redis_outages_total 0'
  check_match "seeded users counted" "$m" 'redis_users_seeded_total 1000'
  check_match "pool: idle connections" "$m" 'redis_pool_connections\{state="idle"\} [1-9]'
  check_match "pool: connections opened" "$m" 'redis_pool_connections_opened_total [1-9]'
  check_match "pool: waiters" "$m" 'redis_pool_waiters 0'
  check_match "page cache counters" "$m" 'page_cache_lookups_total\{result="redis_hit"\} [0-9]+'
fi

if command -v promtool >/dev/null; then
  if out="$(promtool check metrics <"$WORK/metrics.txt" 2>&1)"; then pass "promtool check metrics"
  else fail "promtool check metrics: $out"; fi
else
  fail "promtool not installed (scripts/bootstrap.sh installs it)"
fi

"${CURL[@]}" -D "$WORK/h" -o "$WORK/m.gz" -H 'Accept-Encoding: gzip' "$BASE/metrics"
check "metrics gzipped on request" "$(header Content-Encoding "$WORK/h")" "gzip"
check_match "gzipped metrics decode" "$(gzip -dc "$WORK/m.gz")" "http_requests_total"

stop_server TERM
check "exit status" "$EXIT_CODE" "0"
finish
