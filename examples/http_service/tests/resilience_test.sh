#!/usr/bin/env bash
# resilience_test.sh: the sluice primitives at work in sluice-service: the users cache
# (X-Cache HIT/MISS/STALE), the circuit breaker around the store (503 + Retry-After when nothing
# is cached, open after repeated failures, recovery), the /api/data cache, per-client rate
# limiting (429 + RateLimit-* + Retry-After), and /compute on the offload executor (503 +
# Retry-After when its queue is full), and connection overload shedding (--max-connections).
source "$(dirname "$0")/lib.sh"

FAULT="$WORK/store-down"
start_server --cache-ttl-ms 400 --breaker-open-ms 1500 --store-fault-file "$FAULT" \
  --offload-threads 1 --offload-queue 1 --rate-limit 1000000 --rate-burst 1000000

# ---- users: cache, breaker, stale fallback ------------------------------------------------------
"${CURL[@]}" -D "$WORK/h" -o "$WORK/b" "$BASE/users/5"
check "first read is a MISS" "$(header X-Cache "$WORK/h")" "MISS"
check "user 5 body" "$(cat "$WORK/b")" '{"id":5,"name":"user5","email":"user5@example.com"}'
"${CURL[@]}" -D "$WORK/h" -o /dev/null "$BASE/users/5"
check "second read is a HIT" "$(header X-Cache "$WORK/h")" "HIT"
sleep 0.5  # past the 400 ms TTL: the entry is now stale
touch "$FAULT"
"${CURL[@]}" -D "$WORK/h" -o "$WORK/b" "$BASE/users/5"
check "store down: STALE status" "$(head -1 "$WORK/h" | tr -d '\r')" "HTTP/1.1 200 OK"
check "store down: X-Cache STALE" "$(header X-Cache "$WORK/h")" "STALE"
check "store down: last known value" "$(cat "$WORK/b")" '{"id":5,"name":"user5","email":"user5@example.com"}'
"${CURL[@]}" -D "$WORK/h" -o "$WORK/b" "$BASE/users/6"
check "store down, nothing cached: 503" "$(head -1 "$WORK/h" | tr -d '\r')" "HTTP/1.1 503 Service Unavailable"
check_match "503 has Retry-After" "$(header Retry-After "$WORK/h")" '^[1-9][0-9]*$'
check "503 body" "$(cat "$WORK/b")" '{"error":"user store unavailable"}'
check "readyz reports the store down" "$(status "$BASE/readyz")" "503"
# Enough failures trip the breaker: the store is no longer called, answers stay fast.
for i in $(seq 1 15); do "${CURL[@]}" -o /dev/null "$BASE/users/$((100 + i))"; done
"${CURL[@]}" -o "$WORK/m" "$BASE/metrics"
check_match "breaker open" "$(cat "$WORK/m")" 'circuit_breaker_state\{breaker="user_store",state="open"\} 1'
check_match "breaker rejects calls" "$(grep 'outcome="rejected"' "$WORK/m")" '[1-9][0-9]*$'
"${CURL[@]}" -D "$WORK/h" -o /dev/null "$BASE/users/200"
check "breaker open, nothing cached: 503" "$(head -1 "$WORK/h" | tr -d '\r')" "HTTP/1.1 503 Service Unavailable"
check_match "Retry-After from the breaker" "$(header Retry-After "$WORK/h")" '^[12]$'
"${CURL[@]}" -D "$WORK/h" -o /dev/null "$BASE/users/5"
check "breaker open: cached user still STALE" "$(header X-Cache "$WORK/h")" "STALE"
rm -f "$FAULT"
# The breaker probes after its open time and closes again.
recovered=""
for _ in $(seq 1 40); do
  if [ "$(status "$BASE/users/6")" = 200 ]; then recovered=yes; break; fi
  sleep 0.2
done
check "recovers when the store returns" "$recovered" "yes"
"${CURL[@]}" -D "$WORK/h" -o /dev/null "$BASE/users/5"
check_match "fresh again after recovery" "$(header X-Cache "$WORK/h")" '^(MISS|HIT)$'
check "readyz ready again" "$(status "$BASE/readyz")" "200"

# ---- /api/data cache ----------------------------------------------------------------------------
"${CURL[@]}" -D "$WORK/h" -o "$WORK/p1" "$BASE/api/data?page=42"
check "page first read MISS" "$(header X-Cache "$WORK/h")" "MISS"
"${CURL[@]}" -D "$WORK/h" -o "$WORK/p2" "$BASE/api/data?page=42"
check "page second read HIT" "$(header X-Cache "$WORK/h")" "HIT"
check "cached page identical" "$(cat "$WORK/p2")" "$(cat "$WORK/p1")"
sleep 0.5
"${CURL[@]}" -D "$WORK/h" -o /dev/null "$BASE/api/data?page=42"
check "page reloaded after its TTL" "$(header X-Cache "$WORK/h")" "MISS"

