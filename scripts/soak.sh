#!/usr/bin/env bash
# Soak: W writers x F files and R readers for D seconds on a real mount of a dev server that
# behaves like a distant S3 (latency, bandwidth cap). Every byte written is verified, the mount
# process's RSS and open descriptors are sampled every second and reported; the run fails on
# any tool error, checksum mismatch, leftover multipart upload, descriptor leak, or RSS above
# the configured memory bound.
#
#   scripts/soak.sh                      # 16 writers x 50 files, 16 readers, 60 s
#   scripts/soak.sh --short              # 4 x 10, 4 readers, 10 s (what CI can afford)
#   scripts/soak.sh --duration 300 --writers 32
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

duration=60 writers=16 files=50 readers=16 cache_mib=64 latency_ms=20 mbps=400
while [ $# -gt 0 ]; do
    case "$1" in
        --short) duration=10 writers=4 files=10 readers=4; shift ;;
        --duration) duration=$2; shift 2 ;;
        --writers) writers=$2; shift 2 ;;
        --files) files=$2; shift 2 ;;
        --readers) readers=$2; shift 2 ;;
        *) echo "soak.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

ensure_rust
ensure_packages
bin=${SCRIBEFS_BIN_DIR:-target/release}
if [ -z "${SCRIBEFS_BIN_DIR:-}" ]; then
    cargo build --release --bins --features devserver -q
fi

work=$(mktemp -d)
mnt=$work/mnt root=$work/s3 src=$work/src
mkdir -p "$mnt" "$root" "$src"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export S3_ENDPOINT=http://127.0.0.1:$port S3_PATH_STYLE=true S3_BUCKET=soak S3_REGION=us-east-1
export S3_ACCESS_KEY_ID=devkey S3_SECRET_ACCESS_KEY=devsecret

server_pid= mount_pid=
cleanup() {
    if mountpoint -q "$mnt"; then fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" || true; fi
    [ -n "$mount_pid" ] && wait "$mount_pid" 2>/dev/null || true
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

"$bin/scribefs-devserver" --root "$root" --listen "127.0.0.1:$port" --bucket soak \
    --latency-ms "$latency_ms" --bandwidth-mbps "$mbps" > "$work/server.out" 2>&1 &
server_pid=$!
for _ in $(seq 100); do grep -q "ready on" "$work/server.out" && break; sleep 0.1; done

"$bin/scribefs" mount soak "$mnt" --foreground --cache-size-mib "$cache_mib" \
    2> "$work/mount.log" &
mount_pid=$!
for _ in $(seq 100); do mountpoint -q "$mnt" && break; sleep 0.1; done
mountpoint -q "$mnt" || { echo "soak: mount did not come up" >&2; cat "$work/mount.log" >&2; exit 1; }

# Files the readers verify, written before the clock starts.
mkdir -p "$mnt/seed"
for i in $(seq 32); do
    head -c $((RANDOM * 32 + i)) /dev/urandom > "$src/seed$i"
    cp "$src/seed$i" "$mnt/seed/f$i"
done
(cd "$src" && sha256sum seed* | sed 's/ seed/ f/') > "$work/seed.sums"

errors=$work/errors
: > "$errors"
sample() {
    echo "second,rss_kib,fds" > "$work/samples.csv"
    local t=0
    while kill -0 "$mount_pid" 2>/dev/null && [ ! -e "$work/stop" ]; do
        rss=$(awk '/VmRSS/ {print $2}' "/proc/$mount_pid/status" 2>/dev/null || echo 0)
        fds=$(ls "/proc/$mount_pid/fd" 2>/dev/null | wc -l)
        echo "$t,$rss,$fds" >> "$work/samples.csv"
        t=$((t + 1))
        sleep 1
    done
}
writer() {
    local w=$1 dir=$mnt/w$1 local_dir=$work/w$1
    mkdir -p "$dir" "$local_dir" || { echo "writer $w: mkdir" >> "$errors"; return; }
    for f in $(seq "$files"); do
        head -c $(((RANDOM % 64) * 32768 + RANDOM)) /dev/urandom > "$local_dir/f$f"
        cp "$local_dir/f$f" "$dir/f$f" 2>> "$errors" || echo "writer $w: cp f$f" >> "$errors"
    done
    (cd "$local_dir" && sha256sum f*) > "$work/w$w.sums"
    (cd "$dir" && sha256sum --quiet -c "$work/w$w.sums") >> "$errors" 2>&1 ||
        echo "writer $w: verify" >> "$errors"
}
reader() {
    local r=$1 end=$((SECONDS + duration)) reads=0
    while [ $SECONDS -lt $end ]; do
        (cd "$mnt/seed" && sha256sum --quiet -c "$work/seed.sums") >> "$errors" 2>&1 ||
            echo "reader $r: verify" >> "$errors"
        reads=$((reads + 1))
    done
    echo "$reads" > "$work/r$r.count"
}

sample &
sampler=$!
start=$SECONDS
pids=()
for w in $(seq "$writers"); do writer "$w" & pids+=($!); done
for r in $(seq "$readers"); do reader "$r" & pids+=($!); done
for pid in "${pids[@]}"; do wait "$pid"; done
elapsed=$((SECONDS - start))
touch "$work/stop"
wait "$sampler"

uploads=$("$bin/scribefs" uploads ls | wc -l)
passes=$(cat "$work"/r*.count | awk '{s += $1} END {print s}')
read -r rss_first fds_first < <(awk -F, 'NR == 3 {print $2, $3}' "$work/samples.csv")
read -r rss_max fds_max < <(awk -F, 'NR > 1 {if ($2 > r) r = $2; if ($3 > f) f = $3} END {print r, f}' "$work/samples.csv")
read -r rss_last fds_last < <(tail -1 "$work/samples.csv" | awk -F, '{print $2, $3}')
# Cache budget + per-writer upload buffers (5 parts of 8 MiB) for the writers at once + runtime.
bound_kib=$(((cache_mib + writers * 40 + 64) * 1024))

echo "soak: $writers writers x $files files, $readers readers, ${elapsed}s"
echo "soak: reader passes over 32 seed files: $passes"
echo "soak: mount RSS KiB first/max/last: $rss_first/$rss_max/$rss_last (bound $bound_kib)"
echo "soak: mount open fds first/max/last: $fds_first/$fds_max/$fds_last"
echo "soak: pending multipart uploads: $uploads; errors: $(wc -l < "$errors")"
failed=0
if [ -s "$errors" ]; then echo "soak: FAILED, errors:" >&2; head -20 "$errors" >&2; failed=1; fi
if [ "$uploads" -ne 0 ]; then echo "soak: FAILED: uploads left behind" >&2; failed=1; fi
if [ "$rss_max" -gt "$bound_kib" ]; then echo "soak: FAILED: RSS above the bound" >&2; failed=1; fi
if [ "$fds_last" -gt $((fds_first + 16)) ]; then echo "soak: FAILED: descriptors leak" >&2; failed=1; fi
exit "$failed"
