#!/usr/bin/env bash
# shutdown_test.sh: graceful drain of sluice-service on SIGTERM/SIGINT: in-flight downloads finish
# within --drain-seconds, connections still busy at the deadline are closed, idle keep-alive
# connections do not hold the drain up, an interrupted upload leaves nothing on disk, and the
# process always exits 0.
source "$(dirname "$0")/lib.sh"

MB=$((1024 * 1024))
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

# wait_for_file GLOB: waits (bounded) until a file matching GLOB exists.
wait_for_file() {
  for _ in $(seq 1 100); do
    compgen -G "$1" >/dev/null && return 0
    sleep 0.05
  done
  return 1
}

# ---- an upload in progress when the drain deadline passes --------------------------------------
start_server --drain-seconds 1
head -c $((50 * MB)) /dev/urandom >"$WORK/up.bin"
curl -sS --max-time 60 --limit-rate 2M --data-binary @"$WORK/up.bin" -o /dev/null \
  "$BASE/upload?name=up.bin" 2>/dev/null &
CURL_PID=$!
if wait_for_file "$WORK/uploads/.upload-*"; then pass "upload in progress"; else
  fail "upload never started"; fi
t0=$(date +%s%N)
kill -TERM "$SERVER_PID"
wait_server 15
elapsed=$(ms_since "$t0")
check "exit 0 after drain deadline (upload)" "$EXIT_CODE" "0"
if [ "$elapsed" -ge 800 ] && [ "$elapsed" -lt 6000 ]; then pass "stopped after the 1 s drain ($elapsed ms)"
else fail "stopped after $elapsed ms, expected about 1000"; fi
wait "$CURL_PID" 2>/dev/null || true
check "no upload left on disk (final or temporary)" "$(ls -A "$WORK/uploads")" ""

# ---- a download that finishes within the drain -------------------------------------------------
start_server --drain-seconds 30
head -c $((20 * MB)) /dev/urandom >"$WORK/data/mid.bin"
rc_file="$WORK/curl.rc"
(rc=0; curl -sS --max-time 60 --limit-rate 10M -o "$WORK/got.bin" "$BASE/download/mid.bin" || rc=$?
 echo "$rc" >"$rc_file") &
sleep 0.5
kill -TERM "$SERVER_PID"
sleep 0.3
check "no new connections while draining" "$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' "$BASE/hello" || true)" "000"
wait_server 30
check "exit 0 after in-flight download finished" "$EXIT_CODE" "0"
wait
check "download completed during the drain" "$(cat "$rc_file")" "0"
if cmp -s "$WORK/got.bin" "$WORK/data/mid.bin"; then pass "drained download byte for byte"; else
  fail "drained download differs"; fi

# ---- a download still running at the deadline; SIGINT ------------------------------------------
start_server --drain-seconds 1
head -c $((20 * MB)) /dev/urandom >"$WORK/data/mid.bin"
(rc=0; curl -sS --max-time 60 --limit-rate 2M -o "$WORK/got.bin" "$BASE/download/mid.bin" \
   2>/dev/null || rc=$?; echo "$rc" >"$rc_file") &
sleep 0.5
t0=$(date +%s%N)
kill -INT "$SERVER_PID"
wait_server 15
elapsed=$(ms_since "$t0")
check "exit 0 after drain deadline (download)" "$EXIT_CODE" "0"
if [ "$elapsed" -lt 6000 ]; then pass "download cut at the deadline ($elapsed ms)"; else
  fail "took $elapsed ms to stop"; fi
wait
check "client sees a short body (curl 18: partial file)" "$(cat "$rc_file")" "18"

# ---- idle keep-alive connections do not hold the drain up ----------------------------------------
start_server --drain-seconds 30
exec 3<>"/dev/tcp/127.0.0.1/$PORT"
printf 'GET /hello HTTP/1.1\r\nHost: x\r\n\r\n' >&3
read -r -t 5 line <&3 || true
check "keep-alive request answered" "$(tr -d '\r' <<<"$line")" "HTTP/1.1 200 OK"
t0=$(date +%s%N)
kill -TERM "$SERVER_PID"
wait_server 15
elapsed=$(ms_since "$t0")
exec 3>&-
check "exit 0 with an idle connection open" "$EXIT_CODE" "0"
if [ "$elapsed" -lt 2000 ]; then pass "idle connection closed at once ($elapsed ms)"; else
  fail "idle connection held the drain for $elapsed ms"; fi

finish
