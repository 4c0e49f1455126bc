#!/usr/bin/env bash
# Builds the grpc-go example (clients/go, versions pinned by its go.mod and
# go.sum) into <repo>/.tools/bin/grpc-go-example, with GOPATH, the module cache
# and the build cache under the repo's ignored .tools/go, so the interop tests
# and the README's `go run` work offline afterwards.
# Idempotent: skipped when the sources are unchanged since the last build.
# Prints the binary's path on its last line.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dir="$repo/clients/go"
bin="$repo/.tools/bin/grpc-go-example"
stamp="$repo/.tools/bin/.grpc-go-example.stamp"

if ! command -v go >/dev/null; then
  echo "go.sh: Go is needed for the grpc-go example (https://go.dev/doc/install)" >&2
  exit 1
fi
export GOPATH="$repo/.tools/go" GOMODCACHE="$repo/.tools/go/pkg/mod" GOCACHE="$repo/.tools/go/cache"
export GOFLAGS="-modcacherw" GOTOOLCHAIN="local"
hash="$(find "$dir" -maxdepth 1 -type f \( -name '*.go' -o -name 'go.mod' -o -name 'go.sum' \) -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
if [[ -x "$bin" && "$(cat "$stamp" 2>/dev/null)" == "$hash" ]]; then
  echo "$bin"
  exit 0
fi
echo "go.sh: building clients/go" >&2
mkdir -p "$(dirname "$bin")"
(cd "$dir" && go build -mod=readonly -o "$bin" .)
echo "$hash" >"$stamp"
echo "$bin"
