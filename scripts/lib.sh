# Shared by the scripts: install what a fresh Debian machine lacks. Sourced, not run.

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs, in one apt-get run, the Debian package of each command that is missing; the
# arguments are pairs: install_missing fusermount3 fuse3 rsync rsync ...
install_missing() {
    local missing=()
    while [ "$#" -ge 2 ]; do
        command -v "$1" >/dev/null || missing+=("$2")
        shift 2
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "scribefs: installing ${missing[*]}" >&2
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# What a mount needs, and nothing else (scripts/install.sh on a production host): fuse3 for
# fusermount3 and mount.fuse3, and the fuse module.
ensure_mount_packages() {
    install_missing fusermount3 fuse3
    if [ ! -e /dev/fuse ]; then
        as_root modprobe fuse 2>/dev/null || true
    fi
}

# What the quickstart uses besides a mount's: curl (is the demo's dev server up?). Nothing
# else: the test tools come with ensure_packages.
ensure_quickstart_packages() {
    ensure_mount_packages
    install_missing curl curl
}

# What the tests, the soak and the benchmarks use besides: rsync, s3fs for the
# interoperability test, setpriv and unshare from util-linux, pgrep from procps, curl,
# openssl for the TLS tests, python3 with pip (moto, free ports, the TLS proxy).
ensure_packages() {
    ensure_mount_packages
    install_missing rsync rsync s3fs s3fs setpriv util-linux pgrep procps curl curl \
        openssl openssl python3 python3
    # pip on its own: a python3 without it (Debian's python3 package has none) cannot
    # install moto.
    if ! python3 -m pip --version >/dev/null 2>&1; then
        echo "scribefs: installing python3-pip" >&2
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-pip >/dev/null
    fi
}

# moto: an independent S3 implementation the integration suite also runs against. Pinned:
# tests/common/moto.rs patches a private class of moto's (its S3 serializer), which another
# version may not have. crc32c: without it moto computes CRC32 where CRC32C is asked, and
# cannot check our upload checksums.
MOTO_VERSION=5.2.1
ensure_moto() {
    local have
    have=$(python3 -c 'import moto.server, flask, crc32c; print(moto.__version__)' 2>/dev/null || true)
    if [ "$have" != "$MOTO_VERSION" ]; then
        echo "scribefs: installing moto[server]==$MOTO_VERSION and crc32c${have:+ (have moto $have)}" >&2
        if ! python3 -m pip install -q "moto[server]==$MOTO_VERSION" crc32c 2>/dev/null; then
            # Debian 12 and later refuse pip installs into the system python (PEP 668).
            echo "scribefs: pip refused to install into the system python (externally managed);" \
                "falling back to pip install --break-system-packages (moto then sits beside" \
                "the distribution's packages; run the tests in a venv to avoid that)" >&2
            python3 -m pip install -q --break-system-packages "moto[server]==$MOTO_VERSION" crc32c
        fi
    fi
}

# Rust 1.95 or newer (Cargo.toml's rust-version: edition 2024 and the let chains it uses): an
# older distribution cargo would fail deep in the build, so say so here, with the way to get it.
RUST_MIN=1.95
ensure_rust() {
    local how="install Rust $RUST_MIN with rustup: curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --default-toolchain $RUST_MIN, then . \"\$HOME/.cargo/env\" (or: rustup toolchain install $RUST_MIN && rustup default $RUST_MIN)"
    local tool version
    for tool in cargo rustc; do
        if ! command -v "$tool" >/dev/null; then
            echo "scribefs: $tool not found; $how" >&2
            exit 1
        fi
        version=$("$tool" --version | awk '{print $2}')
        if ! version_at_least "$version" "$RUST_MIN"; then
            echo "scribefs: $tool $version is older than $RUST_MIN; $how" >&2
            exit 1
        fi
    done
}

# Whether dotted version $1 (1.95.0, 1.96.0-nightly) is at least $2 (1.95).
version_at_least() {
    local have=${1%%-*}
    [ "$(printf '%s\n%s\n' "$2" "$have" | sort -V | head -n 1)" = "$2" ]
}

# The folder of the scribefs binaries a measuring script runs, as an absolute path:
# $SCRIBEFS_BIN_DIR when set (binaries already built, e.g. target/debug), else a release build
# made now.
bin_dir() {
    if [ -z "${SCRIBEFS_BIN_DIR:-}" ]; then
        cargo build --release --features devserver --bins -q
    fi
    (cd "${SCRIBEFS_BIN_DIR:-target/release}" && pwd)
}

# A loopback TCP port that was free a moment ago.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# fusermount3 -u DIR until it is no mount point (a mount busy with a request refuses for a
# moment), then -uz.
unmount_dir() {
    for _ in $(seq 200); do
        mountpoint -q "$1" || return 0
        fusermount3 -u "$1" 2>/dev/null || sleep 0.1
    done
    fusermount3 -uz "$1"
}
