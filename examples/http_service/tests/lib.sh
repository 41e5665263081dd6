# lib.sh: shared helpers for sluice-service's end-to-end tests (sourced, not run).
#
# Each test starts the real binary on a free loopback port (port 0 + --port-file, so there is no
# race for the port), talks HTTP to it with curl, and cleans up on exit whatever happens: the
# server is killed and its temporary directory removed. Every network call has a time bound.
set -euo pipefail

BIN="${1:?usage: $0 path/to/sluice-service}"
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/sluice-e2e.XXXXXX")"
SERVER_PID=""
PORT=""
BASE=""
FAILURES=0
CURL=(curl -sS --max-time 60)

EXTRA_PIDS=()
REDIS_PID=""
REDIS_PORT=""
REDIS_URL=""
cleanup() {
  if [ -n "$REDIS_PID" ]; then
    kill -KILL "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
  fi
  # TERM first: an nginx master killed with KILL would leave its workers behind.
  for pid in "${EXTRA_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${EXTRA_PIDS[@]}"; do
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    # Supervisor mode: its workers first (by parent pid: only processes this test started).
    for child in $(pgrep -P "$SERVER_PID" 2>/dev/null || true); do
      kill -KILL "$child" 2>/dev/null || true
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  FAILURES=$((FAILURES + 1))
}

pass() { echo "ok: $*"; }

# check NAME ACTUAL EXPECTED
check() {
  if [ "$2" == "$3" ]; then pass "$1"; else fail "$1: got [$2], expected [$3]"; fi
}

# check_match NAME ACTUAL REGEX
check_match() {
  if [[ "$2" =~ $3 ]]; then pass "$1"; else fail "$1: [$2] does not match /$3/"; fi
}

