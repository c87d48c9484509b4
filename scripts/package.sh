#!/usr/bin/env bash
# Builds the Debian package of the workspace, vxfs_VERSION_ARCH.deb: the
# daemons and tools in /usr/sbin, their man pages and bash/zsh/fish
# completions where Debian's man and shells look, the systemd unit, the
# docs. `dpkg -i` it, then `mount -t fuse.vxfs SOURCE MNT` works (fuse3's
# mount helper finds vxfs in root's PATH).
# Usage: scripts/package.sh [OUTDIR]   (default target/debian; prints the
# package's path last)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/debian}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' vxfs/Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
bins=(vxfs vxproc vdlimit chxid lsxid setattr showattr hashify vserver vserver-stat vps
      vkill vwait vlimit vsched vuname vattribute vcontext vnamespace vxctl chbind)
cargo build --quiet --release --locked -p vxfs -p vxfs-tools -p vxproc
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/root
install -d "$root/DEBIAN" "$root/usr/sbin" "$root/usr/share/man/man8" "$root/usr/share/man/man5" \
    "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
    "$root/usr/share/fish/vendor_completions.d" "$root/usr/lib/systemd/system" \
    "$root/usr/share/doc/vxfs"
for bin in "${bins[@]}"; do
    install -m 0755 "target/release/$bin" "$root/usr/sbin/$bin"
    # As dh_strip does.
    strip --remove-section=.comment --remove-section=.note --strip-unneeded "$root/usr/sbin/$bin"
done
cargo run --quiet --release --locked -p vxfs-tools --example docs -- "$stage/docs" >/dev/null
for page in "$stage"/docs/man8/*.8 "$stage"/docs/man5/*.5; do
    section=${page##*.}
    gzip -9n < "$page" > "$root/usr/share/man/man$section/$(basename "$page").gz"
done
install -m 0644 "$stage"/docs/bash/* "$root/usr/share/bash-completion/completions/"
install -m 0644 "$stage"/docs/zsh/* "$root/usr/share/zsh/vendor-completions/"
install -m 0644 "$stage"/docs/fish/* "$root/usr/share/fish/vendor_completions.d/"
# The unit runs the packaged vserver.
sed 's|/usr/local/bin/|/usr/sbin/|g; s|/usr/local/lib/systemd/system|/usr/lib/systemd/system|' \
    dist/systemd/vserver@.service > "$root/usr/lib/systemd/system/vserver@.service"
install -m 0644 README.md docs/SEMANTICS.md docs/ARCHITECTURE.md "$root/usr/share/doc/vxfs/"
gzip -9n "$root"/usr/share/doc/vxfs/*.md
cat > "$root/usr/share/doc/vxfs/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: vxfs

Files: *
Copyright: 2026 vxfs developers
License: MIT or Apache-2.0
COPYRIGHT
# A native package's changelog: this build, dated by its commit (or by
# SOURCE_DATE_EPOCH, else now, outside git).
when=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
commit=$(git rev-parse --short HEAD 2>/dev/null || echo "a source tree")
cat > "$stage/changelog" <<CHANGELOG
vxfs ($version) unstable; urgency=medium

  * Built from $commit.

 -- vxfs developers <vxfs@example.invalid>  $(LC_ALL=C date -R -u -d "@$when")
CHANGELOG
gzip -9n < "$stage/changelog" > "$root/usr/share/doc/vxfs/changelog.gz"
# Lintian's informational tags that do not apply: Rust's standard library
# calls the C library's plain (not _chk) functions, and the "misspellings"
# are fragments of SQLite's and clap's tables.
install -d "$root/usr/share/lintian/overrides"
cat > "$root/usr/share/lintian/overrides/vxfs" <<OVERRIDES
vxfs: hardening-no-fortify-functions [usr/sbin/*]
vxfs: spelling-error-in-binary * [usr/sbin/*]
OVERRIDES
size=$(du -sk "$root/usr" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: vxfs
Version: $version
Architecture: $arch
Maintainer: vxfs developers <vxfs@example.invalid>
Installed-Size: $size
Depends: fuse3, libc6
Recommends: attr, iproute2
Section: admin
Priority: optional
Homepage: https://example.invalid/vxfs
Description: Linux-VServer style tagged filesystem and guest contexts, without a kernel patch
 A FUSE filesystem over a backing directory that tags every file with its
 owner's context, keeps per-context disk limits, shares identical files
 across guests (hashify) with copy-on-write, and the tools that start,
 enter, limit and schedule guests on mainline namespaces and cgroups.
CONTROL
cat > "$root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
POSTINST
chmod 0755 "$root/DEBIAN/postinst"
(cd "$root" && find usr -type f -print0 | LC_ALL=C sort -z | xargs -0 md5sum > DEBIAN/md5sums)
mkdir -p "$out"
deb="$out/vxfs_${version}_${arch}.deb"
dpkg-deb --build --root-owner-group "$root" "$deb" >/dev/null
echo "$deb"
