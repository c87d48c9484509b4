#!/usr/bin/env bash
# Installs what vxfs needs to build, mount and be tested on a fresh Debian
# machine: fuse3 (mount.fuse3, fusermount3), attr/acl (getfattr, setfacl),
# fuse-overlayfs and mergerfs (the benchmark peers), iproute2 and util-linux (guests'
# interfaces: ip, nsenter), busybox-static (the test and demo guests' root),
# bubblewrap (the start-up benchmark's peer), lxcfs (the vxproc benchmark's
# peer; installed, not started), systemd (systemd-analyze checks the unit
# files; nothing is enabled), man-db and bash-completion (the man pages and
# completions scripts/install-docs.sh installs, and their test). Safe to run
# repeatedly.
set -euo pipefail
need=()
for pkg in fuse3 attr acl fuse-overlayfs mergerfs util-linux iproute2 busybox-static bubblewrap lxcfs systemd man-db bash-completion lintian; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: need root to install: ${need[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q "${need[@]}"
fi
if [ ! -e /dev/fuse ]; then
    modprobe fuse 2>/dev/null || true
fi
[ -e /dev/fuse ] || { echo "setup: /dev/fuse is missing: this machine cannot run FUSE" >&2; exit 1; }
command -v cargo >/dev/null || { echo "setup: cargo (Rust toolchain) is required" >&2; exit 1; }
