#!/usr/bin/env bash
# Benchmarks a scribefs mount against mount-s3, s3fs and rclone mount in up to three profiles in
# one run: raw (loopback, no delay), S3-like (dev server --latency-ms 20 --bandwidth-mbps 800:
# 20 ms before each response, 100 MB/s per connection) and proxy (the same link emulated by a TCP
# proxy in front of s3s-fs, another S3 implementation: the check of the S3-like emulation). Every
# client meets the same server per profile. Read workloads also run as a plain user (fusermount3).
# Beside them, the limit: scribefs's own S3 path with no FUSE (examples/bench_limit.rs).
# Prints one Markdown table per profile and draws a PNG chart; docs/BENCHMARKS.md explains them.
# With --runs N (3 where the VM is noisy) every figure is the median of N runs, shown with its
# min-max spread. It changes no setting of the machine: no /sys or /proc/sys write (dropping the
# page cache changes no setting), and /dev/fuse keeps its mode: when the plain user cannot open
# it, the plain-user columns are left out and the report says why. With --out FILE.md, each
# run's raw figures are written to FILE.runN.tsv as soon as that run ends.
#
#   scripts/bench.sh [--quick] [--profiles raw,s3,proxy] [--tools scribefs,mount-s3,s3fs,rclone]
#                    [--plain-tools LIST|none] [--plain-user NAME]
#                    [--size-mib N] [--files N] [--small-files N] [--fio-seconds N] [--rand-mib N]
#                    [--writers N] [--writer-mib N]
#                    [--latency-ms MS] [--bandwidth-mbps MBPS] [--cache-size-mib N] [--runs N]
#                    [--out FILE] [--chart FILE.png (default: FILE's name with .png, or target/bench.png)]
#
# mount-s3 is not packaged: MOUNT_S3=/path/to/mount-s3 includes it. Needs root. Not run in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

usage() {
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

SIZE_MIB='' FILES='' SMALL_FILES='' FIO_SECONDS='' RAND_MIB='' WRITERS='' WRITER_MIB='' LATENCY_MS=20 BANDWIDTH_MBPS=800
CACHE_MIB=256 PROFILES='' TOOLS='' QUICK=0 OUT='' CHART='' PLAIN_TOOLS='' PLAIN_USER=nobody RUNS=1
while [ $# -gt 0 ]; do
    case "$1" in
    --size-mib) SIZE_MIB=$2; shift 2 ;;
    --files) FILES=$2; shift 2 ;;
    --small-files) SMALL_FILES=$2; shift 2 ;;
    --fio-seconds) FIO_SECONDS=$2; shift 2 ;;
    --rand-mib) RAND_MIB=$2; shift 2 ;;
    --writers) WRITERS=$2; shift 2 ;;
    --writer-mib) WRITER_MIB=$2; shift 2 ;;
    --latency-ms) LATENCY_MS=$2; shift 2 ;;
    --bandwidth-mbps) BANDWIDTH_MBPS=$2; shift 2 ;;
    --cache-size-mib) CACHE_MIB=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --profiles) PROFILES=$2; shift 2 ;;
    --tools) TOOLS=$2; shift 2 ;;
    --plain-tools) PLAIN_TOOLS=$2; shift 2 ;;
    --plain-user) PLAIN_USER=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --out) OUT=$2; shift 2 ;;
    --chart) CHART=$2; shift 2 ;;
    -h | --help) usage 0 ;;
    *) echo "bench: unknown option $1" >&2; usage 2 ;;
    esac
done
# --quick only shrinks what was not given explicitly.
if [ "$QUICK" = 1 ]; then
    PROFILES=${PROFILES:-raw,s3}
    SIZE_MIB=${SIZE_MIB:-16} FILES=${FILES:-200} SMALL_FILES=${SMALL_FILES:-10} FIO_SECONDS=${FIO_SECONDS:-2} RAND_MIB=${RAND_MIB:-128}
    WRITERS=${WRITERS:-8} WRITER_MIB=${WRITER_MIB:-8}
else
    PROFILES=${PROFILES:-raw,s3,proxy}
    SIZE_MIB=${SIZE_MIB:-1024} FILES=${FILES:-10000} SMALL_FILES=${SMALL_FILES:-1000} FIO_SECONDS=${FIO_SECONDS:-20} RAND_MIB=${RAND_MIB:-2048}
    WRITERS=${WRITERS:-32} WRITER_MIB=${WRITER_MIB:-64}
fi
for number in "$SIZE_MIB" "$RAND_MIB" "$FILES" "$SMALL_FILES" "$WRITERS" "$WRITER_MIB" "$FIO_SECONDS" "$LATENCY_MS" "$BANDWIDTH_MBPS" "$CACHE_MIB" "$RUNS"; do
    case "$number" in
    '' | *[!0-9]*) echo "bench: $number is not a whole number" >&2; exit 2 ;;
    esac
done
[ "$RUNS" -ge 1 ] || { echo "bench: --runs must be at least 1" >&2; exit 2; }
if [ $((SIZE_MIB % 4)) -ne 0 ] || [ "$SIZE_MIB" -lt 4 ]; then
    echo "bench: --size-mib must be a multiple of 4 (the 4 readers read a quarter each)" >&2
    exit 2
fi
IFS=, read -r -a PROFILE_LIST <<<"$PROFILES"
for profile in "${PROFILE_LIST[@]}"; do
    case "$profile" in
    raw | s3 | proxy) ;;
    *) echo "bench: unknown profile $profile (raw, s3, proxy)" >&2; exit 2 ;;
    esac
done
if [ "$(id -u)" -ne 0 ]; then
    echo "bench: run as root (it mounts file systems and drops the page cache)" >&2
    exit 2
fi
PLAIN_UID=$(id -u "$PLAIN_USER" 2>/dev/null) && PLAIN_GID=$(id -g "$PLAIN_USER") ||
    { echo "bench: --plain-user $PLAIN_USER: no such user" >&2; exit 2; }
