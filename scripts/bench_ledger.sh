#!/usr/bin/env bash
# Benchmarks the ledger features on the S3-like profile (dev server --latency-ms 20
# --bandwidth-mbps 800): (1) disk: a mount re-reading segments from its disk tier (--cache-dir)
# after a remount, against the same read cold; (2) verify: `scribefs segments verify` over
# --segments ledger segments against copying them out with `rclone copy`; (3) index: on
# --index-segments tiny segments (default 100,000), `segments ls` (the LIST pages alone),
# `segments find KEY` cold (no index), warm (index built, nothing new) for a key one segment
# holds and one none holds, `--no-index`, `segments verify`, then `verify --changed` and `find`
# after 100 new segments; each with its time, requests by kind, the CLI's CPU and peak RSS.
# Prints Markdown tables. SCRIBEFS_BIN_DIR=DIR uses the binaries there instead of building.
#
#   scripts/bench_ledger.sh [--parts disk,verify,index] [--size-mib N] [--segments N]
#                           [--index-segments N] [--latency-ms MS] [--bandwidth-mbps M]
#
# Everything it starts (dev servers on free loopback ports, one mount at a time) is stopped
# and unmounted on exit. The disk part needs root (drop_caches before each read, so the warm
# read is from disk).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

SIZE_MIB=1024 SEGMENTS=1000 INDEX_SEGMENTS=100000 LATENCY_MS=20 BANDWIDTH_MBPS=800
PARTS=disk,verify,index
while [ $# -gt 0 ]; do
    case "$1" in
    --parts) PARTS=$2; shift 2 ;;
    --index-segments) INDEX_SEGMENTS=$2; shift 2 ;;
    --size-mib) SIZE_MIB=$2; shift 2 ;;
    --segments) SEGMENTS=$2; shift 2 ;;
    --latency-ms) LATENCY_MS=$2; shift 2 ;;
    --bandwidth-mbps) BANDWIDTH_MBPS=$2; shift 2 ;;
    -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench_ledger: unknown option $1" >&2; exit 2 ;;
    esac
done
for number in "$SIZE_MIB" "$SEGMENTS" "$INDEX_SEGMENTS" "$LATENCY_MS" "$BANDWIDTH_MBPS"; do
    case "$number" in '' | *[!0-9]*) echo "bench_ledger: $number is not a whole number" >&2; exit 2 ;; esac
done
IFS=, read -r -a PART_LIST <<<"$PARTS"
for part in "${PART_LIST[@]}"; do
    case "$part" in disk | verify | index) ;; *) echo "bench_ledger: unknown part $part (disk, verify, index)" >&2; exit 2 ;; esac
