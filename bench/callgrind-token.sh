#!/usr/bin/env bash
# Server instructions per call under callgrind (repeatable whatever the load):
# cached GetToken against the empty unary RPC (Health/Check), 1,000 sequential
# calls each after 200 warm-up calls. Prints one line per dump; divide by 1000.
#   bench/callgrind-token.sh GATEWAY_BIN TOKEN_BENCH_BIN [KEEP_DIR]
# With KEEP_DIR, the callgrind.out.* files are copied there for
# callgrind_annotate (e.g. `callgrind_annotate --inclusive=yes FILE`).
set -euo pipefail
source "$(dirname "$(realpath "${BASH_SOURCE[0]}")")/callgrind-common.sh"
keep="${3:-}"; [ -n "$keep" ] && mkdir -p "$keep" && keep="$(realpath "$keep")"
gateway="$(realpath "$1")"; driver="$(realpath "$2")"
callgrind_workdir
IDENTITY_GATEWAY_LOG=error valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out.%p" "$gateway" --emulator --socket $work/sockdir/gw.sock > $work/gw.log 2>&1 &
VG=$!
wait_socket $work/sockdir/gw.sock 0.5
callgrind_drive "$driver" $work/sockdir/gw.sock $VG
kill $VG; wait $VG 2>/dev/null || true
[ -n "$keep" ] && cp callgrind.out.* "$keep"/
callgrind_totals
