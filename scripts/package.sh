#!/usr/bin/env bash
# Builds identity-gateway's Linux release artefacts from this checkout:
#   - the static binary: x86_64-unknown-linux-musl, profile `dist` (release,
#     stripped), --no-default-features, so the emulator (a dev-only default
#     feature) is not in it;
#   - the .deb: that binary, the systemd unit, sysusers.d and tmpfiles.d
#     entries, the default config (a conffile) and the docs, assembled with
#     dpkg-deb from deploy/.
# The container image (deploy/Dockerfile) copies the same binary.
#
#   scripts/package.sh      # prints the binary's and the .deb's paths last
#
# Needs the musl target and musl-tools (scripts/tools/musl-target.sh and
# apt.sh install them). The binary is built once; a second run only
# reassembles the .deb.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
triple=x86_64-unknown-linux-musl
profile=dist

target_dir="$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
version="$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "identity-gateway"))')"

echo "package.sh: cargo build --profile $profile --target $triple --no-default-features" >&2
start=$SECONDS
cargo build --locked --profile "$profile" --target "$triple" --no-default-features \
  --bin identity-gateway >&2
echo "package.sh: binary built in $((SECONDS - start)) s" >&2
bin="$target_dir/$triple/$profile/identity-gateway"

# Static: no program interpreter, no shared libraries.
if readelf --program-headers "$bin" | grep -q 'program interpreter' ||
  readelf --dynamic "$bin" | grep -q '(NEEDED)'; then
  echo "package.sh: $bin is not statically linked" >&2
  exit 1
fi

# Reproducible timestamps: the last commit's time.
epoch="$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)"
export SOURCE_DATE_EPOCH="$epoch"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
root="$stage/identity-gateway"
doc="$root/usr/share/doc/identity-gateway"
install -D -m 0755 "$bin" "$root/usr/bin/identity-gateway"
install -D -m 0644 deploy/identity-gateway.service "$root/lib/systemd/system/identity-gateway.service"
install -D -m 0644 deploy/identity-gateway.sysusers "$root/usr/lib/sysusers.d/identity-gateway.conf"
install -D -m 0644 deploy/identity-gateway.tmpfiles "$root/usr/lib/tmpfiles.d/identity-gateway.conf"
install -D -m 0644 deploy/config.toml "$root/etc/identity-gateway/config.toml"
install -D -m 0644 deploy/config.example.toml "$doc/config.example.toml"
install -D -m 0644 docs/configuration.md "$doc/configuration.md"
install -D -m 0644 README.md "$doc/README.md"
install -D -m 0644 deploy/debian/copyright "$doc/copyright"
install -D -m 0644 deploy/debian/lintian-overrides "$root/usr/share/lintian/overrides/identity-gateway"
{
  echo "identity-gateway ($version) unstable; urgency=medium"
  echo
  echo "  * Release $version; see the source repository's history."
  echo
  echo " -- identity-gateway developers <identity-gateway@users.noreply.github.com>  $(date -u -R -d "@$epoch")"
} | gzip -9n >"$doc/changelog.gz"
chmod 0644 "$doc/changelog.gz"

mkdir -p "$root/DEBIAN"
installed_kb="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
sed -e "s/@VERSION@/$version/" -e "s/@INSTALLED_SIZE@/$installed_kb/" \
  deploy/debian/control >"$root/DEBIAN/control"
install -m 0644 deploy/debian/conffiles "$root/DEBIAN/conffiles"
install -m 0755 deploy/debian/postinst deploy/debian/prerm deploy/debian/postrm "$root/DEBIAN/"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
  xargs -0 md5sum >DEBIAN/md5sums)
chmod 0644 "$root/DEBIAN/md5sums"
find "$root" -exec touch --no-dereference --date="@$epoch" {} +

out="$target_dir/packages"
mkdir -p "$out"
deb="$out/identity-gateway_${version}_amd64.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
echo "$bin"
echo "$deb"
