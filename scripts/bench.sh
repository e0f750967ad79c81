#!/usr/bin/env bash
# Benchmarks a scribefs mount against s3fs and rclone mount, all on the same local dev server in
# one run, and against scribefs's own direct path (`scribefs segments put/get`, no FUSE).
# Prints a Markdown table with the ratios scribefs/peer. docs/BENCHMARKS.md explains each row.
#
#   scripts/bench.sh [--size-mib N] [--files N] [--small-files N] [--latency-ms MS]
#                    [--small-latency-ms MS] [--cache-size-mib N] [--tools scribefs,s3fs,rclone]
#                    [--quick] [--out FILE]
#
# Everything it starts (two dev servers on free loopback ports, one mount at a time) is stopped
# and unmounted on exit; every transfer runs under `timeout`. Needs root (drop_caches, mounts).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

SIZE_MIB='' FILES='' SMALL_FILES='' LATENCY_MS=0 SMALL_LATENCY_MS=20 CACHE_MIB=256
TOOLS='' QUICK=0 OUT=''
while [ $# -gt 0 ]; do
    case "$1" in
    --size-mib) SIZE_MIB=$2; shift 2 ;;
    --files) FILES=$2; shift 2 ;;
    --small-files) SMALL_FILES=$2; shift 2 ;;
    --latency-ms) LATENCY_MS=$2; shift 2 ;;
    --small-latency-ms) SMALL_LATENCY_MS=$2; shift 2 ;;
    --cache-size-mib) CACHE_MIB=$2; shift 2 ;;
    --tools) TOOLS=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    -h | --help) usage 0 ;;
    *) echo "bench: unknown option $1" >&2; usage 2 ;;
    esac
done
# --quick only shrinks what was not given explicitly.
if [ "$QUICK" = 1 ]; then
    SIZE_MIB=${SIZE_MIB:-32} FILES=${FILES:-500} SMALL_FILES=${SMALL_FILES:-30}
else
    SIZE_MIB=${SIZE_MIB:-1024} FILES=${FILES:-10000} SMALL_FILES=${SMALL_FILES:-200}
fi
for number in "$SIZE_MIB" "$FILES" "$SMALL_FILES" "$LATENCY_MS" "$SMALL_LATENCY_MS" "$CACHE_MIB"; do
    case "$number" in
    '' | *[!0-9]*) echo "bench: $number is not a whole number" >&2; exit 2 ;;
    esac
done
if [ "$(id -u)" -ne 0 ]; then
    echo "bench: run as root (it mounts file systems and drops the page cache)" >&2
    exit 2
fi

BUCKET=bench
ACCESS_KEY=benchkey
SECRET_KEY=benchsecret
DIRECT_SEGMENT_ID=be0001
# A stuck transfer fails the run instead of hanging it (at worst ~1 MiB/s).
TRANSFER_TIMEOUT=$((120 + SIZE_MIB))
LISTING_TIMEOUT=$((120 + FILES / 10))
SMALL_TIMEOUT=$((120 + SMALL_FILES * 2))

log() { echo "bench: $*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
per_second() { awk -v n="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.1f", n / s; else print "-" }'; }

# ---------------------------------------------------------------- tools

ensure_bench_tools() {
    local wanted=() missing=()
    if [ -n "$TOOLS" ]; then
        IFS=, read -r -a wanted <<<"$TOOLS"
    else
        wanted=(scribefs s3fs rclone)
    fi
    for tool in "${wanted[@]}"; do
        case "$tool" in
        scribefs) ;;
        s3fs | rclone) command -v "$tool" >/dev/null || missing+=("$tool") ;;
        *) echo "bench: unknown tool $tool (scribefs, s3fs, rclone)" >&2; exit 2 ;;
        esac
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]}"
        as_root apt-get update -qq || true
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null || true
    fi
    TOOL_LIST=()
    for tool in "${wanted[@]}"; do
        if [ "$tool" = scribefs ] || command -v "$tool" >/dev/null; then
            TOOL_LIST+=("$tool")
        elif [ -n "$TOOLS" ]; then
            echo "bench: $tool was asked for but cannot be installed" >&2
            exit 1
        else
            log "skipping $tool: not installed and apt could not install it"
        fi
    done
}

