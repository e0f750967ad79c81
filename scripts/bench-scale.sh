#!/usr/bin/env bash
# Listings at scale: a mount of a bucket of N entries, side by side with mount-s3 (MOUNT_S3 set)
# in one run, on raw loopback and on the S3-like profile (the dev server's --latency-ms 20).
# For each case, on a fresh mount with a cold metadata cache: `ls -l` and `find -type f`, their
# time, the number of entries they showed (every one must show), the requests by kind (the dev
# server's counts) and the peak RSS of the mount process (VmHWM before unmount); then the
# metadata cache's size on disk, and `ls -l` again on a second mount (remount).
#
#   scripts/bench-scale.sh [--quick] [--objects N] [--s3-objects N] [--dirs D]
#                          [--profiles raw,s3] [--cases segments,keys,keys-off,tree,tree-off]
#                          [--latency-ms MS] [--cache-size-mib N] [--out FILE]
#
# Cases: segments, N/2 ledger segments with their sidecars (N keys under segments/) mounted with
# --layout segments; keys, the same directory in the keys layout (default options: stored POSIX
# metadata, a HEAD per object the metadata cache does not know); keys-off, the same with
# --posix-metadata off; tree, N objects in D directories (`ls -lR` and `find` over them);
# tree-off, the same with --posix-metadata off.
# --objects (default 1000000) is N on raw loopback, --s3-objects (default 100000) on the S3-like
# profile; --quick is N=2000 / 1000 in 10 directories. The buckets are seeded in the dev
# server's memory (--seed-objects). Prints one Markdown table per profile; exits 1 if a listing
# showed fewer entries than the bucket holds. Needs root (it mounts). Not run in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

usage() {
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

OBJECTS='' S3_OBJECTS='' DIRS='' PROFILES=raw,s3 CASES=segments,keys,keys-off,tree LATENCY_MS=20
CACHE_MIB='' OUT='' QUICK=0
while [ $# -gt 0 ]; do
    case "$1" in
    --objects) OBJECTS=$2; shift 2 ;;
    --s3-objects) S3_OBJECTS=$2; shift 2 ;;
    --dirs) DIRS=$2; shift 2 ;;
    --profiles) PROFILES=$2; shift 2 ;;
    --cases) CASES=$2; shift 2 ;;
    --latency-ms) LATENCY_MS=$2; shift 2 ;;
    --cache-size-mib) CACHE_MIB=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    -h | --help) usage 0 ;;
    *) echo "bench-scale: unknown option $1" >&2; usage 2 ;;
    esac
done
# --quick only shrinks what was not given explicitly.
if [ "$QUICK" = 1 ]; then
    OBJECTS=${OBJECTS:-2000} S3_OBJECTS=${S3_OBJECTS:-1000} DIRS=${DIRS:-10}
else
    OBJECTS=${OBJECTS:-1000000} S3_OBJECTS=${S3_OBJECTS:-100000} DIRS=${DIRS:-1000}
fi
for number in "$OBJECTS" "$S3_OBJECTS" "$DIRS" "$LATENCY_MS" ${CACHE_MIB:+"$CACHE_MIB"}; do
    case "$number" in
    '' | *[!0-9]*) echo "bench-scale: $number is not a whole number" >&2; exit 2 ;;
    esac
done
for n in "$OBJECTS" "$S3_OBJECTS"; do
    if [ "$n" -lt 2 ] || [ $((n % 2)) -ne 0 ] || [ $((n % DIRS)) -ne 0 ]; then
        echo "bench-scale: $n objects: make it even and a multiple of --dirs $DIRS" >&2
        exit 2
    fi
done
IFS=, read -r -a PROFILE_LIST <<<"$PROFILES"
for profile in "${PROFILE_LIST[@]}"; do
    case "$profile" in raw | s3) ;; *) echo "bench-scale: unknown profile $profile (raw, s3)" >&2; exit 2 ;; esac
