#!/usr/bin/env bash
# supervisor_test.sh: --processes N (supervisor mode): N workers share the port; a worker killed
# with SIGKILL is replaced while the port keeps answering; SIGHUP replaces every worker one at a
# time; a worker over --max-rss-mb is replaced; SIGTERM drains everything and exits 0.
source "$(dirname "$0")/lib.sh"

workers() { pgrep -P "$SERVER_PID" | sort | tr '\n' ' '; }
# wait_workers N: waits (bounded) until the supervisor has exactly N children.
wait_workers() {
  for _ in $(seq 1 100); do
    [ "$(pgrep -P "$SERVER_PID" | wc -l)" -eq "$1" ] && return 0
    sleep 0.05
  done
  return 1
}

start_server --processes 2 --threads 1
if wait_workers 2; then pass "two workers"; else fail "workers: $(workers)"; fi
check "answers" "$("${CURL[@]}" "$BASE/hello")" "hello"
before="$(workers)"
victim="$(pgrep -P "$SERVER_PID" | head -1)"
kill -KILL "$victim"
codes=""
for _ in $(seq 1 20); do codes+="$(status "$BASE/hello")"; done
check "port keeps answering while a worker is replaced" "$codes" "$(printf '200%.0s' $(seq 1 20))"
replaced=""
for _ in $(seq 1 100); do
  now="$(workers)"
  if [ "$(wc -w <<<"$now")" -eq 2 ] && ! grep -qw "$victim" <<<"$now"; then replaced=yes; break; fi
  sleep 0.05
done
check "killed worker replaced" "$replaced" "yes"
check_match "restart logged with backoff" "$(cat "$WORK/stderr.txt")" \
  "\"event\":\"worker exited\",\"pid\":$victim,\"signal\":9,\"restart_in_ms\":100"

# SIGHUP: rolling restart, one worker at a time, no pid survives.
before="$(workers)"
kill -HUP "$SERVER_PID"
rolled=""
for _ in $(seq 1 200); do
  now="$(workers)"
  survivors=0
  for pid in $before; do grep -qw "$pid" <<<"$now" && survivors=$((survivors + 1)); done
  if [ "$survivors" -eq 0 ] && [ "$(wc -w <<<"$now")" -eq 2 ]; then rolled=yes; break; fi
  [ "$(status "$BASE/hello")" = 200 ] || fail "request failed during the rolling restart"
  sleep 0.05
done
check "SIGHUP replaced every worker" "$rolled" "yes"
check "retired workers drained cleanly" "$(grep -c '"event":"worker retired".*"status":0' "$WORK/stderr.txt")" "2"

stop_server TERM
check "supervisor exits 0 on SIGTERM" "$EXIT_CODE" "0"
check "no worker left behind" "$(pgrep -f -- "--port-file $WORK/port" | wc -l)" "0"

# A worker above --max-rss-mb is replaced (1 MiB: every worker is above it).
start_server --processes 2 --threads 1 --max-rss-mb 1
wait_workers 2 || true
over=""
for _ in $(seq 1 100); do
  if grep -q '"why":"over --max-rss-mb"' "$WORK/stderr.txt"; then over=yes; break; fi
  sleep 0.05
done
check "worker over --max-rss-mb replaced" "$over" "yes"
check "still answering" "$(status "$BASE/hello")" "200"
stop_server TERM
check "exit status" "$EXIT_CODE" "0"

rc=0; err="$("$BIN" --processes 0 2>&1)" || rc=$?
check "--processes 0 exits 2" "$rc" "2"
finish