ensure_rust
ensure_packages
ensure_bench_tools
log "building scribefs (release)..."
cargo build --release --quiet
BIN=$PWD/target/release

# ---------------------------------------------------------------- processes and cleanup

WORK=$(mktemp -d /tmp/scribefs-bench.XXXXXX)
PIDS=()
MOUNTS=()

forget_pid() {
    local kept=() pid
    for pid in "${PIDS[@]}"; do [ "$pid" = "$1" ] || kept+=("$pid"); done
    PIDS=("${kept[@]+"${kept[@]}"}")
}

cleanup() {
    set +e
    local mnt pid
    for mnt in "${MOUNTS[@]+"${MOUNTS[@]}"}"; do
        if mountpoint -q "$mnt"; then umount "$mnt" 2>/dev/null || umount -l "$mnt"; fi
    done
    for pid in "${PIDS[@]+"${PIDS[@]}"}"; do kill "$pid" 2>/dev/null; done
    for _ in $(seq 1 50); do
        local alive=0
        for pid in "${PIDS[@]+"${PIDS[@]}"}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.2
    done
    for pid in "${PIDS[@]+"${PIDS[@]}"}"; do kill -9 "$pid" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_server NAME LATENCY_MS SEED_SEGMENTS: sets SERVER_ADDR and SERVER_ROOT.
start_server() {
    local name=$1 latency=$2 seeds=$3 port pid
    port=$(free_port)
    SERVER_ROOT=$WORK/$name-root
    SERVER_ADDR=127.0.0.1:$port
    mkdir -p "$SERVER_ROOT"
    "$BIN/scribefs-devserver" --root "$SERVER_ROOT" --listen "$SERVER_ADDR" \
        --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" --bucket "$BUCKET" \
        --seed-segments "$seeds" --latency-ms "$latency" >"$WORK/$name.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    for _ in $(seq 1 1200); do
        grep -q ready "$WORK/$name.log" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "bench: dev server $name did not start:" >&2
    cat "$WORK/$name.log" >&2
    exit 1
}

# stats ADDR: the server's request counts since the last reset, as "field=value ..." words;
# then zeroes them.
reset_stats() { "$BIN/scribefs-devserver" stats --listen "$1" --reset >/dev/null; }
take_stats() {
    "$BIN/scribefs-devserver" stats --listen "$1" --reset |
        python3 -c 'import json, sys
d = json.load(sys.stdin)
print(" ".join(f"{k}={v}" for k, v in d.items()), "total=%d" % sum(d.values()))'
}
stat_field() { # stat_field "STATS" FIELD
    local word
    for word in $1; do
        [ "${word%%=*}" = "$2" ] && { echo "${word#*=}"; return; }
    done
    echo 0
}

# The dev server writes each object through to ROOT/BUCKET/<hex of key>.obj (a JSON header line
# with the size, then the bytes) by rename, before it answers. So a file with the right size
# there means the object is in the bucket, and checking costs no S3 request.
object_file() { printf '%s/%s/%s.obj' "$1" "$BUCKET" "$(printf '%s' "$2" | od -An -tx1 -v | tr -d ' \n')"; }
object_present() { # object_present ROOT KEY SIZE
    local file
    file=$(object_file "$1" "$2")
    [ -f "$file" ] && head -n 1 "$file" | grep -q "\"size\":$3[,}]"
}
wait_object() { # wait_object ROOT KEY SIZE TIMEOUT
    local deadline=$((SECONDS + $4))
    until object_present "$1" "$2" "$3"; do
        [ "$SECONDS" -lt "$deadline" ] || { log "object $2 never reached the bucket"; return 1; }
        sleep 0.05
    done
}
objects_with_prefix() { # objects_with_prefix ROOT PREFIX
    local hex
    hex=$(printf '%s' "$2" | od -An -tx1 -v | tr -d ' \n')
    find "$1/$BUCKET" -maxdepth 1 -name "$hex*.obj" | wc -l
}
wait_objects() { # wait_objects ROOT PREFIX COUNT TIMEOUT
    local deadline=$((SECONDS + $4))
    until [ "$(objects_with_prefix "$1" "$2")" -ge "$3" ]; do
        [ "$SECONDS" -lt "$deadline" ] || { log "objects under $2 never all reached the bucket"; return 1; }
        sleep 0.05
    done
}

drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || log "cannot drop the page cache: reads may be warm"
}