done
IFS=, read -r -a CASE_LIST <<<"$CASES"
for case_name in "${CASE_LIST[@]}"; do
    case "$case_name" in
    segments | keys | keys-off | tree | tree-off) ;;
    *) echo "bench-scale: unknown case $case_name (segments, keys, keys-off, tree, tree-off)" >&2; exit 2 ;;
    esac
done
if [ "$(id -u)" -ne 0 ]; then
    echo "bench-scale: run as root (it mounts file systems)" >&2
    exit 2
fi
TOOLS=(scribefs)
if [ -n "${MOUNT_S3:-}" ]; then
    [ -x "$MOUNT_S3" ] || { echo "bench-scale: MOUNT_S3=$MOUNT_S3 is not an executable" >&2; exit 2; }
    TOOLS+=(mount-s3)
fi

BUCKET=scale
ACCESS_KEY=benchkey
SECRET_KEY=benchsecret
log() { echo "bench-scale: [$((SECONDS - ${START:-0}))s] $*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

ensure_rust
ensure_mount_packages
install_missing python3 python3
BIN=$(bin_dir)
[ -z "${MOUNT_S3:-}" ] || log "mount-s3: $("$MOUNT_S3" --version 2>&1 | head -n 1)"

WORK=$(mktemp -d /tmp/scribefs-bench-scale.XXXXXX)
PIDS=()
MOUNTS=()
stop_pid() {
    local pid=$1 kept=() p
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
    PIDS=("${kept[@]+"${kept[@]}"}")
}
cleanup() {
    set +e
    local mnt pid
    for mnt in "${MOUNTS[@]+"${MOUNTS[@]}"}"; do
        if mountpoint -q "$mnt"; then umount "$mnt" 2>/dev/null || umount -l "$mnt"; fi
    done
    for pid in "${PIDS[@]+"${PIDS[@]}"}"; do stop_pid "$pid"; done
    rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server PROFILE N: a dev server in memory seeded with N/2 segments (N keys) and N objects
# in DIRS directories; sets ADDR and SERVER_PID.
start_server() {
    local profile=$1 n=$2 emulation=() logfile=$WORK/$1-server.log
    ADDR=127.0.0.1:$(free_port)
    [ "$profile" = raw ] || emulation=(--latency-ms "$LATENCY_MS")
    "$BIN/scribefs-devserver" --listen "$ADDR" --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" \
        --bucket "$BUCKET" --seed-objects "segments:$((n / 2))" \
        --seed-objects "tree:${DIRS}x$((n / DIRS))" "${emulation[@]}" >"$logfile" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    for _ in $(seq 1 1200); do
        grep -q ready "$logfile" 2>/dev/null && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "bench-scale: the dev server did not start:" >&2
    cat "$logfile" >&2
    exit 1
}

# The requests since the last call, as "1001 LIST, 5 HEAD" (kinds with a count only); zeroes
# the counts.
requests_since() {
    "$BIN/scribefs-devserver" stats --listen "$ADDR" --reset | python3 -c '
import json, sys
counts = json.load(sys.stdin)
names = [("list", "LIST"), ("head", "HEAD"), ("get", "GET"), ("head_bucket", "HeadBucket"),
         ("put", "PUT"), ("multipart", "multipart"), ("copy", "COPY"), ("delete", "DELETE"),
         ("other", "other")]
print(", ".join(f"{counts[k]} {label}" for k, label in names if counts.get(k)) or "none")'
}

# mount_case TOOL CASE MACHINE: mounts the bucket for CASE at a new directory; sets MNT (the
# mount point), DIR (what the case lists) and MOUNT_PID. MACHINE is scribefs's cache folder
# (XDG_CACHE_HOME), kept across a remount as one machine's would be.
MOUNT_SERIAL=0
mount_case() {
    local tool=$1 case_name=$2 machine=$3 options=() prefix=()
    MOUNT_SERIAL=$((MOUNT_SERIAL + 1))
    MNT=$WORK/mnt-$MOUNT_SERIAL
    local logfile=$WORK/$tool-$MOUNT_SERIAL.log
    mkdir -p "$MNT"
    case "$case_name" in
    segments) DIR=$MNT; options=(--layout segments); prefix=(--prefix segments/) ;;
    keys) DIR=$MNT/segments ;;
    keys-off) DIR=$MNT/segments; options=(--posix-metadata off) ;;
    tree) DIR=$MNT/tree ;;
    tree-off) DIR=$MNT/tree; options=(--posix-metadata off) ;;
    esac
    [ -z "$CACHE_MIB" ] || options+=(--cache-size-mib "$CACHE_MIB")
    case "$tool" in
    scribefs)
        env S3_PATH_STYLE=true S3_REGION=us-east-1 S3_ACCESS_KEY_ID=$ACCESS_KEY \
            S3_SECRET_ACCESS_KEY=$SECRET_KEY XDG_CACHE_HOME="$machine" \
            "$BIN/scribefs" --endpoint-url "http://$ADDR" mount "$BUCKET" "$MNT" --foreground \
            "${options[@]}" >"$logfile" 2>&1 &
        ;;
    mount-s3)
        # For the segments layout: the same prefix mounted as the root.
        env AWS_ACCESS_KEY_ID=$ACCESS_KEY AWS_SECRET_ACCESS_KEY=$SECRET_KEY AWS_REGION=us-east-1 \
            "$MOUNT_S3" "$BUCKET" "$MNT" --foreground --endpoint-url "http://$ADDR" \
            --force-path-style --region us-east-1 "${prefix[@]}" \
            --log-directory "$WORK/mount-s3-logs-$MOUNT_SERIAL" >"$logfile" 2>&1 &
        ;;
    esac
    MOUNT_PID=$!
    PIDS+=("$MOUNT_PID")
    MOUNTS+=("$MNT")
    for _ in $(seq 1 600); do
        if mountpoint -q "$MNT"; then return 0; fi
        kill -0 "$MOUNT_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "bench-scale: $tool did not mount:" >&2
    cat "$logfile" >&2
    exit 1
}

