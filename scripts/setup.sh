#!/usr/bin/env bash
# Set up (or update) the project's virtualenv in .venv.
#   scripts/setup.sh run    runtime only: onnxruntime (CPU), OpenCV, FastAPI, SQLite; no torch
#   scripts/setup.sh test   + plant protocols, training (torch, ultralytics) and test tools,
#                           + Debian packages for the tests (mosquitto, chromium, postgresql)
# Idempotent: skips pip when pyproject.toml has not changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-run}"
PY="${PYTHON:-python3}"

apt_install() {  # apt_install PKG... : install missing Debian packages when we can (root)
    local missing=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: please install with apt: ${missing[*]}" >&2; return 0
    fi
    echo "setup: apt-get install ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

if command -v dpkg >/dev/null; then
    apt_install libgl1 libglib2.0-0   # OpenCV's shared libraries
    [ "$profile" = test ] && apt_install mosquitto chromium postgresql  # postgresql: the plant tier's tests
fi

if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv 2>/dev/null || { apt_install python3-venv; "$PY" -m venv .venv; }
fi
stamp=".venv/.installed-$profile-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
    if [ "$profile" = test ]; then
        # torch from the machine's wheel cache; ultralytics needs it only to train/export.
        .venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1
        .venv/bin/pip install -q -e ".[plant,train,test]"
    else
        .venv/bin/pip install -q -e .
    fi
    touch "$stamp"
fi
