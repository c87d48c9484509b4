#!/usr/bin/env bash
# The main job on a built-in default: builds vxfs, installs it so that
# `mount -t fuse.vxfs` finds it, mounts a demo tree and shows it working.
# Usage: scripts/demo.sh [WORKDIR]   (default: a new dir under /var/tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked -p vxfs -p vxfs-tools -p vxproc
for bin in vxfs vdlimit chxid lsxid setattr showattr hashify vserver vserver-stat vps vkill vwait vlimit vsched vuname vattribute vcontext vnamespace vxctl vxproc chbind; do
    install -m 0755 "target/release/$bin" "/usr/local/bin/$bin"
done
bash scripts/install-units.sh
bash scripts/install-docs.sh

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

printf '\n\033[1m--- the hosting layout: one tagged tree for every guest (xid=cgroup) ---\033[0m\n'
# Guests g101, g102 and g103 are directories of one tree, served by one
# daemon with one index. A process in a cgroup vx-XID is context XID: here
# each guest command runs in its cgroup, inside its root (which it is given
# as the host, before it joins: the barrier above it is the host's).
tree=$work/vservers
mkdir -p "$tree/g101/etc" "$tree/g102/etc" "$tree/g103" "$work/v103"
cg2=$(awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo)
cg=$cg2/vxfs-demo-$$
mkdir -p "$cg/vx-101" "$cg/vx-102"
cleanup() {
    vserver web stop >/dev/null 2>&1 || true
    vxproc --stop >/dev/null 2>&1 || true
    for m in "$work/v103" "$mnt"; do mountpoint -q "$m" && umount "$m"; done
    for d in "$cg/vx-101" "$cg/vx-102" "$cg"; do
        [ -d "$d" ] || continue
        while read -r pid; do echo "$pid" > "$cg2/cgroup.procs"; done < "$d/cgroup.procs"
        rmdir "$d"
    done
    # chbind execs its program, so the (empty) cgroup it made stays until
    # the next chbind; the demo's own goes now.
    own=$cg2$(awk -F: '$1 == "0" { print $3 }' /proc/self/cgroup)
    for d in "${own%/}"/vxfs/chbind-* "${own%/}/vxfs"; do
        [ -d "$d" ] && rmdir "$d" 2>/dev/null
    done
    true
}
in_guest() {
    local xid=$1; shift
    (cd "$mnt/g$xid" && sh -c 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"' sh "$cg/vx-$xid" "$@")
}
step mount -t fuse.vxfs "$tree" "$mnt" -o xid=cgroup,noatime
step vdlimit --xid 101 --set space_total=4096 --set inodes_total=1000 "$mnt"
step vdlimit --xid 102 --set space_total=4096 --set inodes_total=1000 "$mnt"
step "in_guest 101 sh -c 'echo hello from guest 101 > etc/motd' && lsxid $mnt/g101/etc/motd"
step "in_guest 102 cat ../g101/etc/motd || echo '(guest 102 cannot read guest 101s file)'"
step "in_guest 101 dd if=/dev/zero of=fill bs=64k count=100 status=none || echo '(guest 101 hit its 4 MiB limit: ENOSPC)'"
step "in_guest 101 df -h . && rm $mnt/g101/fill"
step "in_guest 101 sh -c 'setfattr -n trusted.vxfs.xid -v 0 etc/motd' || echo '(a guest, even root with every capability, is no administrator)'"
printf '\n\033[1m--- a guest root as its own mount with a fixed context: it joins the same daemon ---\033[0m\n'
step vxfs "$tree/g103" "$work/v103" -o xid=103,nodev
step "echo 'written in guest 103s own mount' > $work/v103/hello && lsxid $mnt/g103/hello"
step "grep -h pid /run/vxfs/\$(stat -c %Hd:%Ld $mnt)/view.json /run/vxfs/\$(stat -c %Hd:%Ld $work/v103)/view.json"
step vdlimit --list "$mnt"

printf '\n\033[1m--- hashify across the guests, copy-on-write, the barrier ---\033[0m\n'
step "head -c 2M /dev/urandom > $work/tool && for g in 101 102; do in_guest \$g sh -c 'mkdir -p bin && cp $work/tool bin/tool && chmod 0755 bin/tool && touch -d @1600000000 bin/tool'; done"
step "vdlimit --list $mnt"
step hashify "$mnt/g101" "$mnt/g102"
step "stat -c '%i %h %n' $mnt/g101/bin/tool $mnt/g102/bin/tool && showattr $mnt/g101/bin/tool && lsxid $mnt/g101/bin/tool"
step "vdlimit --list $mnt    # the guests no longer pay for their copies"
step "in_guest 101 sh -c 'echo patched-by-guest-101 >> bin/tool'"
step "stat -c '%i %h %n' $mnt/g101/bin/tool $mnt/g102/bin/tool && lsxid $mnt/g101/bin/tool"
step "cmp -n 2097152 $mnt/g101/bin/tool $mnt/g102/bin/tool && in_guest 102 cmp bin/tool $work/tool && echo '(guest 102 still has the shared original)'"
step "chxid -U -c 102 $mnt/g102/bin/tool && lsxid $mnt/g102/bin/tool    # -U: the shared file is left alone"
step "setattr --barrier $mnt && showattr -d $mnt && (in_guest 101 ls .. || echo '(barrier: no guest walks above its root)')"
printf '\n\033[1m--- the context core: vserver runs a guest on the shared tree ---\033[0m\n'
# A busybox guest "web" (context 201), built from a template into the
# tagged tree, started in its own namespaces and cgroup vx-201: what it
# writes is tagged 201 and charged to it. Configuration and run state stay
# in the demo directory (VXFS_CONFDIR, VXFS_RUNDIR), not /etc/vservers.
export VXFS_CONFDIR=$work/etc VXFS_RUNDIR=$work/run
tpl=$work/template
mkdir -p "$tpl/bin" "$tpl/sbin" "$tpl/etc" "$tpl/tmp" "$tpl/root"
cp /bin/busybox "$tpl/bin/"
for a in sh ls cat echo hostname df ps sleep reboot id uname head free; do ln -sf busybox "$tpl/bin/$a"; done
printf '#!/bin/sh\ntrap "exit 0" TERM\nwhile :; do sleep 1; done\n' > "$tpl/sbin/init"
chmod 0755 "$tpl/sbin/init"
echo 'root:x:0:0:root:/root:/bin/sh' > "$tpl/etc/passwd"
step vserver web build -m template --context 201 --rootdir "$mnt" -- -t "$tpl"
step "lsxid -d $mnt/web && vdlimit --xid 201 --set space_total=16384 --set inodes_total=2000 $mnt"
# Its own /proc figures and uname: a 64 MiB memory limit, virt_mem and
# virt_load (vxproc serves them), and the release its uname(2) answers.
mkdir -p "$VXFS_CONFDIR/web/rlimits" "$VXFS_CONFDIR/web/uts"
echo 16384 > "$VXFS_CONFDIR/web/rlimits/rss.hard"
printf 'virt_mem\nvirt_load\n' >> "$VXFS_CONFDIR/web/flags"
echo 2.6.32-vs2.3 > "$VXFS_CONFDIR/web/uts/release"
step vserver web start
step vserver web status
step "vserver web exec sh -c 'echo pid \$\$ in its own pid namespace; hostname; head -c 40 /proc/1/cmdline | tr \"\\0\" \" \"; echo; df -h / | tail -1; echo hi > /tmp/by-web'"
step "lsxid $mnt/web/tmp/by-web    # tagged with the guest's context"
step "vserver web exec sh -c 'head -2 /proc/meminfo; cat /proc/loadavg; free | head -2; uname -r'    # its own figures"
step "vxctl virtual web status"
step vserver-stat
step "vps -e -o pid,comm | grep -E 'CONTEXT|web'"
step "vserver web exec reboot -f; sleep 0.5; vserver web status    # reboot(2) inside: a new init"
step vserver web stop
step "vserver web status || echo '(exit 3: stopped; its cgroups are gone)'"
# chbind: a program in the host's stack kept to one address (a scratch
# network namespace stands in for the host's, whose addresses stay as they are).
step "unshare --net sh -c 'ip link set lo up; ip addr add 192.0.2.10/24 dev lo; chbind --ip 192.0.2.10/24 -- sh -c \"busybox httpd -f -p 8080 -h /tmp & sleep 0.3; busybox netstat -tln | grep 8080; busybox httpd -f -p 192.0.2.99:8081 -h /tmp || echo \\(refused\\); kill \\\$!\"'"
step "vxctl doctor | head -12"
step umount "$work/v103"
step umount "$mnt"
echo
echo "demo trees kept in $work"
