#!/usr/bin/env bash
# Server instructions per call under callgrind for the canned-reply baseline
# (token-bench --serve-canned: a minimal tonic server replaying a GetToken reply
# captured from the gateway) against its own Health/Check, 1,000 sequential
# calls each after 200 warm-up calls. Compare with bench/callgrind-token.sh:
# what the reply's size costs vs what the gateway adds.
#   bench/callgrind-canned.sh GATEWAY_BIN TOKEN_BENCH_BIN FAKE_IMDS_BIN
set -euo pipefail
gateway="$(realpath "$1")"; driver="$(realpath "$2")"; fake="$(realpath "$3")"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
cd "$work"; mkdir sockdir
coproc FAKE { "$fake" --no-limits --latency-ms 0; }
read -r _ url <&"${FAKE[0]}"
IDENTITY_GATEWAY_LOG=error "$gateway" --source imds --imds-endpoint "$url" --socket $work/sockdir/gw.sock > $work/gw.log 2>&1 &
GW=$!
for i in $(seq 1 300); do [ -S $work/sockdir/gw.sock ] && break; sleep 0.1; done
valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out.%p" "$driver" --serve-canned $work/sockdir/canned.sock $work/sockdir/gw.sock https://vault.azure.net > $work/canned.log 2>&1 &
VG=$!
for i in $(seq 1 300); do [ -S $work/sockdir/canned.sock ] && break; sleep 0.5; done
sleep 2
"$driver" --drive $work/sockdir/canned.sock token 200 >/dev/null
"$driver" --drive $work/sockdir/canned.sock health 200 >/dev/null
for kind in health token; do
  callgrind_control -z $VG >/dev/null
  "$driver" --drive $work/sockdir/canned.sock $kind 1000 >/dev/null
  callgrind_control -d $kind $VG >/dev/null
done
kill $VG $GW; wait $VG $GW 2>/dev/null || true
exec {FAKE[1]}>&-
for f in callgrind.out.*; do echo "$f: $(grep -E '^(summary|totals):' $f | head -1)"; done
