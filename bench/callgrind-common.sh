# Sourced by bench/callgrind-token.sh and bench/callgrind-canned.sh (not run
# on its own): what both own in common, the temp work dir, waiting for a
# socket, driving the server under callgrind (warm-up, then 1,000 calls per
# kind between a counter reset and a dump) and printing the dumps' totals.
# Each script owns what it starts and how.

# A temp dir (removed on exit) with sockdir/ in it, made the working
# directory; sets $work.
callgrind_workdir() {
  work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
  cd "$work"; mkdir sockdir
}

# wait_socket PATH STEP: until PATH is a socket, polling every STEP seconds
# (300 polls at the most).
wait_socket() {
  for _ in $(seq 1 300); do [ -S "$1" ] && break; sleep "$2"; done
}

# callgrind_drive DRIVER SOCKET VALGRIND_PID: 200 warm-up calls of each kind,
# then for health and token: zero the counters, 1,000 sequential calls, dump
# (the dump named after the kind).
callgrind_drive() {
  local driver="$1" socket="$2" vg="$3" kind
  sleep 2
  "$driver" --drive "$socket" token 200 >/dev/null
  "$driver" --drive "$socket" health 200 >/dev/null
  for kind in health token; do
    callgrind_control -z "$vg" >/dev/null
    "$driver" --drive "$socket" "$kind" 1000 >/dev/null
    callgrind_control -d "$kind" "$vg" >/dev/null
  done
}

# One line per dump in the working directory: its file and instruction total.
callgrind_totals() {
  for f in callgrind.out.*; do echo "$f: $(grep -E '^(summary|totals):' "$f" | head -1)"; done
}
