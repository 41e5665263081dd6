#!/usr/bin/env bash
# core_test.sh: the endpoint table, errors, request ids, gzip, limits, flags and the access log of
# sluice-service, end to end over real HTTP (curl) against the real binary.
source "$(dirname "$0")/lib.sh"

# ---- flags --------------------------------------------------------------------------------------
out="$("$BIN" --help)"; rc=$?
check "--help exits 0" "$rc" "0"
check_match "--help lists --max-upload-mb" "$out" "--max-upload-mb"
check_match "--help names the env twin" "$out" "SLUICE_MAX_UPLOAD_MB"
check_match "--help names SLUICE_REDIS_URL" "$out" "--redis .*env: SLUICE_REDIS_URL"
rc=0; err="$("$BIN" --no-such-flag 2>&1)" || rc=$?
check "unknown flag exits 2" "$rc" "2"
check "unknown flag: one line" "$(printf '%s\n' "$err" | wc -l)" "1"
rc=0; err="$("$BIN" --threads=lots 2>&1)" || rc=$?
check "bad value exits 2" "$rc" "2"
check_match "bad value names the flag" "$err" "--threads"
rc=0; err="$(SLUICE_MAX_UPLOAD_MB=-5 "$BIN" 2>&1)" || rc=$?
check "bad env value exits 2" "$rc" "2"
check_match "bad env value is named" "$err" "max-upload-mb"
rc=0; err="$("$BIN" --listen nonsense 2>&1)" || rc=$?
check "bad --listen exits 2" "$rc" "2"
rc=0; err="$("$BIN" --trusted-proxy 10.0.0.0/99 --listen 127.0.0.1:0 2>&1)" || rc=$?
check "bad --trusted-proxy exits 2" "$rc" "2"

# Env twin honoured: seed only 10 users through SLUICE_SEED_USERS; the command line wins for the
# header timeout.
SLUICE_SEED_USERS=10 start_server --trusted-proxy 127.0.0.1/32 --header-timeout-seconds 1

# ---- endpoint table -----------------------------------------------------------------------------
check "GET /hello body" "$("${CURL[@]}" "$BASE/hello")" "hello"
"${CURL[@]}" -D "$WORK/h" -o /dev/null "$BASE/hello"
check "GET /hello type" "$(header Content-Type "$WORK/h")" "text/plain"
check "GET /healthz" "$("${CURL[@]}" "$BASE/healthz")" "ok"
check "GET /readyz" "$("${CURL[@]}" "$BASE/readyz" | grep -o '"ready":true')" '"ready":true'
store=embedded
[ "${E2E_REDIS:-0}" = 1 ] && store=redis
check "GET /readyz names the store" "$("${CURL[@]}" "$BASE/readyz" | grep -o '"store":"[a-z]*"')" \
  "\"store\":\"$store\""
check "GET /users/5" "$("${CURL[@]}" "$BASE/users/5")" \
  '{"id":5,"name":"user5","email":"user5@example.com"}'
check "GET /users/10 (env seed)" "$(status "$BASE/users/10")" "200"
check "GET /users/11 -> 404" "$("${CURL[@]}" "$BASE/users/11")" '{"error":"user not found"}'
check "GET /users/11 status" "$(status "$BASE/users/11")" "404"
check "GET /users/0 -> 400" "$("${CURL[@]}" "$BASE/users/0")" '{"error":"invalid id"}'
check "GET /users/-3 -> 400" "$(status "$BASE/users/-3")" "400"
check "GET /users/abc -> 400" "$(status "$BASE/users/abc")" "400"
check "GET /users/1.5 -> 400" "$(status "$BASE/users/1.5")" "400"
check "GET /users/99999999999999999999 -> 400" "$(status "$BASE/users/99999999999999999999")" "400"
body="$("${CURL[@]}" "$BASE/api/data?page=7")"
check_match "GET /api/data?page=7" "$body" '^\{"page":7,"items":\[\{"id":700,"title":"item 700","score":[0-9]+\}'
check "GET /api/data has 100 items" "$(grep -o '"title"' <<<"$body" | wc -l)" "100"
check "GET /api/data?page=x -> 400" "$(status "$BASE/api/data?page=x")" "400"
check "GET /api/data?page=-1 -> 400" "$(status "$BASE/api/data?page=-1")" "400"
check "GET /api/data?page=1000001 -> 400" "$(status "$BASE/api/data?page=1000001")" "400"
check "GET /api/data?page=1000000" "$(status "$BASE/api/data?page=1000000")" "200"

