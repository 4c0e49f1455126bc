#!/usr/bin/env bash
# The polyglot suite: the real identity-gateway binary (--emulator) driven by
# the Python package and its pytest tests, azure-identity's unmodified
# ManagedIdentityCredential (through the identity endpoint), grpcurl and the
# Node, Go and Java examples, all as the docs show them, plus third-party gRPC
# clients with default options (grpcio, grpcurl, grpc-go, grpc-java) over the
# socket (tests/test_interop.py).
#
#   scripts/polyglot-tests.sh [pytest args...]
#
# Installs the pinned tools first (idempotent), builds the gateway binary, then
# runs pytest; ends with pytest's summary line and exits non-zero on failure.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

python="$(bash scripts/tools/python.sh | tail -n1)"
bash scripts/tools/grpcurl.sh >/dev/null
bash scripts/tools/node.sh
bash scripts/tools/go.sh >/dev/null
bash scripts/tools/java.sh

# The binary `cargo test --workspace` already built (scripts/test runs that
# first): the same command with --no-run only names it, so CI builds the
# gateway once. (`cargo build --bin` would build it again: test builds unify
# dev-only features such as tokio's test-util into it.)
echo "polyglot-tests: cargo test --workspace --no-run (the gateway binary)" >&2
# The binary's path, from cargo itself (whatever CARGO_TARGET_DIR says).
IDENTITY_GATEWAY_BIN="$(
  cargo test --workspace --no-run --message-format=json-render-diagnostics |
    "$python" -c '
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if (msg.get("reason") == "compiler-artifact" and msg.get("executable")
            and msg["target"]["name"] == "identity-gateway" and msg["target"]["kind"] == ["bin"]
            and not msg["profile"]["test"]):
        print(msg["executable"])
'
)"
if [[ ! -x "$IDENTITY_GATEWAY_BIN" ]]; then
  echo "polyglot-tests: cargo built no identity-gateway binary" >&2
  exit 1
fi
export IDENTITY_GATEWAY_BIN
# A missing grpcurl, Node, Go or Java install is a failure here, not a skip.
export IDENTITY_GATEWAY_REQUIRE_TOOLS=1

cd clients/python
exec "$python" -m pytest tests -rs -p no:cacheprovider "$@"
