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
cleanup() {
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

# start_server [flags...]: starts the service in $WORK with the given extra flags; sets
# SERVER_PID, PORT, BASE. The log goes to $WORK/server.log.
start_server() {
  mkdir -p "$WORK/data" "$WORK/uploads"
  rm -f "$WORK/port"
  "$BIN" --listen 127.0.0.1:0 --port-file "$WORK/port" --threads 2 \
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
  "$BIN" --listen 127.0.0.1:0 --port-file "$dir/port" --threads 1 --data-dir "$dir/data" \
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