# ---- HEAD ---------------------------------------------------------------------------------------
"${CURL[@]}" -I -D "$WORK/h" -o "$WORK/b" "$BASE/hello"
check "HEAD /hello status" "$(head -1 "$WORK/h" | tr -d '\r')" "HTTP/1.1 200 OK"
check "HEAD /hello Content-Length" "$(header Content-Length "$WORK/h")" "6"
resp="$(exec 3<>"/dev/tcp/127.0.0.1/$PORT"
        printf 'HEAD /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3
        timeout 5 cat <&3 | tr -d '\r' | tail -n +2)"
check_match "HEAD /hello has headers" "$resp" "Content-Length: 6"
check "HEAD /hello no body" "$(grep -c hello <<<"$resp" || true)" "0"

# ---- 404 / 405 / 431 / malformed ---------------------------------------------------------------
"${CURL[@]}" -D "$WORK/h" -o "$WORK/b" "$BASE/no/such/path"
check "unknown path -> 404" "$(head -1 "$WORK/h" | tr -d '\r')" "HTTP/1.1 404 Not Found"
check "404 is JSON" "$(header Content-Type "$WORK/h")" "application/json"
check "404 body" "$(cat "$WORK/b")" '{"error":"not found"}'
"${CURL[@]}" -X DELETE -D "$WORK/h" -o "$WORK/b" "$BASE/hello"
check "DELETE /hello -> 405" "$(head -1 "$WORK/h" | tr -d '\r')" "HTTP/1.1 405 Method Not Allowed"
check "405 Allow" "$(header Allow "$WORK/h")" "GET, HEAD"
check "POST /users/1 -> 405" "$(status "$BASE/users/1" -X POST -d x)" "405"
"${CURL[@]}" -D "$WORK/h" -o /dev/null -X GET "$BASE/upload"
check "GET /upload -> 405 Allow POST" "$(header Allow "$WORK/h")" "POST"
big="$(head -c 9000 /dev/zero | tr '\0' a)"
check "header block > 8 KiB -> 431" "$(status "$BASE/hello" -H "X-Big: $big")" "431"
small="$(head -c 7000 /dev/zero | tr '\0' a)"
check "header block < 8 KiB -> 200" "$(status "$BASE/hello" -H "X-Big: $small")" "200"
resp="$(exec 3<>"/dev/tcp/127.0.0.1/$PORT"; printf 'GARBAGE\r\n\r\n' >&3; timeout 5 cat <&3 || true)"
check_match "malformed request -> 400" "$resp" "^HTTP/1.1 400 "

# ---- request ids --------------------------------------------------------------------------------
"${CURL[@]}" -D "$WORK/h" -o /dev/null -H "X-Request-Id: abc-123.XYZ" "$BASE/hello"
check "X-Request-Id echoed" "$(header X-Request-Id "$WORK/h")" "abc-123.XYZ"
"${CURL[@]}" -D "$WORK/h" -o /dev/null -H 'X-Request-Id: bad id <script>' "$BASE/hello"
id="$(header X-Request-Id "$WORK/h")"
check_match "insane X-Request-Id replaced" "$id" '^[0-9a-f]{32}$'
"${CURL[@]}" -D "$WORK/h" -o /dev/null "$BASE/no/such"
check_match "X-Request-Id generated (also on 404)" "$(header X-Request-Id "$WORK/h")" '^[0-9a-f]{32}$'
"${CURL[@]}" -D "$WORK/h2" -o /dev/null "$BASE/hello"
if [ "$(header X-Request-Id "$WORK/h")" != "$(header X-Request-Id "$WORK/h2")" ]; then
  pass "generated ids differ"
