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
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
# The native_twin tests run each differential scenario against a second
# native directory: they check the scenarios, not vxfs, and are counted
# apart.
total=$(grep -E '^test result: ok\.' "$log" | awk '{s += $4} END {print s + 0}')
twins=$(grep -cE '^test native_twin::.* \.\.\. ok$' "$log" || true)
echo "vxfs: $((total - twins)) tests of vxfs and its tools passed, plus $twins native_twin self-checks of the differential scenarios"
