#!/usr/bin/env bash
# Create (or reuse) .venv from a Python 3.12 interpreter and install the project into it.
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run on its own.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
EXTRAS="${IP_EXTRAS:-dev,spark,dp}"

find_python312() {
  local c
  for c in "${PYTHON312:-}" python3.12; do
    [ -n "$c" ] || continue
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(0 if sys.version_info[:2]==(3,12) else 1)' 2>/dev/null; then
      command -v "$c"; return 0
    fi
  done
  if command -v pyenv >/dev/null 2>&1; then
    local v
    for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.[0-9]+)?$' | sort -t. -k3 -n -r); do
      c="$(pyenv root)/versions/$v/bin/python3.12"
      [ -x "$c" ] && { echo "$c"; return 0; }
    done
  fi
  for c in /usr/local/bin/python3.12 /usr/bin/python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
    [ -x "$c" ] && { echo "$c"; return 0; }
  done
  return 1
}

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys; sys.exit(0 if sys.version_info[:2]==(3,12) else 1)' 2>/dev/null; then
  if ! PY="$(find_python312)"; then
    cat >&2 <<MSG
iceberg-privacy needs Python 3.12 (tmlt.analytics supports <3.13; PySpark 4 needs >=3.10).
No python3.12 was found on PATH, in pyenv, or in /usr/local/bin.
Install one, then re-run:
  - pyenv:   pyenv install 3.12   (then this script finds it)
  - Debian:  apt-get install python3.12 python3.12-venv
  - or set PYTHON312=/path/to/python3.12
MSG
    exit 1
  fi
  echo "bootstrap: creating .venv with $PY" >&2
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
fi

STAMP="$VENV/.installed-$(cat "$ROOT/pyproject.toml" | sha1sum | cut -c1-12)-${EXTRAS//,/_}"
if [ ! -f "$STAMP" ]; then
  echo "bootstrap: installing iceberg-privacy[$EXTRAS] into .venv (first run takes a few minutes)" >&2
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT[$EXTRAS]" >&2
  rm -f "$VENV"/.installed-*
  touch "$STAMP"
fi
if ! command -v java >/dev/null 2>&1; then
  echo "bootstrap: note: no 'java' on PATH; Spark and DP features need Java 17+ (apt-get install openjdk-17-jre-headless)." >&2
fi
export PATH="$VENV/bin:$PATH"
