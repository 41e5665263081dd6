#!/usr/bin/env bash
# redis_test.sh: sluice-service with --redis against a real redis-server of its own: users read
# from Redis hashes and seeded at start-up, /api/data cached in Redis with a TTL (SET ... EX/PX),
# single flight under a burst, a page shared by two instances, the rate limit shared by two
# instances; then Redis stalled (SIGSTOP) and killed mid-run: /users answers STALE or 503 +
# Retry-After and never hangs, /api/data is served uncached, and everything recovers - users
# seeded again into the new, empty Redis - when Redis comes back on the same port.
source "$(dirname "$0")/lib.sh"

start_redis
start_server --redis "$REDIS_URL" --seed-users 50 --cache-ttl-ms 1500 --breaker-open-ms 1000 \
  --rate-limit 1000000 --rate-burst 1000000

# ---- users from Redis -----------------------------------------------------------------------------
check "users seeded as hashes" "$(rcli hget user:7 email)" "user7@example.com"
check "no user beyond --seed-users" "$(rcli exists user:51)" "0"
check "GET /users/7" "$("${CURL[@]}" "$BASE/users/7")" '{"id":7,"name":"user7","email":"user7@example.com"}'
check "GET /users/51 -> 404" "$(status "$BASE/users/51")" "404"
rcli hset user:51 name ada email ada@example.com >/dev/null
"${CURL[@]}" -D "$WORK/h" -o "$WORK/b" "$BASE/users/51"
check "a user added in Redis is served" "$(cat "$WORK/b")" '{"id":51,"name":"ada","email":"ada@example.com"}'
check "read from the store: MISS" "$(header X-Cache "$WORK/h")" "MISS"
"${CURL[@]}" -D "$WORK/h" -o /dev/null "$BASE/users/51"
check "then from the users cache: HIT" "$(header X-Cache "$WORK/h")" "HIT"
rcli hset user:51 name grace >/dev/null
sleep 1.6  # past the 1.5 s TTL
check "a change in Redis shows after the TTL" "$("${CURL[@]}" "$BASE/users/51" | grep -o '"name":"[a-z]*"')" \
  '"name":"grace"'

# ---- /api/data in Redis -------------------------------------------------------------------------
"${CURL[@]}" -D "$WORK/h" -o "$WORK/p11" "$BASE/api/data?page=11"
check "page built on a miss: MISS" "$(header X-Cache "$WORK/h")" "MISS"
check "page stored in Redis" "$(rcli get sluice:page:11)" "$(cat "$WORK/p11")"
ttl="$(rcli pttl sluice:page:11)"
if [ "$ttl" -gt 0 ] && [ "$ttl" -le 1500 ]; then pass "page stored with the cache TTL ($ttl ms)"
else fail "page TTL in Redis is [$ttl] ms, expected in (0, 1500]"; fi
"${CURL[@]}" -D "$WORK/h" -o /dev/null "$BASE/api/data?page=11"
check "page read again: HIT" "$(header X-Cache "$WORK/h")" "HIT"
# A page put into Redis by someone else is served as is: the service reads Redis first.
rcli set sluice:page:12 '{"page":12,"items":[]}' EX 60 >/dev/null
"${CURL[@]}" -D "$WORK/h" -o "$WORK/b" "$BASE/api/data?page=12"
check "page found in Redis: HIT" "$(header X-Cache "$WORK/h")" "HIT"
check "page found in Redis: its bytes" "$(cat "$WORK/b")" '{"page":12,"items":[]}'
# Default TTL (60 s) is sent as SET ... EX 60: checked on a second instance below.

# Stampede: 20 concurrent first requests for one page build it once.
loads() {
  "${CURL[@]}" "$BASE/metrics" | sed -n 's/^page_cache_loads_total \([0-9]*\)$/\1/p'
}
before="$(loads)"
for i in $(seq 1 20); do
  "${CURL[@]}" -D "$WORK/s$i" -o /dev/null "$BASE/api/data?page=13" &
done
for job in $(jobs -p); do [ "$job" != "$SERVER_PID" ] && [ "$job" != "$REDIS_PID" ] && wait "$job" || true; done
ok=0
for i in $(seq 1 20); do
  [ "$(head -1 "$WORK/s$i" | tr -d '\r')" = "HTTP/1.1 200 OK" ] && ok=$((ok + 1))
