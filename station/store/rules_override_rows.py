"""The ``rules_overrides`` table (append-only): the SQL behind :mod:`station.rules_overrides`."""

from __future__ import annotations

from typing import Any

import sqlite_utils

from .db import inserted_id

TABLE = "rules_overrides"


def newest_overrides(db: sqlite_utils.Database, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` rows (id, t_wall, user, reason, classes, source; JSON still encoded), newest first.

    [] when the table does not exist (a database older than the migration that adds it).
    """
    table = db[TABLE]
    if not table.exists():
        return []
    return list(
        table.rows_where(select="id, t_wall, user, reason, classes, source", order_by="id DESC", limit=int(limit))
    )


def append_override(
    db: sqlite_utils.Database, t_wall: float, user: str, reason: str | None, classes_json: str, source_json: str
) -> int:
    """Append one row (in the caller's transaction if one is open); returns its id."""
    row = {"t_wall": t_wall, "user": user, "reason": reason, "classes": classes_json, "source": source_json}
    table = db.table(TABLE).insert(row)
    return inserted_id(table.last_rowid)
