#!/usr/bin/env bash
# Builds the seed corpora fuzz/corpus/<target>/ (git-ignored) from
# testdata/small/ and deltas made from it, plus every committed regression
# input of testdata/regress/<target>/. Safe to re-run: files are named by
# content, and libFuzzer's own additions stay.
#
# Every input starts the way its target reads it (fuzz/src/checks.rs):
#   decode_header, apply  a delta file (apply patches testdata/small/old.bin)
#   decode_ops            old_len as 8 bytes little-endian, then a segment stream
#   roundtrip             2 bytes little-endian split point, then old || new
#   decode_signatures     a signature block (u32 count, then 72-byte entries)
#   map_image             an ext4 image (96 KiB, mkfs.ext4) or a tar archive
#   deflate_segment       flags, [old source], head, tail, corrections, content
#                         (checks.rs; seeds in testdata/regress/deflate_segment/)
#   lzma_segment          mode (filter, hostile bit), [ops_len], LZMA2 data or op stream
#   exec_segment          mode (old file, hostile bit), payload body or offset and bytes
#                         (checks.rs; seeds in testdata/regress/exec_segment/)
set -euo pipefail
fuzz=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$fuzz")
cd "$root"
corpus=$fuzz/corpus
targets=(decode_header decode_ops apply roundtrip decode_signatures map_image deflate_segment lzma_segment exec_segment)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Stores file $2 (or stdin) in corpus/$1/ under the name of its content.
put() {
  local target=$1 file=${2:-$tmp/stdin}
  [ $# -ge 2 ] || cat >"$file"
  cp "$file" "$corpus/$target/seed-$(cksum <"$file" | cut -d' ' -f1)"
}

for t in "${targets[@]}"; do
  mkdir -p "$corpus/$t"
  for f in testdata/regress/"$t"/*; do
    [ -f "$f" ] && put "$t" "$f"
  done
done

# Deltas of the small pair with the CLI of the test profile (cheap when
# `cargo test` has built it, as in CI).
old=testdata/small/old.bin new=testdata/small/new.bin
delta() { cargo run --quiet --profile test -p delta-cli -- gen --force "$@" --level 1 --threads 1 >/dev/null; }
delta "$old" "$new" -o "$tmp/small.delta" --segment-size 4096
delta "$new" -o "$tmp/full.delta" --full --segment-size 4096
for d in small full; do
  put apply "$tmp/$d.delta"
  put decode_header "$tmp/$d.delta"
  # Header and segment table alone (the delta file cut after its table).
  segments=$(od -An -tu8 -j120 -N8 "$tmp/$d.delta" | tr -d ' ')
  head -c $((128 + 136 * segments + 32)) "$tmp/$d.delta" | put decode_header
done

# A stream with one op of each kind (COPY 10 at 100, ZERO 7, LITERAL 5,
# DIFF 3 right after the copy) over a 6000-byte old image.
le64() { printf "$(printf '\\x%02x' $(( $1 & 255 )) $(( $1 >> 8 & 255 )) 0 0 0 0 0 0)"; }
{ le64 6000; printf '\x04\x0b\x03\x05'; printf '\x00\x0a\xc8\x01\x01\x07\x02\x05\x03\x03\x00'
  printf '\x01\x02\x03'; printf 'hello'; } | put decode_ops
{ le64 0; printf '\x01\x02\x00\x00\x01\x10'; } | put decode_ops

# The small pair split at 6000 bytes, the new file alone, and short cuts.
le16() { printf "$(printf '\\x%02x' $(( $1 & 255 )) $(( $1 >> 8 & 255 )))"; }
{ le16 "$(wc -c <"$old")"; cat "$old" "$new"; } | put roundtrip
{ le16 0; cat "$new"; } | put roundtrip
{ le16 1000; head -c 1000 "$old"; head -c 1200 "$new"; } | put roundtrip

# LZMA segments: the op stream with one op of each kind above, for the
# harness to compress (x86 filter); and raw LZMA2 data (x86 filter) of the
# new file's first 5000 bytes, as hostile data claiming 5000 bytes.
{ printf '\x01\x04\x0b\x03\x05'; printf '\x00\x0a\xc8\x01\x01\x07\x02\x05\x03\x03\x00'
  printf '\x01\x02\x03'; printf 'hello'; } | put lzma_segment
if command -v xz >/dev/null; then
  { printf '\x05'; le16 5000; head -c 5000 "$new" | xz --format=raw --x86 --lzma2=preset=1,dict=8KiB -c; } | put lzma_segment
fi

# Signature blocks of one and two entries.
{ printf '\x01\x00\x00\x00'; head -c 72 /dev/zero; } | put decode_signatures
{ printf '\x02\x00\x00\x00'; head -c 144 "$new"; } | put decode_signatures

# Images: a 96 KiB ext4 file system (1 KiB blocks, no journal) and tar
# archives (GNU and pax) of a small tree with a nested file, a symlink and
# a hard link.
mkdir -p "$tmp/tree/d/e"
printf 'hello\n' >"$tmp/tree/a"
head -c 3000 "$new" >"$tmp/tree/d/e/b.gz"
ln -s a "$tmp/tree/l"
ln "$tmp/tree/a" "$tmp/tree/d/hard"
mkfs=$(PATH=$PATH:/sbin:/usr/sbin command -v mkfs.ext4 || true)
if [ -n "$mkfs" ]; then
  "$mkfs" -q -F -b 1024 -O ^has_journal,^resize_inode -N 16 -d "$tmp/tree" "$tmp/fs.img" 96K >/dev/null 2>&1
  put map_image "$tmp/fs.img"
else
  echo "mkfs.ext4 not found: no ext4 seed for map_image" >&2
fi
for format in gnu pax; do
  tar --format=$format -cf "$tmp/$format.tar" -C "$tmp/tree" .
  put map_image "$tmp/$format.tar"
done

for t in "${targets[@]}"; do
  echo "seeded fuzz/corpus/$t: $(find "$corpus/$t" -type f | wc -l) files"
done