# ---- /compute on the offload executor ----------------------------------------------------------
# The expected sum, computed independently by awk (same double arithmetic, libm sin/cos).
got="$("${CURL[@]}" -X POST -d '{"value":2}' "$BASE/compute")"
check_match "compute value=2 is JSON" "$got" '^\{"result":[-0-9.Ee+]+\}$'
result="$(sed 's/.*"result":\([^}]*\)}/\1/' <<<"$got")"
check "compute value=2 matches the sum" "$(awk -v r="$result" 'BEGIN {
  s = 0; for (i = 0; i < 20000; i++) s += sin(i) * cos(i)
  d = r - s; if (d < 0) d = -d; print (d < 1e-9 ? "equal" : "differs: " r " vs " s) }')" "equal"
check "compute value=0 -> 400" "$(status "$BASE/compute" -X POST -d '{"value":0}')" "400"
check "compute value=1001 -> 400" "$(status "$BASE/compute" -X POST -d '{"value":1001}')" "400"
check "compute value=\"5\" -> 400" "$(status "$BASE/compute" -X POST -d '{"value":"5"}')" "400"
check "compute bad JSON -> 400" "$(status "$BASE/compute" -X POST -d '{"value":')" "400"
check "compute body > 16 KiB -> 413" \
  "$(head -c 17000 /dev/zero | tr '\0' ' ' | status "$BASE/compute" -X POST --data-binary @-)" "413"
check "GET /compute -> 405" "$(status "$BASE/compute")" "405"
# One worker, a queue of one: a burst of slow computations must be shed with 503, not queued.
for i in $(seq 1 6); do
  "${CURL[@]}" -D "$WORK/ch$i" -o /dev/null -X POST -d '{"value":400}' "$BASE/compute" &
done
for job in $(jobs -p); do [ "$job" != "$SERVER_PID" ] && wait "$job" || true; done
ok=0; shed=0; retry=""
for i in $(seq 1 6); do
  case "$(head -1 "$WORK/ch$i" | tr -d '\r')" in
    "HTTP/1.1 200 OK") ok=$((ok + 1)) ;;
    "HTTP/1.1 503 Service Unavailable") shed=$((shed + 1)); retry="$(header Retry-After "$WORK/ch$i")" ;;
  esac
done
if [ "$ok" -ge 1 ] && [ "$shed" -ge 1 ] && [ $((ok + shed)) -eq 6 ]; then
  pass "full offload queue sheds load ($ok ok, $shed shed)"
else
  fail "offload burst: $ok ok, $shed shed of 6"
fi
check "shed compute has Retry-After" "$retry" "1"
"${CURL[@]}" -o "$WORK/m" "$BASE/metrics"
check_match "offload rejections counted" "$(grep 'offload_tasks_total{result="rejected"}' "$WORK/m")" ' [1-9][0-9]*$'
stop_server TERM
check "exit status" "$EXIT_CODE" "0"

# ---- per-client rate limit ----------------------------------------------------------------------
start_server --rate-limit 2 --rate-burst 5 --trusted-proxy 127.0.0.1/32
burst -- $(for _ in $(seq 1 8); do echo "$BASE/hello"; done)
check_burst "burst of 5 then 429" 5 2
check "429 body" "$(cat "$WORK/burst_body_$BURST_LAST")" '{"error":"rate limited"}'
check "RateLimit-Limit" "$BURST_LIMIT" "5"
check "RateLimit-Remaining" "$BURST_REMAINING" "0"
check_match "RateLimit-Reset" "$BURST_RESET" '^[1-3]$'
check "Retry-After" "$BURST_RETRY_AFTER" "1"
check "probes are not limited" "$(status "$BASE/healthz"):$(status "$BASE/metrics")" "200:200"
# Each client has its own budget: another address behind the trusted proxy is not limited.
check "another client (X-Forwarded-For via trusted proxy)" \
  "$(status "$BASE/hello" -H 'X-Forwarded-For: 198.51.100.9')" "200"
sleep 1.1
check "refilled after a second" "$(status "$BASE/hello")" "200"
"${CURL[@]}" -o "$WORK/m" "$BASE/metrics"
check_match "limiter decisions counted" "$(cat "$WORK/m")" 'rate_limit_decisions_total\{decision="limited"\} [1-9]'
if out="$(promtool check metrics <"$WORK/m" 2>&1)"; then pass "promtool check metrics (all primitives)"
else fail "promtool: $out"; fi
stop_server TERM
check "exit status" "$EXIT_CODE" "0"

# ---- overload: connections beyond --max-connections get 503 + Retry-After at once -------------
start_server --max-connections 2
exec 5<>"/dev/tcp/127.0.0.1/$PORT"
exec 6<>"/dev/tcp/127.0.0.1/$PORT"
sleep 0.2
"${CURL[@]}" -D "$WORK/h" -o "$WORK/b" "$BASE/hello"
check "over --max-connections: 503" "$(head -1 "$WORK/h" | tr -d '\r')" "HTTP/1.1 503 Service Unavailable"
check "overload Retry-After" "$(header Retry-After "$WORK/h")" "1"
check_match "overload X-Request-Id" "$(header X-Request-Id "$WORK/h")" '^[0-9a-f]{32}$'
check "overload body" "$(cat "$WORK/b")" '{"error":"overloaded"}'
exec 5>&- 6>&-
back=""
for _ in $(seq 1 40); do
  if [ "$(status "$BASE/hello")" = 200 ]; then back=yes; break; fi
  sleep 0.05
done
check "served again once connections close" "$back" "yes"
stop_server TERM
check "exit status" "$EXIT_CODE" "0"

finish
