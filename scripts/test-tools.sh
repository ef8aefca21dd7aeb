#!/usr/bin/env bash
# Installs the tools the test suite drives, when missing (idempotent):
#   nginx-light  — the reverse-proxy test runs the shipped site file in front of the daemon
#   prometheus   — for promtool, which checks the /metrics exposition format
#   chromium     — the browser the UI tests drive
#   nodejs, npm  — run the UI tests (tests/ui: playwright-core from npm,
#                  pinned by package-lock.json; it uses /usr/bin/chromium and
#                  downloads no browser)
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  echo "test-tools: installing ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ ! -d tests/ui/node_modules/playwright-core ] || [ tests/ui/package-lock.json -nt tests/ui/node_modules/.package-lock.json ]; then
  echo "test-tools: npm ci in tests/ui (playwright-core)"
  (cd tests/ui && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi
echo "test-tools: nginx, promtool, chromium, node and playwright-core are present"
