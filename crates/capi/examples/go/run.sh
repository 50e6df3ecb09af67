#!/usr/bin/env bash
# Builds the Go example against the static libdelta.a and checks it on a
# small delta: gen (an existing output refused without -replace), info,
# apply (progress lines, digest, byte-exact target), a cancel and the
# resumed re-run, and a damaged delta.
#
#   crates/capi/examples/go/run.sh [LIB_DIR]
#
# LIB_DIR holds libdelta.a (default: built here with
# `cargo build --profile test -p delta-capi --lib`, which reuses what
# `cargo test` built, into target/debug). Needs go and cc.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../../.." && pwd)
if [ $# -ge 1 ]; then
  lib_dir=$1
else
  (cd "$root" && cargo build --profile test -p delta-capi --lib)
  lib_dir=${CARGO_TARGET_DIR:-$root/target}/debug
fi
[ -f "$lib_dir/libdelta.a" ] || { echo "error: $lib_dir/libdelta.a not found" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/delta-go-example.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# Only the static library in the link folder, so that -ldelta takes it.
mkdir "$work/lib"
cp "$lib_dir/libdelta.a" "$work/lib/"
export GOCACHE=${GOCACHE:-$work/gocache} GOPATH=${GOPATH:-$work/gopath}
export GOFLAGS=-mod=mod GOTOOLCHAIN=local GOPROXY=off CGO_ENABLED=1
export CGO_LDFLAGS="-L$work/lib"
(cd "$here" && go vet . && go build -o "$work/example" .)
ldd "$work/example" | grep -q libdelta && fail "the example links libdelta dynamically"

# Two images: the new one is the old one with a changed block and a tail.
head -c 262144 /dev/urandom > "$work/old.img"
cp "$work/old.img" "$work/new.img"
head -c 4096 /dev/urandom | dd of="$work/new.img" bs=4096 seek=10 conv=notrunc status=none
head -c 65536 /dev/urandom >> "$work/new.img"
new_len=$(stat -c %s "$work/new.img")

export TMPDIR=$work
"$work/example" gen "$work/old.img" "$work/new.img" "$work/u.delta" | tee "$work/gen.out"
grep -q "^generated $work/u.delta: [0-9]* bytes" "$work/gen.out" || fail "gen output"
# An existing output: refused (exit 1, the delta kept), replaced with -replace.
cp "$work/u.delta" "$work/u.kept"
set +e
"$work/example" gen "$work/old.img" "$work/new.img" "$work/u.delta" > /dev/null 2> "$work/exists.err"
code=$?
set -e
cat "$work/exists.err"
[ "$code" = 1 ] || fail "existing output: exit code $code, expected 1"
grep -q "^error: refusing to replace $work/u.delta: it exists (set options.replace" "$work/exists.err" \
  || fail "existing output: message"
cmp "$work/u.delta" "$work/u.kept" || fail "a refused gen changed the existing delta"
"$work/example" gen -replace -no-lzma "$work/old.img" "$work/new.img" "$work/u.delta" > /dev/null
"$work/example" gen -replace "$work/old.img" "$work/new.img" "$work/u.delta" > /dev/null
cmp "$work/u.delta" "$work/u.kept" || fail "the same options gave another delta"
"$work/example" info "$work/u.delta" | tee "$work/info.out"
digest=$(sed -n 's/.*blake3 \([0-9a-f]\{64\}\),.*/\1/p' "$work/info.out")
[ -n "$digest" ] || fail "info prints no digest"
grep -q "new image $new_len bytes" "$work/info.out" || fail "info: new image size"

# Cancelled once the applying step starts: nothing in place, exit 4 (cancelled).
set +e
"$work/example" apply -cancel-on-step 1 "$work/old.img" "$work/u.delta" "$work/out.img" \
  > "$work/cancel.out" 2> "$work/cancel.err"
code=$?
set -e
cat "$work/cancel.out" "$work/cancel.err"
[ "$code" = 4 ] || fail "cancel: exit code $code, expected 4 (cancelled, re-run to resume)"
grep -q "^error: cancelled" "$work/cancel.err" || fail "cancel: message"
[ -e "$work/out.img" ] && fail "cancel left the target in place"

"$work/example" apply -compare-zero-runs "$work/old.img" "$work/u.delta" "$work/out.img" | tee "$work/apply.out"
grep -q "^progress 0 " "$work/apply.out" || fail "no preparing progress line"
grep -q "^progress 1 [0-9]*/$new_len\$" "$work/apply.out" || fail "no applying progress line"
grep -q "^progress 5 $new_len/$new_len\$" "$work/apply.out" || fail "no done progress line"
grep -qx "applied $work/out.img: $new_len bytes, blake3 $digest" "$work/apply.out" \
  || fail "apply: result line"
cmp "$work/out.img" "$work/new.img" || fail "the target differs from the new image"

# A damaged delta: exit 1 with the library's message.
cp "$work/u.delta" "$work/bad.delta"
size=$(stat -c %s "$work/bad.delta")
printf '\x00\x01\x02\x03' | dd of="$work/bad.delta" bs=1 seek=$((size - 4)) conv=notrunc status=none
set +e
"$work/example" apply "$work/old.img" "$work/bad.delta" "$work/bad.img" > /dev/null 2> "$work/bad.err"
code=$?
set -e
cat "$work/bad.err"
[ "$code" = 1 ] || fail "damaged delta: exit code $code, expected 1"
grep -q "^error: delta $work/bad.delta" "$work/bad.err" || fail "damaged delta: message"
[ -e "$work/bad.img" ] && fail "a damaged delta left a target"
echo "go example: ok"
