#!/usr/bin/env bash
# The main job on a built-in default: builds vxfs, installs it so that
# `mount -t fuse.vxfs` finds it, mounts a demo tree and shows it working.
# Usage: scripts/demo.sh [WORKDIR]   (default: a new dir under /var/tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked -p vxfs
install -m 0755 target/release/vxfs /usr/local/bin/vxfs

work=${1:-$(mktemp -d /var/tmp/vxfs-demo.XXXXXX)}
src=$work/source mnt=$work/mnt
mkdir -p "$src/etc" "$mnt"
echo "demo guest" > "$src/etc/hostname"
cleanup() { mountpoint -q "$mnt" && umount "$mnt"; true; }
trap cleanup EXIT

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; eval "$@"; }
step mount -t fuse.vxfs "$src" "$mnt" -o noatime
step "grep ' $mnt ' /proc/mounts"
step cat "$mnt/etc/hostname"
step "echo written-through-vxfs > $mnt/etc/motd && cat $src/etc/motd"
step "ln $mnt/etc/motd $mnt/etc/motd.link && stat -c '%i %h %n' $mnt/etc/motd $mnt/etc/motd.link $src/etc/motd"
step "su -s /bin/sh nobody -c 'touch $mnt/etc/nope' || echo '(refused, as on the native tree)'"
step "chmod 1777 $mnt/etc && su -s /bin/sh nobody -c 'echo hi > $mnt/etc/by-nobody' && stat -c '%U %n' $src/etc/by-nobody"
step "setfattr -n user.demo -v 42 $mnt/etc/motd && getfattr -n user.demo $src/etc/motd"
step "dd if=/dev/zero of=$mnt/data bs=1M count=256 conv=fdatasync status=none && ls -l $src/data"
step df -h "$mnt"
step umount "$mnt"
echo
echo "demo tree kept in $work"
