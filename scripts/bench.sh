#!/usr/bin/env bash
# Benchmarks a scribefs mount against mount-s3, s3fs and rclone mount in two profiles in one run:
# raw (loopback, no delay) and S3-like (dev server --latency-ms 20 --bandwidth-mbps 800: 20 ms
# before each response, 100 MB/s per connection). Every client meets the same server per profile.
# Beside them, the limit: scribefs's own S3 path with no FUSE (examples/bench_limit.rs).
# Prints one Markdown table per profile and draws a PNG chart; docs/BENCHMARKS.md explains them.
#
#   scripts/bench.sh [--quick] [--profiles raw,s3] [--tools scribefs,mount-s3,s3fs,rclone]
#                    [--size-mib N] [--files N] [--small-files N] [--fio-seconds N] [--rand-mib N]
#                    [--latency-ms MS] [--bandwidth-mbps MBPS] [--cache-size-mib N]
#                    [--out FILE] [--chart FILE.png (default: FILE's name with .png, or target/bench.png)]
#
# mount-s3 is not packaged: MOUNT_S3=/path/to/mount-s3 includes it. Needs root. Not run in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

SIZE_MIB='' FILES='' SMALL_FILES='' FIO_SECONDS='' RAND_MIB='' LATENCY_MS=20 BANDWIDTH_MBPS=800
CACHE_MIB=256 PROFILES=raw,s3 TOOLS='' QUICK=0 OUT='' CHART=''
while [ $# -gt 0 ]; do
    case "$1" in
    --size-mib) SIZE_MIB=$2; shift 2 ;;
    --files) FILES=$2; shift 2 ;;
    --small-files) SMALL_FILES=$2; shift 2 ;;
    --fio-seconds) FIO_SECONDS=$2; shift 2 ;;
    --rand-mib) RAND_MIB=$2; shift 2 ;;
    --latency-ms) LATENCY_MS=$2; shift 2 ;;
    --bandwidth-mbps) BANDWIDTH_MBPS=$2; shift 2 ;;
    --cache-size-mib) CACHE_MIB=$2; shift 2 ;;
    --profiles) PROFILES=$2; shift 2 ;;
    --tools) TOOLS=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    --chart) CHART=$2; shift 2 ;;
    -h | --help) usage 0 ;;
    *) echo "bench: unknown option $1" >&2; usage 2 ;;
    esac
done
# --quick only shrinks what was not given explicitly.
if [ "$QUICK" = 1 ]; then
    SIZE_MIB=${SIZE_MIB:-16} FILES=${FILES:-200} SMALL_FILES=${SMALL_FILES:-10} FIO_SECONDS=${FIO_SECONDS:-2} RAND_MIB=${RAND_MIB:-128}
else
    SIZE_MIB=${SIZE_MIB:-1024} FILES=${FILES:-10000} SMALL_FILES=${SMALL_FILES:-1000} FIO_SECONDS=${FIO_SECONDS:-20} RAND_MIB=${RAND_MIB:-2048}
fi
for number in "$SIZE_MIB" "$RAND_MIB" "$FILES" "$SMALL_FILES" "$FIO_SECONDS" "$LATENCY_MS" "$BANDWIDTH_MBPS" "$CACHE_MIB"; do
    case "$number" in
    '' | *[!0-9]*) echo "bench: $number is not a whole number" >&2; exit 2 ;;
    esac
done
if [ $((SIZE_MIB % 4)) -ne 0 ] || [ "$SIZE_MIB" -lt 4 ]; then
    echo "bench: --size-mib must be a multiple of 4 (the 4 readers read a quarter each)" >&2
    exit 2
fi
IFS=, read -r -a PROFILE_LIST <<<"$PROFILES"
for profile in "${PROFILE_LIST[@]}"; do
    case "$profile" in
    raw | s3) ;;
    *) echo "bench: unknown profile $profile (raw, s3)" >&2; exit 2 ;;
    esac
done
if [ "$(id -u)" -ne 0 ]; then
    echo "bench: run as root (it mounts file systems and drops the page cache)" >&2
    exit 2
fi

BUCKET=bench
ACCESS_KEY=benchkey
SECRET_KEY=benchsecret
SMALL_KIB=64
# A stuck step fails the run instead of hanging it (at worst ~1 MiB/s, ~2 files/s).
TRANSFER_TIMEOUT=$((120 + SIZE_MIB))
LISTING_TIMEOUT=$((120 + FILES / 10))
SMALL_TIMEOUT=$((120 + SMALL_FILES))

