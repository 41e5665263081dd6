#!/usr/bin/env bash
# demo.sh: builds the example HTTP service (release preset) and starts it with the embedded
# default (in-process user store, no Redis) on http://127.0.0.1:8080, or on a free port when 8080
# is taken, then stays in the foreground until Ctrl-C (which drains it gracefully).
#
#   ./scripts/demo.sh           build, start, print the URL and some curl lines to try
#   ./scripts/demo.sh --smoke   build, start, hit /hello and /healthz once, stop, exit 0
#                               (also what happens when CI=true: it never waits for a person)
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

smoke=0
[ "${CI:-}" = "true" ] && smoke=1
for arg in "$@"; do
  case "$arg" in
    --smoke) smoke=1 ;;
    -h | --help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

./scripts/bootstrap.sh
cmake --preset release >/dev/null
cmake --build --preset release --target sluice-service
bin="$root/build/release/examples/http_service/sluice-service"

# A place for the demo's files, outside the source tree, with one file to download.
demo="$root/build/demo"
mkdir -p "$demo/data/uploads"
[ -f "$demo/data/sample.bin" ] || head -c 1048576 /dev/urandom >"$demo/data/sample.bin"

# 8080 if nobody answers there, else a free port chosen by the kernel.
listen="127.0.0.1:8080"
if (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; then
  echo "demo.sh: port 8080 is busy, using a free port instead"
  listen="127.0.0.1:0"
fi
rm -f "$demo/port"

log="-"
[ "$smoke" = 1 ] && log="$demo/service.log"
"$bin" --listen "$listen" --port-file "$demo/port" --data-dir "$demo/data" --log "$log" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true' INT TERM

for _ in $(seq 1 100); do
  [ -s "$demo/port" ] && break
  kill -0 "$pid" 2>/dev/null || { wait "$pid" || true; echo "demo.sh: the service did not start" >&2; exit 1; }
  sleep 0.05
done
[ -s "$demo/port" ] || { kill -KILL "$pid"; echo "demo.sh: the service did not start" >&2; exit 1; }
url="http://127.0.0.1:$(cat "$demo/port")"

if [ "$smoke" = 1 ]; then
  hello="$(curl -fsS --max-time 10 "$url/hello")"
  health="$(curl -fsS --max-time 10 "$url/healthz")"
  kill -TERM "$pid"
  rc=0
  wait "$pid" || rc=$?
  if [ "$hello" != "hello" ] || [ "$health" != "ok" ] || [ "$rc" != 0 ]; then
    echo "demo.sh: smoke test failed (hello=[$hello] healthz=[$health] exit=$rc)" >&2
    exit 1
  fi
  echo "demo.sh: smoke test passed ($url/hello and /healthz answered, clean exit)"
  exit 0
fi

cat <<TRY

sluice-service is running at $url  (Ctrl-C stops it gracefully)

Try:
  curl $url/hello
  curl -i $url/users/42
  curl -s --compressed $url/api/data?page=3 | head -c 300; echo
  curl -i $url/users/0
  curl -O $url/download/sample.bin
  curl -s --data-binary @README.md "$url/upload?name=readme.md"
  curl -i -X DELETE $url/hello
TRY
echo

rc=0
wait "$pid" || rc=$?
# The first wait returns when the trap fires; wait again for the drain to finish.
if kill -0 "$pid" 2>/dev/null; then
  rc=0
  wait "$pid" || rc=$?
fi
exit "$rc"