[ "$PLAIN_UID" -ne 0 ] || { echo "bench: --plain-user must not be root" >&2; exit 2; }

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

# Columns of the tables, one measured client each: TOOL as root (every workload); TOOL~plain,
# TOOL run by --plain-user through fusermount3 (the read workloads: a plain user's mount keeps
# the kernel's 128 KiB FUSE readahead); mount-s3~cache, mount-s3 with its disk cache (--cache)
# for the large reads, the fair peer of our block cache on the second pass.
build_columns() {
    local tool plain=()
    if [ "$PLAIN_TOOLS" = none ]; then
        plain=()
    elif [ -n "$PLAIN_TOOLS" ]; then
        IFS=, read -r -a plain <<<"$PLAIN_TOOLS"
    else
        for tool in "${TOOL_LIST[@]}"; do
            case "$tool" in scribefs | mount-s3) plain+=("$tool") ;; esac
        done
    fi
    COLUMNS=("${TOOL_LIST[@]}")
    for tool in "${plain[@]+"${plain[@]}"}"; do
        [[ " ${TOOL_LIST[*]} " == *" $tool "* ]] ||
            { echo "bench: --plain-tools $tool is not among the tools measured" >&2; exit 2; }
        COLUMNS+=("$tool~plain")
    done
    [[ " ${TOOL_LIST[*]} " != *" mount-s3 "* ]] || COLUMNS+=(mount-s3~cache)
}
# The columns measured in profile P. The proxy profile checks the emulation with scribefs as
# root (and the limit): mount-s3 1.24 refuses s3s-fs's listings (no ETag in ListObjectsV2), and
# the other peers are checked by the same link on the S3-like profile.
profile_columns() {
    if [ "$1" = proxy ]; then PCOLS=(scribefs); else PCOLS=("${COLUMNS[@]}"); fi
}

column_tool() { echo "${1%%~*}"; }
column_variant() { case "$1" in *~*) echo "${1#*~}" ;; *) echo root ;; esac; }
column_label() {
    case "$1" in
    *~plain) echo "${1%%~*} as $PLAIN_USER" ;;
    *~cache) echo "${1%%~*} --cache" ;;
    *) echo "$1" ;;
    esac
}

ensure_rust
ensure_packages
ensure_bench_tools
build_columns
log "columns: ${COLUMNS[*]}"
# A plain user's FUSE mount opens /dev/fuse itself, then lets fusermount3 mount it. Debian's udev
# rule makes the device 0666; a container without udev may leave it 0600, root only. Its mode is
# the machine's to set, not the benchmark's: without access the plain-user columns are dropped.
PLAIN_SKIPPED=''
if [[ "${COLUMNS[*]}" == *~plain* ]] &&
    ! setpriv --reuid="$PLAIN_UID" --regid="$PLAIN_GID" --clear-groups -- sh -c ': <>/dev/fuse' 2>/dev/null; then
    PLAIN_SKIPPED="/dev/fuse is $(stat -c '%a %U:%G' /dev/fuse), so $PLAIN_USER cannot open it: the plain-user columns were not measured (the benchmark leaves the device's mode alone; udev's rule makes it 0666)"
    log "$PLAIN_SKIPPED"
    kept=()
    for col in "${COLUMNS[@]}"; do [[ "$col" == *~plain ]] || kept+=("$col"); done
    COLUMNS=("${kept[@]}")
fi
EXAMPLES=(--example bench_limit)
[[ " ${PROFILE_LIST[*]} " != *" proxy "* ]] || EXAMPLES+=(--example bench_fs_server)
log "building scribefs and ${EXAMPLES[*]} (release)..."
cargo build --release --quiet --features devserver --bins "${EXAMPLES[@]}"
BIN=$PWD/target/release
LIMIT=$BIN/examples/bench_limit

# ---------------------------------------------------------------- processes and cleanup

WORK=$(mktemp -d /tmp/scribefs-bench.XXXXXX)
PIDS=()
MOUNTS=()
# The plain user reaches its mount points and the reference files through WORK, and keeps its
# caches, logs and copies in a folder of its own.
chmod 755 "$WORK"
PLAIN_HOME=$WORK/plain
mkdir -p "$PLAIN_HOME"
chown "$PLAIN_UID:$PLAIN_GID" "$PLAIN_HOME"
AS=root # who runs the mount and the measured commands: root or plain
# A command prefixed with AS_USER runs as AS: an array, not a function, so that a command put
# in the background is itself the child whose pid $! names.
as_user() {
    if [ "$AS" = plain ]; then
        AS_USER=(setpriv --reuid="$PLAIN_UID" --regid="$PLAIN_GID" --clear-groups -- env HOME="$PLAIN_HOME")
    else
        AS_USER=(env)
    fi
}
run_as() { "${AS_USER[@]}" "$@"; }
become() { AS=$1; as_user; }
become root
# A folder the current user may write to.
own_dir() { if [ "$AS" = plain ]; then echo "$PLAIN_HOME"; else echo "$WORK"; fi; }

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

# started NAME LOGFILE: waits for the server just started in the background ($!) to print
# "ready", and tracks its pid for cleanup.
started() {
    local name=$1 logfile=$2 pid=$!
    PIDS+=("$pid")
    SERVER_PIDS+=("$pid")
    for _ in $(seq 1 1200); do
        grep -q ready "$logfile" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "bench: $name did not start:" >&2
    cat "$logfile" >&2
    exit 1
}

