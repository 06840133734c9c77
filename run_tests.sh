#!/usr/bin/env bash
# Run the whole test suite: ./run_tests.sh [pytest args]
# Creates .venv and installs the pinned project with its test extras on first use.
set -euo pipefail
cd "$(dirname "$0")"
FMCG_EXTRAS=test source ./scripts/bootstrap.sh
# Test files run side by side, one file per worker (their module fixtures are built once);
# FMCG_TEST_WORKERS=0 runs them in this process.
exec "$VENV/bin/python" -m pytest -n "${FMCG_TEST_WORKERS:-auto}" --dist loadfile "$@"
