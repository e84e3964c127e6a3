#!/usr/bin/env bash
# Set up and run the whole test suite (real SQLite, ONNX models exported by Ultralytics,
# pylon emulator, mosquitto, pymodbus, asyncua, headless Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
# Setup can leave gigabytes of freshly installed wheels (torch) in the page cache; flush them now
# so the kernel's writeback does not overlap the tests that time reject edges to the millisecond.
sync
export YOLO_OFFLINE=1 PYTHONUNBUFFERED=1
exec .venv/bin/python -m pytest "$@"
