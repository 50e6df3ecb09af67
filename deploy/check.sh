#!/usr/bin/env bash
# Schema check of the Kubernetes manifests: every document of deploy/*.yaml
# against the Kubernetes OpenAPI schemas of one Kubernetes version, strict
# (an unknown field is an error), with the PyPI package kubernetes-validate,
# which bundles the schemas (no network needed once it is installed).
#
#   deploy/check.sh [VENV_DIR]     (default: ${TMPDIR:-/tmp}/delta-kv)
#
# The package is installed with the machine's python3 (python3 -m venv and the
# venv's pip) into VENV_DIR, once; later runs reuse it. Exits non-zero when a
# document fails, when a kind or apiVersion has no schema (a typo there), or
# when a file cannot be parsed.
set -euo pipefail

KV_VERSION=1.34.1  # kubernetes-validate: bundles the schemas of Kubernetes 1.25 to 1.34
K8S_VERSION=1.31.0 # the Kubernetes version the manifests are checked against

here=$(cd "$(dirname "$0")" && pwd)
venv=${1:-${TMPDIR:-/tmp}/delta-kv}
kv=$venv/bin/kubernetes-validate

if [ "$("$kv" --version 2>/dev/null || true)" != "$KV_VERSION" ]; then
  echo "installing kubernetes-validate==$KV_VERSION into $venv"
  python3 -m venv --clear "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KV_VERSION"
fi

shopt -s nullglob
files=("$here"/*.yaml)
if [ ${#files[@]} -eq 0 ]; then
  echo "no manifests in $here" >&2
  exit 1
fi

echo "kubernetes-validate $("$kv" --version), Kubernetes $K8S_VERSION, strict"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
"$kv" --strict --kubernetes-version "$K8S_VERSION" "${files[@]}" >"$out" 2>&1 || status=$?
cat "$out"

# kubernetes-validate only warns (exit 0) about a kind it has no schema for,
# such as a misspelt kind or apiVersion: every line must be a pass.
if grep -qv '^INFO .* passed for resource ' "$out" && [ "$status" -eq 0 ]; then
  status=1
fi
# And every file must hold at least one document that passed.
for f in "${files[@]}"; do
  if ! grep -qF "INFO $f passed for resource " "$out"; then
    echo "ERROR $f: no document validated" >&2
    status=1
  fi
done

if [ "$status" -ne 0 ]; then
  echo "FAILED: deploy manifests do not match the Kubernetes $K8S_VERSION schemas" >&2
  exit "$status"
fi
echo "ok: $(grep -c '^INFO .* passed for resource ' "$out") documents in ${#files[@]} files"
