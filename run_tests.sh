#!/usr/bin/env bash
# Run the whole test suite: ./run_tests.sh [pytest args]
# Creates .venv and installs the pinned project with its test extras on first use.
set -euo pipefail
cd "$(dirname "$0")"
FMCG_EXTRAS=test source ./scripts/bootstrap.sh
exec "$VENV/bin/python" -m pytest "$@"
