"""SIGKILL a running station: no committed row lost, integrity ok, counters resume."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml


def write_config(tmp_path: Path) -> Path:
    cfg = {
        "cameras": [{"type": "synthetic", "id": "cam0", "width": 640, "height": 400, "defect_rate": 0.4, "seed": 11}],
        "trigger": {"type": "timer", "parts_per_minute": 1500},
        "inspector": {"type": "reference", "learn_parts": 5},
        "reject": {"travel_ms": 300, "safety_margin_ms": 100, "pulse_ms": 20},
        "store": {"db_path": str(tmp_path / "station.db"), "images_dir": str(tmp_path / "images"), "batch_size": 8},
        "web": {"enabled": False},
    }
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def committed_ids(db_path: Path) -> set[int]:
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)
    try:
        return {r[0] for r in con.execute("select part_id from inspections")}
    finally:
        con.close()


def test_sigkill_then_restart(tmp_path: Path):
    cfg_path = write_config(tmp_path)
    db_path = tmp_path / "station.db"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "station", "run", "-c", str(cfg_path), "--no-web"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        seen: set[int] = set()
        while time.monotonic() < deadline:
            time.sleep(0.2)
            if db_path.exists():
                try:
                    seen = committed_ids(db_path)
                except sqlite3.OperationalError:
                    continue  # schema not created yet
                if len(seen) >= 80:
                    break
        assert len(seen) >= 80, proc.stdout.read1().decode() if isinstance(proc.stdout, io.BufferedReader) else ""
        seen = committed_ids(db_path)  # committed rows just before the kill
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    con = sqlite3.connect(db_path)
    assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
    after = {r[0] for r in con.execute("select part_id from inspections")}
    assert seen <= after, f"lost committed rows: {sorted(seen - after)[:10]}"
    counters = json.loads(con.execute("select counters from counters").fetchone()[0])
    assert counters["records_written"] == len(after)
    con.close()

    # restart: part ids continue, counters resume from the persisted snapshot
    out = subprocess.run(
        [sys.executable, "-m", "station", "run", "-c", str(cfg_path), "--no-web", "--parts", "20"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["reconcile"] == [] or all("in flight" not in p for p in summary["reconcile"])
    con = sqlite3.connect(db_path)
    ids = [r[0] for r in con.execute("select part_id from inspections order by part_id")]
    assert len(ids) == len(after) + 20
    assert ids[-20:] == list(range(max(after) + 1, max(after) + 21))
    assert summary["counters"]["records_written"] == len(after) + 20
    assert summary["counters"]["verdicts"] >= len(after) + 20
