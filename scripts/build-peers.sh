#!/usr/bin/env bash
# Builds the benchmark peer that Debian does not package as a program:
# libfuse's example/passthrough_hp.cc (the "high performance" low-level
# passthrough filesystem, libfuse's own reference for FUSE speed), from the
# source of the Debian fuse3 package that matches the installed libfuse3, into
# target/peers/passthrough_hp. `cargo bench --bench workloads` looks for it
# there (or in PATH, or at $VXFS_PASSTHROUGH_HP).
#
# Needs root for apt-get. Debian's sources are fetched through a private apt
# configuration (its own source list and package lists in a temporary
# directory), so the machine's apt sources are not touched. Safe to run again:
# it does nothing when the binary is there and newer than this script.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/peers/passthrough_hp
if [ -x "$out" ] && [ "$out" -nt "$0" ]; then
    echo "build-peers: $out is up to date"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "build-peers: need root (apt-get installs libfuse3-dev and g++)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
need=()
for pkg in libfuse3-dev g++ pkg-config dpkg-dev xz-utils; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
    apt-get update -q
    apt-get install -y -q "${need[@]}"
fi
version=$(dpkg-query -W -f='${Version}' libfuse3-dev)
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/src"
echo "deb-src http://deb.debian.org/debian $codename main" >"$work/sources.list"
apt=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=$work/none"
     -o "Dir::State::Lists=$work/lists" -o "APT::Sandbox::User=root")
apt-get "${apt[@]}" update -q
(cd "$work/src" && apt-get "${apt[@]}" source --download-only -q "fuse3=$version")
orig=$(ls "$work"/src/fuse3_*.orig.tar.* | grep -v "\.asc$")
tar -xf "$orig" -C "$work/src"
example=$(ls -d "$work"/src/fuse-*/example)
mkdir -p target/peers
# The defines are what libfuse's meson build finds on glibc; without
# HAVE_UTIMENSAT its setattr refuses to set times (tar then fails).
# shellcheck disable=SC2046
g++ -O2 -std=c++17 -w -D_GNU_SOURCE -DHAVE_UTIMENSAT -DHAVE_POSIX_FALLOCATE -DHAVE_SETXATTR \
    "$example/passthrough_hp.cc" -o "$out.tmp" $(pkg-config fuse3 --cflags --libs) -lpthread
mv "$out.tmp" "$out"
echo "build-peers: built $out from fuse3 $version"
