#!/usr/bin/env bash
# Set up and run the whole test suite (real SQLite, ONNX models exported by Ultralytics,
# pylon emulator, mosquitto, pymodbus, asyncua, headless Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
export YOLO_OFFLINE=1 PYTHONUNBUFFERED=1
.venv/bin/python -m ruff check .            # lint rules in pyproject.toml [tool.ruff]
.venv/bin/python -m ruff format --check .   # the one code format
.venv/bin/python -m mypy           # type checks: packages and flags in pyproject.toml [tool.mypy] (docs/typing.md)
exec .venv/bin/python -m pytest "$@"
