#!/usr/bin/env bash
# The dead-server figures of docs/RELIABILITY.md: how long a mount with default options takes
# to return EIO once its S3 server is gone, and how long a mount against a closed port takes
# to fail. Two ways for the server to be gone:
#   refused - the dev server is killed (SIGKILL): every connection is refused at once;
#   silent  - the dev server is killed and a listener on its port accepts connections and
#             never answers (a wedged proxy or load balancer).
# Each run mounts afresh (nothing cached), kills the server, then times `cat` of a file the
# mount has not read yet and `cp` of a new 4 KiB file into it.
#
#   scripts/dead-server.sh [RUNS]       # default 3 runs of each kind
#   SCRIBEFS_BIN_DIR=target/debug scripts/dead-server.sh 3
#   KINDS=refused scripts/dead-server.sh 10        # one kind only
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
runs=${1:-3}

ensure_rust
ensure_packages
bin=$(bin_dir)

work=$(mktemp -d)
mnt=$work/mnt root=$work/s3
mkdir -p "$mnt" "$root"
port=$(free_port)
export S3_ENDPOINT=http://127.0.0.1:$port S3_PATH_STYLE=true S3_REGION=us-east-1
export S3_ACCESS_KEY_ID=devkey S3_SECRET_ACCESS_KEY=devsecret XDG_CACHE_HOME=$work/cache
unset AWS_PROFILE S3_BUCKET
server_pid= silent_pid=
start_server() {
    : > "$work/server.out"
    "$bin/scribefs-devserver" --root "$root" --listen "127.0.0.1:$port" --bucket dead \
        > "$work/server.out" 2>&1 &
    server_pid=$!
    for _ in $(seq 200); do grep -q "ready on" "$work/server.out" 2>/dev/null && return; sleep 0.1; done
    echo "dead-server: dev server did not start" >&2
    exit 1
}
kill_server() {
    kill -9 "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
}
# Accepts connections on the server's port and never answers.
start_silent() {
    python3 - "$port" <<'EOF' &
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
for _ in range(100):
    try:
        s.bind(("127.0.0.1", int(sys.argv[1])))
        break
    except OSError:
        time.sleep(0.1)
s.listen(128)
held = []
while True:
    held.append(s.accept()[0])
EOF
    silent_pid=$!
    sleep 0.5
}
stop_silent() {
    [ -n "$silent_pid" ] && kill "$silent_pid" 2>/dev/null || true
    wait "$silent_pid" 2>/dev/null || true
    silent_pid=
}
cleanup() {
    mountpoint -q "$mnt" && { fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt"; }
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    stop_silent
    rm -rf "$work"
}
trap cleanup EXIT

# Milliseconds `$@` takes, and its first line of stderr.
timed() {
    local started ended status=0
    started=$(date +%s%N)
    "$@" 2> "$work/err" || status=$?
    ended=$(date +%s%N)
    echo "$(((ended - started) / 1000000)) ms, exit $status: $(head -1 "$work/err")"
}

start_server
"$bin/scribefs" mount dead "$mnt" --log-file "$work/mount.log"
for i in $(seq 1 $((2 * runs))); do head -c 1048576 /dev/urandom > "$mnt/file$i"; done
head -c 4096 /dev/urandom > "$work/small"
unmount_dir "$mnt"

for run in $(seq 1 "$runs"); do
    closed=http://127.0.0.1:$(free_port)
    echo "dead-server: closed port run $run: mount: $(S3_ENDPOINT=$closed timed "$bin/scribefs" mount dead "$mnt")"
done

n=0
for kind in ${KINDS:-refused silent}; do
    for run in $(seq 1 "$runs"); do
        n=$((n + 1))
        [ -n "$server_pid" ] || start_server
        rm -rf "$work/cache"
        "$bin/scribefs" mount dead "$mnt" --log-file "$work/mount.log"
        kill_server
        [ "$kind" = silent ] && start_silent
        echo "dead-server: $kind run $run: cat of an unread file: $(timed cat "$mnt/file$n")"
        echo "dead-server: $kind run $run: cp of a new 4 KiB file: $(timed cp "$work/small" "$mnt/new$n")"
        stop_silent
        unmount_dir "$mnt"
    done
done
