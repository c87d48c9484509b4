#!/usr/bin/env bash
# Runs the whole vxfs test suite on a fresh machine: installs the system
# packages, checks formatting and lints, and runs every test (unit tests and
# the suites that really mount vxfs). Must run as root (the daemon mounts).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/install-docs.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The io_uring transport's unit tests, in the vendored fuser (not a member).
cargo test --manifest-path vendor/fuser/Cargo.toml --features io-uring --locked \
    --target-dir target/vendor-fuser --lib uring
log=$(mktemp)
uring=/sys/module/fuse/parameters/enable_uring
if [ ! -f "$uring" ]; then
    echo "test.sh: $uring is missing: this kernel has no FUSE-over-io_uring, whose" >&2
    echo "transport the suite also tests (Linux 6.14+, CONFIG_FUSE_IO_URING)" >&2
    exit 1
fi
was=$(cat "$uring")
trap 'echo "$was" > "$uring"; rm -f "$log"' EXIT
# First with the kernel's FUSE-over-io_uring off (every mount through
# /dev/fuse), then the suites that mount vxfs again with it on (every mount
# through io_uring; the mount helper checks which).
echo N > "$uring"
cargo test --workspace --locked 2>&1 | tee "$log"
echo Y > "$uring"
echo "test.sh: the vxfs suites again, over FUSE-over-io_uring"
cargo test -p vxfs --tests --locked 2>&1 | tee -a "$log"
echo "$was" > "$uring"
# The native_twin tests run each differential scenario against a second
# native directory: they check the scenarios, not vxfs, and are counted
# apart.
total=$(grep -E '^test result: ok\.' "$log" | awk '{s += $4} END {print s + 0}')
twins=$(grep -cE '^test native_twin::.* \.\.\. ok$' "$log" || true)
echo "vxfs: $((total - twins)) tests of vxfs and its tools passed (the vxfs suites twice: over /dev/fuse and over io_uring), plus $twins native_twin self-checks of the differential scenarios"
