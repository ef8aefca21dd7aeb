#!/usr/bin/env bash
# Runs every test: sets up what is missing (same as the quick start), checks
# formatting and lints, runs the Rust unit and integration tests (real
# PostgreSQL + pgvector and real Redis), then the arq interop suite (the real
# Python arq 0.28 client and worker against the daemon).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
bash scripts/test-tools.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== tests"
# The shared corpus sits beside the project (../shared/corpus). A clone made
# elsewhere (the clean-clone check in a temporary folder) finds it beside
# the repository it was cloned from.
if [ -z "${DOCULEARN_CORPUS:-}" ]; then
  origin=$(git config --get remote.origin.url 2>/dev/null || true)
  for base in .. "${origin%/}/.."; do
    if [ -f "$base/shared/corpus/manifest.tsv" ]; then
      DOCULEARN_CORPUS=$(realpath "$base/shared/corpus")
      export DOCULEARN_CORPUS
      break
    fi
  done
  if [ -z "${DOCULEARN_CORPUS:-}" ]; then
    echo "test: the corpus is not at ../shared/corpus nor beside this clone's origin; set DOCULEARN_CORPUS" >&2
    exit 1
  fi
fi
echo "corpus: $DOCULEARN_CORPUS"
export DOCULEARN_MODEL_DIR="$PWD/.local/models/all-MiniLM-L6-v2"
export DOCULEARN_OPENVINO_DIR="$PWD/.local/openvino"
status=0
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@" || status=1
else
  cargo test --workspace --no-fail-fast "$@" || status=1
fi

echo "== arq interop suite (Python arq 0.28)"
bash scripts/interop-venv.sh
cargo build --quiet --bin doculearn
DOCULEARN_BIN="$PWD/target/debug/doculearn" tests/interop/.venv/bin/pytest tests/interop -q -p no:cacheprovider || status=1
exit $status
