#!/usr/bin/env bash
# The main job on a fresh machine: install what is missing (fuse3 and curl, nothing else), build,
# start the local S3 dev server with a demo bucket of Scribe Ledger segments, mount it, and
# show it. The dev server listens on 127.0.0.1:$SCRIBEFS_DEMO_PORT (default 9000) and keeps its
# data in $SCRIBEFS_DEMO_DIR (default /tmp/scribefs-demo).
#   scripts/quickstart.sh        start (or reuse) the demo, mount it at $DEMO_DIR/mnt, list it
#   scripts/quickstart.sh stop   unmount and stop the dev server
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

DEMO_DIR=${SCRIBEFS_DEMO_DIR:-/tmp/scribefs-demo}
PORT=${SCRIBEFS_DEMO_PORT:-9000}
BUCKET=demo
export S3_ENDPOINT="http://127.0.0.1:$PORT" S3_BUCKET=$BUCKET S3_PATH_STYLE=true S3_REGION=us-east-1
export S3_ACCESS_KEY_ID=devkey S3_SECRET_ACCESS_KEY=devsecret

MNT="$DEMO_DIR/mnt"

is_mounted() {
    grep -q " $MNT fuse" /proc/mounts 2>/dev/null
}

stop_server() {
    if is_mounted; then
        fusermount3 -u "$MNT" && echo "unmounted $MNT"
    fi
    if [ -f "$DEMO_DIR/devserver.pid" ]; then
        kill "$(cat "$DEMO_DIR/devserver.pid")" 2>/dev/null || true
        rm -f "$DEMO_DIR/devserver.pid"
        echo "dev server stopped"
    fi
}

if [ "${1:-}" = stop ]; then
    stop_server
    exit 0
fi

ensure_rust
ensure_quickstart_packages
echo "building scribefs and its dev server (release)..." >&2
cargo build --release --quiet --features devserver --bin scribefs --bin scribefs-devserver
BIN=target/release

mkdir -p "$DEMO_DIR/data"
if ! curl -fsS "http://127.0.0.1:$PORT/_scribefs/stats" >/dev/null 2>&1; then
    stop_server
    "$BIN/scribefs-devserver" --root "$DEMO_DIR/data" --listen "127.0.0.1:$PORT" \
        --access-key devkey --secret-key devsecret --bucket "$BUCKET" --seed-segments 24 \
        >"$DEMO_DIR/devserver.log" 2>&1 &
    echo $! >"$DEMO_DIR/devserver.pid"
    for _ in $(seq 1 100); do
        grep -q ready "$DEMO_DIR/devserver.log" 2>/dev/null && break
        sleep 0.1
    done
    if ! grep -q ready "$DEMO_DIR/devserver.log"; then
        echo "dev server did not start; see $DEMO_DIR/devserver.log" >&2
        exit 1
    fi
fi
head -n 1 "$DEMO_DIR/devserver.log"

echo
echo "\$ scribefs segments ls | head -n 3        # bucket '$BUCKET' at $S3_ENDPOINT, no FUSE"
ids=$("$BIN/scribefs" segments ls)
echo "$ids" | head -n 3
first=$(echo "$ids" | head -n 1)

mkdir -p "$MNT"
if ! is_mounted; then
    "$BIN/scribefs" mount "$BUCKET" "$MNT" --log-file "$DEMO_DIR/mount.log"
fi
echo
echo "\$ scribefs mount $BUCKET $MNT && ls -l $MNT/segments | head -n 7"
listing=$(ls -l "$MNT/segments")
echo "$listing" | head -n 7
echo
echo "\$ sha256sum $MNT/segments/segment-$first.bin"
sha256sum "$MNT/segments/segment-$first.bin"
echo "\$ scribefs segments get $first | sha256sum    # the same bytes, straight from S3"
"$BIN/scribefs" segments get "$first" | sha256sum
echo
echo "The demo keeps running: the bucket is mounted at $MNT (data in $DEMO_DIR/data)."
echo "To use the CLI against it:"
echo "  export S3_ENDPOINT=$S3_ENDPOINT S3_BUCKET=$BUCKET S3_PATH_STYLE=true S3_ACCESS_KEY_ID=devkey S3_SECRET_ACCESS_KEY=devsecret"
echo "Stop it with: scripts/quickstart.sh stop"
