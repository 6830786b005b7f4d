#!/usr/bin/env bash
# Make a PostgreSQL server (initdb + postgres) and the pg8000 driver available for the ledger race
# tests against a PostgreSQL-backed SqlCatalog. Installs Debian's `postgresql` package with apt-get
# when no server binary is found. Prints what it did; the last line is `PG_BIN=<dir>`.
# Exits non-zero with a reason when PostgreSQL cannot be made available.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"

find_pg_bin() {
  local d
  if command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1; then
    d="$(dirname "$(readlink -f "$(command -v initdb)")")"
    [ -x "$d/postgres" ] && [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
  fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/initdb" ] && [ -x "$d/postgres" ] && [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
  done
  return 1
}

if PG_BIN="$(find_pg_bin)"; then
  echo "ensure_postgres: found PostgreSQL server binaries in $PG_BIN ($("$PG_BIN/postgres" --version))" >&2
else
  if [ "$(id -u)" != "0" ]; then
    echo "ensure_postgres: no PostgreSQL server found and not root, so apt-get cannot install it." >&2
    echo "ensure_postgres: install Debian's 'postgresql' package (sudo apt-get install postgresql) and re-run." >&2
    exit 2
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_postgres: no PostgreSQL server found and no apt-get on this machine; install PostgreSQL >= 13." >&2
    exit 2
  fi
  echo "ensure_postgres: no PostgreSQL server found; installing Debian package 'postgresql' with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends postgresql >&2; }; then
    echo "ensure_postgres: apt-get install postgresql failed (see above); PostgreSQL tests cannot run." >&2
    exit 3
  fi
  if ! PG_BIN="$(find_pg_bin)"; then
    echo "ensure_postgres: postgresql installed but initdb/postgres/pg_ctl not found under /usr/lib/postgresql." >&2
    exit 3
  fi
  echo "ensure_postgres: installed $("$PG_BIN/postgres" --version) in $PG_BIN" >&2
fi

if [ -x "$PY" ]; then
  if "$PY" -c 'import pg8000' >/dev/null 2>&1; then
    echo "ensure_postgres: python driver pg8000 present in $PY" >&2
  else
    echo "ensure_postgres: installing python driver pg8000 into $PY" >&2
    if ! "$PY" -m pip install --quiet pg8000 >&2; then
      echo "ensure_postgres: pip install pg8000 failed; SqlCatalog cannot reach PostgreSQL." >&2
      exit 4
    fi
  fi
else
  echo "ensure_postgres: note: no python at $PY; install pg8000 into your environment yourself." >&2
fi
echo "PG_BIN=$PG_BIN"
