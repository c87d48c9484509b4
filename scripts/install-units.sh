#!/usr/bin/env bash
# Installs vxfs's systemd units (dist/systemd) into /usr/local/lib/systemd/system
# and tells systemd, when it runs. Usage: scripts/install-units.sh [DESTDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-/usr/local/lib/systemd/system}
install -d "$dest"
install -m 0644 dist/systemd/*.service "$dest/"
if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
echo "installed $(ls dist/systemd) in $dest"
