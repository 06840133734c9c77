#!/usr/bin/env bash
# Generate the warehouse locally: ./run_local.sh [options]   (see --help)
# Creates .venv and installs the pinned project on first use, then runs the
# pipeline on Beam's in-process runner into ./output (DuckDB by default).
set -euo pipefail
cd "$(dirname "$0")"
source ./scripts/bootstrap.sh
exec "$VENV/bin/python" -m fmcg_beam "$@"
