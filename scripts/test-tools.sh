#!/usr/bin/env bash
# Installs the tools the test suite drives, when missing (idempotent):
#   nginx-light  — the reverse-proxy test runs the shipped site file in front of the daemon
#   prometheus   — for promtool, which checks the /metrics exposition format
#   chromium     — the browser the UI tests drive
set -euo pipefail
need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  echo "test-tools: installing ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "test-tools: nginx, promtool and chromium are present"
