#!/usr/bin/env bash
# `ls -l` of N objects that carry s3fs's POSIX headers (x-amz-meta-mode/uid/gid/mtime), on the
# S3-like profile (dev server --latency-ms 20 --bandwidth-mbps 800), each mounted fresh:
# scribefs --posix-metadata off (listing only), scribefs by default on a machine that never
# saw the bucket (cold metadata cache: a HEAD per object) and again on the next mount (warm:
# listing only), and s3fs.
# Usage: [SKIP_S3FS=1] scripts/bench-posix-ls.sh [N]   (default 10000). Talks to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
PORT=${PORT:-9177}
WORK=$(mktemp -d)
trap 'fusermount3 -u "$WORK/mnt" 2>/dev/null || true; kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
cargo build -q --release --features devserver --bin scribefs --bin scribefs-devserver
BIN=target/release
mkdir -p "$WORK/root" "$WORK/mnt"

serve() {
    "$BIN/scribefs-devserver" --root "$WORK/root" --listen "127.0.0.1:$PORT" --bucket bench "$@" \
        >"$WORK/server.log" 2>&1 &
    SERVER=$!
    for _ in $(seq 100); do curl -s "http://127.0.0.1:$PORT/" >/dev/null && return; sleep 0.1; done
    echo "dev server did not start" >&2; exit 1
}

serve
python3 - "$PORT" "$N" <<'EOF'
import sys, boto3
from concurrent.futures import ThreadPoolExecutor
port, n = sys.argv[1], int(sys.argv[2])
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                  aws_access_key_id="devkey", aws_secret_access_key="devsecret")
def put(i):
    s3.put_object(Bucket="bench", Key=f"dir/file-{i:06}", Body=b"x" * 100,
                  Metadata={"mode": str(0o100600), "uid": "1000", "gid": "1000", "mtime": "1600000000"})
with ThreadPoolExecutor(32) as pool:
    list(pool.map(put, range(n)))
EOF
kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
serve --latency-ms 20 --bandwidth-mbps 800

export S3_ENDPOINT="http://127.0.0.1:$PORT" S3_PATH_STYLE=true S3_REGION=us-east-1 \
    S3_ACCESS_KEY_ID=devkey S3_SECRET_ACCESS_KEY=devsecret
timed_ls() {
    local start end
    start=$(date +%s.%N)
    LC_ALL=C ls -l "$WORK/mnt/dir" >"$WORK/ls.out"
    end=$(date +%s.%N)
    echo "$1: $(echo "$end - $start" | bc) s, $(grep -c -- '-rw-------' "$WORK/ls.out") of $N shown as 0600"
}
# The machine's cache folder, empty at first: the metadata cache lives below it.
export XDG_CACHE_HOME="$WORK/cache"
for run in "off:--posix-metadata off" "default, cold metadata cache:" "default, warm metadata cache:"; do
    # shellcheck disable=SC2086
    "$BIN/scribefs" mount bench "$WORK/mnt" ${run#*:}
    timed_ls "scribefs ${run%%:*}"
    fusermount3 -u "$WORK/mnt"; sleep 1
done
if [ -z "${SKIP_S3FS:-}" ] && command -v s3fs >/dev/null; then
    printf 'devkey:devsecret\n' >"$WORK/passwd"; chmod 600 "$WORK/passwd"
    s3fs bench "$WORK/mnt" -o url="http://127.0.0.1:$PORT" -o use_path_request_style \
        -o passwd_file="$WORK/passwd" -o endpoint=us-east-1
    for _ in $(seq 100); do ls "$WORK/mnt" >/dev/null 2>&1 && break; sleep 0.1; done
    timed_ls "s3fs"
    fusermount3 -u "$WORK/mnt"
fi
