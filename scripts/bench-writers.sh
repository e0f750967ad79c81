#!/usr/bin/env bash
# Many writers at once into one mount: N programs each `dd bs=1M conv=fsync` a file of M MiB at
# the same time, on the S3-like link (dev server --latency-ms 20 --bandwidth-mbps 200), each
# client on a fresh server and mount with its default options. Prints, per client, the time
# until every dd returned, the peak RSS (VmHWM) and the user and system CPU of the mount
# process and of the dev server during the writes, the dev server's peak RSS, and the errors: writers
# that failed plus files a fresh scribefs mount does not show whole afterwards. Backup tools
# with parallel transfers and log daemons write like this; scripts/bench.sh has it as the
# "32 writers" row.
#
#   scripts/bench-writers.sh [--writers N] [--size-mib M] [--tools scribefs,mount-s3]
#                            [--rounds R] [--latency-ms MS] [--bandwidth-mbps MBPS]
#                            [-- SCRIBEFS MOUNT ARGS...]
#
# Defaults: 32 writers of 64 MiB, scribefs, and mount-s3 when MOUNT_S3=/path/to/mount-s3 is
# set, one round. With --rounds R every client runs R times, the order reversed every other
# round (whichever runs first on a fresh machine pays for it), and a last line gives each
# client's median time and, for two clients, the median of the per-round time ratios with its
# range. Arguments after `--` go to scribefs's mount (e.g. --max-memory-target 768). The
# scribefs binaries are SCRIBEFS_BIN_DIR's, else a release build made now. Talks to 127.0.0.1
# only and stops on its own.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

WRITERS=32 SIZE_MIB=64 TOOLS='' ROUNDS=1 LATENCY_MS=20 BANDWIDTH_MBPS=200 EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
    --writers) WRITERS=$2; shift 2 ;;
    --size-mib) SIZE_MIB=$2; shift 2 ;;
    --tools) TOOLS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --latency-ms) LATENCY_MS=$2; shift 2 ;;
    --bandwidth-mbps) BANDWIDTH_MBPS=$2; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    -h | --help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-writers: unknown option $1" >&2; exit 2 ;;
    esac
done
if [ -z "$TOOLS" ]; then
    TOOLS=scribefs
    [ -z "${MOUNT_S3:-}" ] || TOOLS=scribefs,mount-s3
fi
IFS=, read -r -a TOOL_LIST <<<"$TOOLS"
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "bench-writers: --rounds takes a whole number >= 1" >&2; exit 2; }
for tool in "${TOOL_LIST[@]}"; do
    case "$tool" in
    scribefs) ;;
    mount-s3) [ -x "${MOUNT_S3:-}" ] || { echo "bench-writers: set MOUNT_S3 to the mount-s3 binary" >&2; exit 2; } ;;
    *) echo "bench-writers: unknown tool $tool (scribefs, mount-s3)" >&2; exit 2 ;;
    esac
done

BIN=$(bin_dir)
WORK=$(mktemp -d)
SERVER='' MOUNT_PID=''
cleanup() {
    set +e
    for dir in "$WORK"/mnt-*; do [ -d "$dir" ] && unmount_dir "$dir"; done
    for pid in $MOUNT_PID $SERVER; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
    rm -rf "$WORK"
}
trap cleanup EXIT
export S3_PATH_STYLE=true S3_REGION=us-east-1 S3_ACCESS_KEY_ID=devkey S3_SECRET_ACCESS_KEY=devsecret
head -c $((SIZE_MIB << 20)) /dev/urandom >"$WORK/source.bin"

serve() {
    local port
    port=$(free_port)
    ADDR=127.0.0.1:$port
    rm -rf "$WORK/root" && mkdir -p "$WORK/root"
    "$BIN/scribefs-devserver" --root "$WORK/root" --listen "$ADDR" --bucket bench \
        --latency-ms "$LATENCY_MS" --bandwidth-mbps "$BANDWIDTH_MBPS" >"$WORK/server.log" 2>&1 &
    SERVER=$!
    for _ in $(seq 300); do grep -q ready "$WORK/server.log" && return; sleep 0.1; done
    echo "bench-writers: the dev server did not start" >&2; cat "$WORK/server.log" >&2; exit 1
}

# cpu_seconds PID: the process's user and system CPU so far, in seconds.
cpu_seconds() {
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f %.2f\n", $12 / hz, $13 / hz }' \
        "/proc/$1/stat"
}

# mount_tool TOOL DIR [ARGS...]: mounts in the foreground, as a child, so its pid is known.
mount_tool() {
    local tool=$1 dir=$2
    shift 2
    mkdir -p "$dir"
    case "$tool" in
    scribefs)
        XDG_CACHE_HOME="$WORK/cache" "$BIN/scribefs" --endpoint-url "http://$ADDR" \
            mount bench "$dir" --foreground "$@" >"$WORK/$tool.log" 2>&1 &
        ;;
    mount-s3)
        AWS_ACCESS_KEY_ID=devkey AWS_SECRET_ACCESS_KEY=devsecret AWS_REGION=us-east-1 \
            "$MOUNT_S3" bench "$dir" --foreground --endpoint-url "http://$ADDR" \
            --force-path-style --region us-east-1 --allow-overwrite >"$WORK/$tool.log" 2>&1 &
        ;;
    esac
    MOUNT_PID=$!
    for _ in $(seq 300); do mountpoint -q "$dir" && return; sleep 0.1; done
    echo "bench-writers: $tool did not mount" >&2; cat "$WORK/$tool.log" >&2; exit 1
}

