#!/usr/bin/env bash
# Starts and stops a throw-away redis-server on a free loopback port, for sluice's integration
# tests and benchmarks.
#
#   redis_fixture.sh start <dir> [port]   start (a free port unless given); writes <dir>/port,
#                                          <dir>/url, <dir>/redis.pid, <dir>/redis.log
#   redis_fixture.sh stop <dir>           SIGTERM, then SIGKILL after 5 s; idempotent
#   redis_fixture.sh kill <dir>           SIGKILL at once (a crash), waits until it is gone
#
# Extra redis-server arguments may be given in SLUICE_REDIS_EXTRA_ARGS (e.g. "--requirepass pw").
# No persistence (--save "" --appendonly no); DEBUG is enabled (the stall tests use DEBUG SLEEP).
set -euo pipefail

cmd=${1:?usage: redis_fixture.sh start|stop|kill <dir> [port]}
dir=${2:?usage: redis_fixture.sh start|stop|kill <dir> [port]}
server=${REDIS_SERVER:-redis-server}
cli=${REDIS_CLI:-redis-cli}

# A process that exited but was not reaped yet (a zombie: PID 1 may reap late) counts as gone.
running() {
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r "/proc/$pid/stat" ]]; then
    [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != "Z" ]] || return 1
  fi
  return 0
}

alive() { [[ -f "$dir/redis.pid" ]] && running "$(cat "$dir/redis.pid")"; }

wait_gone() {
  local pid=$1
  for _ in $(seq 1 100); do
    running "$pid" || return 0
    sleep 0.05
  done
  return 1
}

stop() {
  local signal=$1
  if alive; then
    local pid
    pid=$(cat "$dir/redis.pid")
    kill "-$signal" "$pid" 2>/dev/null || true
    if ! wait_gone "$pid"; then
      kill -KILL "$pid" 2>/dev/null || true
      wait_gone "$pid" || true
    fi
  fi
  rm -f "$dir/redis.pid"
}

start() {
  mkdir -p "$dir"
  stop TERM
  local fixed=${1:-}
  # shellcheck disable=SC2206
  local extra=(${SLUICE_REDIS_EXTRA_ARGS:-})
  for _ in $(seq 1 30); do
    local port=${fixed:-$((20000 + RANDOM % 30000))}
    rm -f "$dir/redis.pid"
    "$server" --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
      --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir" \
      --enable-debug-command yes "${extra[@]}" >/dev/null 2>&1 || true
    for _ in $(seq 1 100); do
      if alive; then
        # The server on this port must be ours (another one may hold a port we picked).
        local info
        info=$("$cli" -h 127.0.0.1 -p "$port" --no-auth-warning \
          ${SLUICE_REDIS_PASSWORD:+-a "$SLUICE_REDIS_PASSWORD"} info server 2>/dev/null |
          tr -d '\r' | sed -n 's/^process_id://p' || true)
        if [[ "$info" == "$(cat "$dir/redis.pid")" ]]; then
          echo "$port" >"$dir/port"
          echo "redis://127.0.0.1:$port" >"$dir/url"
          return 0
        fi
      fi
      # The daemon exits when the port is taken: try another one.
      if grep -qs "Address already in use" "$dir/redis.log"; then
        : >"$dir/redis.log"
        break
      fi
      sleep 0.05
    done
    stop KILL
    [[ -z "$fixed" ]] || sleep 0.2
  done
  echo "redis_fixture: could not start $server (see $dir/redis.log)" >&2
  return 1
}

case "$cmd" in
  start) start "${3:-}" ;;
  stop) stop TERM ;;
  kill) stop KILL ;;
  *) echo "redis_fixture: unknown command $cmd" >&2; exit 2 ;;
esac
