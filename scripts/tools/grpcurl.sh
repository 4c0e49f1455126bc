#!/usr/bin/env bash
# Installs a pinned grpcurl into <repo>/.tools/bin (ignored by git) with
# `go install`, for the grpcurl test and for trying the README's commands.
# Idempotent: does nothing when that version is already there.
# Prints the binary's path on its last line.
set -euo pipefail

version="v1.9.4"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="$repo/.tools/bin"
stamp="$bin/.grpcurl.version"

if [[ -x "$bin/grpcurl" && "$(cat "$stamp" 2>/dev/null)" == "$version" ]]; then
  echo "$bin/grpcurl"
  exit 0
fi
if ! command -v go >/dev/null; then
  echo "grpcurl.sh: Go is needed to install grpcurl $version" >&2
  exit 1
fi
echo "grpcurl.sh: installing grpcurl $version" >&2
mkdir -p "$bin"
GOBIN="$bin" go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$version"
echo "$version" >"$stamp"
echo "$bin/grpcurl"
