#!/usr/bin/env bash
# Installs libdelta into PREFIX: include/delta.h, lib/libdelta.so.VERSION
# (soname libdelta.so.ABI, with the libdelta.so.ABI and libdelta.so links),
# lib/libdelta.a and lib/pkgconfig/delta.pc from delta.pc.in.
#
#   crates/capi/install.sh PREFIX [BUILD_DIR]
#
# BUILD_DIR holds the built libdelta.so and libdelta.a (default
# target/release: cargo build --release -p delta-capi); it is not built here.
# Then: cc app.c $(pkg-config --cflags --libs delta)   (shared), or
#       cc app.c $(pkg-config --cflags --libs --static delta) with -l:libdelta.a.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
[ $# -ge 1 ] && [ $# -le 2 ] || { echo "usage: $0 PREFIX [BUILD_DIR]" >&2; exit 2; }
prefix=$1
build=${2:-${CARGO_TARGET_DIR:-$root/target}/release}
for f in libdelta.so libdelta.a; do
  [ -f "$build/$f" ] || { echo "error: $build/$f not found (cargo build --release -p delta-capi)" >&2; exit 1; }
done
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n 1)
url=$(sed -n 's/^repository = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n 1)
abi=$(sed -n 's/^pub const DELTA_ABI_VERSION: c_uint = \([0-9]*\);/\1/p' "$here/src/lib.rs")
[ -n "$version" ] && [ -n "$abi" ] || { echo "error: cannot read the version or ABI version" >&2; exit 1; }
case "$prefix" in /*) ;; *) prefix=$(pwd)/$prefix ;; esac

install -d "$prefix/include" "$prefix/lib/pkgconfig"
install -m 0644 "$here/include/delta.h" "$prefix/include/delta.h"
install -m 0755 "$build/libdelta.so" "$prefix/lib/libdelta.so.$version"
ln -sfn "libdelta.so.$version" "$prefix/lib/libdelta.so.$abi"
ln -sfn "libdelta.so.$abi" "$prefix/lib/libdelta.so"
install -m 0644 "$build/libdelta.a" "$prefix/lib/libdelta.a"
sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" -e "s|@URL@|$url|" \
  "$here/delta.pc.in" > "$prefix/lib/pkgconfig/delta.pc"
echo "installed libdelta $version (ABI $abi) into $prefix"
