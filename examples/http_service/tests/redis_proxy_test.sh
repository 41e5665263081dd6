#!/usr/bin/env bash
# redis_proxy_test.sh: nginx with deploy/nginx.conf in front of TWO sluice-service instances that
# share one Redis (the production shape): requests are spread over both, X-Forwarded-For is
# believed only from the trusted proxy, and the per-client rate limit holds across both instances
# (N + k requests from one client through nginx: exactly N admitted in total, k refused with 429),
# while every other client keeps its own quota.
source "$(dirname "$0")/lib.sh"

if ! command -v nginx >/dev/null; then
  fail "nginx not installed (scripts/bootstrap.sh installs it)"
  finish
fi

start_redis
# A quota of 10 at once, refilled at 1/s: the bursts below take well under a second.
flags=(--redis "$REDIS_URL" --trusted-proxy 127.0.0.1/32 --rate-limit 1 --rate-burst 10)
start_instance a "${flags[@]}"
PID_A=$INSTANCE_PID PORT_A=$INSTANCE_PORT
start_instance b "${flags[@]}"
PID_B=$INSTANCE_PID PORT_B=$INSTANCE_PORT
start_nginx "$PORT_A" "$PORT_B"
pass "nginx started with deploy/nginx.conf in front of two instances on one Redis"

# ---- spread, each request from its own client address (so no quota is touched twice) ----------
for i in $(seq 1 20); do
  "${CURL[@]}" -o /dev/null --interface "127.0.1.$i" -H "X-Request-Id: spread-$i" "$NGINX/users/3"
done
check "proxied /users/3" "$("${CURL[@]}" --interface 127.0.2.1 "$NGINX/users/3")" \
  '{"id":3,"name":"user3","email":"user3@example.com"}'
"${CURL[@]}" -D "$WORK/h" -o /dev/null --interface 127.0.2.2 "$NGINX/api/data?page=5"
check "proxied /api/data: first MISS" "$(header X-Cache "$WORK/h")" "MISS"
for i in 3 4; do
  "${CURL[@]}" -D "$WORK/h" -o /dev/null --interface "127.0.2.$i" "$NGINX/api/data?page=5"
  check "proxied /api/data: then HIT on either instance ($i)" "$(header X-Cache "$WORK/h")" "HIT"
done

# ---- one client, N + k requests through nginx: exactly N admitted across both instances --------
# One curl, one keep-alive connection to nginx: the 14 requests take milliseconds, far less than
# the 1 s in which the quota would grow by one (check_burst allows for a slower run).
burst --interface 127.0.0.7 -- $(for _ in $(seq 1 14); do echo "$NGINX/hello"; done)
check_burst "14 requests from one client: 10 admitted, 4 limited (across both)" 10 1
# That both instances took part in the burst (the quota is not per instance) is read from their
# access logs once they stopped (below).

# Spoofing X-Forwarded-For through nginx does not buy a new quota: nginx appends the real
# address, and the instances take the right-most address that is not a trusted proxy.
check_still_limited "spoofed X-Forwarded-For through nginx: still limited" \
  "$(status "$NGINX/hello" --interface 127.0.0.7 -H 'X-Forwarded-For: 9.9.9.9')" 1
# Straight to an instance from an untrusted peer: the header is not believed either way - the
# client is the peer (127.0.0.3, a fresh quota), not the claimed 127.0.0.7.
check "X-Forwarded-For from an untrusted peer ignored (own quota)" \
  "$(status "http://127.0.0.1:$PORT_A/hello" --interface 127.0.0.3 -H 'X-Forwarded-For: 127.0.0.7' \
     -H 'X-Request-Id: direct-untrusted')" "200"
# From the trusted proxy's address, the header is believed: 127.0.0.7's quota is used up.
check_still_limited "X-Forwarded-For from the trusted proxy believed (shared quota)" \
  "$(status "http://127.0.0.1:$PORT_B/hello" -H 'X-Forwarded-For: 127.0.0.7')" 1
check "another client through nginx is not limited" \
  "$(status "$NGINX/hello" --interface 127.0.0.8)" "200"
check "the quota's state is one Redis key for the client" "$(rcli exists sluice:rl:1:10:127.0.0.7)" "1"

kill -TERM "$PID_A" "$PID_B"
wait_pid "$PID_A" 30
rc_a=$WAIT_RC
wait_pid "$PID_B" 30
check "instances exit 0" "$rc_a:$WAIT_RC" "0:0"

s_a="$(grep -c '"request_id":"spread-' "$WORK/a/server.log" || true)"
s_b="$(grep -c '"request_id":"spread-' "$WORK/b/server.log" || true)"
check "all 20 requests answered by the two" "$((s_a + s_b))" "20"
if [ "$s_a" -ge 5 ] && [ "$s_b" -ge 5 ]; then pass "requests spread ($s_a / $s_b)"
else fail "requests not spread: $s_a / $s_b"; fi
n_a="$(grep -c '"client_ip":"127.0.0.7","method":"GET","path":"/hello"' "$WORK/a/server.log" || true)"
n_b="$(grep -c '"client_ip":"127.0.0.7","method":"GET","path":"/hello"' "$WORK/b/server.log" || true)"
if [ "$n_a" -ge 3 ] && [ "$n_b" -ge 3 ]; then pass "the limited client's requests reached both ($n_a / $n_b)"
else fail "the limited client's requests: $n_a / $n_b"; fi
check_match "untrusted X-Forwarded-For: the peer is logged" \
  "$(grep '"request_id":"direct-untrusted"' "$WORK/a/server.log")" '"client_ip":"127.0.0.3"'

finish
