#!/usr/bin/env bash
# Generates every command's man page (section 8), vxfs(5) (the mount
# options) and each command's bash, zsh and fish
# completions from the commands' own definitions (tools/src/doc.rs) and
# installs them where Debian's man and shells look for local additions.
# Usage: scripts/install-docs.sh [PREFIX]   (default /usr/local)
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${1:-/usr/local}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cargo run --quiet --release --locked -p vxfs-tools --example docs -- "$out"
install -d "$prefix/share/man/man8" "$prefix/share/man/man5" "$prefix/share/bash-completion/completions" \
    "$prefix/share/zsh/site-functions" "$prefix/share/fish/vendor_completions.d"
install -m 0644 "$out"/man8/*.8 "$prefix/share/man/man8/"
install -m 0644 "$out"/man5/*.5 "$prefix/share/man/man5/"
install -m 0644 "$out"/bash/* "$prefix/share/bash-completion/completions/"
install -m 0644 "$out"/zsh/* "$prefix/share/zsh/site-functions/"
install -m 0644 "$out"/fish/* "$prefix/share/fish/vendor_completions.d/"
if command -v mandb >/dev/null && [ "$prefix" = /usr/local ]; then
    mandb -q 2>/dev/null || true
fi
echo "install-docs: man pages and completions in $prefix/share"
