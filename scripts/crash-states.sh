#!/bin/sh
# Power-cut crash states of `delta apply` at a larger scale than CI's:
# runs crates/cli/tests/crash.rs with a bigger image (a tar of FILES gzip
# files of KIB KiB of text each and a binary file as large as the texts)
# and up to STATES crash states per test, and prints how many were tried.
#
#   scripts/crash-states.sh [STATES [FILES [KIB]]]   (defaults 3000 8 256)
#
# Needs strace. Takes several minutes on 2 cores.
set -eu
cd "$(dirname "$0")/.."
command -v strace >/dev/null || { echo "strace is needed (apt-get install strace)" >&2; exit 1; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
DELTA_CRASH_STATES=${1:-3000} DELTA_CRASH_FILES=${2:-8} DELTA_CRASH_FILE_KIB=${3:-256} \
    cargo test -p delta-cli --test crash power_cuts -- --nocapture --test-threads 1 >"$log" 2>&1 || status=$?
grep -E 'crash states:|^test |panicked|went wrong' "$log" || true
if [ "$status" -ne 0 ]; then
    echo "FAILED (full output follows)" >&2
    cat "$log" >&2
    exit "$status"
fi
tried=$(sed -n 's/.*crash states: .* distinct states, \([0-9]*\) tried.*/\1/p' "$log" | awk '{n += $1} END {print n + 0}')
echo "crash states tried: $tried"
