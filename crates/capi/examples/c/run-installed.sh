#!/usr/bin/env bash
# Installs libdelta into a temporary prefix with install.sh, builds the C
# example from it with pkg-config (shared library, soname libdelta.so.ABI)
# and applies a small delta made by `delta gen` with it.
#
#   crates/capi/examples/c/run-installed.sh [BUILD_DIR]
#
# BUILD_DIR holds libdelta.so, libdelta.a and the delta binary (default:
# built here with `cargo build --profile test`, which reuses what
# `cargo test` built, into target/debug). Needs cc and pkg-config.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../../.." && pwd)
if [ $# -ge 1 ]; then
  build=$1
else
  (cd "$root" && cargo build --profile test -p delta-capi -p delta-cli)
  build=${CARGO_TARGET_DIR:-$root/target}/debug
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/delta-c-example.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$root/crates/capi/install.sh" "$work/prefix" "$build"
export PKG_CONFIG_PATH=$work/prefix/lib/pkgconfig
echo "pkg-config: $(pkg-config --modversion delta): $(pkg-config --cflags --libs delta)"
# shellcheck disable=SC2046 # pkg-config prints several words on purpose
cc -std=c99 -Wall -Wextra -Werror "$here/apply.c" $(pkg-config --cflags --libs delta) -o "$work/apply"
export LD_LIBRARY_PATH=$work/prefix/lib
abi=$(sed -n 's/^pub const DELTA_ABI_VERSION: c_uint = \([0-9]*\);/\1/p' "$root/crates/capi/src/lib.rs")
ldd "$work/apply" | grep -q "libdelta.so.$abi => $work/prefix/lib/libdelta.so.$abi" \
  || fail "the example does not load libdelta.so.$abi from the prefix: $(ldd "$work/apply")"

head -c 200000 /dev/urandom > "$work/old.img"
{ head -c 100000 "$work/old.img"; head -c 5000 /dev/urandom; tail -c 100000 "$work/old.img"; } > "$work/new.img"
"$build/delta" gen "$work/old.img" "$work/new.img" -o "$work/u.delta" > /dev/null
digest=$("$build/delta" info --json "$work/u.delta" | sed -n 's/.*"new_blake3":"\([0-9a-f]*\)".*/\1/p')
[ -n "$digest" ] || fail "no digest from delta info"
TMPDIR=$work "$work/apply" --compare-zero-runs "$work/old.img" "$work/u.delta" "$work/out.img" | tee "$work/apply.out"
cmp "$work/out.img" "$work/new.img" || fail "the target differs from the new image"
grep -q "^progress 1 " "$work/apply.out" || fail "no applying progress line"
grep -q "blake3 $digest\$" "$work/apply.out" || fail "the digest printed is not the new image's"
echo "installed C example: ok"
