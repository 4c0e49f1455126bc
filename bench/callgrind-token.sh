#!/usr/bin/env bash
# Server instructions per call under callgrind (repeatable whatever the load):
# cached GetToken against the empty unary RPC (Health/Check), 1,000 sequential
# calls each after 200 warm-up calls. Prints one line per dump; divide by 1000.
#   bench/callgrind-token.sh GATEWAY_BIN TOKEN_BENCH_BIN
set -euo pipefail
gateway="$(realpath "$1")"; driver="$(realpath "$2")"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
cd "$work"; mkdir sockdir
IDENTITY_GATEWAY_LOG=error valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out.%p" "$gateway" --emulator --socket $work/sockdir/gw.sock > $work/gw.log 2>&1 &
VG=$!
for i in $(seq 1 300); do [ -S $work/sockdir/gw.sock ] && break; sleep 0.5; done
sleep 2
"$driver" --drive $work/sockdir/gw.sock token 200 >/dev/null
"$driver" --drive $work/sockdir/gw.sock health 200 >/dev/null
for kind in health token; do
  callgrind_control -z $VG >/dev/null
  "$driver" --drive $work/sockdir/gw.sock $kind 1000 >/dev/null
  callgrind_control -d $kind $VG >/dev/null
done
kill $VG; wait $VG 2>/dev/null || true
for f in callgrind.out.*; do echo "$f: $(grep -E '^(summary|totals):' $f | head -1)"; done