# ---------------------------------------------------------------- mounts

printf '%s:%s\n' "$ACCESS_KEY" "$SECRET_KEY" >"$WORK/s3fs.passwd"
chmod 600 "$WORK/s3fs.passwd"
export S3_PATH_STYLE=true S3_REGION=us-east-1 S3_ACCESS_KEY_ID=$ACCESS_KEY S3_SECRET_ACCESS_KEY=$SECRET_KEY
unset S3_ENDPOINT S3_BUCKET AWS_ENDPOINT_URL
MOUNT_SERIAL=0

# mount_tool TOOL ADDR: mounts the bucket at a new directory; sets MNT and MOUNT_PID.
# Each tool runs in the foreground as a child of this script, so its pid is known exactly.
mount_tool() {
    local tool=$1 addr=$2
    MOUNT_SERIAL=$((MOUNT_SERIAL + 1))
    MNT=$WORK/mnt-$MOUNT_SERIAL
    local logfile=$WORK/$tool-$MOUNT_SERIAL.log
    mkdir -p "$MNT"
    case "$tool" in
    scribefs)
        "$BIN/scribefs" --endpoint-url "http://$addr" mount "$BUCKET" "$MNT" --foreground \
            --cache-size-mib "$CACHE_MIB" >"$logfile" 2>&1 &
        ;;
    s3fs)
        s3fs "$BUCKET" "$MNT" -f -o url="http://$addr" -o use_path_request_style \
            -o passwd_file="$WORK/s3fs.passwd" -o endpoint=us-east-1 >"$logfile" 2>&1 &
        ;;
    rclone)
        # rclone mount refuses writes unless the VFS caches them; write-back 0s uploads right
        # after close instead of 5 s later.
        env -u AWS_CA_BUNDLE RCLONE_CONFIG_BENCH_TYPE=s3 RCLONE_CONFIG_BENCH_PROVIDER=Other \
            RCLONE_CONFIG_BENCH_ACCESS_KEY_ID="$ACCESS_KEY" \
            RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY="$SECRET_KEY" \
            RCLONE_CONFIG_BENCH_ENDPOINT="http://$addr" RCLONE_CONFIG_BENCH_REGION=us-east-1 \
            RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE=true \
            rclone mount "bench:$BUCKET" "$MNT" --vfs-cache-mode writes --vfs-write-back 0s \
            --cache-dir "$WORK/rclone-cache-$MOUNT_SERIAL" --config /dev/null >"$logfile" 2>&1 &
        ;;
    esac
    MOUNT_PID=$!
    PIDS+=("$MOUNT_PID")
    MOUNTS+=("$MNT")
    for _ in $(seq 1 300); do
        # s3fs is a mount point before it has checked the bucket: wait until it serves too.
        if mountpoint -q "$MNT" && timeout 60 ls "$MNT" >/dev/null 2>&1; then return 0; fi
        kill -0 "$MOUNT_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "bench: $tool did not mount:" >&2
    cat "$logfile" >&2
    exit 1
}

unmount_tool() {
    for _ in $(seq 1 50); do
        umount "$MNT" 2>/dev/null && break
        sleep 0.2
    done
    mountpoint -q "$MNT" && umount -l "$MNT"
    for _ in $(seq 1 300); do
        kill -0 "$MOUNT_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill "$MOUNT_PID" 2>/dev/null || true
    wait "$MOUNT_PID" 2>/dev/null || true
    forget_pid "$MOUNT_PID"
}

