#!/usr/bin/env bash
# Byte identity of two builds: generates every delta of testdata/ (sample and
# small, with default options, 4 KiB segments and --full), of the ext4 sample
# pair (scripts/sample-ext4.sh; plain and signed with one fixed key: Ed25519
# signatures are deterministic) and of the corpus pairs in
# testdata/cache/corpus (testdata/corpus.sh), with binary A and binary B, and
# prints the BLAKE3 of each with MATCH or DIFFERS. Exits 1 on any difference.
# For reshapings that must not change a byte of output.
#
#   benches/identity.sh OLD_BUILD/delta NEW_BUILD/delta
set -euo pipefail
a=$1 b=$2
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
command -v b3sum >/dev/null || { echo "needs b3sum (Debian package b3sum)" >&2; exit 2; }
b3() { b3sum --no-names "$1"; }
rows=()
add() { rows+=("$*"); }
for pair in sample:old.img:new.img small:old.bin:new.bin; do
  IFS=: read -r name old new <<<"$pair"
  d=$root/testdata/$name
  add "$name" "$d/$old $d/$new"
  add "$name.seg4k" "$d/$old $d/$new --segment-size 4KiB --max-merge 4KiB"
  add "$name.full" "--full $d/$new"
done
"$root/scripts/sample-ext4.sh" "$tmp/ext4" >/dev/null
"$a" keygen -o "$tmp/fleet.key" >/dev/null
add ext4 "$tmp/ext4/old.img $tmp/ext4/new.img"
add ext4.signed "$tmp/ext4/old.img $tmp/ext4/new.img --sign $tmp/fleet.key"
for dir in "$root"/testdata/cache/corpus/*/; do
  name=$(basename "$dir")
  [ -f "$dir/INFO" ] || continue
  if [ -f "$dir/old.img" ]; then add "$name" "$dir/old.img $dir/new.img"; else add "$name" "$dir/old.bin $dir/new.bin"; fi
done
status=0
for row in "${rows[@]}"; do
  name=${row%% *} args=${row#* }
  rm -f "$tmp/a.delta" "$tmp/b.delta"
  # shellcheck disable=SC2086
  "$a" gen $args -o "$tmp/a.delta" >/dev/null
  # shellcheck disable=SC2086
  "$b" gen $args -o "$tmp/b.delta" >/dev/null
  ha=$(b3 "$tmp/a.delta") hb=$(b3 "$tmp/b.delta")
  if [ "$ha" = "$hb" ]; then verdict=MATCH; else verdict=DIFFERS; status=1; fi
  printf '%-14s %-8s %s %12s bytes\n' "$name" "$verdict" "$hb" "$(wc -c <"$tmp/b.delta")"
done
exit $status
