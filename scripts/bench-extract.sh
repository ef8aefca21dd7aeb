#!/usr/bin/env bash
# Extraction speed of our PDF reader next to pdftotext, taking turns on the
# same files in one session (figures only):
#
#   bash scripts/bench-extract.sh [FOLDER...]
#
# Defaults to ../shared/corpus and ../shared/peer/sample. Installs Debian's
# poppler-utils (pdftotext) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v pdftotext >/dev/null 2>&1; then
  echo "bench-extract: installing poppler-utils (pdftotext)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends poppler-utils >/dev/null
fi
folders=("$@")
[ ${#folders[@]} -gt 0 ] || folders=(../shared/corpus ../shared/peer/sample)
# cargo runs the bench in the crate's folder: hand it absolute paths.
absolute=()
for f in "${folders[@]}"; do absolute+=("$(cd "$f" && pwd)"); done
cargo bench --quiet -p pdftext --bench extract -- --rounds 3 "${absolute[@]}"
