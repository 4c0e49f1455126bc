#!/usr/bin/env bash
# Installs the Node example's pinned packages (clients/node/package-lock.json)
# into clients/node/node_modules (ignored by git) with `npm ci`.
# Idempotent: skipped when the lock file has not changed since the last install.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dir="$repo/clients/node"
stamp="$dir/node_modules/.identity-gateway.lock-hash"

if ! command -v npm >/dev/null; then
  echo "node.sh: npm is needed for the Node example" >&2
  exit 1
fi
hash="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
if [[ -d "$dir/node_modules" && "$(cat "$stamp" 2>/dev/null)" == "$hash" ]]; then
  exit 0
fi
echo "node.sh: npm ci in clients/node" >&2
(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
echo "$hash" >"$stamp"
