#!/usr/bin/env bash
# Builds and installs the pgvector extension (0.8.x) into the local PostgreSQL
# from Debian trixie's source package, when the server does not offer it yet.
# Idempotent: does nothing when `vector` is already available.
set -euo pipefail

PGHOST=${PGHOST:-127.0.0.1}
PGUSER=${PGUSER:-postgres}
PG_MAJOR=${PG_MAJOR:-$(ls /etc/postgresql 2>/dev/null | sort -n | tail -n1)}
PG_MAJOR=${PG_MAJOR:-15}
PG_CONFIG=/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config

available() {
  psql -h "$PGHOST" -U "$PGUSER" -d postgres -Atqc \
    "select count(*) from pg_available_extensions where name = 'vector'" 2>/dev/null | grep -qx 1
}

if available; then
  echo "pgvector: already available in PostgreSQL ${PG_MAJOR}"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

if [ ! -f /etc/apt/sources.list.d/doculearn-trixie-src.sources ]; then
  echo "pgvector: adding a deb-src entry for Debian trixie (source packages only)"
  $SUDO tee /etc/apt/sources.list.d/doculearn-trixie-src.sources >/dev/null <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
echo "pgvector: installing build dependencies"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "postgresql-server-dev-${PG_MAJOR}" dpkg-dev make gcc >/dev/null

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
echo "pgvector: fetching the source package"
apt-get source -qq pgvector >/dev/null 2>&1 || apt-get source pgvector
src=$(find . -maxdepth 1 -type d -name 'pgvector-*' | head -n1)
[ -n "$src" ] || { echo "pgvector: source package not found" >&2; exit 1; }
cd "$src"
echo "pgvector: building $(basename "$src") against PostgreSQL ${PG_MAJOR}"
make -s PG_CONFIG="$PG_CONFIG" >/dev/null
$SUDO make -s install PG_CONFIG="$PG_CONFIG" >/dev/null

available || { echo "pgvector: installed but PostgreSQL does not list it" >&2; exit 1; }
echo "pgvector: installed"
