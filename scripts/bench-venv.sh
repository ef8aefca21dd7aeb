#!/usr/bin/env bash
# Creates the benchmarks' Python venv (sentence-transformers on PyTorch, and
# the Python peer's pipeline) when missing or out of date; prints its python.
# Only the benches use it: building, running and testing doculearn never do.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${DOCULEARN_DATA_DIR:-$PWD/.local}/bench-venv"
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python" ] || ! cmp -s benches/requirements.txt "$stamp"; then
  echo "bench-venv: creating $venv (PyTorch from PyPI: about 6 GB, a few minutes)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r benches/requirements.txt >&2
  cp benches/requirements.txt "$stamp"
fi
echo "$venv/bin/python"
