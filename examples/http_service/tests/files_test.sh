#!/usr/bin/env bash
# files_test.sh: streaming upload (sha256, 413, truncated bodies, nothing left on disk) and
# streaming download (byte for byte, HEAD, Range -> 206, 416, bad names) of sluice-service.
source "$(dirname "$0")/lib.sh"

MB=$((1024 * 1024))
start_server --max-upload-mb 60
head -c $((50 * MB)) /dev/urandom >"$WORK/data/big.bin"
printf 'tiny\n' >"$WORK/data/tiny.txt"
SIZE=$((50 * MB))

# ---- download -----------------------------------------------------------------------------------
"${CURL[@]}" -D "$WORK/h" -o "$WORK/got.bin" "$BASE/download/big.bin"
check "download 50 MB status" "$(head -1 "$WORK/h" | tr -d '\r')" "HTTP/1.1 200 OK"
check "download Content-Length" "$(header Content-Length "$WORK/h")" "$SIZE"
check "download type" "$(header Content-Type "$WORK/h")" "application/octet-stream"
if cmp -s "$WORK/got.bin" "$WORK/data/big.bin"; then pass "download byte for byte"; else
  fail "downloaded file differs"; fi
rm -f "$WORK/got.bin"

"${CURL[@]}" -I -D "$WORK/h" -o /dev/null "$BASE/download/big.bin"
check "HEAD download Content-Length" "$(header Content-Length "$WORK/h")" "$SIZE"

"${CURL[@]}" -D "$WORK/h" -o "$WORK/part" -r 1000-1999 "$BASE/download/big.bin"
check "Range -> 206" "$(head -1 "$WORK/h" | tr -d '\r')" "HTTP/1.1 206 Partial Content"
check "Range Content-Range" "$(header Content-Range "$WORK/h")" "bytes 1000-1999/$SIZE"
check "Range Content-Length" "$(header Content-Length "$WORK/h")" "1000"
check "Range bytes" "$(sha256sum <"$WORK/part")" \
  "$(tail -c +1001 "$WORK/data/big.bin" | head -c 1000 | sha256sum)"
"${CURL[@]}" -o "$WORK/part" -H 'Range: bytes=-100' "$BASE/download/big.bin"
check "suffix Range bytes" "$(sha256sum <"$WORK/part")" "$(tail -c 100 "$WORK/data/big.bin" | sha256sum)"
"${CURL[@]}" -D "$WORK/h" -o "$WORK/part" -H "Range: bytes=$((SIZE - 10))-" "$BASE/download/big.bin"
check "open Range Content-Range" "$(header Content-Range "$WORK/h")" "bytes $((SIZE - 10))-$((SIZE - 1))/$SIZE"
check "open Range bytes" "$(stat -c %s "$WORK/part")" "10"
"${CURL[@]}" -D "$WORK/h" -o /dev/null -H "Range: bytes=$SIZE-" "$BASE/download/big.bin"
check "Range past the end -> 416" "$(head -1 "$WORK/h" | tr -d '\r')" "HTTP/1.1 416 Range Not Satisfiable"
check "416 Content-Range" "$(header Content-Range "$WORK/h")" "bytes */$SIZE"
check "reversed Range -> 416" "$(status "$BASE/download/big.bin" -H 'Range: bytes=9-3')" "416"
check "malformed Range -> 416" "$(status "$BASE/download/big.bin" -H 'Range: bytes=abc')" "416"

check "small file" "$("${CURL[@]}" "$BASE/download/tiny.txt")" "tiny"
check "missing file -> 404" "$(status "$BASE/download/nope.bin")" "404"
check "dot file -> 400" "$(status "$BASE/download/.hidden")" "400"
check "dot-dot -> 400" "$(status "$BASE/download/.." --path-as-is)" "400"
check "escaped slash -> 400" "$(status "$BASE/download/a%2Fb")" "400"
check "bad char -> 400" "$(status "$BASE/download/a\$b")" "400"
check "400 body" "$("${CURL[@]}" "$BASE/download/.x")" '{"error":"invalid file name"}'

# ---- upload -------------------------------------------------------------------------------------
head -c $((50 * MB)) /dev/urandom >"$WORK/up.bin"
want="$(sha256sum <"$WORK/up.bin" | cut -d' ' -f1)"
body="$("${CURL[@]}" --data-binary @"$WORK/up.bin" -H 'Content-Type: application/octet-stream' \
  "$BASE/upload?name=up.bin")"
check "upload 50 MB answer" "$body" "{\"bytes\":$SIZE,\"sha256\":\"$want\",\"name\":\"up.bin\"}"
if cmp -s "$WORK/up.bin" "$WORK/uploads/up.bin"; then pass "uploaded file stored byte for byte"
else fail "stored upload differs"; fi
rm -f "$WORK/uploads/up.bin"

body="$(printf 'hello upload' | "${CURL[@]}" --data-binary @- -H 'Transfer-Encoding: chunked' \
  "$BASE/upload")"
sum="$(printf 'hello upload' | sha256sum | cut -d' ' -f1)"
check "chunked upload, stored under its sha256" "$body" "{\"bytes\":12,\"sha256\":\"$sum\",\"name\":\"$sum\"}"
check "chunked upload on disk" "$(cat "$WORK/uploads/$sum")" "hello upload"
rm -f "$WORK/uploads/$sum"
check "upload bad name -> 400" "$(status "$BASE/upload?name=../x" --data-binary x)" "400"
check "nothing left after the bad name" "$(ls -A "$WORK/uploads")" ""
stop_server TERM
check "exit status" "$EXIT_CODE" "0"

# ---- 413 and truncated bodies leave nothing on disk ---------------------------------------------
start_server --max-upload-mb 1
head -c $((2 * MB)) /dev/urandom >"$WORK/two.bin"
check "upload over the limit -> 413" \
  "$(status "$BASE/upload?name=two.bin" --data-binary @"$WORK/two.bin")" "413"
check "413 leaves nothing" "$(ls -A "$WORK/uploads")" ""
check "chunked upload over the limit -> 413" "$(status "$BASE/upload?name=two.bin" \
  --data-binary @"$WORK/two.bin" -H 'Transfer-Encoding: chunked')" "413"
check "chunked 413 leaves nothing" "$(ls -A "$WORK/uploads")" ""
check "upload at the limit -> 200" \
  "$(head -c $MB "$WORK/two.bin" | status "$BASE/upload?name=one.bin" --data-binary @-)" "200"
rm -f "$WORK/uploads/one.bin"
# A body shorter than its Content-Length, then the client goes away.
(exec 3<>"/dev/tcp/127.0.0.1/$PORT"
 printf 'POST /upload?name=cut.bin HTTP/1.1\r\nHost: x\r\nX-Request-Id: truncated-1\r\nContent-Length: 100000\r\n\r\n0123456789' >&3
 sleep 0.3)
for _ in $(seq 1 50); do
  grep -q '"request_id":"truncated-1"' "$WORK/server.log" && break
  sleep 0.1
done
check "truncated upload leaves nothing" "$(ls -A "$WORK/uploads")" ""
stop_server TERM
check "exit status" "$EXIT_CODE" "0"
check_match "truncated upload answered 400" "$(grep '"request_id":"truncated-1"' "$WORK/server.log")" \
  '"status":400'

finish
