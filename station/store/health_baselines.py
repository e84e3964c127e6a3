"""The ``health_baselines`` table: image health bands and model baselines kept across restarts (station/health/)."""

from __future__ import annotations

import json
import time
from typing import Any

import sqlite_utils

from station import serialize

from .db import write_transaction


def save(db: sqlite_utils.Database, rows: list[tuple[str, str, dict[str, Any]]]) -> None:
    """Replace the rows of each (kind, key) in ``rows`` with its data, in one transaction."""
    if not rows:
        return
    now = time.time()
    with write_transaction(db):
        db.conn.executemany(
            "INSERT OR REPLACE INTO health_baselines (kind, key, data, saved_wall) VALUES (?, ?, ?, ?)",
            [(kind, key, serialize.dumps(data), now) for kind, key, data in rows],
        )


def load(db: sqlite_utils.Database) -> list[tuple[str, str, dict[str, Any]]]:
    """Every saved (kind, key, data)."""
    return [
        (r[0], r[1], json.loads(r[2]))
        for r in db.execute("SELECT kind, key, data FROM health_baselines ORDER BY kind, key")
    ]


def forget(db: sqlite_utils.Database, kind: str) -> None:
    """Drop every row of ``kind`` (a relearn of the image bands: they are learned again and saved at the next stop)."""
    with write_transaction(db):
        db.execute("DELETE FROM health_baselines WHERE kind = ?", [kind])
