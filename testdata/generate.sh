#!/usr/bin/env bash
# Regenerates the committed fixtures of testdata/ from fixed seeds.
# The test `fixtures_do_not_drift` fails when they differ from what this writes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
cargo run --quiet -p delta-core --example testdata -- "$here"