else
  fail "generated ids repeat"
fi

# ---- gzip ---------------------------------------------------------------------------------------
"${CURL[@]}" -D "$WORK/h" -o "$WORK/gz" -H 'Accept-Encoding: gzip' "$BASE/api/data?page=2"
check "JSON >= 1 KiB gzipped" "$(header Content-Encoding "$WORK/h")" "gzip"
check "gzip Vary" "$(header Vary "$WORK/h")" "Accept-Encoding"
check "gzip body decodes to the same JSON" "$(gzip -dc "$WORK/gz")" \
  "$("${CURL[@]}" "$BASE/api/data?page=2")"
"${CURL[@]}" -D "$WORK/h" -o /dev/null -H 'Accept-Encoding: gzip;q=0' "$BASE/api/data?page=2"
check "gzip;q=0 not compressed" "$(header Content-Encoding "$WORK/h")" ""
"${CURL[@]}" -D "$WORK/h" -o /dev/null "$BASE/api/data?page=2"
check "no Accept-Encoding not compressed" "$(header Content-Encoding "$WORK/h")" ""
"${CURL[@]}" -D "$WORK/h" -o /dev/null -H 'Accept-Encoding: gzip' "$BASE/hello"
check "small body not compressed" "$(header Content-Encoding "$WORK/h")" ""

# ---- keep-alive and the header timeout -----------------------------------------------------------
out="$("${CURL[@]}" -v -o /dev/null -o /dev/null "$BASE/hello" "$BASE/healthz" 2>&1)"
check_match "keep-alive reuses the connection" "$out" "Re-using existing connection"
start=$(date +%s%N)
resp="$(exec 3<>"/dev/tcp/127.0.0.1/$PORT"; printf 'GET /hello HTTP/1.1\r\nHost: x\r\n' >&3
        timeout 10 cat <&3 || echo TIMEOUT)"
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
check "slow header: dropped without a response" "$resp" ""
if [ "$elapsed_ms" -ge 800 ] && [ "$elapsed_ms" -lt 5000 ]; then
  pass "slow header dropped after ~1 s ($elapsed_ms ms)"
else
  fail "slow header dropped after $elapsed_ms ms, expected ~1000"
fi

# ---- X-Forwarded-For (trusted only from --trusted-proxy) ----------------------------------------
"${CURL[@]}" -o /dev/null -H 'X-Request-Id: xff-trusted' -H 'X-Forwarded-For: 203.0.113.7' \
  "$BASE/hello"

stop_server TERM
check "SIGTERM exit status" "$EXIT_CODE" "0"

# ---- access log ---------------------------------------------------------------------------------
line="$(grep '"request_id":"abc-123.XYZ"' "$WORK/server.log" | head -1)"
check_match "access log is one JSON line per request" "$line" \
  '^\{"time":"[0-9T:.-]+Z","level":"info","msg":"access","request_id":"abc-123.XYZ","client_ip":"127.0.0.1","method":"GET","path":"/hello","route":"/hello","status":200,"bytes":6,"duration_ms":[0-9.]+\}$'
check_match "X-Forwarded-For from a trusted proxy believed" \
  "$(grep '"request_id":"xff-trusted"' "$WORK/server.log")" '"client_ip":"203.0.113.7"'

# Untrusted peer: the header is ignored.
start_server
"${CURL[@]}" -o /dev/null -H 'X-Request-Id: xff-untrusted' -H 'X-Forwarded-For: 203.0.113.7' \
  "$BASE/hello"
stop_server INT
check "SIGINT exit status" "$EXIT_CODE" "0"
check_match "X-Forwarded-For from an untrusted peer ignored" \
  "$(grep '"request_id":"xff-untrusted"' "$WORK/server.log")" '"client_ip":"127.0.0.1"'

finish
