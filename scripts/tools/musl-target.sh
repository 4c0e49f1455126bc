#!/usr/bin/env bash
# Rust's x86_64-unknown-linux-musl target, for the static binary that the
# .deb and the container image carry (scripts/package.sh). The C compiler
# for it, musl-gcc, comes from Debian's musl-tools (scripts/tools/apt.sh).
# Idempotent.
set -euo pipefail

target=x86_64-unknown-linux-musl
if ! rustup target list --installed | grep -qx "$target"; then
  echo "musl-target.sh: rustup target add $target" >&2
  rustup target add "$target" >&2
fi