peak_rss_mib() {
    awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo "-"
}

# ---------------------------------------------------------------- data

declare -A R # R[metric,tool] = value
SIZE_BYTES=$((SIZE_MIB * 1024 * 1024))
SEED_SEGMENTS=$(((FILES + 1) / 2)) # each demo segment is a .bin and a .meta.json
LIST_FILES=$((SEED_SEGMENTS * 2))
START=$SECONDS

log "generating $SIZE_MIB MiB of random bytes and $SMALL_FILES small files"
head -c "$SIZE_BYTES" /dev/urandom >"$WORK/source.bin"
SOURCE_SHA=$(sha256sum "$WORK/source.bin" | cut -d' ' -f1)
mkdir -p "$WORK/small"
for i in $(seq -f '%05g' 1 "$SMALL_FILES"); do
    head -c 4096 /dev/urandom >"$WORK/small/f$i.dat"
done

log "starting dev servers (seeding $LIST_FILES small objects)"
seed_start=$(now)
start_server main "$LATENCY_MS" "$SEED_SEGMENTS"
MAIN_ADDR=$SERVER_ADDR MAIN_ROOT=$SERVER_ROOT
SEED_SECONDS=$(elapsed "$seed_start" "$(now)")
start_server small "$SMALL_LATENCY_MS" 0
SMALL_ADDR=$SERVER_ADDR SMALL_ROOT=$SERVER_ROOT
export S3_ENDPOINT=http://$MAIN_ADDR S3_BUCKET=$BUCKET
DIRECT_KEY=segments/segment-$(printf '%016x' "0x$DIRECT_SEGMENT_ID").bin

# ---------------------------------------------------------------- measurements
# Each measure_* function records into R and returns non-zero if the tool failed the step; the
# run goes on with the other tools and the table shows "failed".

measure_direct_put() {
    cat "$WORK/source.bin" >/dev/null # every writer reads the source from the page cache
    local t0 t1
    t0=$(now)
    timeout "$TRANSFER_TIMEOUT" "$BIN/scribefs" segments put "$DIRECT_SEGMENT_ID" "$WORK/source.bin" || return 1
    t1=$(now)
    object_present "$MAIN_ROOT" "$DIRECT_KEY" "$SIZE_BYTES" || return 1
    R[direct_put]=$(per_second "$SIZE_MIB" "$(elapsed "$t0" "$t1")")
}

measure_direct_get() {
    local t0 t1 sha
    drop_caches
    t0=$(now)
    sha=$(timeout "$TRANSFER_TIMEOUT" "$BIN/scribefs" segments get "$DIRECT_SEGMENT_ID" | sha256sum | cut -d' ' -f1) || return 1
    t1=$(now)
    [ "$sha" = "$SOURCE_SHA" ] || { log "direct get returned different bytes"; return 1; }
    R[direct_get]=$(per_second "$SIZE_MIB" "$(elapsed "$t0" "$t1")")
    "$BIN/scribefs" segments rm "$DIRECT_SEGMENT_ID"
}

# a. dd of the random file into the mount; the clock stops when the object is in the bucket.
measure_write() {
    local tool=$1 key=bench-$1.bin t0 t1 stats
    cat "$WORK/source.bin" >/dev/null
    reset_stats "$MAIN_ADDR"
    t0=$(now)
    timeout "$TRANSFER_TIMEOUT" dd if="$WORK/source.bin" of="$MNT/$key" bs=1M status=none || return 1
    if object_present "$MAIN_ROOT" "$key" "$SIZE_BYTES"; then
        R[durable_at_close,$tool]=yes
    else
        R[durable_at_close,$tool]=no
    fi
    wait_object "$MAIN_ROOT" "$key" "$SIZE_BYTES" "$TRANSFER_TIMEOUT" || return 1
    t1=$(now)
    stats=$(take_stats "$MAIN_ADDR")
    R[write,$tool]=$(per_second "$SIZE_MIB" "$(elapsed "$t0" "$t1")")
    R[write_requests,$tool]="$(stat_field "$stats" put) PUT + $(stat_field "$stats" multipart) multipart ($(stat_field "$stats" total) total)"
}