unmount_case() {
    unmount_dir "$MNT"
    for _ in $(seq 1 300); do
        kill -0 "$MOUNT_PID" 2>/dev/null || break
        sleep 0.1
    done
    stop_pid "$MOUNT_PID"
}

peak_rss_mib() {
    awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$MOUNT_PID/status" 2>/dev/null || echo '-'
}

# step VAR KIND CMD...: runs CMD on the mount under a timeout; sets VAR_s (seconds, or
# "timeout" or "failed (STATUS)"), VAR_n (the entries its output shows: the regular files of an
# `ls -l` for KIND ls, its lines for KIND lines), VAR_requests (what the server saw meanwhile)
# and VAR_rss (the mount's VmHWM after it).
step() {
    local var=$1 kind=$2 start end status=0 count=${1}_n
    shift 2
    requests_since >/dev/null
    start=$(now)
    timeout "$STEP_TIMEOUT" "$@" >"$WORK/out" 2>"$WORK/err" || status=$?
    end=$(now)
    case "$status" in
    0) printf -v "${var}_s" '%s' "$(elapsed "$start" "$end")" ;;
    124) printf -v "${var}_s" 'timeout' ;;
    *) printf -v "${var}_s" 'failed (%s)' "$status"; head -n 3 "$WORK/err" >&2 ;;
    esac
    if [ "$kind" = ls ]; then
        printf -v "${var}_n" '%s' "$(grep -c '^-' "$WORK/out" || true)"
    else
        printf -v "${var}_n" '%s' "$(wc -l <"$WORK/out")"
    fi
    [ "${!count}" -eq "$EXPECTED" ] || SHORT=1
    printf -v "${var}_requests" '%s' "$(requests_since)"
    printf -v "${var}_rss" '%s' "$(peak_rss_mib)"
}

