#!/usr/bin/env bash
# A sequential write (dd of SIZE MiB, conv=fsync: timed until S3 holds it) through a fresh mount
# in each --upload-checksums mode, on the raw dev server (loopback, where client CPU decides)
# and on the S3-like profile (--latency-ms 20 --bandwidth-mbps 800). Prints MiB/s and the CPU
# seconds the mount process spent (user + system, from /proc/PID/stat), so the cost of each
# checksum shows beside what the rest of the write path costs.
# Usage: scripts/bench-upload-checksums.sh [SIZE_MIB] [RUNS]   (default 512, 2). Talks to
# 127.0.0.1 only; needs root (or fusermount3) and stops on its own.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-512}
RUNS=${2:-2}
PORT=${PORT:-9178}
WORK=$(mktemp -d)
trap 'fusermount3 -u "$WORK/mnt" 2>/dev/null || true; kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
cargo build -q --release --features devserver --bin scribefs --bin scribefs-devserver
BIN=target/release
mkdir -p "$WORK/mnt"
export S3_ENDPOINT="http://127.0.0.1:$PORT" S3_PATH_STYLE=true S3_REGION=us-east-1 \
    S3_ACCESS_KEY_ID=devkey S3_SECRET_ACCESS_KEY=devsecret XDG_CACHE_HOME="$WORK/cache"
TICKS=$(getconf CLK_TCK)

serve() {
    "$BIN/scribefs-devserver" --listen "127.0.0.1:$PORT" --bucket bench "$@" >"$WORK/server.log" 2>&1 &
    SERVER=$!
    for _ in $(seq 100); do curl -s "http://127.0.0.1:$PORT/" >/dev/null && return; sleep 0.1; done
    echo "dev server did not start" >&2; exit 1
}

cpu_seconds() { # utime + stime of a process, in seconds
    awk -v t="$TICKS" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat"
}

mount_pid() {
    pgrep -f -- "scribefs mount bench $WORK/mnt.*--foreground" | head -n 1
}

printf '%-8s %-8s %4s %10s %10s\n' profile mode run 'MiB/s' 'mount CPU s'
for profile in raw s3; do
    if [ "$profile" = s3 ]; then serve --latency-ms 20 --bandwidth-mbps 800; else serve; fi
    for run in $(seq "$RUNS"); do
        for mode in crc32c md5 off; do
            "$BIN/scribefs" mount bench "$WORK/mnt" --upload-checksums "$mode"
            pid=$(mount_pid)
            before=$(cpu_seconds "$pid")
            start=$(date +%s.%N)
            dd if=/dev/zero of="$WORK/mnt/f-$mode-$run" bs=1M count="$SIZE" conv=fsync status=none
            end=$(date +%s.%N)
            after=$(cpu_seconds "$pid")
            printf '%-8s %-8s %4s %10.1f %10.2f\n' "$profile" "$mode" "$run" \
                "$(echo "$SIZE / ($end - $start)" | bc -l)" "$(echo "$after - $before" | bc -l)"
            rm -f "$WORK/mnt/f-$mode-$run"
            fusermount3 -u "$WORK/mnt"
            sleep 0.5
        done
    done
    kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
done