# b. dd of the file out of a fresh mount after dropping the page cache, hashed on the way.
measure_read() {
    local tool=$1 key=bench-$1.bin t0 t1 stats sha
    reset_stats "$MAIN_ADDR"
    t0=$(now)
    sha=$(timeout "$TRANSFER_TIMEOUT" dd if="$MNT/$key" bs=1M status=none | sha256sum | cut -d' ' -f1) || return 1
    t1=$(now)
    stats=$(take_stats "$MAIN_ADDR")
    R[rss,$tool]=$(peak_rss_mib "$MOUNT_PID")
    R[read_requests,$tool]="$(stat_field "$stats" get) GET ($(stat_field "$stats" total) total)"
    if [ "$sha" != "$SOURCE_SHA" ]; then
        log "$tool read back different bytes than were written"
        R[read,$tool]="WRONG DATA"
        return 0
    fi
    R[read,$tool]=$(per_second "$SIZE_MIB" "$(elapsed "$t0" "$t1")")
}

# c. ls -l of the seeded segments/ directory on a fresh mount.
measure_ls() {
    local tool=$1 t0 t1 stats entries
    reset_stats "$MAIN_ADDR"
    t0=$(now)
    timeout "$LISTING_TIMEOUT" ls -l "$MNT/segments" >"$WORK/ls-$tool.txt" || return 1
    t1=$(now)
    stats=$(take_stats "$MAIN_ADDR")
    entries=$(grep -c '^-' "$WORK/ls-$tool.txt" || true)
    if [ "$entries" -ne "$LIST_FILES" ]; then
        log "$tool listed $entries files, expected $LIST_FILES"
        return 1
    fi
    R[ls,$tool]=$(elapsed "$t0" "$t1")
    R[ls_requests,$tool]="$(stat_field "$stats" list) LIST + $(stat_field "$stats" head) HEAD ($(stat_field "$stats" total) total)"
}