log() { echo "bench: [$((SECONDS - ${START:-0}))s] $*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
per_second() { awk -v n="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.1f", n / s; else print "-" }'; }

# ---------------------------------------------------------------- tools

ensure_bench_tools() {
    local wanted=() missing=() tool
    if [ -n "$TOOLS" ]; then
        IFS=, read -r -a wanted <<<"$TOOLS"
    elif [ "$QUICK" = 1 ]; then
        # A smoke run: scribefs and one peer, so it stays well under two minutes.
        if [ -n "${MOUNT_S3:-}" ]; then wanted=(scribefs mount-s3); else wanted=(scribefs s3fs); fi
    else
        wanted=(scribefs mount-s3 s3fs rclone)
    fi
    for tool in "${wanted[@]}"; do
        case "$tool" in
        scribefs | mount-s3) ;;
        s3fs | rclone) command -v "$tool" >/dev/null || missing+=("$tool") ;;
        *) echo "bench: unknown tool $tool (scribefs, mount-s3, s3fs, rclone)" >&2; exit 2 ;;
        esac
    done
    command -v fio >/dev/null || missing+=(fio)
    command -v gnuplot >/dev/null || missing+=(gnuplot-nox)
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]}"
        as_root apt-get update -qq || true
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null || true
    fi
    command -v fio >/dev/null || { echo "bench: fio is needed and apt could not install it" >&2; exit 1; }
    TOOL_LIST=()
    for tool in "${wanted[@]}"; do
        if [ "$tool" = mount-s3 ]; then
            if [ -n "${MOUNT_S3:-}" ] && [ -x "$MOUNT_S3" ]; then
                TOOL_LIST+=("$tool")
                log "mount-s3: $("$MOUNT_S3" --version 2>&1 | head -n 1) from $MOUNT_S3"
            elif [ -n "$TOOLS" ]; then
                echo "bench: mount-s3 was asked for: set MOUNT_S3 to the mount-s3 binary" >&2
                exit 1
            else
                log "skipping mount-s3: it is not packaged; set MOUNT_S3=/path/to/mount-s3 to include it"
            fi
        elif [ "$tool" = scribefs ] || command -v "$tool" >/dev/null; then
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
log "building scribefs and the limit tool (release)..."
cargo build --release --quiet --features devserver --bins --example bench_limit
BIN=$PWD/target/release
LIMIT=$BIN/examples/bench_limit

# ---------------------------------------------------------------- processes and cleanup

WORK=$(mktemp -d /tmp/scribefs-bench.XXXXXX)
PIDS=()
MOUNTS=()

forget_pid() {
    local kept=() pid
    for pid in "${PIDS[@]}"; do [ "$pid" = "$1" ] || kept+=("$pid"); done
    PIDS=("${kept[@]+"${kept[@]}"}")
}

