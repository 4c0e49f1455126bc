#!/usr/bin/env bash
# Installs the pinned Azurite (Microsoft's Storage emulator) into the repo's
# ignored .tools/azurite/ folder, for the Storage integration tests
# (tests/storage.rs start .tools/azurite/node_modules/.bin/azurite-blob).
#
# Idempotent: does nothing when the pinned version is already there.
# Needs Node.js >= 18 and npm; fails loudly (never skips) without them.
set -euo pipefail

AZURITE_VERSION="3.35.0" # last release that supports Node 20 (3.36+ need Node >= 21/22)
MIN_NODE_MAJOR=18

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dest="$repo_root/.tools/azurite"

install_hint() {
    cat >&2 <<'HINT'
Install Node.js 18 or newer (it ships npm), then run this script again:
  Debian/Ubuntu: sudo apt-get install -y nodejs npm
  or NodeSource: https://github.com/nodesource/distributions
  macOS:         brew install node
  Windows:       winget install OpenJS.NodeJS.LTS
HINT
}

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "error: Azurite needs 'node' and 'npm' on PATH, and at least one is missing." >&2
    install_hint
    exit 1
fi

node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt "$MIN_NODE_MAJOR" ]; then
    echo "error: Node.js $(node --version) is too old for Azurite $AZURITE_VERSION (need >= $MIN_NODE_MAJOR)." >&2
    install_hint
    exit 1
fi

installed_version() {
    local manifest="$dest/node_modules/azurite/package.json"
    [ -f "$manifest" ] && node -p "require(process.argv[1]).version" "$manifest" 2>/dev/null || true
}

if [ "$(installed_version)" = "$AZURITE_VERSION" ] && [ -x "$dest/node_modules/.bin/azurite-blob" ]; then
    echo "azurite $AZURITE_VERSION already installed in $dest"
    exit 0
fi

mkdir -p "$dest"
# A private package.json keeps npm from walking up into the repo.
cat >"$dest/package.json" <<JSON
{
  "name": "identity-gateway-test-tools",
  "private": true,
  "description": "Tools the identity-gateway tests run; installed by scripts/tools/azurite.sh",
  "dependencies": { "azurite": "$AZURITE_VERSION" }
}
JSON
echo "installing azurite $AZURITE_VERSION into $dest ..."
npm install --prefix "$dest" --no-audit --no-fund --loglevel=error --save-exact "azurite@$AZURITE_VERSION"

if [ "$(installed_version)" != "$AZURITE_VERSION" ] || [ ! -x "$dest/node_modules/.bin/azurite-blob" ]; then
    echo "error: npm finished but $dest/node_modules/.bin/azurite-blob ($AZURITE_VERSION) is missing." >&2
    exit 1
fi
echo "azurite $AZURITE_VERSION installed in $dest"
