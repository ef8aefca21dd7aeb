#!/usr/bin/env bash
# Runs every test: sets up what is missing (same as the quick start), checks
# formatting and lints, then runs the Rust unit and integration tests (real
# PostgreSQL + pgvector and real Redis).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== tests"
export DOCULEARN_MODEL_DIR="$PWD/.local/models/all-MiniLM-L6-v2"
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
