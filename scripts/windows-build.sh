#!/usr/bin/env bash
# Cross-builds the Windows release binaries, once, with one cargo command:
#   identity-gateway.exe  the gateway, production shape (--no-default-features:
#                         no emulator), as the zip ships it
#   gateway-probe.exe     client-rs's test client (the wine suite's client)
# into target/x86_64-pc-windows-gnu/release (or $CARGO_TARGET_DIR's). Installs
# the toolchain first (scripts/tools/windows.sh). Prints that directory on
# its last line. Cargo skips the build when nothing changed.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
target="x86_64-pc-windows-gnu"

bash scripts/tools/windows.sh
echo "windows-build: cargo build --release --target $target (gateway + gateway-probe)" >&2
start=$SECONDS
cargo build --release --target "$target" \
  --no-default-features \
  -p identity-gateway --bin identity-gateway \
  -p identity-gateway-client --example gateway-probe >&2
echo "windows-build: done in $((SECONDS - start)) s" >&2

dir="${CARGO_TARGET_DIR:-$repo/target}/$target/release"
for exe in "$dir/identity-gateway.exe" "$dir/examples/gateway-probe.exe"; do
  [[ -f "$exe" ]] || { echo "windows-build: $exe was not built" >&2; exit 1; }
done
echo "$dir"