# counted EXPECTED SHOWN: "SHOWN", or "SHOWN of EXPECTED, SHORT".
counted() {
    if [ "$2" -eq "$1" ]; then echo "$2"; else echo "$2 of $1, SHORT"; fi
}

# cells VAR: a step's cells of the table row.
cells() {
    local var=$1 s n requests rss
    s=${var}_s n=${var}_n requests=${var}_requests rss=${var}_rss
    echo "${!s} | $(counted "$EXPECTED" "${!n}") | ${!requests} | ${!rss}"
}

SHORT=0
ROWS=()
# measure PROFILE CASE TOOL: one row of the table.
measure() {
    local profile=$1 case_name=$2 tool=$3 machine ls_flags=() cache_size='-'
    machine=$WORK/machine-$profile-$case_name-$tool
    [ "${case_name%-off}" != tree ] || ls_flags=(-R)
    log "[$profile] $case_name, $tool: first mount"
    mount_case "$tool" "$case_name" "$machine"
    step first ls ls -l "${ls_flags[@]}" "$DIR"
    step find lines find "$DIR" -type f
    unmount_case
    if [ "$tool" = scribefs ]; then
        # None at all when the mount needs no stored metadata (the segments layout).
        cache_size=none
        if [ -d "$machine/scribefs/metadata" ]; then
            cache_size=$(du -sk "$machine/scribefs/metadata" | awk '{ printf "%.1f MiB", $1 / 1024 }')
        fi
    fi
    log "[$profile] $case_name, $tool: remount"
    mount_case "$tool" "$case_name" "$machine"
    step again ls ls -l "${ls_flags[@]}" "$DIR"
    unmount_case
    ROWS+=("| $case_name | $tool | $(cells first) | $(cells find) | $cache_size | $(cells again) |")
}

START=$SECONDS
TABLES=()
for profile in "${PROFILE_LIST[@]}"; do
    if [ "$profile" = raw ]; then N=$OBJECTS; else N=$S3_OBJECTS; fi
    # Every case lists N entries.
    EXPECTED=$N
    # A stuck step fails the row instead of hanging the run: at worst ~200 entries/s.
    STEP_TIMEOUT=$((120 + N / 200))
    log "[$profile] seeding $N keys under segments/ and $N objects in $DIRS directories"
    start_server "$profile" "$N"
    ROWS=()
    for case_name in "${CASE_LIST[@]}"; do
        for tool in "${TOOLS[@]}"; do
            # mount-s3 has neither layout nor metadata option: its keys row stands for both.
            if [ "$tool" = mount-s3 ] && [ "${case_name%-off}" != "$case_name" ]; then continue; fi
            measure "$profile" "$case_name" "$tool"
        done
    done
    stop_pid "$SERVER_PID"
    if [ "$profile" = raw ]; then link="raw loopback"; else link="S3-like, ${LATENCY_MS} ms per request"; fi
    TABLES+=("### $link: $N entries per case ($(date -u +%Y-%m-%d), $(nproc) cores)

| case | tool | ls -l s | ls -l entries | ls -l requests | RSS after ls -l MiB | find s | find entries | find requests | peak RSS MiB (VmHWM) | metadata cache | remount ls -l s | remount entries | remount requests | remount RSS MiB |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
$(printf '%s\n' "${ROWS[@]}")
")
done

{
    echo "Scale benchmark: segments = --layout segments over N/2 segments and sidecars; keys, keys-off = the"
    echo "same directory in the keys layout (default options, --posix-metadata off); tree = N objects in"
    echo "$DIRS directories (ls -lR), tree-off the same with --posix-metadata off. Peak RSS is the mount process's VmHWM before unmount."
    echo
    printf '%s\n' "${TABLES[@]}"
} | tee "${OUT:-/dev/null}"
log "done"
[ "$SHORT" = 0 ] || { echo "bench-scale: a listing showed fewer entries than the bucket holds (SHORT above)" >&2; exit 1; }
