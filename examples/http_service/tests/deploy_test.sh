#!/usr/bin/env bash
# deploy_test.sh: the deploy/ files run for real: nginx with deploy/nginx.conf in front of two
# sluice-service instances (requests spread over both, X-Forwarded-For believed only from the
# trusted proxy, static files served by nginx, streamed uploads through the proxy, an instance
# going away is absorbed), and the systemd unit checked by systemd-analyze.
source "$(dirname "$0")/lib.sh"
HERE="$(cd "$(dirname "$0")" && pwd)"
DEPLOY="$HERE/../deploy"

if ! command -v nginx >/dev/null; then
  fail "nginx not installed (scripts/bootstrap.sh installs it)"
  finish
fi

# ---- systemd unit -------------------------------------------------------------------------------
if command -v systemd-analyze >/dev/null; then
  sed "s|/usr/local/bin/sluice-service|$BIN|" "$DEPLOY/sluice-service.service" \
    >"$WORK/sluice-service.service"
  out="$(systemd-analyze verify "$WORK/sluice-service.service" 2>&1)" && rc=0 || rc=$?
  check "systemd-analyze verify" "$rc:$out" "0:"
  check_match "unit restarts on failure" "$(cat "$DEPLOY/sluice-service.service")" "Restart=on-failure"
  check_match "unit stops with SIGTERM" "$(cat "$DEPLOY/sluice-service.service")" "KillSignal=SIGTERM"
else
  echo "skip: systemd-analyze not available"
fi

# ---- two instances behind nginx -----------------------------------------------------------------
start_instance a --trusted-proxy 127.0.0.1/32
PID_A=$INSTANCE_PID PORT_A=$INSTANCE_PORT
start_instance b --trusted-proxy 127.0.0.1/32
PID_B=$INSTANCE_PID PORT_B=$INSTANCE_PORT

start_nginx "$PORT_A" "$PORT_B"
pass "nginx started with deploy/nginx.conf"

check "static file served by nginx" "$("${CURL[@]}" "$NGINX/static/hello.txt")" "static file"
for i in $(seq 1 20); do
  "${CURL[@]}" -o /dev/null -H "X-Request-Id: spread-$i" "$NGINX/hello"
done
check "proxied /users/3" "$("${CURL[@]}" "$NGINX/users/3")" '{"id":3,"name":"user3","email":"user3@example.com"}'
# The client connects to nginx from 127.0.0.5 and claims to be 6.6.6.6: the instance must log
# 127.0.0.5 (nginx's view), not the spoofed address.
"${CURL[@]}" -o /dev/null --interface 127.0.0.5 -H 'X-Request-Id: via-proxy' \
  -H 'X-Forwarded-For: 6.6.6.6' "$NGINX/hello"
# Straight to an instance from an untrusted address: the header is ignored.
"${CURL[@]}" -o /dev/null --interface 127.0.0.3 -H 'X-Request-Id: direct' \
  -H 'X-Forwarded-For: 6.6.6.6' "http://127.0.0.1:$PORT_A/hello"

head -c $((5 * 1024 * 1024)) /dev/urandom >"$WORK/up.bin"
want="$(sha256sum <"$WORK/up.bin" | cut -d' ' -f1)"
check_match "upload streamed through nginx" \
  "$("${CURL[@]}" --data-binary @"$WORK/up.bin" "$NGINX/upload?name=up.bin")" "\"sha256\":\"$want\""

# One instance drains away: nginx keeps answering from the other.
kill -TERM "$PID_A"
ok=0
for i in $(seq 1 10); do
  [ "$(status "$NGINX/hello")" = 200 ] && ok=$((ok + 1))
done
check "an instance stopping is absorbed by nginx" "$ok" "10"

kill -TERM "$PID_B"
wait_pid "$PID_A" 30
rc_a=$WAIT_RC
wait_pid "$PID_B" 30
check "instances exit 0" "$rc_a:$WAIT_RC" "0:0"

n_a="$(grep -c '"request_id":"spread-' "$WORK/a/server.log" || true)"
n_b="$(grep -c '"request_id":"spread-' "$WORK/b/server.log" || true)"
check "all 20 requests answered by the two" "$((n_a + n_b))" "20"
if [ "$n_a" -ge 5 ] && [ "$n_b" -ge 5 ]; then pass "requests spread ($n_a / $n_b)"
else fail "requests not spread: $n_a / $n_b"; fi
check_match "X-Forwarded-For from nginx believed, spoofed hop ignored" \
  "$(cat "$WORK"/a/server.log "$WORK"/b/server.log | grep '"request_id":"via-proxy"')" \
  '"client_ip":"127.0.0.5"'
check_match "X-Forwarded-For from an untrusted peer ignored" \
  "$(grep '"request_id":"direct"' "$WORK/a/server.log")" '"client_ip":"127.0.0.3"'
check "static files never reach the instances" \
  "$(cat "$WORK"/a/server.log "$WORK"/b/server.log | grep -c '/static/' || true)" "0"

finish
