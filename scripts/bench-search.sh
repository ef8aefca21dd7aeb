#!/usr/bin/env bash
# Search quality: recall@5 per mode (hybrid, semantic, keyword) and per
# query class over the corpus, with the mean query latency.
#
#   bash scripts/bench-search.sh [trgm]
#
# Starts the daemon on loopback with the local model and a fresh database
# (dropped at the end), ingests ../shared/corpus (or DOCULEARN_CORPUS), asks
# every query of benches/search_queries.json in every mode. `trgm` adds
# pg_trgm as the keyword side, in SQL, for comparison. Bounded: gives up
# after 40 minutes. Figures only: nothing here passes or fails.
# BENCH_PROFILE=release for an optimised build (default: dev, whose
# dependencies and model crate are optimised already; see Cargo.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${BENCH_PROFILE:-dev}
cargo bench --profile "$profile" --quiet --no-run --bench search 2>/dev/null ||
  cargo bench --profile "$profile" --no-run --bench search
timeout 40m cargo bench --profile "$profile" --quiet --bench search -- "$@" 2>/dev/null | grep --line-buffered -v '^$'
