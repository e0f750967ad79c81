#!/usr/bin/env bash
# Installs scribefs where mount(8) finds it: `mount -t fuse.scribefs` and /etc/fstab lines run
# mount.fuse3, which runs `scribefs BUCKET DIR -o OPTS` through /bin/sh with mount(8)'s
# sanitized environment (no PATH), so the shell's default PATH applies: /usr/local/bin is on it.
#
#   scripts/install.sh                      # build (release), install to /usr/local/bin
#   PREFIX=/opt/scribefs scripts/install.sh # install to $PREFIX/bin (then link it into a
#                                           # directory of /bin/sh's default PATH yourself)
#   SCRIBEFS_BIN=path/to/scribefs scripts/install.sh   # install an already built binary
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

PREFIX="${PREFIX:-/usr/local}"
ensure_packages # fuse3: fusermount3 and mount.fuse3

bin="${SCRIBEFS_BIN:-}"
if [ -z "$bin" ]; then
    ensure_rust
    cargo build --release --bin scribefs
    bin=target/release/scribefs
fi
mkdir -p "$PREFIX/bin"
install -m 0755 "$bin" "$PREFIX/bin/scribefs"
echo "installed $PREFIX/bin/scribefs"
if ! grep -qs '^user_allow_other' /etc/fuse.conf; then
    echo "note: non-root users need user_allow_other in /etc/fuse.conf for -o allow_other" >&2
fi
