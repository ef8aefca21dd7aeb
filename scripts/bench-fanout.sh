#!/usr/bin/env bash
# Progress fan-out capacity: 10,000 sockets across 1,000 users, events at
# 1,000/s and rising through the normal path (worker's Reporter → Postgres →
# Redis → the daemon's sessions → sockets), then the fan-out alone, then a
# reconnect storm. Prints RSS per socket, deliveries/s, latency from the
# event's creation to its arrival (p50/p99/max), CPU per process, and
# whether any socket lost or repeated an event.
#
#   bash scripts/bench-fanout.sh [--sockets N] [--users N] [--rate N] [--secs N]
#
# Loopback only; a fresh database and channel, dropped at the end; bounded
# (gives up after 20 minutes). Optimised build (the bench profile). Figures
# only: nothing here passes or fails.
set -euo pipefail
cd "$(dirname "$0")/.."
# 10,000 sockets on each side: the bench and the daemon need the descriptors.
ulimit -n "$(ulimit -Hn)"
cargo bench --quiet --no-run --bench fanout 2>/dev/null || cargo bench --no-run --bench fanout
timeout 20m cargo bench --quiet --bench fanout -- "$@" 2>&1 | grep --line-buffered -v '^$'