stop_pid() {
    local pid=$1
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
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

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_server PROFILE: a dev server for the profile, seeded with the listing objects; sets
# ADDR, ROOT and SERVER_PID.
start_server() {
    local profile=$1 port emulation=()
    port=$(free_port)
    ROOT=$WORK/$profile-root
    ADDR=127.0.0.1:$port
    [ "$profile" = raw ] || emulation=(--latency-ms "$LATENCY_MS" --bandwidth-mbps "$BANDWIDTH_MBPS")
    mkdir -p "$ROOT"
    "$BIN/scribefs-devserver" --root "$ROOT" --listen "$ADDR" \
        --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" --bucket "$BUCKET" \
        --seed-segments "$(((FILES + 1) / 2))" "${emulation[@]}" >"$WORK/$profile-server.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    for _ in $(seq 1 1200); do
        grep -q ready "$WORK/$profile-server.log" 2>/dev/null && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "bench: dev server $profile did not start:" >&2
    cat "$WORK/$profile-server.log" >&2
    exit 1
}

# take_stats: the server's request counts since the last reset as "field=value ..." words, then
# zeroes them.
reset_stats() { "$BIN/scribefs-devserver" stats --listen "$ADDR" --reset >/dev/null; }
take_stats() {
    "$BIN/scribefs-devserver" stats --listen "$ADDR" --reset |
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
hex() { printf '%s' "$1" | od -An -tx1 -v | tr -d ' \n'; }
object_present() { # object_present KEY SIZE
    local file
    file=$(printf '%s/%s/%s.obj' "$ROOT" "$BUCKET" "$(hex "$1")")
    [ -f "$file" ] && head -n 1 "$file" | grep -q "\"size\":$2[,}]"
}
wait_object() { # wait_object KEY SIZE TIMEOUT
    local deadline=$((SECONDS + $3))
    until object_present "$1" "$2"; do
        [ "$SECONDS" -lt "$deadline" ] || { log "object $1 never reached the bucket"; return 1; }
        sleep 0.05
    done
}
# Gives up early when no new object arrived for STALL_SECONDS: a client that lost uploads
# (rclone's rsync -a) must not hold the run for the whole timeout.
STALL_SECONDS=$((QUICK ? 5 : 15))
wait_objects() { # wait_objects PREFIX COUNT TIMEOUT
    local deadline=$((SECONDS + $3)) pattern count last=-1 since=$SECONDS
    pattern="$(hex "$1")*.obj"
    while count=$(find "$ROOT/$BUCKET" -maxdepth 1 -name "$pattern" | wc -l) && [ "$count" -lt "$2" ]; do
        if [ "$count" != "$last" ]; then last=$count since=$SECONDS; fi
        if [ "$SECONDS" -ge "$deadline" ] || [ $((SECONDS - since)) -ge "$STALL_SECONDS" ]; then
            log "only $count of $2 objects under $1 reached the bucket"
            return 1
        fi
        sleep 0.05
    done
}

drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || log "cannot drop the page cache: reads may be warm"
}

limit() { # limit ARGS...: the no-FUSE tool on the current server
    env S3_ENDPOINT="http://$ADDR" S3_BUCKET=$BUCKET S3_ACCESS_KEY_ID=$ACCESS_KEY \
        S3_SECRET_ACCESS_KEY=$SECRET_KEY timeout "$TRANSFER_TIMEOUT" "$LIMIT" "$@"
}

# ---------------------------------------------------------------- mounts

printf '%s:%s\n' "$ACCESS_KEY" "$SECRET_KEY" >"$WORK/s3fs.passwd"
chmod 600 "$WORK/s3fs.passwd"
unset S3_ENDPOINT S3_BUCKET AWS_ENDPOINT_URL
MOUNT_SERIAL=0

# mount_tool TOOL: mounts the bucket at a new directory; sets MNT and MOUNT_PID. Each tool runs
# in the foreground as a child of this script, so its pid (and so its memory) is known exactly.
mount_tool() {
    local tool=$1
    MOUNT_SERIAL=$((MOUNT_SERIAL + 1))
    MNT=$WORK/mnt-$MOUNT_SERIAL
    local logfile=$WORK/$tool-$MOUNT_SERIAL.log
    mkdir -p "$MNT"
    case "$tool" in
    scribefs)
        # Its own cache folder per run: the metadata cache starts cold, whatever ran before.
        env S3_PATH_STYLE=true S3_REGION=us-east-1 S3_ACCESS_KEY_ID=$ACCESS_KEY \
            S3_SECRET_ACCESS_KEY=$SECRET_KEY XDG_CACHE_HOME="$WORK/cache" \
            "$BIN/scribefs" --endpoint-url "http://$ADDR" mount "$BUCKET" "$MNT" --foreground \
            --cache-size-mib "$CACHE_MIB" >"$logfile" 2>&1 &
        ;;
    mount-s3)
        # Defaults otherwise; delete and overwrite allowed so that rsync and rm can work.
        env AWS_ACCESS_KEY_ID=$ACCESS_KEY AWS_SECRET_ACCESS_KEY=$SECRET_KEY AWS_REGION=us-east-1 \
            "$MOUNT_S3" "$BUCKET" "$MNT" --foreground --endpoint-url "http://$ADDR" \
            --force-path-style --region us-east-1 --allow-delete --allow-overwrite \
            --log-directory "$WORK/mount-s3-logs-$MOUNT_SERIAL" >"$logfile" 2>&1 &
        ;;
    s3fs)
        s3fs "$BUCKET" "$MNT" -f -o url="http://$ADDR" -o use_path_request_style \
            -o passwd_file="$WORK/s3fs.passwd" -o endpoint=us-east-1 >"$logfile" 2>&1 &
        ;;
    rclone)
        # rclone mount refuses writes unless the VFS caches them; write-back 0s uploads right
        # after close instead of 5 s later. It refuses to start with AWS_CA_BUNDLE set.
        env -u AWS_CA_BUNDLE RCLONE_CONFIG_BENCH_TYPE=s3 RCLONE_CONFIG_BENCH_PROVIDER=Other \
            RCLONE_CONFIG_BENCH_ACCESS_KEY_ID="$ACCESS_KEY" \
            RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY="$SECRET_KEY" \
            RCLONE_CONFIG_BENCH_ENDPOINT="http://$ADDR" RCLONE_CONFIG_BENCH_REGION=us-east-1 \
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
    stop_pid "$MOUNT_PID"
}