done
check "20 concurrent first requests answered" "$ok" "20"
check "20 concurrent misses build the page once" "$(( $(loads) - before ))" "1"

# A second instance on the same Redis (default TTL) gets the pages the first one built.
start_instance inst_b --redis "$REDIS_URL" --seed-users 50 --rate-limit 1 --rate-burst 4
PID_B=$INSTANCE_PID PORT_B=$INSTANCE_PORT
"${CURL[@]}" -D "$WORK/h" -o "$WORK/b" "http://127.0.0.1:$PORT_B/api/data?page=11"
check "another instance: page from Redis (HIT)" "$(header X-Cache "$WORK/h")" "HIT"
check "another instance: same bytes" "$(cat "$WORK/b")" "$(cat "$WORK/p11")"
"${CURL[@]}" -o /dev/null "http://127.0.0.1:$PORT_B/api/data?page=14"
ttl="$(rcli ttl sluice:page:14)"
if [ "$ttl" -gt 55 ] && [ "$ttl" -le 60 ]; then pass "default TTL is 60 s (EX 60; $ttl s left)"
else fail "page TTL in Redis is [$ttl] s, expected ~60"; fi

# The rate limit lives in Redis: a third instance with the same quota shares it with b. The
# client is 127.0.0.9, a fresh one (127.0.0.1 used b's quota above).
start_instance inst_c --redis "$REDIS_URL" --seed-users 50 --rate-limit 1 --rate-burst 4
PID_C=$INSTANCE_PID PORT_C=$INSTANCE_PORT
burst --interface 127.0.0.9 -- $(for port in "$PORT_B" "$PORT_C" "$PORT_B" "$PORT_C" "$PORT_B" \
  "$PORT_C" "$PORT_B"; do echo "http://127.0.0.1:$port/hello"; done)
check_burst "burst of 4 shared by two instances" 4 1
check "shared limit: 429 body" "$(cat "$WORK/burst_body_$BURST_LAST")" '{"error":"rate limited"}'
check "shared limit: RateLimit-Limit" "$BURST_LIMIT" "4"
check "shared limit: RateLimit-Remaining" "$BURST_REMAINING" "0"
check_match "shared limit: Retry-After" "$BURST_RETRY_AFTER" '^[1-9][0-9]*$'
# Burst 4 at 1/s: the quota is whole again within 4 or 5 s.
check_match "shared limit: RateLimit-Reset" "$BURST_RESET" '^[1-5]$'
check "limiter state is in Redis (per quota, per client)" "$(rcli exists sluice:rl:1:4:127.0.0.9)" "1"

# ---- Redis stalled: bounded by --redis-timeout-ms, never a hang ---------------------------------
"${CURL[@]}" -o /dev/null "$BASE/users/5"   # cached now, stale in 1.5 s
sleep 1.6
kill -STOP "$REDIS_PID"
start=$(date +%s%N)
"${CURL[@]}" --max-time 5 -D "$WORK/h" -o "$WORK/b" "$BASE/users/5" || true
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
check "Redis stalled: last known user (STALE)" "$(header X-Cache "$WORK/h")" "STALE"
if [ "$elapsed_ms" -lt 2000 ]; then pass "Redis stalled: answered in $elapsed_ms ms"
else fail "Redis stalled: took $elapsed_ms ms"; fi
kill -CONT "$REDIS_PID"

