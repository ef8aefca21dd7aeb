#!/usr/bin/env bash
# Quick start: sets up what is missing, builds, and runs the daemon with its
# local defaults (local embedding model, no key, no network), printing the
# URL and a token to use. Ctrl-C stops it gracefully.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
echo "dev: building (release)"
cargo build --release --quiet --bin doculearn

export DOCULEARN_AUTH__JWT_SECRET="${DOCULEARN_AUTH__JWT_SECRET:-$(cat .local/jwt-secret)}"
export DOCULEARN_EMBEDDING__MODEL_DIR="${DOCULEARN_EMBEDDING__MODEL_DIR:-$PWD/.local/models/all-MiniLM-L6-v2}"
export DOCULEARN_EMBEDDING__OPENVINO_DIR="${DOCULEARN_EMBEDDING__OPENVINO_DIR:-$PWD/.local/openvino}"
export DOCULEARN_HTTP__DEV_MODE="${DOCULEARN_HTTP__DEV_MODE:-true}"
bin=target/release/doculearn

if [ ! -s .local/dev-user ]; then
  python3 -c 'import uuid; print(uuid.uuid4())' > .local/dev-user
fi
user=$(cat .local/dev-user)
# The page's "Use the development token" button signs in as the same user.
export DOCULEARN_HTTP__DEV_USER_ID="${DOCULEARN_HTTP__DEV_USER_ID:-$user}"
token=$("$bin" token --user "$user" --ttl 7d)
listen="${DOCULEARN_HTTP__LISTEN:-127.0.0.1:8000}"
cat <<MSG

  doculearn is starting on http://$listen  (open it in a browser: dev mode
  offers a sign-in button; or paste the token below)
  user:  $user
  token: $token

  from a terminal:
         $bin ingest --token \$TOKEN ../shared/corpus/jacow-latex-a4.pdf

  try:   curl -H "Authorization: Bearer \$TOKEN" -F file=@../shared/corpus/debian-manifesto.txt http://$listen/api/v1/documents

MSG
exec "$bin" serve "$@"
