#!/usr/bin/env bash
# The main job on a built-in default: builds vxfs, installs it so that
# `mount -t fuse.vxfs` finds it, mounts a demo tree and shows it working.
# Usage: scripts/demo.sh [WORKDIR]   (default: a new dir under /var/tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked -p vxfs -p vxfs-tools
for bin in vxfs vdlimit chxid lsxid; do
    install -m 0755 "target/release/$bin" "/usr/local/bin/$bin"
done

work=${1:-$(mktemp -d /var/tmp/vxfs-demo.XXXXXX)}
src=$work/source mnt=$work/mnt guests=$work/guests
mkdir -p "$src/etc" "$mnt" "$guests"
echo "demo guest" > "$src/etc/hostname"
cleanup() {
    mountpoint -q "$mnt" && umount "$mnt"
    true
}
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

printf '\n\033[1m--- contexts: uid 5000-5999 is guest 5, uid 6000-6999 guest 6 ---\033[0m\n'
as_guest() { local uid=$1; shift; setpriv --reuid="$uid" --regid="$uid" --clear-groups "$@"; }
chmod 1777 "$guests"
step mount -t fuse.vxfs "$guests" "$mnt" -o xid=uid/1000
step vdlimit --xid 5 --set space_total=1024 --set inodes_total=100 "$mnt"
step "as_guest 5000 sh -c 'echo hello from guest 5 > $mnt/g5.txt' && lsxid $mnt/g5.txt"
step "as_guest 6000 cat $mnt/g5.txt || echo '(guest 6 cannot read guest 5s file)'"
step "as_guest 5000 dd if=/dev/zero of=$mnt/fill bs=64k count=100 status=none || echo '(guest 5 hit its 1 MiB limit: ENOSPC)'"
step "as_guest 5000 df -h $mnt"
step vdlimit --xid 5 "$mnt"
step vdlimit --list "$mnt"
step "chxid -c 6 $mnt/g5.txt && lsxid $mnt/g5.txt && as_guest 6000 cat $mnt/g5.txt"
step vdlimit --list --json "$mnt"
step umount "$mnt"
echo
echo "demo trees kept in $work"
echo "(copy-on-write links, immutable files and hashify are not built yet: issue 4)"
