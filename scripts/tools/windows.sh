#!/usr/bin/env bash
# Installs what the Windows build and its wine test suite need:
#   - the x86_64-pc-windows-gnu Rust target (rustup),
#   - Debian's mingw-w64 cross compiler (the target's linker),
#   - wine64 (runs the cross-built .exe files in scripts/windows-tests.sh).
# Idempotent: does nothing when all three are there. Needs root for apt-get
# (CI runs as root); prints what is missing otherwise.
set -euo pipefail

target="x86_64-pc-windows-gnu"
missing_pkgs=()
command -v x86_64-w64-mingw32-gcc >/dev/null || missing_pkgs+=(gcc-mingw-w64-x86-64)
[[ -x /usr/lib/wine/wine64 ]] || command -v wine64 >/dev/null || missing_pkgs+=(wine64)

if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  echo "windows.sh: rustup target add $target" >&2
  rustup target add "$target" >&2
fi

if ((${#missing_pkgs[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "windows.sh: needs root to apt-get install ${missing_pkgs[*]}" >&2
    exit 1
  fi
  echo "windows.sh: apt-get install ${missing_pkgs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing_pkgs[@]}" >&2
fi
echo "windows.sh: $target, mingw-w64 and wine ready" >&2
