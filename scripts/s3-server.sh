#!/usr/bin/env bash
# Installs the S3-compatible server the delta service's tests start
# (moto's server, from PyPI) into a venv, once, and prints the path of its
# `moto_server`. The tests find it there, or at $DELTA_S3_SERVER.
#
#   scripts/s3-server.sh [VENV_DIR]     (default: ${TMPDIR:-/tmp}/delta-moto)
set -euo pipefail
MOTO_VERSION=5.2.6
venv=${1:-${TMPDIR:-/tmp}/delta-moto}
if ! "$venv/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
  echo "installing moto[server]==$MOTO_VERSION into $venv" >&2
  python3 -m venv --clear "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi
echo "$venv/bin/moto_server"
