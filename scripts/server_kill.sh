#!/usr/bin/env bash
# The server-kill figures of docs/RELIABILITY.md: a dev server is killed (SIGKILL) 1.5 s into a
# write to the mount, then started again on the same --root. Prints the time from the kill to
# the writer's error, and the objects and multipart uploads left once the server is back.
#
#   scripts/server_kill.sh                  # cp of 256 MiB
#   scripts/server_kill.sh dd               # dd bs=1M count=256 conv=fsync, as the issue did
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
writer=${1:-cp}

ensure_rust
ensure_packages
bin=${SCRIBEFS_BIN_DIR:-target/release}
[ -n "${SCRIBEFS_BIN_DIR:-}" ] || cargo build --release --bins --features devserver -q

work=$(mktemp -d)
mnt=$work/mnt root=$work/s3
mkdir -p "$mnt" "$root"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export S3_ENDPOINT=http://127.0.0.1:$port S3_PATH_STYLE=true S3_BUCKET=kill S3_REGION=us-east-1
export S3_ACCESS_KEY_ID=devkey S3_SECRET_ACCESS_KEY=devsecret
server_pid=
start_server() {
    "$bin/scribefs-devserver" --root "$root" --listen "127.0.0.1:$port" --bucket kill \
        --bandwidth-mbps 400 > "$work/server.out" 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do grep -q "ready on" "$work/server.out" 2>/dev/null && return; sleep 0.1; done
    echo "server_kill: dev server did not start" >&2
    exit 1
}
cleanup() {
    mountpoint -q "$mnt" && { fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt"; }
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

start_server
"$bin/scribefs" mount kill "$mnt" --log-file "$work/mount.log"
head -c $((256 << 20)) /dev/urandom > "$work/src"

case "$writer" in
    cp) cp "$work/src" "$mnt/big" 2> "$work/writer.err" & ;;
    dd) dd if="$work/src" of="$mnt/big" bs=1M conv=fsync status=none 2> "$work/writer.err" & ;;
    *) echo "server_kill: writer must be cp or dd" >&2; exit 2 ;;
esac
writer_pid=$!
sleep 1.5
kill -9 "$server_pid"
killed=$(date +%s%N)
status=0
wait "$writer_pid" || status=$?
failed=$(date +%s%N)
echo "server_kill: $writer exit $status $(((failed - killed) / 1000000)) ms after the kill: $(head -1 "$work/writer.err")"

start_server
for _ in $(seq 60); do
    [ "$("$bin/scribefs" uploads ls | wc -l)" -eq 0 ] && break
    sleep 1
done
# The dev server keeps one .obj file per object under --root.
objects=$(find "$root/kill" -maxdepth 1 -name '*.obj' | wc -l)
uploads=$("$bin/scribefs" uploads ls | wc -l)
echo "server_kill: objects left: $objects, multipart uploads left: $uploads"
cp "$work/src" "$mnt/big" && cmp "$work/src" "$mnt/big" && echo "server_kill: the same cp then succeeds"
