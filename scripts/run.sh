#!/usr/bin/env bash
# Set up and run the station on its embedded default: synthetic camera, simulated reject
# output, the shipped model, SQLite in data/, web UI on http://127.0.0.1:8000
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh run
exec .venv/bin/station run "$@"