# ---- Redis killed mid-run ----------------------------------------------------------------------
sleep 1.6  # users 5 and 51 are stale again
old_port="$REDIS_PORT"
kill_redis
"${CURL[@]}" --max-time 5 -D "$WORK/h" -o "$WORK/b" "$BASE/users/5"
check "Redis down: cached user still 200" "$(head -1 "$WORK/h" | tr -d '\r')" "HTTP/1.1 200 OK"
check "Redis down: X-Cache STALE" "$(header X-Cache "$WORK/h")" "STALE"
check "Redis down: last known value" "$(cat "$WORK/b")" '{"id":5,"name":"user5","email":"user5@example.com"}'
"${CURL[@]}" --max-time 5 -D "$WORK/h" -o "$WORK/b" "$BASE/users/6"
check "Redis down, user never cached: 503" "$(head -1 "$WORK/h" | tr -d '\r')" "HTTP/1.1 503 Service Unavailable"
check_match "Redis down: Retry-After" "$(header Retry-After "$WORK/h")" '^[1-9][0-9]*$'
check "Redis down: 503 body" "$(cat "$WORK/b")" '{"error":"user store unavailable"}'
# Many reads while it is down: every one answered (STALE or 503), none hangs.
hung=0 other=0
for i in $(seq 1 30); do
  code="$(curl -s --max-time 3 -o /dev/null -w '%{http_code}' "$BASE/users/$((i % 10 + 1))" || echo hung)"
  case "$code" in 200 | 503) ;; 000 | hung) hung=$((hung + 1)) ;; *) other=$((other + 1)) ;; esac
done
check "Redis down: 30 reads answered, none hung" "$hung:$other" "0:0"
"${CURL[@]}" -o "$WORK/m" "$BASE/metrics"
check_match "Redis down: breaker open" "$(cat "$WORK/m")" \
  'circuit_breaker_state\{breaker="user_store",state="open"\} 1'
"${CURL[@]}" --max-time 5 -D "$WORK/h" -o "$WORK/b" "$BASE/api/data?page=21"
check "Redis down: /api/data still served" "$(head -1 "$WORK/h" | tr -d '\r')" "HTTP/1.1 200 OK"
check_match "Redis down: /api/data built" "$(cat "$WORK/b")" '^\{"page":21,"items":\[\{"id":2100,'
"${CURL[@]}" --max-time 5 -D "$WORK/h" -o "$WORK/b" "$BASE/api/data?page=11"
check "Redis down: a page seen before served from its local copy" \
  "$(header X-Cache "$WORK/h"):$(cmp -s "$WORK/b" "$WORK/p11" && echo same)" "HIT:same"
check "Redis down: rate limit fails open (local)" "$(status "$BASE/hello")" "200"
# Fail open means a per-instance quota, not none: instance b (burst 4) still limits a fresh client.
burst --interface 127.0.0.10 -- $(for _ in $(seq 1 7); do echo "http://127.0.0.1:$PORT_B/hello"; done)
check_burst "Redis down: the local fallback still limits (burst 4)" 4 1
check "Redis down: local 429 has RateLimit-Limit" "$BURST_LIMIT" "4"
check_match "Redis down: local 429 has Retry-After" "$BURST_RETRY_AFTER" '^[1-9][0-9]*$'
down=""
for _ in $(seq 1 40); do
  if [ "$(status "$BASE/readyz")" = 503 ]; then down=yes; break; fi
  sleep 0.1
done
check "Redis down: /readyz 503" "$down" "yes"
check "Redis down: /healthz still 200 (the process is alive)" "$(status "$BASE/healthz")" "200"
"${CURL[@]}" -o "$WORK/m" "$BASE/metrics"
check_match "Redis down: redis_up 0" "$(cat "$WORK/m")" 'redis_up 0'
check_match "Redis down: outage counted" "$(cat "$WORK/m")" 'redis_outages_total [1-9]'
check_match "Redis down: the breaker opened and rejected calls" \
  "$(grep 'circuit_breaker_calls_total{breaker="user_store",outcome="rejected"}' "$WORK/m")" ' [1-9][0-9]*$'
if out="$(promtool check metrics <"$WORK/m" 2>&1)"; then pass "promtool check metrics (Redis down)"
else fail "promtool: $out"; fi

# ---- Redis back (empty, same port): recovery ------------------------------------------------------
start_redis "$old_port"
recovered=""
for _ in $(seq 1 60); do
  "${CURL[@]}" --max-time 3 -D "$WORK/h" -o "$WORK/b" "$BASE/users/5" || true
  cache="$(header X-Cache "$WORK/h")"
  if [ "$(head -1 "$WORK/h" | tr -d '\r')" = "HTTP/1.1 200 OK" ] && [ "$cache" != STALE ]; then
    recovered=yes
    break
  fi
  sleep 0.2
