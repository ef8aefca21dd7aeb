#!/usr/bin/env bash
# Starts the local PostgreSQL and Redis when they are not answering, with the
# same commands this machine kind uses at boot. Idempotent.
set -euo pipefail

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "services: starting PostgreSQL"
  cluster_version=$(ls /etc/postgresql 2>/dev/null | sort -n | tail -n1)
  [ -n "$cluster_version" ] || { echo "services: PostgreSQL is not installed" >&2; exit 1; }
  pg_ctlcluster --skip-systemctl-redirect "$cluster_version" main start
  for _ in $(seq 1 50); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.2; done
  pg_isready -h 127.0.0.1 -p 5432 -q || { echo "services: PostgreSQL did not come up" >&2; exit 1; }
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "services: starting Redis (no persistence)"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 50); do redis-cli ping >/dev/null 2>&1 && break; sleep 0.2; done
  redis-cli ping >/dev/null 2>&1 || { echo "services: Redis did not come up" >&2; exit 1; }
fi
echo "services: PostgreSQL and Redis are up"