# start_server PROFILE: the server of the profile, seeded with the listing objects; sets ADDR,
# ROOT and SERVER_PIDS.
start_server() {
    local profile=$1 port emulation=()
    port=$(free_port)
    ROOT=$WORK/$profile-root
    ADDR=127.0.0.1:$port
    SERVER_PIDS=()
    mkdir -p "$ROOT"
    if [ "$profile" = proxy ]; then
        start_fs_server_behind_proxy
        return
    fi
    [ "$profile" = raw ] || emulation=(--latency-ms "$LATENCY_MS" --bandwidth-mbps "$BANDWIDTH_MBPS")
    "$BIN/scribefs-devserver" --root "$ROOT" --listen "$ADDR" \
        --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" --bucket "$BUCKET" \
        --seed-segments "$(((FILES + 1) / 2))" "${emulation[@]}" >"$WORK/$profile-server.log" 2>&1 &
    started "dev server $profile" "$WORK/$profile-server.log"
}

# The proxy profile: s3s-fs (objects are files under ROOT/BUCKET/KEY) behind a TCP proxy that
# emulates the S3-like link (`scribefs-devserver proxy`), so the dev server's own emulation can
# be checked against another S3 implementation and another way of slowing it down.
start_fs_server_behind_proxy() {
    local fs_addr
    fs_addr=127.0.0.1:$(free_port)
    FS_ADDR=$fs_addr
    # The listing objects are written as files: s3s-fs serves whatever its root holds.
    python3 - "$ROOT/$BUCKET/segments" "$(((FILES + 1) / 2))" <<'PY'
import os, sys
folder, count = sys.argv[1], int(sys.argv[2])
os.makedirs(folder, exist_ok=True)
for i in range(1, count + 1):
    with open(os.path.join(folder, "segment-%016x.bin" % i), "wb") as f:
        f.write(os.urandom(4096))
    with open(os.path.join(folder, "segment-%016x.meta.json" % i), "w") as f:
        f.write('{"id": %d, "size": 4096}\n' % i)
PY
    "$BIN/examples/bench_fs_server" --root "$ROOT" --listen "$fs_addr" --bucket "$BUCKET" \
        --access-key "$ACCESS_KEY" --secret-key "$SECRET_KEY" >"$WORK/proxy-fs-server.log" 2>&1 &
    started "s3s-fs server" "$WORK/proxy-fs-server.log"
    "$BIN/scribefs-devserver" proxy --listen "$ADDR" --upstream "$fs_addr" \
        --latency-ms "$LATENCY_MS" --bandwidth-mbps "$BANDWIDTH_MBPS" >"$WORK/proxy.log" 2>&1 &
    started "latency proxy" "$WORK/proxy.log"
}

stop_server() {
    local pid
    for pid in "${SERVER_PIDS[@]}"; do stop_pid "$pid"; done
}

# take_stats: the server's request counts since the last reset as "field=value ..." words, then
# zeroes them; nothing in the proxy profile (s3s-fs keeps no counts).
reset_stats() {
    [ "$P" = proxy ] || "$BIN/scribefs-devserver" stats --listen "$ADDR" --reset >/dev/null
}
take_stats() {
    [ "$P" != proxy ] || return 0
    "$BIN/scribefs-devserver" stats --listen "$ADDR" --reset |
        python3 -c 'import json, sys
d = json.load(sys.stdin)
print(" ".join(f"{k}={v}" for k, v in d.items()), "total=%d" % sum(d.values()))'
}
stat_field() { # stat_field "STATS" FIELD
    local word
    [ -n "$1" ] || { echo -; return; }
    for word in $1; do
        [ "${word%%=*}" = "$2" ] && { echo "${word#*=}"; return; }
    done
    echo 0
}

# The dev server writes each object through to ROOT/BUCKET/<hex of key>.obj (a JSON header line
# with the size, then the bytes) by rename, before it answers; s3s-fs renames each object into
# ROOT/BUCKET/KEY. So a file with the right size there means the object is in the bucket, and
# checking costs no S3 request.
hex() { printf '%s' "$1" | od -An -tx1 -v | tr -d ' \n'; }
object_present() { # object_present KEY SIZE
    local file
    if [ "$P" = proxy ]; then
        [ "$(stat -c %s "$ROOT/$BUCKET/$1" 2>/dev/null)" = "$2" ]
        return
    fi
    file=$(printf '%s/%s/%s.obj' "$ROOT" "$BUCKET" "$(hex "$1")")
    [ -f "$file" ] && head -n 1 "$file" | grep -q "\"size\":$2[,}]"
}
count_objects() { # count_objects DIR/NAME_PREFIX
    if [ "$P" = proxy ]; then
        find "$ROOT/$BUCKET/${1%/*}" -maxdepth 1 -type f -name "${1##*/}*" 2>/dev/null | wc -l
    else
        find "$ROOT/$BUCKET" -maxdepth 1 -name "$(hex "$1")*.obj" | wc -l
    fi
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
    local deadline=$((SECONDS + $3)) count last=-1 since=$SECONDS
    while count=$(count_objects "$1") && [ "$count" -lt "$2" ]; do
        if [ "$count" != "$last" ]; then last=$count since=$SECONDS; fi
        if [ "$SECONDS" -ge "$deadline" ] || [ $((SECONDS - since)) -ge "$STALL_SECONDS" ]; then
            log "only $count of $2 objects under $1 reached the bucket"
            return 1
        fi
        sleep 0.05
    done
}

# A VM's memory may be backed by its host only once the guest first touches it (firecracker,
# virtio-balloon free page reporting, DAMON giving cold pages back). Measured here: touching 18
# GiB took 52 s of system time, and a client that grew the page cache into such memory ran 4
# readers at 330-610 MiB/s with 2.3-2.8 s of CPU in the kernel's copy into the page cache,
# against 1,360 MiB/s and 0.6 s once the memory had been touched. So before each profile every
# available page is touched once (90% of MemAvailable), and whichever client runs first does not
# pay for the rest.
# Touching alone does not last where the guest reports free memory to its host (virtio-balloon
# free page reporting): every 2 MiB block freed (drop_caches, an unmount, a server deleting an
# object) goes back and costs a host fault when touched again (4 GiB touched, freed and touched
# again: 4.4-5.7 s of system time, 2.6 s with reporting held). The benchmark does not change that
# setting (it is the machine's), so such a VM is noisy: run it with --runs 3 and read the spread.

