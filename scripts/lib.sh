# Shared by the scripts: install what a fresh Debian machine lacks. Sourced, not run.

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian packages scribefs needs to mount (fuse3) and its tests use (rsync, tar, s3fs for the
# interoperability test, setpriv and unshare from util-linux, pgrep from procps...).
ensure_packages() {
    local missing=()
    command -v fusermount3 >/dev/null || missing+=(fuse3)
    command -v rsync >/dev/null || missing+=(rsync)
    command -v s3fs >/dev/null || missing+=(s3fs)
    command -v setpriv >/dev/null || missing+=(util-linux)
    command -v pgrep >/dev/null || missing+=(procps)
    command -v curl >/dev/null || missing+=(curl)
    command -v openssl >/dev/null || missing+=(openssl)
    command -v python3 >/dev/null || missing+=(python3 python3-pip)
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "scribefs: installing ${missing[*]}" >&2
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if [ ! -e /dev/fuse ]; then
        as_root modprobe fuse 2>/dev/null || true
    fi
}

# moto: an independent S3 implementation the integration suite also runs against.
ensure_moto() {
    if ! python3 -c 'import moto.server, flask' 2>/dev/null; then
        echo "scribefs: installing moto[server]" >&2
        python3 -m pip install -q 'moto[server]' 2>/dev/null ||
            python3 -m pip install -q --break-system-packages 'moto[server]'
    fi
}

ensure_rust() {
    if ! command -v cargo >/dev/null; then
        echo "scribefs: cargo not found; install Rust 1.95 (rustup) first" >&2
        exit 1
    fi
}

# The folder of the scribefs binaries a measuring script runs, as an absolute path:
# $SCRIBEFS_BIN_DIR when set (binaries already built, e.g. target/debug), else a release build
# made now.
bin_dir() {
    if [ -z "${SCRIBEFS_BIN_DIR:-}" ]; then
        cargo build --release --bins -q
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
