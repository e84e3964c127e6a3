"""The ``models`` table: the SQL behind :mod:`models.registry` (register, list, promote, roll back).

Rows are returned as dicts with the JSON columns still encoded; :mod:`models.registry` turns
them into ``ModelRecord`` objects and holds the rules (the promotion gate, what may roll back).
Nothing here opens a transaction except :func:`insert_model`; the writers run inside the
caller's :func:`~station.store.db.write_transaction`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlite_utils

from .db import write_transaction

_NEWEST = "created_at DESC, id DESC"


def models_with_sha(db: sqlite_utils.Database, sha: str) -> list[dict[str, Any]]:
    """The row of the model whose sha256 is ``sha`` (a list of 0 or 1)."""
    return list(db["models"].rows_where("sha256 = ?", [sha]))


def models_with_prefix(db: sqlite_utils.Database, prefix: str) -> list[dict[str, Any]]:
    """Rows of every model whose sha256 starts with ``prefix``."""
    return list(db["models"].rows_where("sha256 LIKE ?", [prefix + "%"]))


def models_newest_first(db: sqlite_utils.Database, status: str | None = None) -> list[dict[str, Any]]:
    """Every model row (only those with ``status`` if given), newest registration first."""
    if status:
        return list(db["models"].rows_where("status = ?", [status], order_by=_NEWEST))
    return list(db["models"].rows_where(order_by=_NEWEST))


def last_promoted(db: sqlite_utils.Database, status: str) -> dict[str, Any] | None:
    """The row with ``status`` promoted last, or None."""
    for r in db["models"].rows_where("status = ?", [status], order_by="promoted_at DESC", limit=1):
        return r
    return None


def insert_model(db: sqlite_utils.Database, row: Mapping[str, Any]) -> None:
    """Insert one model row (its columns as keys), committed at once."""
    with write_transaction(db):
        db.table("models").insert(dict(row))


def model_metrics(db: sqlite_utils.Database, sha: str) -> str | None:
    """The ``metrics`` JSON text of model ``sha`` (None when absent or unknown)."""
    for r in db["models"].rows_where("sha256 = ?", [sha], select="metrics"):
        metrics: str | None = r["metrics"]
        return metrics
    return None


def set_model_metrics(db: sqlite_utils.Database, sha: str, metrics_json: str) -> None:
    """Replace the ``metrics`` JSON text of model ``sha``."""
    db.execute("UPDATE models SET metrics = ? WHERE sha256 = ?", [metrics_json, sha])


def make_current(db: sqlite_utils.Database, sha: str, user: str, t_wall: float, *, current: str, retired: str) -> None:
    """Retire the model(s) with status ``current``; give model ``sha`` that status, by ``user`` at ``t_wall``."""
    db.execute("UPDATE models SET status = ? WHERE status = ?", [retired, current])
    db.execute(
        "UPDATE models SET status = ?, promoted_by = ?, promoted_at = ? WHERE sha256 = ?", [current, user, t_wall, sha]
    )


def model_changes(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Audit rows of model changes (actions ``model_*`` on object type ``model``), oldest first, JSON still encoded."""
    return list(
        db["audit"].rows_where(
            "object_type = 'model' AND action LIKE 'model_%'",
            select="id, t_wall, user, action, object_id, before, after, reason",
            order_by="id",
        )
    )
