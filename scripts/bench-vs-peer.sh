#!/usr/bin/env bash
# doculearn side by side with the Python peer (../shared/peer: arq + pypdf +
# sentence-transformers) on the same PDFs, in one session, taking turns:
#
#   bash scripts/bench-vs-peer.sh [PDF_FOLDER] [ROUNDS]
#
# Per round: the peer with its local model, doculearn with its local model,
# the peer's instant `null` embedder, doculearn's instant `hash` embedder.
# Then the embedding bench (the two models alone on the same 200 chunks) and
# the 5,000-chunk page. Figures only: nothing here passes or fails on
# timing. Run it on an otherwise idle machine. OPENBLAS_* are removed for
# the Python side only (numpy and PyTorch run slower with them).
set -euo pipefail
cd "$(dirname "$0")/.."
folder=$(realpath "${1:-../shared/peer/sample}")
rounds=${2:-1}
peer=$(realpath ../shared/peer)
python=$(bash scripts/bench-venv.sh)
cargo bench --quiet --no-run --bench pipeline --bench embedding 2>/dev/null || cargo bench --no-run --bench pipeline --bench embedding

peer_run() {
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PEER_PYTHON="$python" \
    PEER_RESULTS_DIR="${DOCULEARN_DATA_DIR:-$PWD/.local}/peer-results" \
    bash "$peer/bench.sh" "$folder" "$1" 2>&1 | grep -E '^peer(-detail)?:'
}
ours_run() {
  DOCULEARN_CORPUS="$folder" cargo bench --quiet --bench pipeline -- "$1" 2>/dev/null | grep -v '^$'
}

echo "== $(date -u +%FT%TZ) on $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
for ((r = 1; r <= rounds; r++)); do
  echo "== round $r: local models"
  peer_run local
  ours_run local
  echo "== round $r: instant embedders"
  peer_run null
  ours_run hash
done
echo "== embedding alone"
cargo bench --quiet --bench embedding -- --quick 2>/dev/null | grep -v 'Loading weights'
echo "== one 5,000-chunk page"
cargo bench --quiet --bench pipeline -- long 2>/dev/null | grep -v '^$'