done
wants() { case ",$PARTS," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
if wants disk && [ "$(id -u)" -ne 0 ]; then
    echo "bench_ledger: run the disk part as root (it drops the page cache between reads)" >&2
    exit 2
fi
ensure_packages
ensure_rust
if wants verify && ! command -v rclone >/dev/null; then
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq rclone >/dev/null
fi
# SCRIBEFS_BIN_DIR=DIR uses the binaries there instead of building.
BIN=$(nice -n 10 bash -c '. scripts/lib.sh; bin_dir')

ACCESS_KEY=benchkey SECRET_KEY=benchsecret
SEGMENT_MIB=16
WORK=$(mktemp -d /tmp/scribefs-bench-ledger.XXXXXX)
log() { echo "bench_ledger: $*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }

# One mount at a time (MNT) and the dev servers (PIDS) are all this script leaves behind.
MNT='' PIDS=()
finish() {
    set +e
    [ -n "$MNT" ] && mountpoint -q "$MNT" && umount -l "$MNT"
    [ "${#PIDS[@]}" -gt 0 ] && kill "${PIDS[@]}" 2>/dev/null
    wait 2>/dev/null
    rm -rf --one-file-system "$WORK"
}
trap finish EXIT
trap 'exit 130' INT TERM

# start_server NAME ROOT SEEDS [EMULATION...]: on a port the kernel picks; sets ADDR and
# SERVER_PID from its "ready on ADDR" line.
start_server() {
    local name=$1 root=$2 seeds=$3
    shift 3
    mkdir -p "$root"
    "$BIN/scribefs-devserver" --root "$root" --listen 127.0.0.1:0 --access-key "$ACCESS_KEY" \
        --secret-key "$SECRET_KEY" --bucket bench --seed-segments "$seeds" "$@" \
        >"$WORK/$name.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    for _ in $(seq 1 600); do
        ADDR=$(sed -n 's/^scribefs-devserver ready on http:\/\/\([0-9.:]*\).*/\1/p' "$WORK/$name.log")
        [ -n "$ADDR" ] && return 0
        sleep 0.1
    done
    log "dev server $name did not start"
    cat "$WORK/$name.log" >&2
    exit 1
}
stop_server() { kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; }
gets() {
    "$BIN/scribefs-devserver" stats --listen "$1" --reset |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["get"])'
}
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

export S3_PATH_STYLE=true S3_REGION=us-east-1 S3_ACCESS_KEY_ID=$ACCESS_KEY \
    S3_SECRET_ACCESS_KEY=$SECRET_KEY S3_BUCKET=bench
EMULATION=(--latency-ms "$LATENCY_MS" --bandwidth-mbps "$BANDWIDTH_MBPS")

# ---------------------------------------------------------------- 1. disk tier
disk_part() {
COUNT=$(((SIZE_MIB + SEGMENT_MIB - 1) / SEGMENT_MIB))
log "loading $COUNT segments of $SEGMENT_MIB MiB without emulation"
start_server load "$WORK/bulk" 0
for n in $(seq 1 "$COUNT"); do
    head -c $((SEGMENT_MIB << 20)) /dev/urandom >"$WORK/segment"
    S3_ENDPOINT=http://$ADDR "$BIN/scribefs" segments put "$(printf '%x' $((0x100 + n * 3)))" "$WORK/segment"
done
rm -f "$WORK/segment"
stop_server
start_server bulk "$WORK/bulk" 0 "${EMULATION[@]}"
BULK=$ADDR

# read_all LABEL: mounts with the disk tier, reads every segment once, unmounts; sets SECS, GETS.
read_all() {
    local mnt=$WORK/mnt-$1 start end pid
    MNT=$mnt
    mkdir -p "$mnt"
    "$BIN/scribefs" --endpoint-url "http://$BULK" mount bench "$mnt" --foreground \
        --layout segments --metadata-ttl indefinite --cache-dir "$WORK/cache" \
        --cache-dir-size $((SIZE_MIB * 2)) >"$WORK/mount-$1.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 300); do mountpoint -q "$mnt" && break; sleep 0.1; done
    ls "$mnt" >/dev/null
    drop_caches
    gets "$BULK" >/dev/null
    start=$(now)
    cat "$mnt"/segment-*.bin >/dev/null
    end=$(now)
    GETS=$(gets "$BULK")
    SECS=$(elapsed "$start" "$end")
    umount "$mnt"
    # The mount writes its queued blocks and releases the folder before it exits.
    wait "$pid" 2>/dev/null || true
}
read_all cold
COLD_SECS=$SECS COLD_GETS=$GETS
read_all warm
WARM_SECS=$SECS WARM_GETS=$GETS
CACHE_MIB=$(du -sm "$WORK/cache" | cut -f1)
stop_server
cat <<EOF

| measurement | value |
| --- | --- |
| profile | dev server --latency-ms $LATENCY_MS --bandwidth-mbps $BANDWIDTH_MBPS |
| cold read, $COUNT x $SEGMENT_MIB MiB segments, empty --cache-dir | ${COLD_SECS} s, $(rate $((COUNT * SEGMENT_MIB)) "$COLD_SECS") MiB/s, $COLD_GETS GETs |
| second mount re-reading from the disk tier | ${WARM_SECS} s, $(rate $((COUNT * SEGMENT_MIB)) "$WARM_SECS") MiB/s, $WARM_GETS GETs |
| speed-up | $(awk -v c="$COLD_SECS" -v w="$WARM_SECS" 'BEGIN { printf "%.1fx", c / w }') |
| --cache-dir on disk | ${CACHE_MIB} MiB |
EOF
}

# ---------------------------------------------------------------- 2. verify vs rclone copy
verify_part() {
log "seeding $SEGMENTS ledger segments"
start_server ledger "$WORK/ledger" "$SEGMENTS" "${EMULATION[@]}"
LEDGER=$ADDR
LEDGER_MIB=$(du -sm "$WORK/ledger/bench" | cut -f1)
start=$(now)
S3_ENDPOINT=http://$LEDGER "$BIN/scribefs" segments verify >"$WORK/verify.out"
VERIFY_SECS=$(elapsed "$start" "$(now)")
start=$(now)
env -u AWS_CA_BUNDLE RCLONE_CONFIG_B_TYPE=s3 RCLONE_CONFIG_B_PROVIDER=Other \
    RCLONE_CONFIG_B_ACCESS_KEY_ID="$ACCESS_KEY" RCLONE_CONFIG_B_SECRET_ACCESS_KEY="$SECRET_KEY" \
    RCLONE_CONFIG_B_ENDPOINT="http://$LEDGER" RCLONE_CONFIG_B_REGION=us-east-1 \
    RCLONE_CONFIG_B_FORCE_PATH_STYLE=true \
    rclone copy b:bench/segments "$WORK/copy" --config /dev/null --transfers 8 --checkers 8
RCLONE_SECS=$(elapsed "$start" "$(now)")
COPIED=$(find "$WORK/copy" -type f | wc -l)
stop_server
cat <<EOF

| measurement | value |
| --- | --- |
| profile | dev server --latency-ms $LATENCY_MS --bandwidth-mbps $BANDWIDTH_MBPS |
| \`segments verify\`, $SEGMENTS segments (+ sidecars, ${LEDGER_MIB} MiB stored) | ${VERIFY_SECS} s ($(cat "$WORK/verify.out")) |
| \`rclone copy --transfers 8\` of the same $COPIED files | ${RCLONE_SECS} s |
EOF
}

. scripts/bench_ledger_index.sh
wants disk && disk_part
wants verify && verify_part
wants index && index_part
exit 0