prefault_memory() {
    local bytes
    bytes=$(awk '/^MemAvailable:/ { printf "%.0f", $2 * 1024 * 0.9 }' /proc/meminfo)
    log "touching $((bytes >> 30)) GiB of available memory once (a VM may back it only on first touch)"
    python3 -c 'import sys
n = int(sys.argv[1])
b = bytearray(n)
b[::4096] = b"\x01" * len(range(0, n, 4096))' "$bytes"
}

# Only the client side goes cold: the dev server keeps its objects in memory, so in the proxy
# profile s3s-fs's files are read back into the page cache, or every cold read would time the disk.
drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || log "cannot drop the page cache: reads may be warm"
    [ "${P:-}" != proxy ] || [ ! -d "$ROOT/$BUCKET" ] || find "$ROOT/$BUCKET" -type f -exec cat {} + >/dev/null
}

limit() { # limit ARGS...: the no-FUSE tool on the current server (LIMIT_ADDR: another address)
    env S3_ENDPOINT="http://${LIMIT_ADDR:-$ADDR}" S3_BUCKET=$BUCKET S3_ACCESS_KEY_ID=$ACCESS_KEY \
        S3_SECRET_ACCESS_KEY=$SECRET_KEY timeout "$TRANSFER_TIMEOUT" "$LIMIT" "$@"
}

# ---------------------------------------------------------------- mounts

printf '%s:%s\n' "$ACCESS_KEY" "$SECRET_KEY" >"$WORK/s3fs.passwd"
chmod 600 "$WORK/s3fs.passwd"
unset S3_ENDPOINT S3_BUCKET AWS_ENDPOINT_URL
MOUNT_SERIAL=0

# mount_tool COLUMN: mounts the bucket at a new directory with the column's tool, as its user;
# sets MNT and MOUNT_PID. Each tool runs in the foreground as a child of this script, so its pid
# (and so its memory) is known exactly.
mount_tool() {
    local tool variant home
    tool=$(column_tool "$1")
    variant=$(column_variant "$1")
    home=$(own_dir)
    MOUNT_SERIAL=$((MOUNT_SERIAL + 1))
    MNT=$WORK/mnt-$MOUNT_SERIAL
    local logfile=$WORK/$tool-$MOUNT_SERIAL.log
    mkdir -p "$MNT"
    # fusermount3 lets a plain user mount only on a directory it may write to.
    [ "$AS" = root ] || chown "$PLAIN_UID:$PLAIN_GID" "$MNT"
    case "$tool" in
    scribefs)
        # Its own cache folder per run: the metadata cache starts cold, whatever ran before.
        "${AS_USER[@]}" env S3_PATH_STYLE=true S3_REGION=us-east-1 S3_ACCESS_KEY_ID=$ACCESS_KEY \
            S3_SECRET_ACCESS_KEY=$SECRET_KEY XDG_CACHE_HOME="$home/cache-$MOUNT_SERIAL" \
            "$BIN/scribefs" --endpoint-url "http://$ADDR" mount "$BUCKET" "$MNT" --foreground \
            --cache-size-mib "$CACHE_MIB" >"$logfile" 2>&1 &
        ;;
    mount-s3)
        # Defaults otherwise; delete and overwrite allowed so that rsync and rm can work.
        local cache=()
        if [ "$variant" = cache ]; then
            cache=(--cache "$home/mount-s3-cache-$MOUNT_SERIAL")
            "${AS_USER[@]}" mkdir -p "${cache[1]}" # mount-s3 makes a folder inside, not the folder
        fi
        "${AS_USER[@]}" env AWS_ACCESS_KEY_ID=$ACCESS_KEY AWS_SECRET_ACCESS_KEY=$SECRET_KEY AWS_REGION=us-east-1 \
            "$MOUNT_S3" "$BUCKET" "$MNT" --foreground --endpoint-url "http://$ADDR" \
            --force-path-style --region us-east-1 --allow-delete --allow-overwrite "${cache[@]}" \
            --log-directory "$home/mount-s3-logs-$MOUNT_SERIAL" >"$logfile" 2>&1 &
        ;;
    s3fs)
        # s3fs refuses a password file that others may read, or that its user cannot.
        install -m 600 -o "$("${AS_USER[@]}" id -u)" "$WORK/s3fs.passwd" "$home/s3fs-$MOUNT_SERIAL.passwd"
        "${AS_USER[@]}" s3fs "$BUCKET" "$MNT" -f -o url="http://$ADDR" -o use_path_request_style \
            -o passwd_file="$home/s3fs-$MOUNT_SERIAL.passwd" -o endpoint=us-east-1 >"$logfile" 2>&1 &
        ;;
    rclone)
        # rclone mount refuses writes unless the VFS caches them; write-back 0s uploads right
        # after close instead of 5 s later. It refuses to start with AWS_CA_BUNDLE set.
        "${AS_USER[@]}" env -u AWS_CA_BUNDLE RCLONE_CONFIG_BENCH_TYPE=s3 RCLONE_CONFIG_BENCH_PROVIDER=Other \
            RCLONE_CONFIG_BENCH_ACCESS_KEY_ID="$ACCESS_KEY" \
            RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY="$SECRET_KEY" \
            RCLONE_CONFIG_BENCH_ENDPOINT="http://$ADDR" RCLONE_CONFIG_BENCH_REGION=us-east-1 \
            RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE=true \
            rclone mount "bench:$BUCKET" "$MNT" --vfs-cache-mode writes --vfs-write-back 0s \
            --cache-dir "$home/rclone-cache-$MOUNT_SERIAL" --config /dev/null >"$logfile" 2>&1 &
        ;;
    esac
    MOUNT_PID=$!
    PIDS+=("$MOUNT_PID")
    MOUNTS+=("$MNT")
    for _ in $(seq 1 300); do
        # s3fs is a mount point before it has checked the bucket: wait until it serves too. A
        # plain user's mount refuses root (no allow_root): its user checks.
        if run_as mountpoint -q "$MNT" && run_as timeout 60 ls "$MNT" >/dev/null 2>&1; then return 0; fi
        kill -0 "$MOUNT_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "bench: $1 did not mount:" >&2
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

