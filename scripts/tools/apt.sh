#!/usr/bin/env bash
# Debian packages the packaging checks (scripts/check-packages.sh) need:
# musl-tools (musl-gcc, for the C parts of the static build: aws-lc, ring,
# SQLite), lintian (checks the .deb), systemd (systemd-analyze,
# systemd-sysusers, systemd-tmpfiles: checks the unit and the sysusers.d /
# tmpfiles.d entries). Installed with apt-get, as CI runs as root.
# Idempotent: does nothing when every command is already there.
set -euo pipefail

declare -A wanted=(
  [musl-gcc]=musl-tools
  [lintian]=lintian
  [systemd-analyze]=systemd
)
missing=()
for cmd in "${!wanted[@]}"; do
  command -v "$cmd" >/dev/null || missing+=("${wanted[$cmd]}")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "apt.sh: need root and apt-get to install: ${missing[*]}" >&2
  exit 1
fi
echo "apt.sh: installing ${missing[*]}" >&2
apt=(apt-get -o DPkg::Lock::Timeout=600 -y -qq --no-install-recommends)
export DEBIAN_FRONTEND=noninteractive
"${apt[@]}" install "${missing[@]}" >/dev/null 2>&1 || {
  "${apt[@]}" update >/dev/null
  "${apt[@]}" install "${missing[@]}" >/dev/null
}
