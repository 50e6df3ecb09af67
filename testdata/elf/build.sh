#!/usr/bin/env bash
# Build the ELF fixtures of the executable-aware delta transform (see README.md here).
#
#   testdata/elf/build.sh [OUTDIR]        (default OUTDIR: testdata/elf/out)
#
# Compiles the C programs in src/ twice, as version "a" (-DREL=1) and version "b"
# (-DREL=2, a point release: functions edited/inserted near the start of each file so
# that later code shifts, a constant changed, one more global), for three
# architectures, and writes
#   OUTDIR/<arch>/<name>-<a|b>            unstripped (symbols, -g1 debug info: line tables)
#   OUTDIR/<arch>/<name>-<a|b>-stripped   the same after `strip` of the matching binutils
# arch: x86_64 (gcc), aarch64 (aarch64-linux-gnu-gcc), armhf (arm-linux-gnueabihf-gcc,
# Thumb-2 by default). name:
#   calc          expression compiler + bytecode VM (-O2 -fPIE -pie)
#   libtally.so   shared library (-O2 -shared -fPIC, soname libtally.so.1)
#   tally         program linked against libtally.so (-O2 -fPIE -pie)
#   calc-Os       calc with -Os instead of -O2 (x86_64 and armhf only)
# and OUTDIR/bad/: files whose header lies (made from the x86_64 outputs):
#   elf-header-garbage    the 64-byte ELF header of calc-a-stripped + 4 KiB of garbage
#   elf-truncated         the first 200 bytes of calc-a
#   aarch64-says-x86-code calc-a-stripped (x86-64 code) with e_machine patched to
#                         EM_AARCH64 (183)
# plus OUTDIR/TOOLCHAINS, the compiler versions used.
#
# Needs: gcc, gcc-aarch64-linux-gnu, gcc-arm-linux-gnueabihf (Debian bookworm packages),
# perl. The outputs are committed, so tests do not need the cross compilers.
#
# Reproducibility: same compilers give the same bytes: -ffile-prefix-map (no build
# path in the debug info), -Wl,--build-id=none, -frandom-seed, no __DATE__/__TIME__,
# deterministic garbage (a perl LCG). Check with: build.sh /tmp/x && diff -r /tmp/x out
set -euo pipefail
shopt -s inherit_errexit

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC="$HERE/src"
OUT=${1:-"$HERE/out"}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# arch -> toolchain prefix
declare -A PREFIX=([x86_64]="" [aarch64]=aarch64-linux-gnu- [armhf]=arm-linux-gnueabihf-)
ARCHES=(x86_64 aarch64 armhf)
for arch in "${ARCHES[@]}"; do
  command -v "${PREFIX[$arch]}gcc" >/dev/null || {
    echo "build.sh: ${PREFIX[$arch]}gcc missing (apt-get install gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf)" >&2
    exit 1
  }
done

COMMON=(-Wall -Wextra -Werror -g1 -ffile-prefix-map="$SRC"=. -fno-ident -Wl,--build-id=none -Wl,--hash-style=gnu)

# build ARCH REL OPT: calc, libtally.so and tally into $TMP/ARCH-REL-OPT/
build() {
  local arch=$1 rel=$2 opt=$3 cc="${PREFIX[$1]}gcc" d="$TMP/$1-$2-$3"
  mkdir -p "$d"
  (
    cd "$SRC"
    "$cc" "$opt" "${COMMON[@]}" -DREL="$rel" -frandom-seed=calc -fPIE -pie calc.c -o "$d/calc"
    "$cc" "$opt" "${COMMON[@]}" -DREL="$rel" -frandom-seed=libtally -shared -fPIC \
      -Wl,-soname,libtally.so.1 libtally.c -o "$d/libtally.so" -lm
    "$cc" "$opt" "${COMMON[@]}" -DREL="$rel" -frandom-seed=tally -fPIE -pie tally.c \
      -o "$d/tally" -L"$d" -ltally
  )
}

# put ARCH FILE NAME VERSION: copy unstripped and stripped into OUT/ARCH/
put() {
  local arch=$1 file=$2 name=$3 v=$4 dst="$OUT/$1"
  mkdir -p "$dst"
  cp "$file" "$dst/$name-$v"
  "${PREFIX[$arch]}strip" -o "$dst/$name-$v-stripped" "$file"
  chmod 0755 "$dst/$name-$v" "$dst/$name-$v-stripped"
}

for arch in "${ARCHES[@]}"; do
  for rel in 1 2; do
    v=$([ "$rel" = 1 ] && echo a || echo b)
    build "$arch" "$rel" -O2
    for name in calc libtally.so tally; do put "$arch" "$TMP/$arch-$rel--O2/$name" "$name" "$v"; done
    if [ "$arch" != aarch64 ]; then
      build "$arch" "$rel" -Os
      put "$arch" "$TMP/$arch-$rel--Os/calc" calc-Os "$v"
    fi
  done
done

# files that are not what their header says
bad="$OUT/bad"
mkdir -p "$bad"
x="$OUT/x86_64"
{
  head -c 64 "$x/calc-a-stripped"
  perl -e 'my $s = 12345; for (1 .. 4096) { $s = ($s * 1103515245 + 12345) % 2147483648; print chr(($s >> 16) & 255) }'
} >"$bad/elf-header-garbage"
head -c 200 "$x/calc-a" >"$bad/elf-truncated"
cp "$x/calc-a-stripped" "$bad/aarch64-says-x86-code"
printf '\xb7\x00' | dd of="$bad/aarch64-says-x86-code" bs=1 seek=18 conv=notrunc status=none
chmod 0644 "$bad"/*

for arch in "${ARCHES[@]}"; do
  printf '%s: %s\n' "$arch" "$("${PREFIX[$arch]}gcc" --version | head -1)"
done >"$OUT/TOOLCHAINS"
echo "build.sh: wrote $(find "$OUT" -type f | wc -l) files, $(du -sk --apparent-size "$OUT" | cut -f1) KiB, to $OUT" >&2