# CPU seconds (user + system) the mount process has spent so far: on loopback, where the network
# is free, CPU per byte is what tells the clients apart.
TICKS=$(getconf CLK_TCK)
cpu_seconds() { awk -v t="$TICKS" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$MOUNT_PID/stat" 2>/dev/null || echo 0; }
# cpu_of METRIC COLUMN CMD...: runs CMD (a step) and records the mount's CPU seconds it took.
cpu_of() {
    local metric=$1 col=$2 before
    shift 2
    before=$(cpu_seconds)
    "$@"
    R[$P,$metric,$col]=$(awk -v a="$before" -v b="$(cpu_seconds)" 'BEGIN { printf "%.2f", b - a }')
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
head -c $((WRITER_MIB << 20)) /dev/urandom >"$WORK/writer.bin"
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
    run_as timeout "$TRANSFER_TIMEOUT" dd if="$1" of=/dev/null bs=1M status=none
}
same_bytes() { # same_bytes FILE REFERENCE
    run_as timeout "$TRANSFER_TIMEOUT" cmp -s "$1" "$2" || { log "$1: read back different bytes"; return 1; }
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

# WRITERS programs at once, each dd conv=fsync of its own WRITER_MIB MiB file into one mount
# (backup tools' parallel transfers, log daemons), done when all are in the bucket. Only in the
# S3-like profile; scripts/bench-writers.sh runs it alone.
many_writers() { # many_writers TOOL
    local i pids=() ok=0
    for i in $(seq 1 "$WRITERS"); do
        timeout "$TRANSFER_TIMEOUT" dd if="$WORK/writer.bin" of="$MNT/many-$1-$i.bin" bs=1M \
            conv=fsync status=none &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || ok=1; done
    [ "$ok" = 0 ] || { log "$1: a writer failed"; return 1; }
    for i in $(seq 1 "$WRITERS"); do
        wait_object "many-$1-$i.bin" $((WRITER_MIB << 20)) "$TRANSFER_TIMEOUT" || return 1
    done
}
timed_seconds() { # timed_seconds VAR CMD...: runs CMD under the clock, stores its seconds in R[VAR]
    local var=$1 t0
    shift
    t0=$(now)
    "$@" || return 1
    R[$var]=$(elapsed "$t0" "$(now)")
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

random_reads() { # random_reads COLUMN: fio 4 KiB random reads, one at a time, on a file not read before
    run_as timeout $((FIO_SECONDS + 120)) fio --name=rand --filename="$MNT/rand.bin" --readonly \
        --rw=randread --bs=4k --size=$((RAND_MIB * 1024 * 1024)) --ioengine=psync --iodepth=1 --numjobs=1 \
        --time_based --runtime="$FIO_SECONDS" --output-format=json >"$WORK/fio-$P-$1.json" || return 1
    R[$P,iops,$1]=$(python3 -c 'import json, sys; print("%.1f" % json.load(open(sys.argv[1]))["jobs"][0]["read"]["iops"])' "$WORK/fio-$P-$1.json")
}

cat_small() { # cat_small TOOL: the files created by cp, read back whole
    local bytes
    # The shell that expands the names must run as the mount's user too.
    bytes=$(run_as timeout "$SMALL_TIMEOUT" sh -c 'cat "$1"/*.dat' sh "$MNT/cp-$1" | wc -c) || return 1
    [ "$bytes" -eq $((SMALL_FILES * SMALL_KIB * 1024)) ] || { log "$1: cat read $bytes bytes"; return 1; }
}

copy_out() { # copy_out TOOL CMD...: copies a directory of the mount out, checks the file count
    local tool=$1 dest
    dest=$(own_dir)/out
    shift
    rm -rf "$dest"
    run_as timeout "$SMALL_TIMEOUT" "$@" "$dest" || return 1
    [ "$(find "$dest" -type f | wc -l)" -eq "$SMALL_FILES" ] || { log "$tool: copied out the wrong number of files"; return 1; }
    rm -rf "$dest"
}

list_long() { # list_long TOOL
    run_as timeout "$LISTING_TIMEOUT" ls -l "$MNT/segments" >"$WORK/ls.txt" || return 1
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
    [ -n "$1" ] || { echo -; return; }
    awk -v n="$(stat_field "$1" total)" -v per="$2" 'BEGIN { printf "%.1f", n / per }'
}

# measure_writes TOOL: the write workloads, as root, on one mount.
measure_writes() {
    local tool=$1 files=$SMALL_FILES s i
    log "[$P] $tool: writes"
    become root
    mount_tool "$tool"
    cpu_of write_cpu "$tool" step write "$tool" timed_rate "$P,write,$tool" "$SIZE_MIB" write_durable "$tool"
    reset_stats
    step create "$tool" timed_rate "$P,create,$tool" "$files" copy_small_in "$tool"
    s=$(take_stats)
    R[$P,create_requests,$tool]=$(requests_of "$s" "$files")
    step rsync_in "$tool" timed_rate "$P,rsync_in,$tool" "$files" rsync_small_in "$tool"
    note_rss "$tool"
    unmount_tool
    limit rm "w-$tool.bin" 2>>"$WORK/limit.log" || true # the dev server keeps objects in memory
    [ "$P" = s3 ] || return 0
    # On a mount of its own, so that its peak RSS is this workload's alone (not in the rss row).
    mount_tool "$tool"
    cat "$WORK/writer.bin" >/dev/null # every writer reads the source from the page cache
    step writers "$tool" timed_seconds "$P,writers,$tool" many_writers "$tool"
    R[$P,writers_rss,$tool]=$(awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$MOUNT_PID/status")
    unmount_tool
    for i in $(seq 1 "$WRITERS"); do limit rm "many-$tool-$i.bin" 2>>"$WORK/limit.log" || true; done
}

# measure_reads COLUMN: the read workloads, as the column's user, each group on a fresh mount;
# the small files read are the ones the column's tool wrote. mount-s3~cache runs the large
# reads only: its disk cache is there for the second pass.
measure_reads() {
    local col=$1 tool files=$SMALL_FILES s verb
    tool=$(column_tool "$col")
    if [ "$(column_variant "$col")" = plain ]; then become plain; else become root; fi

    log "[$P] $col: large reads"
    drop_caches
    mount_tool "$col"
    reset_stats
    cpu_of read_cold_cpu "$col" step read_cold "$col" timed_rate "$P,read_cold,$col" "$SIZE_MIB" read_file "$MNT/big.bin"
    s=$(take_stats)
    R[$P,read_requests,$col]=$(stat_field "$s" get)
    step read_cold "$col" same_bytes "$MNT/big.bin" "$WORK/source.bin"
    reset_stats
    step read_second "$col" timed_rate "$P,read_second,$col" "$SIZE_MIB" read_file "$MNT/big.bin"
    s=$(take_stats)
    R[$P,read_second_requests,$col]=$(stat_field "$s" get)
    step read_second "$col" same_bytes "$MNT/big.bin" "$WORK/source.bin"
    step readers4 "$col" timed_rate "$P,readers4,$col" "$SIZE_MIB" four_readers
    step readers4 "$col" four_readers_same_bytes
    step iops "$col" random_reads "$col"
    note_rss "$col"
    unmount_tool
    if [ "$(column_variant "$col")" = cache ]; then become root; return 0; fi

    log "[$P] $col: small files read back, ls -l"
    drop_caches
    mount_tool "$col"
    reset_stats
    step cat "$col" timed_rate "$P,cat,$col" "$files" cat_small "$tool"
    s=$(take_stats)
    R[$P,cat_requests,$col]=$(requests_of "$s" "$files")
    reset_stats
    step ls "$col" timed_ls "$col"
    s=$(take_stats)
    R[$P,ls_requests,$col]=$(stat_field "$s" total)
    note_rss "$col"
    unmount_tool

    # cp -r and rsync -a out each on a fresh mount, so neither reads what the other cached.
    for verb in cp_out rsync_out; do
        log "[$P] $col: $verb"
        drop_caches
        mount_tool "$col"
        if [ "$verb" = cp_out ]; then
            step cp_out "$col" timed_rate "$P,cp_out,$col" "$files" copy_out "$col" cp -r "$MNT/cp-$tool"
        else
            step rsync_out "$col" timed_rate "$P,rsync_out,$col" "$files" copy_out "$col" rsync -a "$MNT/cp-$tool/"
        fi
        note_rss "$col"
        unmount_tool
    done
    become root
}

# ls -l is timed in seconds, not as a rate.
timed_ls() {
    local t0 t1
    t0=$(now)
    list_long "$1" || return 1
    t1=$(now)
    R[$P,ls,$1]=$(elapsed "$t0" "$t1")
}

# What a cold ls -l costs with no FUSE: every listing page, then a HEAD per object, 128 at once
# (the mount's metadata fetch).
timed_limit_ls() { # timed_limit_ls R_KEY
    local t0 t1
    t0=$(now)
    limit ls segments/ --parallel 128 2>>"$WORK/limit.log" || return 1
    t1=$(now)
    R[$1]=$(elapsed "$t0" "$t1")
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

# R_RUNS[KEY] = the values of R[KEY] in each run, space-separated, in run order.
declare -A R_RUNS
for RUN in $(seq 1 "$RUNS"); do
[ "$RUNS" -eq 1 ] || log "run $RUN of $RUNS"
R=()
for P in "${PROFILE_LIST[@]}"; do
    drop_caches
    prefault_memory
    log "[$P] starting the server (seeding $LIST_FILES objects)"
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
    timed_limit_ls "$P,ls,limit" || log "the limit's listing failed"
    if [ "$P" = proxy ]; then
        # What s3s-fs serves with no link in front: where this is below the S3-like figure, the
        # server, not the emulation, sets the proxy profile's figure.
        log "[$P] the limit straight from s3s-fs, no proxy"
        LIMIT_ADDR=$FS_ADDR timed_rate "$P,read_cold,server" "$SIZE_MIB" limit_get || log "the direct get failed"
        LIMIT_ADDR=$FS_ADDR timed_rate "$P,readers4,server" "$SIZE_MIB" limit_four || log "the direct 4 readers failed"
        LIMIT_ADDR=$FS_ADDR timed_rate "$P,write,server" "$SIZE_MIB" limit put direct.bin "$WORK/source.bin" \
            2>>"$WORK/limit.log" || log "the direct put failed"
        LIMIT_ADDR=$FS_ADDR limit rm direct.bin 2>>"$WORK/limit.log" || true
        LIMIT_ADDR=$FS_ADDR timed_limit_ls "$P,ls,server" || log "the direct listing failed"
    fi
    profile_columns "$P"
    for col in "${PCOLS[@]}"; do
        [ "$(column_variant "$col")" = root ] || continue
        measure_writes "$col"
        measure_reads "$col"
    done
    for col in "${PCOLS[@]}"; do
        [ "$(column_variant "$col")" = root ] || measure_reads "$col"
    done
    stop_server
    rm -rf --one-file-system "$ROOT"
done
for key in "${!R[@]}"; do R_RUNS[$key]+="${R[$key]} "; done
# Each run's raw figures go to a file as soon as the run ends, so a long run that is stopped
# (or a machine that goes away) still leaves the runs it finished.
if [ -n "$OUT" ]; then
    for key in "${!R[@]}"; do printf '%s\t%s\n' "$key" "${R[$key]}"; done | sort \
        >"${OUT%.md}.run$RUN.tsv"
    log "run $RUN's figures: ${OUT%.md}.run$RUN.tsv"
fi
done
TOTAL_SECONDS=$((SECONDS - START))

# Each figure of several runs: R holds its median (what the ratios use), SPREAD its min-max. A
# value that is no number in some run (failed, yes/no) is shown as each run gave it.
declare -A SPREAD
summarize_runs() {
    local key values median spread
    for key in "${!R_RUNS[@]}"; do
        values=${R_RUNS[$key]% }
        if [[ "$values" =~ ^[0-9.]+( [0-9.]+)*$ ]]; then
            read -r median spread < <(tr ' ' '\n' <<<"$values" | sort -g | awk '
                { v[NR] = $1 }
                END {
                    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
                    printf "%s %s-%s\n", m, v[1], v[NR] }')
            R[$key]=$median SPREAD[$key]=$spread
        else
            R[$key]=$(tr ' ' '\n' <<<"$values" | awk '!seen[$0]++' | paste -sd/)
        fi
    done
}
[ "$RUNS" -eq 1 ] || summarize_runs

# A table cell: the figure, and with several runs its spread.
cell() { # cell KEY
    local value=${R[$1]:--}
    if [ -n "${SPREAD[$1]:-}" ]; then echo "$value (${SPREAD[$1]})"; else echo "$value"; fi
}

# ---------------------------------------------------------------- report

# Each row: METRIC|LABEL|UNIT|hi or lo (which way is better).
ROWS=(
    "read_cold|sequential read, cold, $SIZE_MIB MiB (dd to /dev/null, then cmp off the clock)|MiB/s|hi"
    "read_cold_cpu|CPU of the mount process for that cold read (user + system)|s|lo"
    "read_second|second pass over it, same mount|MiB/s|hi"
    "readers4|4 readers of different files, $QUARTER_MIB MiB each, together|MiB/s|hi"
    "write|sequential write to durable (dd conv=fsync, until in the bucket)|MiB/s|hi"
    "write_cpu|CPU of the mount process for that write (user + system)|s|lo"
    "iops|4 KiB random reads of a $RAND_MIB MiB file, one at a time (fio, ${FIO_SECONDS} s)|IOPS|hi"
    "create|$SMALL_FILES × $SMALL_KIB KiB files created with cp|files/s|hi"
    "rsync_in|the same files, rsync -a into the mount|files/s|hi"
    "cat|read back with cat, fresh mount|files/s|hi"
    "cp_out|copied out with cp -r, fresh mount|files/s|hi"
    "rsync_out|copied out with rsync -a, fresh mount|files/s|hi"
    "ls|ls -l of $LIST_FILES files, fresh mount|s|lo"
    "writers|$WRITERS writers at once, $WRITER_MIB MiB each (dd bs=1M conv=fsync, until in the bucket; S3-like only)|s|lo"
    "writers_rss|peak RSS of the mount process for those $WRITERS writers (a mount of their own)|MiB|lo"
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

# The ratio columns of profile P, as "LABEL|A|B" (A's advantage over B): scribefs against each
# peer as the same user, against mount-s3 with its cache, against the limit; and scribefs as
# the plain user against scribefs as root.
ratio_specs() {
    local col
    profile_columns "$1"
    SPECS=()
    for col in "${PCOLS[@]}"; do
        [ "$(column_tool "$col")" != scribefs ] || continue
        case "$(column_variant "$col")" in
        root) SPECS+=("vs $col|scribefs|$col") ;;
        plain) [[ " ${PCOLS[*]} " != *" scribefs~plain "* ]] ||
            SPECS+=("vs $(column_label "$col")|scribefs~plain|$col") ;;
        cache) SPECS+=("vs $(column_label "$col")|scribefs|$col") ;;
        esac
    done
    SPECS+=("vs limit|scribefs|limit")
    [[ " ${PCOLS[*]} " != *" scribefs~plain "* ]] || SPECS+=("$PLAIN_USER / root|scribefs~plain|scribefs")
}

profile_title() {
    case "$1" in
    raw) echo "raw: loopback, no delay" ;;
    s3) echo "S3-like: --latency-ms $LATENCY_MS --bandwidth-mbps $BANDWIDTH_MBPS (per connection)" ;;
    proxy) echo "proxy: s3s-fs behind scribefs-devserver proxy --latency-ms $LATENCY_MS --bandwidth-mbps $BANDWIDTH_MBPS" ;;
    esac
}

report_profile() {
    local P=$1 row metric label unit dir line col spec a b
    profile_columns "$P"
    ratio_specs "$P"
    echo "#### Profile $(profile_title "$P")"
    echo
    row="| workload | unit |"
    for col in "${PCOLS[@]}"; do row+=" $(column_label "$col") |"; done
    row+=" limit |"
    for spec in "${SPECS[@]}"; do row+=" ${spec%%|*} |"; done
    echo "$row"
    echo "|$(echo "${row#|}" | sed 's/[^|]*|/---|/g')"
    for entry in "${ROWS[@]}"; do
        IFS='|' read -r metric label unit dir <<<"$entry"
        [ "$P" = s3 ] || [ "${metric#writers}" = "$metric" ] || continue # S3-like only
        line="| $label | $unit |"
        for col in "${PCOLS[@]}"; do line+=" $(cell "$P,$metric,$col") |"; done
        line+=" $(cell "$P,$metric,limit") |"
        for spec in "${SPECS[@]}"; do
            IFS='|' read -r label a b <<<"$spec"
            line+=" $(advantage "${R[$P,$metric,$a]:--}" "${R[$P,$metric,$b]:--}" "$dir") |"
        done
        echo "$line"
    done
    for entry in "${INFO_ROWS[@]}"; do
        IFS='|' read -r metric label <<<"$entry"
        line="| $label | |"
        for col in "${PCOLS[@]}"; do line+=" $(cell "$P,$metric,$col") |"; done
        line+=" |"
        for spec in "${SPECS[@]}"; do line+=" |"; done
        echo "$line"
    done
    echo
}

# The emulation check: each tool's figures on the dev server's S3-like profile against the
# same link emulated by the proxy in front of s3s-fs. Within 15% means the S3-like profile is
# not the dev server's word alone.
report_emulation_check() {
    [[ " ${PROFILE_LIST[*]} " == *" s3 "* && " ${PROFILE_LIST[*]} " == *" proxy "* ]] || return 0
    local tool entry metric label unit dir a b alone
    echo "#### Emulation check: S3-like profile (dev server) against proxy (s3s-fs)"
    echo
    echo "\"s3s-fs alone\" is the limit straight from s3s-fs with no proxy: where it is below the" \
        "S3-like figure, s3s-fs cannot serve what the link allows and the row checks the server," \
        "not the emulation (\"server-bound\"). The second pass never reaches the server and is left out."
    echo
    echo "| workload | unit | client | S3-like | proxy | s3s-fs alone | proxy / S3-like | within 15% |"
    echo "|---|---|---|---|---|---|---|---|"
    for entry in "${ROWS[@]}"; do
        IFS='|' read -r metric label unit dir <<<"$entry"
        case "$metric" in rss | *_cpu | read_second) continue ;; esac
        for tool in scribefs limit; do
            a=${R[s3,$metric,$tool]:--} b=${R[proxy,$metric,$tool]:--} alone=${R[proxy,$metric,server]:--}
            [ "$a" != - ] || [ "$b" != - ] || continue
            awk -v l="$label" -v u="$unit" -v t="$tool" -v a="$a" -v b="$b" -v s="$alone" -v d="$dir" 'BEGIN {
                if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/ || a == 0) { r = "-"; w = "-" }
                else {
                    q = b / a; r = sprintf("%.2f", q)
                    if (q >= 0.85 && q <= 1.15) w = "yes"
                    else if (s ~ /^[0-9.]+$/ && (d == "hi" ? s + 0 < a + 0 : s + 0 > a + 0)) w = "no, server-bound"
                    else w = "no"
                }
                printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", l, u, t, a, b, s, r, w }'
        done
    done
    echo
}

