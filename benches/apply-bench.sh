#!/usr/bin/env bash
# Whole-process benchmark of `delta apply` against `cp NEW OUT && sync`:
# wall time and peak RSS (/usr/bin/time -v) for generated 1 GiB and 4 GiB
# image pairs. Usage: benches/apply-bench.sh [SIZE_GIB...]   (default: 1 4)
# Images are cached in ${DELTA_BENCH_CACHE:-testdata/cache}/apply-bench. Each figure is the
# median of ${APPLY_BENCH_ROUNDS:-5} runs with a cold page cache (caches are dropped when
# running as root), apply and cp+sync taking turns so that both see the same machine.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${DELTA_BENCH_CACHE:-testdata/cache}/apply-bench
mkdir -p "$cache"
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time; }
command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl; }
cargo build --release -q -p delta-cli
delta=$PWD/target/release/delta
sizes=("$@"); [ ${#sizes[@]} -gt 0 ] || sizes=(1 4)

stream() { # seeded pseudo-random bytes
  openssl enc -aes-128-ctr -nosalt -pass "pass:$1" -pbkdf2 </dev/zero 2>/dev/null
}

make_pair() { # GiB -> old.img new.img: mixed content, new = edits, moves, a shift
  local gib=$1 dir=$cache/${1}g
  [ -f "$dir/done" ] && return
  mkdir -p "$dir"
  local bytes=$((gib << 30))
  # Old: alternating 64 MiB stretches of random data, text-like data and zeros.
  python3 - "$dir/old.img" "$bytes" <<'PY'
import sys, random, subprocess
path, total = sys.argv[1], int(sys.argv[2])
rng = random.Random(1)
words = [b"kernel", b"module", b"systemd", b"libc.so.6", b"/usr/lib/", b"config", b"0x7f3a", b"\n", b" "]
text = b"".join(rng.choice(words) for _ in range(3_000_000))[: 16 << 20]
keystream = subprocess.run(["openssl", "enc", "-aes-128-ctr", "-nosalt", "-pass", "pass:old", "-pbkdf2"],
                           input=b"\0" * (16 << 20), capture_output=True).stdout
with open(path, "wb") as f:
    written, i = 0, 0
    while written < total:
        kind = i % 3
        chunk = keystream if kind == 0 else text if kind == 1 else b"\0" * (16 << 20)
        # vary each 16 MiB chunk so blocks are distinct
        chunk = bytes([i & 0xff]) * 4096 + chunk[4096:]
        n = min(len(chunk), total - written)
        f.write(chunk[:n]); written += n; i += 1
PY
  cp "$dir/old.img" "$dir/new.img"
  # New: 64 scattered 64 KiB overwrites and one 1 MiB region moved by 1237 bytes.
  for k in $(seq 1 64); do
    off=$(( (k * 7919 * 65536) % (bytes - 131072) ))
    { stream "edit$k" || true; } | head -c 65536 | dd of="$dir/new.img" bs=64K seek=$((off / 65536)) conv=notrunc status=none
  done
  dd if="$dir/old.img" of="$dir/new.img" bs=1M skip=5 count=1 seek=$(( (bytes >> 21) )) conv=notrunc status=none
  touch "$dir/done"
}

drop_caches() { # cold page cache for both sides, when allowed (root)
  sync
  echo 3 2>/dev/null >/proc/sys/vm/drop_caches || true
}

rounds=${APPLY_BENCH_ROUNDS:-5}

median() { # "wall_s rss_mib" lines on stdin -> the line with the median wall time
  sort -n | awk '{ line[NR] = $0 } END { print line[int((NR + 1) / 2)] }'
}

measure() { # command... -> "wall_s rss_mib"
  local log; log=$(mktemp)
  /usr/bin/time -v "$@" >/dev/null 2>"$log" || { cat "$log" >&2; rm -f "$log"; return 1; }
  awk -F': ' '/Elapsed \(wall clock\)/ {split($2,t,":"); w=(length(t)==3)?t[1]*3600+t[2]*60+t[3]:t[1]*60+t[2]}
              /Maximum resident set size/ {r=$2/1024}
              END {printf "%.2f %.1f\n", w, r}' "$log"
  rm -f "$log"
}

printf '| image | delta | apply wall s | apply peak RSS MiB | cp+sync wall s | cp peak RSS MiB | apply / cp+sync |\n'
printf '|---|---:|---:|---:|---:|---:|---:|\n'
for gib in "${sizes[@]}"; do
  make_pair "$gib"
  dir=$cache/${gib}g
  [ -f "$dir/u.delta" ] || "$delta" gen "$dir/old.img" "$dir/new.img" -o "$dir/u.delta" >/dev/null
  rm -f "$dir/out.img" "$dir/cp.img"
  applies=() copies=()
  for _ in $(seq "$rounds"); do
    rm -f "$dir/out.img"
    drop_caches
    applies+=("$(measure "$delta" apply "$dir/old.img" "$dir/u.delta" -o "$dir/out.img" --no-log \
      --instance-lock "$dir/lock" --lock-root "$dir/none" --state-dir "$dir")")
    cmp -s "$dir/out.img" "$dir/new.img" || { echo "apply output differs" >&2; exit 1; }
    rm -f "$dir/out.img" "$dir/cp.img"
    drop_caches
    copies+=("$(measure sh -c "cp '$dir/new.img' '$dir/cp.img' && sync")")
    rm -f "$dir/cp.img"
  done
  read -r aw ar < <(printf '%s\n' "${applies[@]}" | median)
  read -r cw cr < <(printf '%s\n' "${copies[@]}" | median)
  printf '| %s GiB | %s B | %s | %s | %s | %s | %.2fx |\n' "$gib" "$(stat -c %s "$dir/u.delta")" \
    "$aw" "$ar" "$cw" "$cr" "$(echo "$aw / $cw" | bc -l)"
done
printf '\nmachine: %s cores, %s, %s\n' "$(nproc)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" "$(free -g | awk '/Mem:/ {print $2" GiB RAM"}')"
