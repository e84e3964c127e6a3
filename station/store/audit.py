"""The audit trail's one writer (``audit`` is append-only: migration m0002)."""

from __future__ import annotations

import time
from typing import Any

import sqlite_utils


def insert_audit(db: sqlite_utils.Database, user: str, action: str, object_type: str, object_id: Any = None,
                 before: str | None = None, after: str | None = None, reason: str | None = None) -> None:
    """Append one row to the audit trail inside the caller's transaction."""
    db.execute(
        "INSERT INTO audit (t_wall, user, action, object_type, object_id, before, after, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [time.time(), user, action, object_type, None if object_id is None else str(object_id), before, after, reason],
    )
