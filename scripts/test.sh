#!/usr/bin/env bash
# Runs the whole vxfs test suite on a fresh machine: installs the system
# packages, checks formatting and lints, and runs every test (unit tests and
# the suites that really mount vxfs). Must run as root (the daemon mounts).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