done
check "recovers when Redis returns (fresh user, not STALE)" "$recovered" "yes"
check "recovered: user from the new Redis" "$(cat "$WORK/b")" '{"id":5,"name":"user5","email":"user5@example.com"}'
check "recovered: users seeded again" "$(rcli hget user:50 name)" "user50"
check "recovered: user never cached now 200" "$(status "$BASE/users/6")" "200"
check "recovered: /readyz 200" "$(status "$BASE/readyz")" "200"
"${CURL[@]}" -D "$WORK/h" -o /dev/null "$BASE/api/data?page=22"
check "recovered: /api/data MISS" "$(header X-Cache "$WORK/h")" "MISS"
check "recovered: /api/data cached in Redis again" "$(rcli exists sluice:page:22)" "1"
"${CURL[@]}" -o "$WORK/m" "$BASE/metrics"
check_match "recovered: redis_up 1" "$(cat "$WORK/m")" 'redis_up 1'

stop_server TERM
check "exit status" "$EXIT_CODE" "0"
kill -TERM "$PID_B"
wait_pid "$PID_B" 30
check "second instance exit status" "$WAIT_RC" "0"

# ---- a Redis that is down at start-up -----------------------------------------------------------
kill_redis
SLUICE_REDIS_URL="$REDIS_URL" start_server --seed-users 5  # the contract's variable this time
check "started without Redis: /healthz" "$(status "$BASE/healthz")" "200"
check_match "SLUICE_REDIS_URL selects the Redis store" "$("${CURL[@]}" "$BASE/readyz")" '"store":"redis"'

check "started without Redis: /readyz 503" "$(status "$BASE/readyz")" "503"
check "started without Redis: /users 503" "$(status "$BASE/users/1")" "503"
start_redis "$old_port"
ready=""
for _ in $(seq 1 60); do
  if [ "$(status "$BASE/readyz")" = 200 ]; then ready=yes; break; fi
  sleep 0.1
done
check "Redis up later: ready and seeded" "$ready:$(rcli hget user:5 name)" "yes:user5"
stop_server TERM
check "exit status" "$EXIT_CODE" "0"

# ---- Redis answering, users not seeded (this ACL user may not run the seeding script) -----------
# Absent hashes then do not mean "no such user": 503 + Retry-After, never a 404 for a user that
# the seeding would create; users already in Redis are served.
kill -TERM "$PID_C"  # its keeper would seed the users again
wait_pid "$PID_C" 30
rcli flushall >/dev/null
rcli acl setuser svc on '>pw' '~*' '&*' '+@all' '-eval' >/dev/null
rcli hset user:3 name user3 email user3@example.com >/dev/null
start_server --redis "redis://svc:pw@127.0.0.1:$REDIS_PORT" --seed-users 5
check "not seeded: /readyz 503" "$(status "$BASE/readyz")" "503"
check "not seeded: a user in Redis is served" "$(status "$BASE/users/3")" "200"
"${CURL[@]}" -D "$WORK/h" -o "$WORK/b" "$BASE/users/4"
check "not seeded: a user to be seeded is 503, not 404" "$(head -1 "$WORK/h" | tr -d '\r')" \
  "HTTP/1.1 503 Service Unavailable"
check_match "not seeded: Retry-After" "$(header Retry-After "$WORK/h")" '^[1-9][0-9]*$'
stop_server TERM
# The refused seeding is retried with backoff (50 ms doubling to 1 s), not every 50 ms: about 8
# attempts in the 3 s start-up wait, not 60.
tries="$(grep -c 'redis seeding failed' "$WORK/server.log" || true)"
if [ "$tries" -ge 1 ] && [ "$tries" -le 15 ]; then pass "refused seeding retried with backoff ($tries tries)"
else fail "refused seeding tried $tries times"; fi
check "exit status" "$EXIT_CODE" "0"

rc=0; err="$("$BIN" --redis http://nope 2>&1)" || rc=$?
check "bad --redis URL exits 2" "$rc" "2"
check_match "bad --redis URL: one clear line" "$err" "^sluice-service: bad --redis URL"
rc=0; err="$(SLUICE_REDIS_URL=redis://:bad%zz@h "$BIN" 2>&1)" || rc=$?
check "bad SLUICE_REDIS_URL exits 2" "$rc" "2"

finish
