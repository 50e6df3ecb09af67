#!/usr/bin/env bash
# Fuzz smoke run, called by .ci/run: installs cargo-fuzz if missing, seeds the
# corpora, replays testdata/regress/<target>/*, then fuzzes each target for
# FUZZ_SECONDS (default 60), two targets at a time (CI has 2 cores).
# Exits non-zero on any crash, panic, timeout or out-of-memory; libFuzzer
# leaves the input in fuzz/artifacts/<target>/ (see fuzz/README.md).
#
# Works on stable Rust: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its nightly
# flags (-Zsanitizer=address and friends).
set -euo pipefail
fuzz=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$fuzz")
export RUSTC_BOOTSTRAP=1
seconds=${FUZZ_SECONDS:-60}
targets=(decode_header decode_ops apply roundtrip decode_signatures map_image deflate_segment lzma_segment exec_segment)
declare -A max_len=([decode_header]=8192 [decode_ops]=4096 [apply]=8192 [roundtrip]=16384 [decode_signatures]=2048 [map_image]=131072 [deflate_segment]=32768 [lzma_segment]=65536 [exec_segment]=16384)
# Slow inputs are findings too: nothing here should take a second.
flags=(-rss_limit_mb=2048 -timeout=10)

step() { printf '\n--- %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

if ! cargo fuzz --version >/dev/null 2>&1; then
  step "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
cargo fuzz --version

step "seeding fuzz/corpus/"
"$fuzz/seed.sh"

cd "$fuzz"
step "building the fuzz targets"
nice -n 19 cargo fuzz build

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

step "replaying testdata/regress/"
failed=()
for t in "${targets[@]}"; do
  files=()
  for f in "$root/testdata/regress/$t"/*; do
    [ -f "$f" ] && files+=("$f")
  done
  [ ${#files[@]} -gt 0 ] || continue
  # Files (not folders) as arguments: libFuzzer runs each once and exits.
  if nice -n 19 cargo fuzz run "$t" "${files[@]}" -- "${flags[@]}" >"$logs/$t.replay.log" 2>&1; then
    echo "$t: ${#files[@]} inputs replayed"
  else
    echo "$t: REGRESSION (log follows)"
    cat "$logs/$t.replay.log"
    failed+=("$t (regress)")
  fi
done

step "fuzzing each target for ${seconds}s, two at a time"
run() {
  local t=$1
  nice -n 19 cargo fuzz run "$t" "corpus/$t" -- "${flags[@]}" \
    -max_total_time="$seconds" -max_len="${max_len[$t]}" >"$logs/$t.log" 2>&1
}
for ((i = 0; i < ${#targets[@]}; i += 2)); do
  pids=()
  for t in "${targets[@]:i:2}"; do
    run "$t" &
    pids+=("$!:$t")
  done
  for entry in "${pids[@]}"; do
    pid=${entry%%:*} t=${entry#*:}
    if wait "$pid"; then
      echo "$t: $(grep -a 'DONE' "$logs/$t.log" | tail -1)"
    else
      echo "$t: CRASH (log tail follows; input in fuzz/artifacts/$t/)"
      tail -n 80 "$logs/$t.log"
      failed+=("$t")
    fi
  done
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz smoke failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz smoke passed"