# ---- Redis ---------------------------------------------------------------------------------------
# start_redis [PORT]: starts a throw-away redis-server (loopback, no persistence) on a free port, or
# on PORT to bring one back at the same address; sets REDIS_PID, REDIS_PORT, REDIS_URL. Killed by
# the cleanup whatever happens.
start_redis() {
  if ! command -v redis-server >/dev/null; then
    echo "redis-server not installed (scripts/bootstrap.sh installs it)" >&2
    exit 1
  fi
  local fixed="${1:-}" port
  mkdir -p "$WORK/redis"
  for _ in $(seq 1 30); do
    port="${fixed:-$((20000 + RANDOM % 30000))}"
    if [ -z "$fixed" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then continue; fi
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK/redis" \
      --logfile "$WORK/redis/redis.log" >/dev/null 2>&1 &
    REDIS_PID=$!
    for _ in $(seq 1 100); do
      kill -0 "$REDIS_PID" 2>/dev/null || break
      # The server answering on the port must be ours (another may have taken the port first).
      if [ "$(timeout 2 redis-cli -p "$port" info server 2>/dev/null | tr -d '\r' |
               sed -n 's/^process_id://p')" = "$REDIS_PID" ]; then
        REDIS_PORT="$port"
        REDIS_URL="redis://127.0.0.1:$port"
        return 0
      fi
      sleep 0.05
    done
    kill -KILL "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
    REDIS_PID=""
    [ -n "$fixed" ] && sleep 0.2  # the old server's port may not be free yet: try it again
  done
  echo "redis-server did not start" >&2
  exit 1
}

# kill_redis: kills the Redis server with SIGKILL (a crash: no goodbye to the clients) and waits
# until it is gone.
kill_redis() {
  kill -KILL "$REDIS_PID" 2>/dev/null || true
  wait "$REDIS_PID" 2>/dev/null || true
  REDIS_PID=""
}

# rcli ARGS...: redis-cli against the test's Redis, bounded.
rcli() { timeout 5 redis-cli -p "$REDIS_PORT" "$@"; }

# A test registered with E2E_REDIS=1 (CMakeLists.txt) runs its server with --redis against its
# own Redis: the same checks then cover the Redis mode.
SERVER_FLAGS=()
if [ "${E2E_REDIS:-0}" = 1 ]; then
  start_redis
  SERVER_FLAGS=(--redis "$REDIS_URL")
  echo "running against $REDIS_URL"
fi

# start_server [flags...]: starts the service in $WORK with the given extra flags; sets
# SERVER_PID, PORT, BASE. The log goes to $WORK/server.log.
start_server() {
  mkdir -p "$WORK/data" "$WORK/uploads"
  rm -f "$WORK/port"
  "$BIN" --listen 127.0.0.1:0 --port-file "$WORK/port" --threads 2 "${SERVER_FLAGS[@]}" \
    --data-dir "$WORK/data" --upload-dir "$WORK/uploads" --log "$WORK/server.log" "$@" \
    >"$WORK/stdout.txt" 2>"$WORK/stderr.txt" &
  SERVER_PID=$!
  for _ in $(seq 1 200); do
    if [ -s "$WORK/port" ]; then
      PORT="$(cat "$WORK/port")"
      BASE="http://127.0.0.1:$PORT"
      return 0
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "server exited at start:" >&2
      cat "$WORK/stderr.txt" >&2
      exit 1
    fi
    sleep 0.05
  done
  echo "server did not start within 10 s" >&2
  exit 1
}

# start_instance NAME [flags...]: starts another service instance with its own directory
# $WORK/NAME; sets INSTANCE_PID and INSTANCE_PORT. Killed by the cleanup if still running.
start_instance() {
  local name="$1"
  shift
  local dir="$WORK/$name"
  mkdir -p "$dir/data" "$dir/uploads"
  "$BIN" --listen 127.0.0.1:0 --port-file "$dir/port" --threads 1 "${SERVER_FLAGS[@]}" \
    --data-dir "$dir/data" \
    --upload-dir "$dir/uploads" --log "$dir/server.log" "$@" >"$dir/stdout.txt" 2>&1 &
  INSTANCE_PID=$!
  EXTRA_PIDS+=("$INSTANCE_PID")
  for _ in $(seq 1 200); do
    if [ -s "$dir/port" ]; then
      INSTANCE_PORT="$(cat "$dir/port")"
      return 0
    fi
    sleep 0.05
  done
  echo "instance $name did not start" >&2
  exit 1
}

# start_nginx PORT_A PORT_B: runs nginx (foreground master, killed by the cleanup) with
# deploy/nginx.conf, its upstream pointed at the two instances, on a free loopback port; static
# files from $WORK/static/. Sets NGINX (its base URL) and NGINX_PID.
DEPLOY="$(cd "$(dirname "${BASH_SOURCE[0]}")/../deploy" && pwd)"
start_nginx() {
  local port_a="$1" port_b="$2" port
  # nginx's workers run as another user unless root: they must be able to read the static files.
  chmod 755 "$WORK"
  mkdir -p "$WORK/static" "$WORK/nginx"
  printf 'static file\n' >"$WORK/static/hello.txt"
  chmod -R a+rX "$WORK/static"
  for _ in $(seq 1 20); do
    port=$((20000 + RANDOM % 20000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
    sed -e "s|127.0.0.1:8081|127.0.0.1:$port_a|" -e "s|127.0.0.1:8082|127.0.0.1:$port_b|" \
        -e "s|listen 8080;|listen 127.0.0.1:$port;|" -e "s|/var/lib/sluice/data/|$WORK/static/|" \
        "$DEPLOY/nginx.conf" >"$WORK/nginx/site.conf"
    cat >"$WORK/nginx/nginx.conf" <<NGINX
$( [ "$(id -u)" = 0 ] && echo "user root;" )
daemon off;
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  include $WORK/nginx/site.conf;
}
NGINX
    nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" 2>>"$WORK/nginx/start.log" &
    NGINX_PID=$!
    EXTRA_PIDS+=("$NGINX_PID")
    for _ in $(seq 1 100); do
      if curl -s --max-time 2 -o /dev/null "http://127.0.0.1:$port/static/hello.txt"; then
        NGINX="http://127.0.0.1:$port"
        return 0
      fi
      kill -0 "$NGINX_PID" 2>/dev/null || break
      sleep 0.05
    done
    kill "$NGINX_PID" 2>/dev/null || true
  done
  cat "$WORK/nginx/start.log" "$WORK/nginx/error.log" >&2 || true
  echo "nginx did not start" >&2
  exit 1
}

# wait_pid PID SECONDS: waits (bounded) for a child to exit; sets WAIT_RC to its exit status
# (124 on timeout). Not in a $(...) subshell: only the parent shell can wait for its children.
wait_pid() {
  WAIT_RC=124
  for _ in $(seq 1 $(( $2 * 20 ))); do
    if ! kill -0 "$1" 2>/dev/null; then
      WAIT_RC=0
      wait "$1" || WAIT_RC=$?
      return 0
    fi
    sleep 0.05
  done
}

# stop_server [SIGNAL]: signals the server and waits (bounded) for it; sets EXIT_CODE.
stop_server() {
  local sig="${1:-TERM}"
  kill -"$sig" "$SERVER_PID"
  wait_server 30
}

# wait_server SECONDS: waits for the server process to exit; sets EXIT_CODE (124 on timeout).
wait_server() {
  local limit=$(( $1 * 20 ))
  for _ in $(seq 1 "$limit"); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      EXIT_CODE=0
      wait "$SERVER_PID" || EXIT_CODE=$?
      SERVER_PID=""
      return 0
    fi
    sleep 0.05
  done
  EXIT_CODE=124
}

# status URL [curl args...]: prints the HTTP status code.
status() {
  local url="$1"
  shift
  "${CURL[@]}" -o /dev/null -w '%{http_code}' "$@" "$url"
}

# ---- rate-limit bursts ---------------------------------------------------------------------------
# burst [curl args...] -- URL...: sends the URLs in order from ONE curl (one keep-alive connection
# per host, so the whole burst usually takes milliseconds) and sets
#   BURST_CODES   the status codes, space-separated with a trailing space ("200 200 429 ")
#   BURST_MS      how long the burst took, in milliseconds
#   BURST_START   when it started (date +%s%N)
#   BURST_LAST    the index (1-based) of the last 429, or empty if none was refused;
#                 its body is "$WORK/burst_body_$BURST_LAST" and its headers are in
#   BURST_LIMIT BURST_REMAINING BURST_RESET BURST_RETRY_AFTER
burst() {
  local args=() urls=() i=0 line start code
  while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do args+=("$1"); shift; done
  shift
  for url in "$@"; do
    i=$((i + 1))
    urls+=(-o "$WORK/burst_body_$i" "$url")
  done
  start=$(date +%s%N)
  BURST_START=$start
  local out
  out="$(curl -sS --max-time 60 "${args[@]}" \
    -w '%{http_code} %header{ratelimit-limit} %header{ratelimit-remaining} %header{ratelimit-reset} %header{retry-after}\n' \
    "${urls[@]}" || true)"
  BURST_MS=$((($(date +%s%N) - start) / 1000000))
  BURST_CODES="" BURST_LAST="" BURST_LIMIT="" BURST_REMAINING="" BURST_RESET="" BURST_RETRY_AFTER=""
  i=0
  while read -r code line; do
    i=$((i + 1))
    BURST_CODES+="$code "
    if [ "$code" = 429 ]; then
      BURST_LAST=$i
      read -r BURST_LIMIT BURST_REMAINING BURST_RESET BURST_RETRY_AFTER <<<"$line"
    fi
  done <<<"$out"
}

# check_burst NAME QUOTA RATE_PER_S: checks the last burst against a token bucket that starts full
# with QUOTA tokens and gains RATE_PER_S a second: the first QUOTA requests are admitted and the
# rest refused. The bucket refills by wall clock, so a burst slowed down (a loaded CI machine) may
# see a request admitted for each token that came back meanwhile: then it checks that the first
# QUOTA were admitted, that no more than QUOTA + refills were, and that at least one was refused.
check_burst() {
  local name="$1" quota="$2" rate="$3" expected="" n admitted refills
  n=$(wc -w <<<"$BURST_CODES")
  for i in $(seq 1 "$n"); do
    if [ "$i" -le "$quota" ]; then expected+="200 "; else expected+="429 "; fi
  done
  refills=$((BURST_MS * rate / 1000))
  if [ "$refills" -eq 0 ] || [ "$BURST_CODES" == "$expected" ]; then
    check "$name" "$BURST_CODES" "$expected"
    return
  fi
  admitted=$(grep -o 200 <<<"$BURST_CODES" | wc -l)
  if [ "${BURST_CODES:0:$((4 * quota))}" == "${expected:0:$((4 * quota))}" ] &&
    [ "$admitted" -le $((quota + refills)) ] && [ -n "$BURST_LAST" ]; then
    pass "$name (slow burst: $BURST_MS ms, so up to $refills refilled: $BURST_CODES)"
  else
    fail "$name: got [$BURST_CODES] in $BURST_MS ms, expected [$expected] (or up to $refills more admitted after the first $quota)"
  fi
}

# check_still_limited NAME CODE RATE_PER_S: CODE is the status of a request made after the last
# burst emptied the quota. It must be 429 unless a token has come back since the burst started
# (1/RATE_PER_S seconds), which on a loaded machine it may have.
check_still_limited() {
  local name="$1" code="$2" rate="$3" ms
  ms=$((($(date +%s%N) - BURST_START) / 1000000))
  if [ "$code" = 429 ]; then pass "$name"
  elif [ "$code" = 200 ] && [ $((ms * rate)) -ge 1000 ]; then
    pass "$name (200: a token came back, $ms ms after the burst)"
  else fail "$name: got [$code] $ms ms after the burst, expected [429]"; fi
}

# header NAME FILE: prints the value of response header NAME from a curl -D dump.
header() {
  grep -i "^$1:" "$2" | head -1 | cut -d: -f2- | tr -d '\r' | sed 's/^ //'
}

finish() {
  if [ "$FAILURES" -ne 0 ]; then
    echo "$FAILURES check(s) failed; server log:" >&2
    tail -n 30 "$WORK/server.log" >&2 || true
    exit 1
  fi
  echo "all checks passed"
}
