# The index part of scripts/bench_ledger.sh (sourced by it, not run alone): `segments find` and
# `segments verify` at a ledger's size on the S3-like link, with and without what they remember
# (the key index and the verified versions in the bucket's metadata database).
#
# Uses from bench_ledger.sh: BIN, WORK, EMULATION, LATENCY_MS, INDEX_SEGMENTS, log, now, elapsed,
# start_server, stop_server.

# Requests by kind since the last reset, as "200 LIST, 1 GET" (the dev server's counts).
requests_by_kind() {
    "$BIN/scribefs-devserver" stats --listen "$1" --reset | python3 -c '
import json, sys
counts = json.load(sys.stdin)
print(", ".join(f"{n} {kind.upper()}" for kind, n in counts.items() if isinstance(n, int) and n) or "none")'
}

# Writes COUNT tiny segments from id FIRST on (one entry each, as `--seed-objects segments:N`
# makes them: bincode 1.3 of the ledger's Segment, uncompressed, and its sidecar) into DIR.
write_tiny_segments() {
    python3 - "$1" "$2" "$3" <<'EOF'
import json, struct, sys
first, count, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
for n in range(first, first + count):
    key, value = b"tx:%016x" % n, b"{}"
    timestamp = n * 60 + 1_760_000_000
    # bincode 1.3 defaults: little-endian fixed-width integers, u64 lengths; field order
    # segment_id, timestamp, data (a map of one entry), size.
    body = struct.pack("<QQQ", n, timestamp, 1)
    body += struct.pack("<Q", len(key)) + key + struct.pack("<Q", len(value)) + value
    body += struct.pack("<Q", len(key) + len(value))
    sidecar = {"segment_id": n, "created_at": timestamp, "archived_at": timestamp + 3600,
               "original_size": len(key) + len(value), "compressed_size": len(body),
               "is_compressed": False, "entry_count": 1}
    with open(f"{out}/segment-{n:016x}.bin", "wb") as f:
        f.write(body)
    with open(f"{out}/segment-{n:016x}.meta.json", "w") as f:
        f.write(json.dumps(sidecar, separators=(",", ":")))
EOF
}

# index_step LABEL SEGMENTS ARGS...: runs `scribefs ARGS` under /usr/bin/time and prints a
# table row: time, requests by kind, CPU time (user + system), peak RSS, and the command's
# last line of output.
index_step() {
    local label=$1 segments=$2 start secs rss cpu out row status=0
    shift 2
    requests_by_kind "$INDEX_ADDR" >/dev/null
    start=$(now)
    /usr/bin/time -f '%M %U %S' -o "$WORK/time.out" "$BIN/scribefs" "$@" >"$WORK/step.out" 2>"$WORK/step.err" || status=$?
    secs=$(elapsed "$start" "$(now)")
    # The last line: a command that fails has a "Command exited" line before it.
    rss=$(awk 'END { printf "%.0f", $1 / 1024 }' "$WORK/time.out")
    cpu=$(awk 'END { printf "%.1f", $2 + $3 }' "$WORK/time.out")
    out=$(cat "$WORK/step.out" "$WORK/step.err" | awk 'NF { last = $0 } END { print last }')
    [ "$2" = ls ] && out="$(wc -l <"$WORK/step.out") ids"
    [ "$status" -ne 0 ] && out="exit $status: $out"
    row=$(printf '| %s | %s | %s | %s | %s | %s | %s |' "$label" "$segments" "$secs" \
        "$(requests_by_kind "$INDEX_ADDR")" "$cpu" "$rss" "${out//|/\\|}")
    echo "$row"
    log "$row"
    STEP_SECS=$secs
}

index_part() {
    local n=$INDEX_SEGMENTS key absent pool=128 ls_secs scan_secs cold_secs warm_secs ideal
    key=$(printf 'tx:%016x' $((n / 2)))
    absent=tx:not-in-any-segment
    log "index: seeding $n tiny segments (the dev server's memory)"
    start_server index "$WORK/index" 0 --seed-objects "segments:$n" "${EMULATION[@]}"
    INDEX_ADDR=$ADDR
    # A metadata database of its own, empty at the start: the first find is cold.
    export XDG_CACHE_HOME=$WORK/xdg
    export S3_ENDPOINT=http://$INDEX_ADDR
    {
        echo
        echo "| command | segments | time s | requests | CPU s | peak RSS MiB | output |"
        echo "|---|---|---|---|---|---|---|"
        index_step '`segments ls` (the LIST pages alone)' "$n" segments ls
        ls_secs=$STEP_SECS
        index_step "\`segments find KEY --no-index\` (every segment GET and decoded)" "$n" segments find --no-index "$key"
        scan_secs=$STEP_SECS
        index_step '`segments find KEY`, cold (no index)' "$n" segments find "$key"
        cold_secs=$STEP_SECS
        index_step '`segments find KEY`, warm (nothing new)' "$n" segments find "$key"
        warm_secs=$STEP_SECS
        index_step '`segments find ABSENT`, warm' "$n" segments find "$absent"
        index_step '`segments verify`' "$n" segments verify
        mkdir -p "$WORK/new"
        write_tiny_segments "$n" 100 "$WORK/new"
        "$BIN/scribefs" segments push "$WORK/new" >/dev/null
        index_step '`segments verify --changed`, 100 new' $((n + 100)) segments verify --changed
        index_step '`segments find KEY`, 100 new' $((n + 100)) segments find "$key"
    } >"$WORK/index.md"
    cat "$WORK/index.md"
    stop_server
    ideal=$(awk -v n="$n" -v l="$LATENCY_MS" -v p="$pool" 'BEGIN { printf "%.2f", n * l / 1000 / p }')
    cat <<EOF

$(du -sk "$XDG_CACHE_HOME/scribefs/metadata" | awk '{ printf "Metadata database after all steps: %.1f MiB", $1 / 1024 }')

| target (issue 25) | measured | ratio |
|---|---|---|
| warm \`find\` at most 1.5x its LIST pages | $warm_secs s against \`segments ls\` $ls_secs s | $(awk -v a="$warm_secs" -v b="$ls_secs" 'BEGIN { printf "%.2fx", a / b }') |
| cold \`find\` at most 1.5x GETting every segment at the link's fan-out | $cold_secs s against $ideal s ($n GETs x $LATENCY_MS ms / $pool connections, no CPU) | $(awk -v a="$cold_secs" -v b="$ideal" 'BEGIN { printf "%.2fx", a / b }') |
| the same against the measured scan (\`--no-index\`: the same GETs and decodes, no index written) | $cold_secs s against $scan_secs s | $(awk -v a="$cold_secs" -v b="$scan_secs" 'BEGIN { printf "%.2fx", a / b }') |
EOF
    unset XDG_CACHE_HOME S3_ENDPOINT
}