report() {
    echo "### scribefs bench, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Command: \`scripts/bench.sh --size-mib $SIZE_MIB --files $FILES --small-files $SMALL_FILES" \
        "--fio-seconds $FIO_SECONDS --latency-ms $LATENCY_MS --bandwidth-mbps $BANDWIDTH_MBPS" \
        "--cache-size-mib $CACHE_MIB --profiles $PROFILES --runs $RUNS\` — $(nproc) cores," \
        "$(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)," \
        "load average at the end $(cut -d' ' -f1-3 /proc/loadavg), run took ${TOTAL_SECONDS}s."
    echo
    echo "\"vs X\" is how many times better scribefs does than X (its rate / X's rate; for seconds" \
        "and MiB of memory, X's figure / scribefs's): above 1 means scribefs is ahead. \"limit\" is" \
        "scribefs's own S3 path with no FUSE (examples/bench_limit.rs: 8 MiB ranged GETs, 8 in" \
        "flight, written out in order; the mount's streaming multipart upload, 8 MiB parts, 15 in" \
        "flight (8 before 2026-12-07 15:30); for ls -l, every listing page, then a HEAD per object, 128 at once). scribefs --cache-size-mib $CACHE_MIB; peers with their defaults." \
        "\"as $PLAIN_USER\": the mount and the reads run as that plain user (fusermount3; the" \
        "kernel's FUSE readahead stays 128 KiB), the data written by root."
    echo
    if [ "$RUNS" -gt 1 ]; then
        echo "Each figure is the median of $RUNS runs, its min-max in brackets; the ratios are of" \
            "the medians."
        echo
    fi
    if [ -n "$PLAIN_SKIPPED" ]; then
        echo "Not measured: $PLAIN_SKIPPED."
        echo
    fi
    for P in "${PROFILE_LIST[@]}"; do report_profile "$P"; done
    report_emulation_check
}

