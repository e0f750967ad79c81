#!/usr/bin/env bash
# The fault figures of docs/RELIABILITY.md: `cp -a` of 200 files of 64 KiB into a mount with
# default options, on a dev server that fails a fraction of its requests on purpose (500,
# 503, dropped connections, cut GET bodies), then `cp -a` back out through a fresh mount (still
# with faults, with a cold cache) and a byte-for-byte comparison. Prints one line per run and
# the count of runs that were byte-identical with no error from any tool.
#
#   scripts/fault-copy.sh [RATE [RUNS]]       # default 0.1 and 20
#   SCRIBEFS_BIN_DIR=target/debug scripts/fault-copy.sh 0.2 20   # use binaries already built
#   MOUNT_ARGS="--max-retries 3" scripts/fault-copy.sh 0.1 20    # compare other settings
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
rate=${1:-0.1}
runs=${2:-20}

ensure_rust
ensure_packages
bin=$(bin_dir)

work=$(mktemp -d)
src=$work/src
# 10 directories of 20 files of 64 KiB each, the same for every run.
for d in $(seq 0 9); do
    mkdir -p "$src/d$d"
    for f in $(seq 0 19); do head -c 65536 /dev/urandom > "$src/d$d/f$f"; done
done

export S3_PATH_STYLE=true S3_REGION=us-east-1 S3_ACCESS_KEY_ID=devkey S3_SECRET_ACCESS_KEY=devsecret
unset AWS_PROFILE S3_BUCKET
server_pid= mnt=
cleanup() {
    if [ -n "$mnt" ] && mountpoint -q "$mnt"; then
        fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" || true
    fi
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Mounts with default options (and $MOUNT_ARGS), runs `cp -a FROM TO`, unmounts; prints cp's
# exit status, or "mount" when the mount failed (its bucket check met faults only). A failed
# run either way.
copy_through_mount() {
    local log=$1 err=$2 from=$3 to=$4 status=0
    # shellcheck disable=SC2086 # MOUNT_ARGS is a list of flags
    if "$bin/scribefs" mount faults "$mnt" --log-file "$log" ${MOUNT_ARGS:-} > /dev/null 2> "$err"; then
        cp -a "$from" "$to" > /dev/null 2> "$err" || status=$?
        unmount_dir "$mnt"
    else
        status=mount
    fi
    touch "$log"
    echo "$status"
}

good=0
for run in $(seq 1 "$runs"); do
    dir=$work/run$run
    mkdir -p "$dir/mnt" "$dir/back" "$dir/cache"
    mnt=$dir/mnt
    port=$(free_port)
    export S3_ENDPOINT=http://127.0.0.1:$port XDG_CACHE_HOME=$dir/cache
    "$bin/scribefs-devserver" --listen "127.0.0.1:$port" --bucket faults \
        --fail-rate "$rate" > "$dir/server.out" 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do grep -q "ready on" "$dir/server.out" 2>/dev/null && break; sleep 0.1; done

    status_in=$(copy_through_mount "$dir/mount.log" "$dir/in.err" "$src/." "$mnt/tree")
    # A fresh mount (and a fresh metadata cache) reads everything back from the server.
    rm -rf "$dir/cache" && mkdir "$dir/cache"
    status_out=$(copy_through_mount "$dir/mount2.log" "$dir/out.err" "$mnt/tree/." "$dir/back")
    mnt=

    verdict=identical
    if ! diff -r "$src" "$dir/back" > "$dir/diff.out" 2>&1; then
        verdict="differs ($(grep -c . "$dir/diff.out") diff lines)"
    fi
    errors=$(cat "$dir/in.err" "$dir/out.err" | sed -n '1,2p' | tr '\n' ' ')
    retries=$(cat "$dir/mount.log" "$dir/mount2.log" | grep -c "retrying S3 call" || true)
    failed=$(cat "$dir/mount.log" "$dir/mount2.log" | grep "S3 request failed" | sed -n '1,3p' |
        sed -E 's/.*(op="?[A-Za-z]+"?).*(attempts=[0-9]+).*/\1 \2/' | tr '\n' ' ' || true)
    requests=$(curl -s "$S3_ENDPOINT/_scribefs/stats" || echo '?')
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
    if [ "$status_in" -eq 0 ] && [ "$status_out" -eq 0 ] && [ "$verdict" = identical ] &&
        [ ! -s "$dir/in.err" ] && [ ! -s "$dir/out.err" ]; then
        good=$((good + 1))
        result=ok
    else
        result=FAIL
    fi
    echo "fault-copy: run $run rate $rate: $result, cp in $status_in, cp out $status_out, $verdict, $retries retries${failed:+, failed for good: $failed}${errors:+, errors: $errors} requests $requests"
    [ "$result" = ok ] && rm -rf "$dir"
done
echo "fault-copy: rate $rate${MOUNT_ARGS:+ ($MOUNT_ARGS)}: $good of $runs runs byte-identical without errors"
