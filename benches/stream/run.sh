#!/usr/bin/env bash
# Peak RSS and wall time of `delta apply` on a 1 GiB image with the delta read three ways:
# from a file, from a pipe (stdin) and over HTTP from a local server (python3 -m http.server).
# Runs alternate (file pipe url, file pipe url, ...) and every output is checked with cmp.
#   M=OUTDIR DELTA=target/release/delta RUNS=3 [SIZE=1G] benches/stream/run.sh [OLD NEW]
# Without OLD NEW it makes a pair of SIZE (default 1G): 960 MiB of random bytes then zeros,
# and a new image with 200 changed 4 KiB blocks, 96 MiB of new random bytes and a 16 MiB
# shift. SIZE=4G gives the same data in a 4 GiB image: peak RSS should not change.
set -euo pipefail
M=${M:-/tmp/stream-bench}
DELTA=${DELTA:-target/release/delta}
RUNS=${RUNS:-3}
SIZE=${SIZE:-1G}
mkdir -p "$M"
if [ $# -eq 2 ]; then
  OLD=$1 NEW=$2
else
  OLD=$M/old.img NEW=$M/new.img
  if [ ! -f "$NEW" ]; then
    head -c $((960 << 20)) /dev/urandom >"$OLD"
    truncate -s "$SIZE" "$OLD" # zeros after the first 960 MiB
    cp "$OLD" "$NEW"
    for i in $(seq 1 200); do
      dd if=/dev/urandom of="$NEW" bs=4096 count=1 seek=$((RANDOM * 7 % 262144)) conv=notrunc status=none
    done
    dd if=/dev/urandom of="$NEW" bs=1M count=96 seek=300 conv=notrunc status=none
    # a 16 MiB stretch moved by 1 MiB
    dd if="$OLD" of="$NEW" bs=1M skip=600 count=16 seek=601 conv=notrunc status=none
  fi
fi
[ -f "$M/u.delta" ] || "$DELTA" gen "$OLD" "$NEW" -o "$M/u.delta"
ls -l "$M/u.delta"

port=$((20000 + RANDOM % 20000))
(cd "$M" && exec python3 -m http.server "$port" --bind 127.0.0.1 >/dev/null 2>&1) &
server=$!
trap 'kill $server 2>/dev/null' EXIT
sleep 1
ISO=(--no-log --progress none --state-dir "$M" --instance-lock "$M/lock" --lock-root "$M/nolocks"
     --supervisor-config "$M/nocfg" --keyring "$M/nokeys")

measure() { # measure LABEL CMD...: prints LABEL wall_s rss_kib
  local label=$1; shift
  /usr/bin/time -v -o "$M/$label.time" "$@" >"$M/$label.log" 2>&1
  cmp -s "$NEW" "$M/out.img" || { echo "$label: output differs"; exit 1; }
  rm -f "$M/out.img"
  printf '%s %s %s\n' "$label" \
    "$(awk -F': ' '/Elapsed \(wall/ {print $2}' "$M/$label.time")" \
    "$(awk -F': ' '/Maximum resident/ {print $2}' "$M/$label.time")" | tee -a "$M/results"
}

: >"$M/results"
for run in $(seq 1 "$RUNS"); do
  measure "file.$run" "$DELTA" apply "$OLD" "$M/u.delta" -o "$M/out.img" "${ISO[@]}"
  measure "pipe.$run" sh -c "cat '$M/u.delta' | '$DELTA' apply '$OLD' - -o '$M/out.img' $(printf "'%s' " "${ISO[@]}")"
  measure "url.$run" "$DELTA" apply "$OLD" "http://127.0.0.1:$port/u.delta" -o "$M/out.img" "${ISO[@]}"
done
echo "median peak RSS (KiB) and wall time per input:"
for input in file pipe url; do
  grep "^$input\." "$M/results" | sort -k3 -n | awk -v n="$RUNS" -v i="$input" \
    'NR == int((n + 1) / 2) {printf "%-5s rss %s KiB (%.1f MiB), wall %s\n", i, $3, $3 / 1024, $2}'
done
