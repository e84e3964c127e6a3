"""``python -m station replay`` run as a real subprocess, and its JSON-lines output read back by file name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def run_replay(folder: Path, out: Path, cfg: Path) -> subprocess.CompletedProcess[str]:
    """Replays every image in ``folder`` through the station configured by ``cfg``, one JSON line per image to
    ``out``."""
    return subprocess.run(
        [sys.executable, "-m", "station", "replay", str(folder), "--out", str(out), "-c", str(cfg)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def replay_results(out: Path) -> dict[str, dict[str, Any]]:
    """The replay's results keyed by image file name."""
    return {r["file"]: r for r in map(json.loads, out.read_text().splitlines())}
