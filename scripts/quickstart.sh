#!/usr/bin/env bash
# The main job on a fresh machine: install what is missing, build, start the local S3 dev server
# with a demo bucket of Scribe Ledger segments, and show them.
#   scripts/quickstart.sh        start (or reuse) the demo and list it
#   scripts/quickstart.sh stop   stop the dev server
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

DEMO_DIR=${SCRIBEFS_DEMO_DIR:-/tmp/scribefs-demo}
PORT=${SCRIBEFS_DEMO_PORT:-9000}
BUCKET=demo
export S3_ENDPOINT="http://127.0.0.1:$PORT" S3_BUCKET=$BUCKET S3_PATH_STYLE=true S3_REGION=us-east-1
export S3_ACCESS_KEY_ID=devkey S3_SECRET_ACCESS_KEY=devsecret

stop_server() {
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
ensure_packages
echo "building scribefs (release)..." >&2
cargo build --release --quiet
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
echo "\$ scribefs segments ls        # bucket '$BUCKET' at $S3_ENDPOINT"
"$BIN/scribefs" segments ls
first=$("$BIN/scribefs" segments ls | head -n 1)
echo
echo "\$ scribefs segments get $first | sha256sum"
"$BIN/scribefs" segments get "$first" | sha256sum
echo
echo "The dev server keeps running (data in $DEMO_DIR/data). Try, in this shell:"
echo "  export S3_ENDPOINT=$S3_ENDPOINT S3_BUCKET=$BUCKET S3_PATH_STYLE=true S3_ACCESS_KEY_ID=devkey S3_SECRET_ACCESS_KEY=devsecret"
echo "  $BIN/scribefs segments get $first /tmp/segment.bin"
echo "Stop it with: scripts/quickstart.sh stop"
