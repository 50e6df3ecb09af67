#!/usr/bin/env bash
# Time the /data preflight against the backup command it predicts.
#
#   crates/datacheck/bench.sh [--big] [--repeat N]
#
# Compares `delta check-data DIR` (or the example
# `target/release/examples/check DIR`, see DATACHECK_BENCH_TOOL below) with
# `tar -cz -C DIR . | wc -c` on:
#   mixed-1g    1 GiB like an application's /data: 8 large logs and 2000 small
#               text files (awk, seeded), binaries copied from /usr/bin and
#               /usr/lib (so it depends on this machine), seeded random blobs.
#   random-10g  10 GiB of incompressible data (AES-CTR keystream, not sparse).
#               Only with --big or DATACHECK_BENCH_BIG=1, and only if the disk
#               has room; DATACHECK_BENCH_BIG_TAR=0 skips its (slow) tar run.
# Each folder is checked three times: counting everything (--limit 1TB) on
# all cores, the same on one core (RAYON_NUM_THREADS=1), and with the
# default 170 MB limit, where the check stops early.
#
# Folders are built once and cached under
# ${DELTA_BENCH_CACHE:-<repo>/testdata/cache}/datacheck (git-ignored); delete
# a folder to rebuild it. Each command runs after one untimed pass that warms
# the page cache, so the table compares CPU-bound work, not disk speed.
# The machine may be shared: the table shows CPU seconds (user+sys) beside
# wall time, and the load average at the start.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="${DELTA_BENCH_CACHE:-$repo/testdata/cache}/datacheck"
big="${DATACHECK_BENCH_BIG:-0}"
big_tar="${DATACHECK_BENCH_BIG_TAR:-1}"
repeat=1
while [ $# -gt 0 ]; do
    case "$1" in
        --big) big=1 ;;
        --repeat) repeat="$2"; shift ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

need() { command -v "$1" >/dev/null || { echo "missing: $1" >&2; exit 2; }; }
need tar; need gzip; need openssl; need mawk; need /usr/bin/time

# Seeded incompressible bytes: AES-128-CTR keystream of zeros.
keystream() { # seed
    # Ends by SIGPIPE when the reader has enough.
    openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass "pass:datacheck-$1" </dev/zero 2>/dev/null || true
}

avail_bytes() { df --output=avail -B1 "$1" | tail -n1 | tr -d ' '; }

build_mixed() {
    local dir="$cache/mixed-1g"
    [ -e "$dir/.complete" ] && return
    echo "building $dir ..." >&2
    rm -rf "$dir"; mkdir -p "$dir/logs" "$dir/db" "$dir/bin" "$dir/blobs"
    # 8 × 32 MiB of log lines.
    for i in 0 1 2 3 4 5 6 7; do
        { mawk -v seed="$i" 'BEGIN { srand(seed); split("sensor reading temperature ok error retry device uptime supervisor container volume sqlite journal value network wifi", w, " ");
            for (n = 0; ; n++) { printf "%d [%d]", 1600000000 + n, int(rand() * 8);
                k = 1 + int(rand() * 6); for (j = 0; j < k; j++) printf " %s=%d", w[1 + int(rand() * 16)], int(rand() * 100000);
                printf "\n" } }' 2>/dev/null || true; } | head -c $((32 << 20)) > "$dir/logs/app.$i.log"
    done
    # 2000 small text files, 1-96 KiB, in 20 directories.
    mawk -v dir="$dir/db" 'BEGIN { srand(42);
        for (f = 0; f < 2000; f++) { d = dir "/shard" (f % 20); if (f < 20) system("mkdir -p " d);
            path = sprintf("%s/rec%04d.json", d, f); size = 1024 + int(rand() * 97280); len = 0;
            while (len < size) { line = sprintf("{\"id\": %d, \"t\": %d, \"value\": %.3f, \"state\": \"%s\"}\n", f * 1000 + len, 1600000000 + len, rand() * 100, (rand() < 0.9 ? "ok" : "error"));
                printf "%s", line > path; len += length(line) }
            close(path) } }'
    # About 350 MiB of this machine's binaries and libraries.
    { find /usr/bin /usr/lib -type f -size +4k -printf '%s\t%p\n' 2>/dev/null || true; } | sort -t$'\t' -k2 |
        mawk -F'\t' -v limit=$((350 << 20)) '{ if (sum + $1 > limit) next; sum += $1; print $2 }' |
        while IFS= read -r f; do cp --parents -p "$f" "$dir/bin/" 2>/dev/null || true; done
    # 324 MiB of random blobs, 54 × 6 MiB (photos, compressed uploads).
    keystream mixed | head -c $((324 << 20)) | (cd "$dir/blobs" && split -b $((6 << 20)) -d -a 3 - blob_)
    touch "$dir/.complete"
}

build_big() {
    local dir="$cache/random-10g"
    [ -e "$dir/.complete" ] && return
    mkdir -p "$cache"
    local have; have=$(avail_bytes "$cache")
    if [ "$have" -lt $(((10 << 30) + (2 << 30))) ]; then
        echo "skipping random-10g: needs 12 GiB free in $cache, have $((have >> 20)) MiB" >&2
        return 1
    fi
    echo "building $dir ..." >&2
    rm -rf "$dir"; mkdir -p "$dir"
    for i in 0 1 2 3 4 5 6 7 8 9; do
        keystream "big-$i" | head -c $((1 << 30)) > "$dir/part$i.bin"
    done
    touch "$dir/.complete"
}

