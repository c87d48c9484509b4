#!/usr/bin/env bash
# The main job on a built-in default: builds vxfs, installs it so that
# `mount -t fuse.vxfs` finds it, mounts a demo tree and shows it working.
# Usage: scripts/demo.sh [WORKDIR]   (default: a new dir under /var/tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked -p vxfs -p vxfs-tools
for bin in vxfs vdlimit chxid lsxid setattr showattr hashify; do
    install -m 0755 "target/release/$bin" "/usr/local/bin/$bin"
done

work=${1:-$(mktemp -d /var/tmp/vxfs-demo.XXXXXX)}
src=$work/source mnt=$work/mnt guests=$work/guests
mkdir -p "$src/etc" "$mnt" "$guests"
chmod 0755 "$work"   # guests must reach the mount point (mktemp makes it 0700)
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

printf '\n\033[1m--- hashify, copy-on-write and the barrier ---\033[0m\n'
step "vdlimit --xid 5 --set space_total=1048576 $mnt && vdlimit --xid 6 --set space_total=1048576 $mnt"
step "mkdir -p $mnt/vs/g5/bin $mnt/vs/g6/bin && head -c 2M /dev/urandom > $mnt/vs/g5/bin/tool && cp -p $mnt/vs/g5/bin/tool $mnt/vs/g6/bin/tool && chmod 0666 $mnt/vs/g5/bin/tool $mnt/vs/g6/bin/tool"
step "chxid -R -c 5 $mnt/vs/g5 && chxid -R -c 6 $mnt/vs/g6 && vdlimit --list $mnt"
step hashify "$mnt/vs/g5" "$mnt/vs/g6"
step "stat -c '%i %h %n' $mnt/vs/g5/bin/tool $mnt/vs/g6/bin/tool && showattr $mnt/vs/g5/bin/tool && lsxid $mnt/vs/g5/bin/tool"
step "vdlimit --list $mnt    # the guests no longer pay for their copies"
step "as_guest 5000 sh -c 'echo patched-by-guest-5 >> $mnt/vs/g5/bin/tool'"
step "stat -c '%i %h %n' $mnt/vs/g5/bin/tool $mnt/vs/g6/bin/tool && showattr $mnt/vs/g5/bin/tool && lsxid $mnt/vs/g5/bin/tool"
step "tail -c 19 $mnt/vs/g5/bin/tool && cmp -n 2097152 $mnt/vs/g5/bin/tool $mnt/vs/g6/bin/tool && echo '(guest 6 still has the shared original)'"
step "setattr --barrier $mnt/vs && showattr -d $mnt/vs && (as_guest 5000 ls $mnt/vs || echo '(barrier: guests cannot use /vs)') && ls -a $mnt/vs"
step umount "$mnt"
echo
echo "demo trees kept in $work"