# Peak RSS (VmHWM) of the mount process, kept as the maximum over its mounts in this profile.
note_rss() { # note_rss TOOL
    local rss
    rss=$(awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$MOUNT_PID/status" 2>/dev/null || true)
    [ -n "$rss" ] || return 0
    if [ -z "${R[$P,rss,$1]:-}" ] || [ "$rss" -gt "${R[$P,rss,$1]}" ]; then R[$P,rss,$1]=$rss; fi
}

# ---------------------------------------------------------------- data

declare -A R # R[profile,metric,tool] = value; tool "limit" for the no-FUSE path
SIZE_BYTES=$((SIZE_MIB * 1024 * 1024))
QUARTER_MIB=$((SIZE_MIB / 4))
START=$SECONDS

log "generating $SIZE_MIB MiB of random bytes and $SMALL_FILES files of $SMALL_KIB KiB"
head -c "$SIZE_BYTES" /dev/urandom >"$WORK/source.bin"
head -c $((QUARTER_MIB * 1024 * 1024)) "$WORK/source.bin" >"$WORK/quarter.bin"
# Random reads need a file much larger than what a client fetches around each read, or they
# measure its cache: its content does not matter, so it is sparse here.
truncate -s "${RAND_MIB}M" "$WORK/rand.bin"
mkdir -p "$WORK/small"
for i in $(seq -f '%05g' 1 "$SMALL_FILES"); do
    head -c $((SMALL_KIB * 1024)) /dev/urandom >"$WORK/small/f$i.dat"
done

# ---------------------------------------------------------------- measurements
# Each step records into R and returns non-zero if the tool failed it; the run goes on with the
# other steps and tools, and the table shows "failed".

# timed_rate VAR AMOUNT CMD...: runs CMD under the clock and stores AMOUNT per second in R[VAR].
timed_rate() {
    local var=$1 amount=$2 t0 t1
    shift 2
    t0=$(now)
    "$@" || return 1
    t1=$(now)
    R[$var]=$(per_second "$amount" "$(elapsed "$t0" "$t1")")
}

# A read is timed alone, into /dev/null, and its bytes are compared afterwards, off the clock,
# with cmp against the local copy. Timing `dd | cmp` charged every client the pipe and cmp's own
# CPU on the 2 cores: `dd | cmp` of a local file from the page cache runs at about 1.1 GiB/s,
# plain `dd` at about 9 GiB/s, so the pipeline, not the client, set the cached figures.
read_file() { # read_file FILE
    timeout "$TRANSFER_TIMEOUT" dd if="$1" of=/dev/null bs=1M status=none
}
same_bytes() { # same_bytes FILE REFERENCE
    timeout "$TRANSFER_TIMEOUT" cmp -s "$1" "$2" || { log "$1: read back different bytes"; return 1; }
}

write_durable() { # write_durable TOOL: dd with fsync, done when the object is in the bucket
    local key=w-$1.bin
    timeout "$TRANSFER_TIMEOUT" dd if="$WORK/source.bin" of="$MNT/$key" bs=1M conv=fsync status=none || return 1
    if object_present "$key" "$SIZE_BYTES"; then R[$P,durable_at_fsync,$1]=yes; else R[$P,durable_at_fsync,$1]=no; fi
    wait_object "$key" "$SIZE_BYTES" "$TRANSFER_TIMEOUT"
}

copy_small_in() { # copy_small_in TOOL: cp of the small files, done when all are in the bucket
    mkdir "$MNT/cp-$1" || return 1
    timeout "$SMALL_TIMEOUT" cp "$WORK"/small/*.dat "$MNT/cp-$1/" || return 1
    wait_objects "cp-$1/f" "$SMALL_FILES" "$SMALL_TIMEOUT"
}

rsync_small_in() { # rsync_small_in TOOL
    # Some clients refuse rsync's temporary files or times: one line here, the rest in a log.
    timeout "$SMALL_TIMEOUT" rsync -a "$WORK/small/" "$MNT/rsync-$1/" 2>"$WORK/rsync-in-$P-$1.log" ||
        { log "$1: $(grep -m1 -v '^rsync error' "$WORK/rsync-in-$P-$1.log")"; return 1; }
    wait_objects "rsync-$1/f" "$SMALL_FILES" "$SMALL_TIMEOUT"
}

four_readers() {
    local pids=() i ok=0
    for i in 1 2 3 4; do
        read_file "$MNT/reader-$i.bin" &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || ok=1; done
    return "$ok"
}
four_readers_same_bytes() {
    local i
    for i in 1 2 3 4; do same_bytes "$MNT/reader-$i.bin" "$WORK/quarter.bin" || return 1; done
}

random_reads() { # random_reads TOOL: fio 4 KiB random reads, one at a time, on a file not read before
    timeout $((FIO_SECONDS + 120)) fio --name=rand --filename="$MNT/rand.bin" --readonly \
        --rw=randread --bs=4k --size=$((RAND_MIB * 1024 * 1024)) --ioengine=psync --iodepth=1 --numjobs=1 \
        --time_based --runtime="$FIO_SECONDS" --output-format=json >"$WORK/fio-$P-$1.json" || return 1
    R[$P,iops,$1]=$(python3 -c 'import json, sys; print("%.1f" % json.load(open(sys.argv[1]))["jobs"][0]["read"]["iops"])' "$WORK/fio-$P-$1.json")
}

cat_small() { # cat_small TOOL: the files created by cp, read back whole
    local bytes
    bytes=$(timeout "$SMALL_TIMEOUT" cat "$MNT/cp-$1"/*.dat | wc -c) || return 1
    [ "$bytes" -eq $((SMALL_FILES * SMALL_KIB * 1024)) ] || { log "$1: cat read $bytes bytes"; return 1; }
}

copy_out() { # copy_out TOOL CMD...: copies a directory of the mount out, checks the file count
    local tool=$1 dest=$WORK/out
    shift
    rm -rf "$dest"
    timeout "$SMALL_TIMEOUT" "$@" "$dest" || return 1
    [ "$(find "$dest" -type f | wc -l)" -eq "$SMALL_FILES" ] || { log "$tool: copied out the wrong number of files"; return 1; }
    rm -rf "$dest"
}

list_long() { # list_long TOOL
    timeout "$LISTING_TIMEOUT" ls -l "$MNT/segments" >"$WORK/ls.txt" || return 1
    [ "$(grep -c '^-' "$WORK/ls.txt")" -eq "$LIST_FILES" ] || { log "$1: ls -l listed the wrong number of files"; return 1; }
}

# step METRIC TOOL CMD...: runs one measured step; records "failed" if it fails.
step() {
    local metric=$1 tool=$2
    shift 2
    if ! "$@"; then
        log "$tool failed: $metric"
        R[$P,$metric,$tool]=failed
    fi
}

# The request counts of one step, as a short label.
requests_of() { # requests_of "STATS" PER_N
    awk -v n="$(stat_field "$1" total)" -v per="$2" 'BEGIN { printf "%.1f", n / per }'
}

measure_tool() {
    local tool=$1 files=$SMALL_FILES s
    log "[$P] $tool: writes"
    mount_tool "$tool"
    step write "$tool" timed_rate "$P,write,$tool" "$SIZE_MIB" write_durable "$tool"
    reset_stats
    step create "$tool" timed_rate "$P,create,$tool" "$files" copy_small_in "$tool"
    s=$(take_stats)
    R[$P,create_requests,$tool]=$(requests_of "$s" "$files")
    step rsync_in "$tool" timed_rate "$P,rsync_in,$tool" "$files" rsync_small_in "$tool"
    note_rss "$tool"
    unmount_tool
    limit rm "w-$tool.bin" 2>>"$WORK/limit.log" || true # the dev server keeps objects in memory

    log "[$P] $tool: large reads"
    drop_caches
    mount_tool "$tool"
    reset_stats
    step read_cold "$tool" timed_rate "$P,read_cold,$tool" "$SIZE_MIB" read_file "$MNT/big.bin"
    s=$(take_stats)
    R[$P,read_requests,$tool]=$(stat_field "$s" get)
    step read_cold "$tool" same_bytes "$MNT/big.bin" "$WORK/source.bin"
    reset_stats
    step read_second "$tool" timed_rate "$P,read_second,$tool" "$SIZE_MIB" read_file "$MNT/big.bin"
    s=$(take_stats)
    R[$P,read_second_requests,$tool]=$(stat_field "$s" get)
    step read_second "$tool" same_bytes "$MNT/big.bin" "$WORK/source.bin"
    step readers4 "$tool" timed_rate "$P,readers4,$tool" "$SIZE_MIB" four_readers
    step readers4 "$tool" four_readers_same_bytes
    step iops "$tool" random_reads "$tool"
    note_rss "$tool"
    unmount_tool

    log "[$P] $tool: small files read back, ls -l"
    drop_caches
    mount_tool "$tool"
    reset_stats
    step cat "$tool" timed_rate "$P,cat,$tool" "$files" cat_small "$tool"
    s=$(take_stats)
    R[$P,cat_requests,$tool]=$(requests_of "$s" "$files")
    reset_stats
    step ls "$tool" timed_ls "$tool"
    s=$(take_stats)
    R[$P,ls_requests,$tool]=$(stat_field "$s" total)
    note_rss "$tool"
    unmount_tool

    # cp -r and rsync -a out each on a fresh mount, so neither reads what the other cached.
    local verb
    for verb in cp_out rsync_out; do
        log "[$P] $tool: $verb"
        drop_caches
        mount_tool "$tool"
        if [ "$verb" = cp_out ]; then
            step cp_out "$tool" timed_rate "$P,cp_out,$tool" "$files" copy_out "$tool" cp -r "$MNT/cp-$tool"
        else
            step rsync_out "$tool" timed_rate "$P,rsync_out,$tool" "$files" copy_out "$tool" rsync -a "$MNT/cp-$tool/"
        fi
        note_rss "$tool"
        unmount_tool
    done
}

# ls -l is timed in seconds, not as a rate.
timed_ls() {
    local t0 t1
    t0=$(now)
    list_long "$1" || return 1
    t1=$(now)
    R[$P,ls,$1]=$(elapsed "$t0" "$t1")
}

limit_get() {
    limit get big.bin --range-mib "$LIMIT_RANGE_MIB" 2>>"$WORK/limit.log" >/dev/null
}
limit_get_same_bytes() {
    limit get big.bin --range-mib "$LIMIT_RANGE_MIB" 2>>"$WORK/limit.log" | cmp -s - "$WORK/source.bin"
}

limit_four() {
    local i pids=() ok=0
    for i in 1 2 3 4; do
        limit get "reader-$i.bin" --range-mib "$LIMIT_RANGE_MIB" 2>>"$WORK/limit.log" >/dev/null &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || ok=1; done
    return "$ok"
}

LIST_FILES=$(((FILES + 1) / 2 * 2)) # each demo segment is a .bin and a .meta.json
# 8 MiB ranges, or smaller for small files so that 8 can still be in flight.
LIMIT_RANGE_MIB=$(((SIZE_MIB / 8) < 8 ? ((SIZE_MIB / 8) > 0 ? SIZE_MIB / 8 : 1) : 8))

for P in "${PROFILE_LIST[@]}"; do
    log "[$P] starting the dev server (seeding $LIST_FILES objects)"
    start_server "$P"
    log "[$P] limit: put and get of $SIZE_MIB MiB with no FUSE"
    cat "$WORK/source.bin" >/dev/null # every writer reads the source from the page cache
    timed_rate "$P,write,limit" "$SIZE_MIB" limit put big.bin "$WORK/source.bin" 2>>"$WORK/limit.log" ||
        { log "the limit put failed"; exit 1; }
    limit put rand.bin "$WORK/rand.bin" 2>>"$WORK/limit.log"
    for i in 1 2 3 4; do limit put "reader-$i.bin" "$WORK/quarter.bin" 2>>"$WORK/limit.log"; done
    drop_caches
    timed_rate "$P,read_cold,limit" "$SIZE_MIB" limit_get || { log "the limit get failed"; exit 1; }
    limit_get_same_bytes || { log "the limit get read different bytes"; exit 1; }
    timed_rate "$P,readers4,limit" "$SIZE_MIB" limit_four || log "the limit's 4 readers failed"
    for tool in "${TOOL_LIST[@]}"; do measure_tool "$tool"; done
    stop_pid "$SERVER_PID"
    rm -rf --one-file-system "$ROOT"
done
TOTAL_SECONDS=$((SECONDS - START))

# ---------------------------------------------------------------- report

# Each row: METRIC|LABEL|UNIT|hi or lo (which way is better).
ROWS=(
    "read_cold|sequential read, cold, $SIZE_MIB MiB (dd to /dev/null, then cmp off the clock)|MiB/s|hi"
    "read_second|second pass over it, same mount|MiB/s|hi"
    "readers4|4 readers of different files, $QUARTER_MIB MiB each, together|MiB/s|hi"
    "write|sequential write to durable (dd conv=fsync, until in the bucket)|MiB/s|hi"
    "iops|4 KiB random reads of a $RAND_MIB MiB file, one at a time (fio, ${FIO_SECONDS} s)|IOPS|hi"
    "create|$SMALL_FILES × $SMALL_KIB KiB files created with cp|files/s|hi"
    "rsync_in|the same files, rsync -a into the mount|files/s|hi"
    "cat|read back with cat, fresh mount|files/s|hi"
    "cp_out|copied out with cp -r, fresh mount|files/s|hi"
    "rsync_out|copied out with rsync -a, fresh mount|files/s|hi"
    "ls|ls -l of $LIST_FILES files, fresh mount|s|lo"
    "rss|peak RSS of the mount process (VmHWM, all steps)|MiB|lo"
)
# Rows without a ratio: what each figure cost or meant.
INFO_ROWS=(
    "durable_at_fsync|object in the bucket when fsync returns"
    "read_requests|GETs for the cold read"
    "read_second_requests|GETs for the second pass"
    "create_requests|requests per file created"
    "cat_requests|requests per file read back"
    "ls_requests|requests for ls -l"
)

# advantage A B DIR: how much better scribefs (A) is than B, above 1 meaning better.
advantage() {
    awk -v a="$1" -v b="$2" -v dir="$3" 'BEGIN {
        if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/ || a == 0 || b == 0) { print "-"; exit }
        printf "%.2f", (dir == "hi") ? a / b : b / a }'
}

report_profile() {
    local P=$1 peers=() tool row metric label unit dir line t title
    for tool in "${TOOL_LIST[@]}"; do [ "$tool" = scribefs ] || peers+=("$tool"); done
    if [ "$P" = raw ]; then
        title="raw: loopback, no delay"
    else
        title="S3-like: --latency-ms $LATENCY_MS --bandwidth-mbps $BANDWIDTH_MBPS (per connection)"
    fi
    echo "#### Profile $title"
    echo
    row="| workload | unit |"
    for tool in "${TOOL_LIST[@]}"; do row+=" $tool |"; done
    row+=" limit |"
    for tool in "${peers[@]+"${peers[@]}"}"; do row+=" vs $tool |"; done
    row+=" vs limit |"
    echo "$row"
    echo "|$(echo "${row#|}" | sed 's/[^|]*|/---|/g')"
    for entry in "${ROWS[@]}"; do
        IFS='|' read -r metric label unit dir <<<"$entry"
        line="| $label | $unit |"
        for t in "${TOOL_LIST[@]}"; do line+=" ${R[$P,$metric,$t]:--} |"; done
        line+=" ${R[$P,$metric,limit]:--} |"
        for t in "${peers[@]+"${peers[@]}"}"; do
            line+=" $(advantage "${R[$P,$metric,scribefs]:--}" "${R[$P,$metric,$t]:--}" "$dir") |"
        done
        line+=" $(advantage "${R[$P,$metric,scribefs]:--}" "${R[$P,$metric,limit]:--}" "$dir") |"
        echo "$line"
    done
    for entry in "${INFO_ROWS[@]}"; do
        IFS='|' read -r metric label <<<"$entry"
        line="| $label | |"
        for t in "${TOOL_LIST[@]}"; do line+=" ${R[$P,$metric,$t]:--} |"; done
        line+=" |"
        for t in "${peers[@]+"${peers[@]}"}"; do line+=" |"; done
        echo "$line |"
    done
    echo
}

report() {
    echo "### scribefs bench, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Command: \`scripts/bench.sh --size-mib $SIZE_MIB --files $FILES --small-files $SMALL_FILES" \
        "--fio-seconds $FIO_SECONDS --latency-ms $LATENCY_MS --bandwidth-mbps $BANDWIDTH_MBPS" \
        "--cache-size-mib $CACHE_MIB --profiles $PROFILES\` — $(nproc) cores," \
        "$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)," \
        "load average at the end $(cut -d' ' -f1-3 /proc/loadavg), run took ${TOTAL_SECONDS}s."
    echo
    echo "\"vs X\" is how many times better scribefs does than X (its rate / X's rate; for seconds" \
        "and MiB of memory, X's figure / scribefs's): above 1 means scribefs is ahead. \"limit\" is" \
        "scribefs's own S3 path with no FUSE (examples/bench_limit.rs: 8 MiB ranged GETs, 8 in" \
        "flight, written out in order; the mount's streaming multipart upload, 8 MiB parts, 8 in" \
        "flight). scribefs --cache-size-mib $CACHE_MIB; peers with their defaults."
    echo
    for P in "${PROFILE_LIST[@]}"; do report_profile "$P"; done
}

# chart FILE.png: per profile, every rate normalized to the best client of its row (ls -l as
# entries per second), so that workloads of different units share one axis.
chart() {
    local png=$1 P entry metric label unit dir t best v col plots=() n=0
    command -v gnuplot >/dev/null || { log "no gnuplot: no chart"; return 0; }
    for P in "${PROFILE_LIST[@]}"; do
        {
            printf '# workload'
            for t in "${TOOL_LIST[@]}"; do printf '\t%s' "$t"; done
            printf '\n'
            for entry in "${ROWS[@]}"; do
                IFS='|' read -r metric label unit dir <<<"$entry"
                [ "$metric" != rss ] || continue
                best=0
                for t in "${TOOL_LIST[@]}"; do
                    v=${R[$P,$metric,$t]:-}
                    [[ "$v" =~ ^[0-9.]+$ ]] || continue
                    [ "$dir" = lo ] && v=$(awk -v v="$v" 'BEGIN { print (v > 0) ? 1 / v : 0 }')
                    best=$(awk -v a="$best" -v b="$v" 'BEGIN { print (b > a) ? b : a }')
                done
                printf '%s' "$metric"
                for t in "${TOOL_LIST[@]}"; do
                    v=${R[$P,$metric,$t]:-}
                    if [[ "$v" =~ ^[0-9.]+$ ]] && [ "$best" != 0 ]; then
                        [ "$dir" = lo ] && v=$(awk -v v="$v" 'BEGIN { print (v > 0) ? 1 / v : 0 }')
                        printf '\t%s' "$(awk -v v="$v" -v b="$best" 'BEGIN { printf "%.3f", v / b }')"
                    else
                        printf '\t0'
                    fi
                done
                printf '\n'
            done
        } >"$WORK/chart-$P.dat"
        n=$((n + 1))
    done
    {
        echo "set terminal pngcairo noenhanced size 1400,$((420 * n)) font ',10'"
        echo "set output '$png'"
        echo "set multiplot layout $n,1"
        echo "set style data histogram; set style histogram clustered gap 1"
        echo "set style fill solid 0.85 border -1; set boxwidth 0.9"
        echo "set yrange [0:1.15]; set grid ytics; set key top right horizontal"
        echo "set xtics nomirror rotate by -25 left; set ylabel 'relative to the best client (1 = best)'"
        for P in "${PROFILE_LIST[@]}"; do
            if [ "$P" = raw ]; then echo "set title 'raw profile (loopback)'"; else
                echo "set title 'S3-like profile ($LATENCY_MS ms, $BANDWIDTH_MBPS Mbit/s per connection)'"; fi
            plots=()
            col=2
            for t in "${TOOL_LIST[@]}"; do
                plots+=("'$WORK/chart-$P.dat' using $col:xtic(1) title '$t'")
                col=$((col + 1))
            done
            (IFS=,; echo "plot ${plots[*]}")
        done
        echo "unset multiplot"
    } >"$WORK/chart.gp"
    gnuplot "$WORK/chart.gp" && log "chart written to $png"
}

report | tee ${OUT:+"$OUT"}
if [ -z "$CHART" ]; then
    if [ -n "$OUT" ]; then CHART=${OUT%.md}.png; else CHART=target/bench.png; fi
fi
chart "$CHART"
