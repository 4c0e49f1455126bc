#!/usr/bin/env bash
# Server instructions per call under callgrind for the canned-reply baseline
# (token-bench --serve-canned: a minimal tonic server replaying a GetToken reply
# captured from the gateway) against its own Health/Check, 1,000 sequential
# calls each after 200 warm-up calls. Compare with bench/callgrind-token.sh:
# what the reply's size costs vs what the gateway adds.
#   bench/callgrind-canned.sh GATEWAY_BIN TOKEN_BENCH_BIN FAKE_IMDS_BIN
set -euo pipefail
source "$(dirname "$(realpath "${BASH_SOURCE[0]}")")/callgrind-common.sh"
gateway="$(realpath "$1")"; driver="$(realpath "$2")"; fake="$(realpath "$3")"
callgrind_workdir
coproc FAKE { "$fake" --no-limits --latency-ms 0; }
read -r _ url <&"${FAKE[0]}"
IDENTITY_GATEWAY_LOG=error "$gateway" --source imds --imds-endpoint "$url" --socket $work/sockdir/gw.sock > $work/gw.log 2>&1 &
GW=$!
wait_socket $work/sockdir/gw.sock 0.1
valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out.%p" "$driver" --serve-canned $work/sockdir/canned.sock $work/sockdir/gw.sock https://vault.azure.net > $work/canned.log 2>&1 &
VG=$!
wait_socket $work/sockdir/canned.sock 0.5
callgrind_drive "$driver" $work/sockdir/canned.sock $VG
kill $VG $GW; wait $VG $GW 2>/dev/null || true
exec {FAKE[1]}>&-
callgrind_totals