# chart FILE.png: per profile, every rate normalized to the best client of its row (ls -l as
# entries per second), so that workloads of different units share one axis.
chart() {
    local png=$1 P entry metric label unit dir t best v col plots=() n=0
    command -v gnuplot >/dev/null || { log "no gnuplot: no chart"; return 0; }
    for P in "${PROFILE_LIST[@]}"; do
        profile_columns "$P"
        {
            printf '# workload'
            for t in "${PCOLS[@]}"; do printf '\t%s' "$(column_label "$t")"; done
            printf '\n'
            for entry in "${ROWS[@]}"; do
                IFS='|' read -r metric label unit dir <<<"$entry"
                case "$metric" in rss | *_cpu) continue ;; esac
                best=0
                for t in "${PCOLS[@]}"; do
                    v=${R[$P,$metric,$t]:-}
                    [[ "$v" =~ ^[0-9.]+$ ]] || continue
                    [ "$dir" = lo ] && v=$(awk -v v="$v" 'BEGIN { print (v > 0) ? 1 / v : 0 }')
                    best=$(awk -v a="$best" -v b="$v" 'BEGIN { print (b > a) ? b : a }')
                done
                printf '%s' "$metric"
                for t in "${PCOLS[@]}"; do
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
            echo "set title '$(profile_title "$P")'"
            profile_columns "$P"
            plots=()
            col=2
            for t in "${PCOLS[@]}"; do
                plots+=("'$WORK/chart-$P.dat' using $col:xtic(1) title '$(column_label "$t")'")
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
