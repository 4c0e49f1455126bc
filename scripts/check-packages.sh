#!/usr/bin/env bash
# Checks what an operator installs, the way scripts/test runs it in CI:
#   1. builds the static binary and the .deb once (scripts/package.sh);
#   2. the binary: static, production build (no emulator);
#   3. the .deb: contents, lintian, installed into and purged from a
#      throwaway root with dpkg (maintainer scripts included: user, group and
#      socket directory created there), systemd-analyze verify of the unit;
#   4. the installed binary starts on the packaged default config with no
#      edits and answers `identity-gateway healthcheck`; JSON logs parse;
#   5. deploy/*.yaml against the Kubernetes schemas (kubeconform, strict);
#   6. deploy/Dockerfile: hadolint, and every file it copies exists and is
#      let through by .dockerignore (no Docker engine here to build it).
# Ends with "packaging: N passed, N failed"; exits non-zero on a failure.
#
# Needs the tools that scripts/tools/{apt,musl-target,kubeconform,hadolint}.sh
# install.
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
tools="$repo/.tools/bin"
work="$(mktemp -d)"
gateway_pid=""
cleanup() {
  [[ -n "$gateway_pid" ]] && kill "$gateway_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

passed=0
failed=0
check() {
  # check NAME COMMAND...: runs COMMAND, records the result under NAME. A
  # command that succeeds printing "SKIP: why" counts as neither.
  local name="$1"
  shift
  local out
  if out="$("$@" 2>&1)"; then
    if [[ "$out" == SKIP:* ]]; then
      echo "skip $name (${out#SKIP: })"
      return
    fi
    passed=$((passed + 1))
    echo "ok   $name"
  else
    failed=$((failed + 1))
    echo "FAIL $name"
    printf '%s\n' "$out" | sed 's/^/     /' | tail -n 40
  fi
}

echo "==> building the static binary and the .deb (scripts/package.sh)"
start=$SECONDS
if ! built="$(scripts/package.sh)"; then
  echo "FAIL scripts/package.sh"
  echo "packaging: $passed passed, 1 failed"
  exit 1
fi
echo "     built in $((SECONDS - start)) s"
bin="$(sed -n 1p <<<"$built")"
deb="$(sed -n 2p <<<"$built")"
echo "     $deb ($(du -h "$deb" | cut -f1)), binary $(du -h "$bin" | cut -f1)"

# --- the binary -------------------------------------------------------------
static() {
  ! readelf --program-headers "$bin" | grep -q 'program interpreter' &&
    ! readelf --dynamic "$bin" | grep -q '(NEEDED)'
}
check "binary is statically linked" static

no_emulator() {
  # The emulator's sample secret is in the binary iff the emulator is.
  if ! grep -q '^emulator *=' Cargo.toml; then
    echo "SKIP: Cargo.toml has no \`emulator\` feature yet, so --no-default-features cannot leave it out"
    return 0
  fi
  ! grep -q 'correct-horse-battery-staple' "$bin"
}
check "binary is built without the emulator" no_emulator

# --- the .deb ---------------------------------------------------------------
contents() {
  local listing
  listing="$(dpkg-deb --contents "$deb")" || return 1
  for path in ./usr/bin/identity-gateway ./lib/systemd/system/identity-gateway.service \
    ./usr/lib/sysusers.d/identity-gateway.conf ./usr/lib/tmpfiles.d/identity-gateway.conf \
    ./etc/identity-gateway/config.toml ./usr/share/doc/identity-gateway/copyright \
    ./usr/share/doc/identity-gateway/config.example.toml; do
    grep -q " $path\$" <<<"$listing" || { echo "missing $path"; return 1; }
  done
  [[ "$(dpkg-deb --field "$deb" Package)" == identity-gateway ]] &&
    dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -qx /etc/identity-gateway/config.toml
}
check ".deb carries binary, unit, sysusers/tmpfiles entries, conffile, docs" contents
check "lintian (errors and warnings fail)" lintian --fail-on error,warning "$deb"
check "dpkg --dry-run --install on this machine" dpkg --dry-run --install "$deb"

root="$work/root"
install_in_root() {
  mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/etc"
  : >"$root/var/lib/dpkg/status"
  dpkg --root="$root" --force-script-chrootless --log=/dev/null --install "$deb" || return 1
  [[ -x "$root/usr/bin/identity-gateway" ]] || { echo "no binary"; return 1; }
  grep -q '^identity-gateway:' "$root/etc/passwd" || { echo "postinst made no user"; return 1; }
  grep -q '^identity-gateway:' "$root/etc/group" || { echo "postinst made no group"; return 1; }
  [[ "$(stat -c '%a %U %G' "$root/run/identity-gateway" 2>/dev/null)" == "750 "* ]] ||
    { echo "postinst made no 0750 /run/identity-gateway"; ls -la "$root/run"; return 1; }
  dpkg --root="$root" --status identity-gateway | grep -q '^Status: install ok installed'
}
check "dpkg --root: installs into a throwaway root (user, group, socket dir)" install_in_root

verify_unit() {
  # In the root: ExecStart= must exist there, and the targets the unit
  # names come from this machine's systemd (copied in, as on a real system).
  # Any output (an unknown key, a bad value) fails, not only errors.
  # Likewise ExecReload='s /bin/kill (procps, on every real system).
  mkdir -p "$root/usr/lib/systemd/system" "$root/bin"
  cp -an /lib/systemd/system/. "$root/usr/lib/systemd/system/"
  cp -an /bin/kill "$root/bin/kill"
  local out
  out="$(systemd-analyze verify --root="$root" identity-gateway.service 2>&1)" || { echo "$out"; return 1; }
  [[ -z "$out" ]] || { echo "$out"; return 1; }
}
check "systemd-analyze verify identity-gateway.service" verify_unit

# --- the packaged binary on the packaged default config ---------------------
starts_on_default_config() {
  local socket="$work/gw.sock" log="$work/gateway.log"
  # The packaged config, unedited; flags only move the socket out of /run,
  # give it this machine's group (the package's identity-gateway group exists
  # in the throwaway root, not here) and point IMDS at a dead loopback port
  # (it is asked on demand only).
  "$root/usr/bin/identity-gateway" --config "$root/etc/identity-gateway/config.toml" \
    --socket "$socket" --socket-group "$(id -g)" --imds-endpoint http://127.0.0.1:9 --log-format json \
    >/dev/null 2>"$log" &
  gateway_pid=$!
  local healthy=""
  for _ in $(seq 100); do
    if "$root/usr/bin/identity-gateway" --socket "$socket" healthcheck --timeout 1 >/dev/null 2>&1; then
      healthy=yes
      break
    fi
    kill -0 "$gateway_pid" 2>/dev/null || break
    sleep 0.1
  done
  [[ -n "$healthy" ]] || { echo "not healthy"; cat "$log"; return 1; }
  "$root/usr/bin/identity-gateway" --socket "$socket" healthcheck \
    --service identity_gateway.v1.IdentityGateway || return 1
  if "$root/usr/bin/identity-gateway" --socket "$work/none.sock" healthcheck --timeout 1 2>/dev/null; then
    echo "healthcheck passed with no gateway"
    return 1
  fi
  kill -TERM "$gateway_pid"
  wait "$gateway_pid" || { echo "exit status $? after SIGTERM"; cat "$log"; return 1; }
  gateway_pid=""
  python3 - "$log" <<'PY' || { cat "$log"; return 1; }
import json, sys
lines = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
start = next(l for l in lines if l.get("message") == "identity-gateway serving")
for field in ("transports", "source", "policy", "limits"):
    assert field in start, f"startup line lacks {field}: {start}"
assert "IMDS-equivalent" in start["policy"], start
PY
}
check "packaged binary starts on the packaged config and answers healthcheck" starts_on_default_config

purge_from_root() {
  dpkg --root="$root" --force-script-chrootless --log=/dev/null --purge identity-gateway || return 1
  for path in usr/bin/identity-gateway etc/identity-gateway/config.toml lib/systemd/system/identity-gateway.service; do
    [[ ! -e "$root/$path" ]] || { echo "$path left behind"; return 1; }
  done
}
check "dpkg --root: purges cleanly" purge_from_root

# --- Kubernetes manifests ---------------------------------------------------
manifests=(deploy/*.yaml)
kubeconform_all() {
  for dir in "$repo"/.tools/k8s-schemas/v*/; do
    echo "Kubernetes $(basename "$dir"):"
    "$tools/kubeconform" -strict -summary \
      -schema-location "$dir{{ .ResourceKind }}{{ .KindSuffix }}.json" "${manifests[@]}" || return 1
  done
}
check "kubeconform -strict ${manifests[*]}" kubeconform_all

kubeconform_rejects_a_typo() {
  # The validator really reads the schemas: a misspelt field must fail.
  sed 's/readOnlyRootFilesystem:/readOnlyRootFileSystem:/' deploy/daemonset.yaml >"$work/typo.yaml"
  local dir
  dir="$(ls -d "$repo"/.tools/k8s-schemas/v*/ | head -n1)"
  ! "$tools/kubeconform" -strict -schema-location "$dir{{ .ResourceKind }}{{ .KindSuffix }}.json" \
    "$work/typo.yaml"
}
check "kubeconform rejects a misspelt field" kubeconform_rejects_a_typo

# --- Dockerfile -------------------------------------------------------------
check "hadolint deploy/Dockerfile" "$tools/hadolint" deploy/Dockerfile

dockerfile_sources() {
  python3 - <<'PY'
import fnmatch, re, shlex, sys
from pathlib import Path

ignore = [l.strip() for l in Path(".dockerignore").read_text().splitlines()
          if l.strip() and not l.startswith("#")]

def sent(path):
    # .dockerignore semantics: the last matching pattern wins; "!" re-includes.
    keep = True
    for pattern in ignore:
        negate = pattern.startswith("!")
        if fnmatch.fnmatch(path, pattern.lstrip("!")):
            keep = negate
    return keep

bad = []
for line in Path("deploy/Dockerfile").read_text().splitlines():
    if not re.match(r"\s*(COPY|ADD)\s", line, re.IGNORECASE):
        continue
    words = shlex.split(line, comments=True)
    sources = [w for w in words[1:-1] if not w.startswith("--")]
    for src in sources:
        if not Path(src).is_file():
            bad.append(f"{src}: no such file (run scripts/package.sh first)")
        elif not sent(src):
            bad.append(f"{src}: excluded from the build context by .dockerignore")
print("\n".join(bad))
sys.exit(1 if bad else 0)
PY
}
check "Dockerfile copies files that exist and that .dockerignore lets through" dockerfile_sources

echo
echo "packaging: $passed passed, $failed failed"
[[ "$failed" -eq 0 ]]
