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

# moto: an independent S3 implementation the integration suite also runs against. crc32c:
# without it moto computes CRC32 where CRC32C is asked, and cannot check our upload checksums.
ensure_moto() {
    if ! python3 -c 'import moto.server, flask, crc32c' 2>/dev/null; then
        echo "scribefs: installing moto[server] and crc32c" >&2
        python3 -m pip install -q 'moto[server]' crc32c 2>/dev/null ||
            python3 -m pip install -q --break-system-packages 'moto[server]' crc32c
    fi
}

ensure_rust() {
    if ! command -v cargo >/dev/null; then
        echo "scribefs: cargo not found; install Rust 1.95 (rustup) first" >&2
        exit 1
    fi
}
