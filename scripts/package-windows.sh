#!/usr/bin/env bash
# Builds the Windows package, a zip an operator unpacks on the VM:
#   identity-gateway.exe                 the release build (scripts/windows-build.sh)
#   install.ps1, uninstall.ps1           install/remove the service (deploy/windows/)
#   config.toml                          the Windows example config
#   README.md                            deploy/windows.md: zip to running service
# into target/package/identity-gateway-<version>-x86_64-windows.zip and checks
# its contents. Reuses the cross-build (cargo does not rebuild what is built).
# Prints the zip's path on its last line.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

release_dir="$(bash scripts/windows-build.sh | tail -n1)"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
out_dir="${CARGO_TARGET_DIR:-$repo/target}/package"
zip="$out_dir/identity-gateway-$version-x86_64-windows.zip"
mkdir -p "$out_dir"

python3 - "$zip" "$release_dir/identity-gateway.exe" <<'PY'
import sys, zipfile
zip_path, exe = sys.argv[1], sys.argv[2]
files = {
    "identity-gateway.exe": exe,
    "install.ps1": "deploy/windows/install.ps1",
    "uninstall.ps1": "deploy/windows/uninstall.ps1",
    "config.toml": "deploy/windows/config.toml",
    "README.md": "deploy/windows.md",
}
with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
    for name, path in files.items():
        data = open(path, "rb").read()
        if name.endswith((".ps1", ".toml", ".md")):
            # Windows line endings for Notepad and PowerShell 5.1.
            data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        z.writestr(zipfile.ZipInfo(f"identity-gateway/{name}", date_time=(2026, 1, 1, 0, 0, 0)), data,
                   compress_type=zipfile.ZIP_DEFLATED)
with zipfile.ZipFile(zip_path) as z:
    names = set(z.namelist())
    assert names == {f"identity-gateway/{n}" for n in files}, names
    assert z.read("identity-gateway/identity-gateway.exe")[:2] == b"MZ", "not a PE file"
    assert z.testzip() is None
PY
echo "package-windows: $(du -h "$zip" | cut -f1) $zip" >&2
echo "$zip"
