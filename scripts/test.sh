#!/usr/bin/env bash
# Bootstrap .venv (Python 3.12) and run the whole test suite.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bootstrap.sh
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
# The DP ledger race tests run against a real PostgreSQL server too; install it when missing.
# Where that is impossible the script says why and those tests skip with that reason.
bash "$ROOT/scripts/ensure_postgres.sh" >/dev/null || echo "test.sh: PostgreSQL unavailable; its tests will be skipped" >&2
# The service page test drives Debian's Chromium headless; install it when missing (else that test skips).
bash "$ROOT/scripts/ensure_chromium.sh" >/dev/null || echo "test.sh: Chromium unavailable; the page test will be skipped" >&2
# Two workers, one test file each at a time (module fixtures stay per file): the suite spends about a
# third of its wall time waiting on servers, JVMs and subprocesses. PYTEST_WORKERS=0 runs it serially.
exec python -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadfile "$@"
