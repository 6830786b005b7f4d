#!/usr/bin/env bash
# Bootstrap .venv (Python 3.12) and run the main job end to end on the embedded default catalog.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bootstrap.sh
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
exec iceberg-privacy --home "${ICEBERG_PRIVACY_HOME:-$ROOT/.iceberg-privacy}" demo "$@"