unmount_tool() {
    unmount_dir "$1"
    wait "$MOUNT_PID" 2>/dev/null || true
    MOUNT_PID=''
}

printf '| client | writers x MiB | time (s) | peak RSS of the mount (MiB) | mount CPU user / sys (s) | dev server CPU user / sys (s) | dev server peak RSS (MiB) | errors |\n|---|---|---|---|---|---|---|---|\n'
declare -A SECONDS_OF # SECONDS_OF[tool,round] = that run's time
# measure TOOL ROUND: one client on a fresh server and mount; prints its row.
measure() {
    local tool=$1 round=$2 mnt args pids errors cpu_before server_before start end cpu_after
    local server_after rss server_rss size label elapsed i pid
    local user_before sys_before user_after sys_after
    local server_user_before server_sys_before server_user_after server_sys_after
    serve
    mnt=$WORK/mnt-$tool
    args=()
    [ "$tool" != scribefs ] || args=("${EXTRA[@]+"${EXTRA[@]}"}")
    mount_tool "$tool" "$mnt" "${args[@]+"${args[@]}"}"
    cat "$WORK/source.bin" >/dev/null # every writer reads the source from the page cache
    pids=() errors=0
    cpu_before=$(cpu_seconds "$MOUNT_PID") server_before=$(cpu_seconds "$SERVER")
    start=$(date +%s.%N)
    for i in $(seq 1 "$WRITERS"); do
        dd if="$WORK/source.bin" of="$mnt/w-$i.bin" bs=1M conv=fsync status=none 2>>"$WORK/dd.log" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || errors=$((errors + 1)); done
    end=$(date +%s.%N)
    cpu_after=$(cpu_seconds "$MOUNT_PID") server_after=$(cpu_seconds "$SERVER")
    rss=$(awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$MOUNT_PID/status")
    server_rss=$(awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$SERVER/status")
    unmount_tool "$mnt"
    # What S3 holds, seen by a fresh scribefs mount: every file there, whole.
    mount_tool scribefs "$WORK/mnt-check"
    for i in $(seq 1 "$WRITERS"); do
        size=$(stat -c %s "$WORK/mnt-check/w-$i.bin" 2>/dev/null || echo 0)
        [ "$size" -eq $((SIZE_MIB << 20)) ] || errors=$((errors + 1))
    done
    unmount_tool "$WORK/mnt-check"
    kill "$SERVER" && wait "$SERVER" 2>/dev/null || true
    SERVER=''
    label=$tool
    [ "${#args[@]}" -eq 0 ] || label="$tool ${args[*]}"
    read -r user_before sys_before <<<"$cpu_before"
    read -r user_after sys_after <<<"$cpu_after"
    read -r server_user_before server_sys_before <<<"$server_before"
    read -r server_user_after server_sys_after <<<"$server_after"
    elapsed=$(echo "$end - $start" | bc)
    SECONDS_OF[$tool,$round]=$elapsed
    printf '| %s | %s x %s | %.1f | %s | %.1f / %.1f | %.1f / %.1f | %s | %s |\n' "$label" "$WRITERS" \
        "$SIZE_MIB" "$elapsed" "$rss" "$(echo "$user_after - $user_before" | bc)" \
        "$(echo "$sys_after - $sys_before" | bc)" \
        "$(echo "$server_user_after - $server_user_before" | bc)" \
        "$(echo "$server_sys_after - $server_sys_before" | bc)" "$server_rss" "$errors"
}

# median_and_range: the median of the numbers on stdin, then min-max.
median_and_range() {
    sort -g | awk '{ v[NR] = $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.2f (%.2f-%.2f)", m, v[1], v[NR] }'
}

for round in $(seq 1 "$ROUNDS"); do
    order=("${TOOL_LIST[@]}")
    if [ $((round % 2)) -eq 0 ]; then
        order=()
        for ((i = ${#TOOL_LIST[@]} - 1; i >= 0; i--)); do order+=("${TOOL_LIST[$i]}"); done
    fi
    for tool in "${order[@]}"; do measure "$tool" "$round"; done
done
if [ "$ROUNDS" -gt 1 ]; then
    summary=''
    for tool in "${TOOL_LIST[@]}"; do
        median=$(for round in $(seq 1 "$ROUNDS"); do echo "${SECONDS_OF[$tool,$round]}"; done |
            median_and_range)
        summary+="$tool $median s; "
    done
    if [ "${#TOOL_LIST[@]}" -eq 2 ]; then
        first=${TOOL_LIST[0]} second=${TOOL_LIST[1]}
        ratio=$(for round in $(seq 1 "$ROUNDS"); do
            echo "${SECONDS_OF[$first,$round]} ${SECONDS_OF[$second,$round]}"
        done | awk '{ printf "%.4f\n", $1 / $2 }' | median_and_range)
        summary+="time $first / $second per round: $ratio"
    fi
    echo
    echo "Over $ROUNDS rounds, median (min-max): ${summary%; }"
fi
[ ! -s "$WORK/dd.log" ] || { echo "dd errors:" >&2; sort -u "$WORK/dd.log" | head -5 >&2; }
