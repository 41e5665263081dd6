#!/usr/bin/env bash
# run.sh: wrk numbers for sluice-service against nginx serving `return 200 "hello\n"` (the
# practical ceiling on this machine), same worker count, in one run:
#   GET /hello on nginx, GET /hello on sluice-service, GET /users/:id (hot set of 1000 ids) on
#   sluice-service, each at 64 connections. Prints a markdown table.
#
# Usage: bench/http/run.sh [path/to/sluice-service]   (default: the release preset's binary)
# Env: THREADS (default: nproc), DURATION (default 10s), CONNECTIONS (default 64),
#      WRK_THREADS (default 2).
# Run it under the build lock on a shared machine: flock /tmp/sluice-build.lock bench/http/run.sh
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-$root/build/release/examples/http_service/sluice-service}"
threads="${THREADS:-$(nproc)}"
duration="${DURATION:-10s}"
conns="${CONNECTIONS:-64}"
wrk_threads="${WRK_THREADS:-2}"
work="$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench.XXXXXX")"
nginx_pid=""
svc_pid=""
cleanup() {
  [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null || true
  [ -n "$svc_pid" ] && kill -TERM "$svc_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  local p
  for p in $(seq 18080 18180); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  echo "no free port" >&2; exit 1
}

# ---- nginx baseline ------------------------------------------------------------------------------
nginx_port="$(free_port)"
mkdir -p "$work/nginx/logs"
cat >"$work/nginx/nginx.conf" <<NGINX
worker_processes $threads;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$nginx_port reuseport;
    location / { default_type text/plain; return 200 "hello\n"; }
  }
}
NGINX
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" &
nginx_pid=$!

# ---- sluice-service ------------------------------------------------------------------------------
"$bin" --listen 127.0.0.1:0 --port-file "$work/port" --threads "$threads" \
  --data-dir "$work/data" --log "$work/service.log" --log-level "${LOG_LEVEL:-warn}" \
  --rate-limit 0 2>/dev/null &
svc_pid=$!
for _ in $(seq 1 100); do [ -s "$work/port" ] && break; sleep 0.05; done
svc_port="$(cat "$work/port")"
sleep 0.3

# run NAME URL [wrk args...]: prints "NAME|req/s|p50|p99"
run() {
  local name="$1" url="$2"
  shift 2
  curl -fsS --max-time 5 -o /dev/null "$url" || { echo "$name: $url does not answer" >&2; exit 1; }
  # Warm-up, then the measured run.
  wrk -t"$wrk_threads" -c"$conns" -d2s "$@" "$url" >/dev/null
  local out
  out="$(wrk -t"$wrk_threads" -c"$conns" -d"$duration" --latency "$@" "$url")"
  local rps p50 p99
  rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  p50="$(awk '$1 == "50%" {print $2}' <<<"$out")"
  p99="$(awk '$1 == "99%" {print $2}' <<<"$out")"
  echo "$name|$rps|$p50|$p99"
}

nginx_hello="$(run "nginx /hello" "http://127.0.0.1:$nginx_port/hello")"
svc_hello="$(run "sluice-service /hello" "http://127.0.0.1:$svc_port/hello")"
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$svc_pid/status"; }
requests() {
  curl -fsS --max-time 5 "http://127.0.0.1:$svc_port/metrics" |
    awk '/^http_requests_total/ {n += $2} END {printf "%d", n}'
}
svc_users="$(run "sluice-service /users/:id" "http://127.0.0.1:$svc_port/users/1" -s "$here/users.lua")"
rss_1="$(rss_mb)"; req_1="$(requests)"
# Memory stability: another round of /users/:id traffic, then RSS again.
run "sluice-service /users/:id (again)" "http://127.0.0.1:$svc_port/users/1" -s "$here/users.lua" >/dev/null
rss_2="$(rss_mb)"; req_2="$(requests)"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f %%", 100 * a / b }'; }
n_rps="$(cut -d'|' -f2 <<<"$nginx_hello")"
echo "| target | requests/s | p50 | p99 | vs nginx /hello |"
echo "|---|---|---|---|---|"
for row in "$nginx_hello" "$svc_hello" "$svc_users"; do
  IFS='|' read -r name rps p50 p99 <<<"$row"
  echo "| $name | $rps | $p50 | $p99 | $(ratio "$rps" "$n_rps") |"
done
echo
echo "threads=$threads (nginx worker_processes=$threads), wrk -t$wrk_threads -c$conns -d$duration" \
  "(after a 2 s warm-up each)"
echo
echo "sluice-service resident memory: $rss_1 MB after $req_1 requests, $rss_2 MB after $req_2 requests"