# The command under test: DATACHECK_BENCH_TOOL=example forces the example
# (built here from the current source); otherwise target/release/delta is
# used as it is, if it has the subcommand (build it first:
# `cargo build --release -p delta-cli`).
delta="$repo/target/release/delta"
if [ "${DATACHECK_BENCH_TOOL:-auto}" != example ] && [ -x "$delta" ] &&
    "$delta" check-data --help >/dev/null 2>&1; then
    tool=("$delta" check-data); tool_name="delta check-data"
else
    echo "target/release/delta has no check-data subcommand; using the example binary" >&2
    (cd "$repo" && cargo build --release -q -p delta-datacheck --example check)
    tool=("$repo/target/release/examples/check"); tool_name="examples/check"
fi

tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)
rows=()

# once COMMAND...: one timed run; sets wall, cpu, over, out.
once() {
    local status=0
    /usr/bin/time -o "$tmp/time" -f '%e %U %S' "$@" >"$tmp/out" 2>"$tmp/err" || status=$?
    # Reports may go to stderr (the CLI prints "over the limit" there).
    cat "$tmp/err" >>"$tmp/out"
    # Over the limit: `delta check-data` exits 3, the example 1.
    case "$status" in
        0) over=false ;;
        1|3) over=true ;;
        *) cat "$tmp/err" >&2; echo "failed ($status): $*" >&2; exit 1 ;;
    esac
    local w u s
    read -r w u s < <(tail -n1 "$tmp/time")
    wall=$w
    cpu=$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }')
    out=$(cat "$tmp/out")
}

# First number on the first line that talks about compression, from either
# tool's output ("compressed_bytes N", "DIR: compresses to [at least] N bytes").
bytes_of() { awk '/compress/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+$/) { print $i; exit } }' <<<"$1"; }

# The cases, as "limit threads": tar's pipeline; counting everything with all
# cores and with one (threads = 0 follows RAYON_NUM_THREADS); stopping at the
# default limit.
run_case() { # CASE DIR
    local limit threads
    read -r limit threads <<<"$1"
    if [ "$limit" = tar ]; then
        once bash -c 'tar -cz -C "$1" . | wc -c' _ "$2"
        return
    fi
    local limit_args=()
    if [ "$limit" = none ]; then limit_args=(--limit 1TB); fi
    once env RAYON_NUM_THREADS="$threads" "${tool[@]}" "$2" "${limit_args[@]}"
}

bench() { # NAME DIR
    local name="$1" dir="$2"
    local size; size=$(du -sb "$dir" | cut -f1)
    echo "warming page cache for $name ($((size >> 20)) MiB) ..." >&2
    tar -cf - -C "$dir" . | wc -c >/dev/null

    local cases=() cores; cores=$(nproc)
    if [ "$name" != random-10g ] || [ "$big_tar" = 1 ]; then cases+=("tar 1+1"); fi
    cases+=("none $cores" "none 1" "170MB $cores")
    # Interleaved (every case once per round), so a burst of load from
    # elsewhere hits all cases alike; the best wall time of the rounds counts.
    local -A best_wall=() best_cpu=() best_out=() best_over=()
    local round c
    for ((round = 0; round < repeat; round++)); do
        for c in "${cases[@]}"; do
            echo "  round $((round + 1))/$repeat: $name $c" >&2
            run_case "$c" "$dir"
            if [ -z "${best_wall[$c]:-}" ] || awk -v a="$wall" -v b="${best_wall[$c]}" 'BEGIN { exit !(a < b) }'; then
                best_wall[$c]=$wall; best_cpu[$c]=$cpu; best_out[$c]=$out; best_over[$c]=$over
            fi
        done
    done

    local ref=""
    for c in "${cases[@]}"; do
        local limit threads command got note=""
        read -r limit threads <<<"$c"
        if [ "$limit" = tar ]; then
            ref=$(tr -d ' \n' <<<"${best_out[$c]}")
            rows+=("$name"$'\t'"tar -cz | wc -c"$'\t'"-"$'\t'"$threads"$'\t'"${best_wall[$c]}"$'\t'"${best_cpu[$c]}"$'\t'"$ref"$'\t'"")
            continue
        fi
        got=$(bytes_of "${best_out[$c]}"); got=${got:-?}
        if [ "${best_over[$c]}" = true ]; then
            note="over limit (stopped early)"
        elif [ -n "$ref" ] && [ "$got" != "?" ]; then
            note=$(awk -v a="$got" -v b="$ref" 'BEGIN { printf "%+.3f%%", (a - b) * 100 / b }')
        fi
        rows+=("$name"$'\t'"$tool_name"$'\t'"$limit"$'\t'"$threads"$'\t'"${best_wall[$c]}"$'\t'"${best_cpu[$c]}"$'\t'"$got"$'\t'"$note")
    done
}

build_mixed
bench mixed-1g "$cache/mixed-1g"
if [ "$big" = 1 ] && build_big; then
    bench random-10g "$cache/random-10g"
fi

echo
echo "$(nproc) cores, load average at start $load_at_start, at end $(cut -d' ' -f1-3 /proc/loadavg); best wall time of $repeat interleaved rounds"
printf '%-11s %-17s %-6s %-7s %8s %8s %14s  %s\n' folder command limit threads "wall s" "cpu s" bytes "vs tar -cz"
for row in "${rows[@]}"; do
    IFS=$'\t' read -r a b c t d e f g <<<"$row"
    printf '%-11s %-17s %-6s %-7s %8s %8s %14s  %s\n' "$a" "$b" "$c" "$t" "$d" "$e" "$f" "$g"
done
