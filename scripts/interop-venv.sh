#!/usr/bin/env bash
# Creates tests/interop/.venv with the real arq 0.28 (from PyPI) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=tests/interop/.venv
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/pytest" ] || ! cmp -s tests/interop/requirements.txt "$stamp"; then
  echo "interop: creating $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r tests/interop/requirements.txt
  cp tests/interop/requirements.txt "$stamp"
fi
