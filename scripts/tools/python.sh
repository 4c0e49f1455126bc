#!/usr/bin/env bash
# Python toolchain for the polyglot tests: creates <repo>/.tools/venv (ignored
# by git), installs the pinned clients/python/requirements-test.txt, then
# installs clients/python itself the way a user would (`pip install
# ./clients/python`, build-isolated, so its build hook generates the stubs
# from proto/).
#
# Idempotent and quick when nothing changed: each step is skipped when a hash
# of its inputs matches the stamp the last successful run left.
# Prints the venv's python path on its last line.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$repo/.tools/venv"
pkg="$repo/clients/python"
python="${PYTHON:-python3}"

hash_files() {
  # Content hash of the given files, in a stable order.
  sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
}

if [[ ! -x "$venv/bin/python" ]]; then
  echo "python.sh: creating $venv" >&2
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check --quiet)

req_hash="$(printf '%s\0' "$pkg/requirements-test.txt" | hash_files)"
if [[ "$(cat "$venv/.requirements.stamp" 2>/dev/null)" != "$req_hash" ]]; then
  echo "python.sh: installing pinned test requirements" >&2
  "${pip[@]}" install -r "$pkg/requirements-test.txt"
  echo "$req_hash" >"$venv/.requirements.stamp"
fi

pkg_hash="$(
  {
    find "$pkg/src" "$repo/proto" -type f \( -name '*.py' -o -name '*.proto' -o -name 'py.typed' \) \
      -not -path '*/_proto/*' -not -path '*/__pycache__/*' -print0
    printf '%s\0' "$pkg/pyproject.toml" "$pkg/setup.py" "$pkg/README.md"
  } | hash_files
)"
if [[ "$(cat "$venv/.package.stamp" 2>/dev/null)" != "$pkg_hash" ]]; then
  echo "python.sh: installing clients/python" >&2
  "${pip[@]}" install --force-reinstall --no-deps "$pkg"
  echo "$pkg_hash" >"$venv/.package.stamp"
fi

echo "$venv/bin/python"