# d. cp of many 4 KiB files into a fresh directory, on the server with S3-like latency.
measure_small() {
    local tool=$1 t0 t1 stats
    mkdir "$MNT/small-$tool" || return 1
    reset_stats "$SMALL_ADDR"
    t0=$(now)
    timeout "$SMALL_TIMEOUT" cp "$WORK"/small/*.dat "$MNT/small-$tool/" || return 1
    wait_objects "$SMALL_ROOT" "small-$tool/f" "$SMALL_FILES" "$SMALL_TIMEOUT" || return 1
    t1=$(now)
    stats=$(take_stats "$SMALL_ADDR")
    R[small,$tool]=$(elapsed "$t0" "$t1")
    R[small_requests,$tool]=$(awk -v n="$(stat_field "$stats" total)" -v f="$SMALL_FILES" 'BEGIN { printf "%.1f", n / f }')
    R[small_detail,$tool]=$stats
}

# on_fresh_mount STEP TOOL ADDR: mounts, runs measure_STEP, unmounts; a failure is recorded.
on_fresh_mount() {
    local step=$1 tool=$2 addr=$3
    log "$tool: $step"
    mount_tool "$tool" "$addr"
    if ! "measure_$step" "$tool"; then
        log "$tool failed the $step step"
        R[$step,$tool]=failed
    fi
    [ "$step" != read ] || rm -f "$MNT/bench-$tool.bin" # the dev server holds objects in memory
    unmount_tool
}

log "direct put of $SIZE_MIB MiB"
measure_direct_put || { log "the direct put failed"; exit 1; }
for tool in "${TOOL_LIST[@]}"; do on_fresh_mount write "$tool" "$MAIN_ADDR"; done
log "direct get of $SIZE_MIB MiB"
measure_direct_get || { log "the direct get failed"; exit 1; }
for tool in "${TOOL_LIST[@]}"; do
    drop_caches
    on_fresh_mount read "$tool" "$MAIN_ADDR"
done
for tool in "${TOOL_LIST[@]}"; do on_fresh_mount ls "$tool" "$MAIN_ADDR"; done
for tool in "${TOOL_LIST[@]}"; do on_fresh_mount small "$tool" "$SMALL_ADDR"; done
TOTAL_SECONDS=$((SECONDS - START))

# ---------------------------------------------------------------- report

ratio() { # ratio A B: A/B, or "-" when either is not a number
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2f", a / b; else print "-" }'
}

report() {
    local peers=() tool row
    for tool in "${TOOL_LIST[@]}"; do [ "$tool" = scribefs ] || peers+=("$tool"); done
    echo "### scribefs bench, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Command: \`scripts/bench.sh --size-mib $SIZE_MIB --files $FILES --small-files $SMALL_FILES" \
        "--latency-ms $LATENCY_MS --small-latency-ms $SMALL_LATENCY_MS --cache-size-mib $CACHE_MIB\`" \
        "— $(nproc) cores, load average at the end $(cut -d' ' -f1-3 /proc/loadavg)," \
        "run took ${TOTAL_SECONDS}s (seeding the listing objects: ${SEED_SECONDS}s)."
    echo
    row="| measurement | unit |"
    for tool in "${TOOL_LIST[@]}"; do row+=" $tool |"; done
    for tool in "${peers[@]+"${peers[@]}"}"; do row+=" scribefs/$tool |"; done
    echo "$row"
    echo "|$(echo "${row#|}" | sed 's/[^|]*|/---|/g')"
    emit() { # emit LABEL UNIT METRIC WITH_RATIO
        local line="| $1 | $2 |" t
        for t in "${TOOL_LIST[@]}"; do line+=" ${R[$3,$t]:--} |"; done
        for t in "${peers[@]+"${peers[@]}"}"; do
            if [ "$4" = 1 ]; then line+=" $(ratio "${R[$3,scribefs]:--}" "${R[$3,$t]:--}") |"; else line+=" |"; fi
        done
        echo "$line"
    }
    emit "sequential write, $SIZE_MIB MiB, until in the bucket" "MiB/s" write 1
    emit "object in the bucket when close returns" "" durable_at_close 0
    emit "write requests" "" write_requests 0
    emit "cold sequential read, $SIZE_MIB MiB (sha256 checked)" "MiB/s" read 1
    emit "read requests" "" read_requests 0
    emit "peak RSS of the mount process (VmHWM) after the read" "MiB" rss 1
    emit "\`ls -l\` of $LIST_FILES files, fresh mount" "s" ls 1
    emit "\`ls -l\` requests" "" ls_requests 0
    emit "create $SMALL_FILES × 4 KiB files at $SMALL_LATENCY_MS ms latency" "s" small 1
    emit "requests per small file" "" small_requests 1
    echo
    echo "Direct path (\`scribefs segments put/get\`, the same streaming upload and a streamed GetObject, no FUSE):" \
        "put ${R[direct_put]} MiB/s, get ${R[direct_get]} MiB/s." \
        "scribefs mount as a fraction of it: write $(ratio "${R[write,scribefs]:--}" "${R[direct_put]}")," \
        "read $(ratio "${R[read,scribefs]:--}" "${R[direct_get]}")." \
        "scribefs --cache-size-mib $CACHE_MIB."
    echo
    echo "Ratios are scribefs divided by the peer: above 1 means a larger figure for scribefs" \
        "(better for MiB/s, worse for seconds, MiB and requests)."
    echo
    echo "Small-file request mix (dev server counts):"
    echo
    for tool in "${TOOL_LIST[@]}"; do
        echo "- $tool: $(echo "${R[small_detail,$tool]}" | tr ' ' '\n' | grep -v '=0$' | tr '\n' ' ')"
    done
}

report | tee ${OUT:+"$OUT"}
