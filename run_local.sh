#!/usr/bin/env bash
# Generate the warehouse locally: ./run_local.sh [options]   (see --help)
# Creates .venv and installs the pinned project on first use, then runs the
# pipeline on Beam's in-process runner into ./output (DuckDB by default).
# A relative --output_dir (or FMCG_OUTPUT_DIR, or the default ./output) is
# taken from the directory you run this script from, not the repository's.
set -euo pipefail
caller="$PWD"
repo="$(cd "$(dirname "$0")" && pwd -P)"
cd "$repo"
source ./scripts/bootstrap.sh
case "$VENV" in
  /*) ;;
  *) VENV="$repo/$VENV" ;;  # bootstrap.sh names it relative to the repository
esac
cd "$caller"
exec "$VENV/bin/python" -m fmcg_beam "$@"
