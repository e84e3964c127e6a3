"""The ``shadow_results`` table: the shadow runner's rows (:mod:`station.shadow`), read back by the models page."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlite_utils

from .db import rows, write_transaction

_COLUMNS = (
    "part_id, t_wall, production_outcome, production_model_id, outcome, model_id, model_sha, reasons, defects, "
    "differs, eject_differs, ms"
)


def append_rows(db: sqlite_utils.Database, values: Sequence[Sequence[Any]]) -> None:
    """Append shadow verdicts in one transaction; each row's values in the order of ``_COLUMNS``."""
    with write_transaction(db):
        db.conn.executemany(f"INSERT INTO shadow_results ({_COLUMNS}) VALUES ({', '.join('?' * 12)})", values)


def _of_model_since(model_sha: str | None, since_wall: float | None) -> tuple[list[str], list[Any]]:
    """Conditions on ``shadow_results s`` (and their parameters): one shadow model's rows, recorded since a time."""
    where: list[str] = []
    params: list[Any] = []
    if model_sha:
        where.append("s.model_sha = ?")
        params.append(model_sha)
    if since_wall is not None:
        where.append("s.t_wall >= ?")
        params.append(float(since_wall))
    return where, params


def disagreements(
    db: sqlite_utils.Database,
    *,
    model_sha: str | None = None,
    eject_only: bool = False,
    since_wall: float | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Parts where the shadow model's verdict differs from the line's, newest first.

    ``eject_only``: only where one would eject the part and the other not. Each row has the
    part, both outcomes and model ids, the shadow's reasons and defects (parsed) and
    ``image_ids``: the part's kept images (for thumbnails; empty when the recorder did not keep one).
    """
    where, params = _of_model_since(model_sha, since_wall)
    where.append("s.eject_differs = 1" if eject_only else "s.differs = 1")
    found = rows(
        db,
        "SELECT s.id, s.part_id, s.t_wall, s.production_outcome, s.production_model_id, s.outcome AS shadow_outcome, "
        "s.model_id AS shadow_model_id, s.model_sha, s.reasons, s.defects, s.differs, s.eject_differs, s.ms, "
        "(SELECT group_concat(i.id) FROM images i WHERE i.part_id = s.part_id AND i.deleted_at IS NULL) AS image_ids "
        f"FROM shadow_results s WHERE {' AND '.join(where)} ORDER BY s.id DESC LIMIT ?",
        [*params, int(limit)],
    )
    for r in found:
        r["reasons"] = json.loads(r["reasons"] or "[]")
        r["defects"] = json.loads(r["defects"] or "[]")
        r["image_ids"] = [int(x) for x in str(r["image_ids"]).split(",")] if r["image_ids"] else []
        r["differs"], r["eject_differs"] = bool(r["differs"]), bool(r["eject_differs"])
    return found


def summary(db: sqlite_utils.Database, model_sha: str | None = None, since_wall: float | None = None) -> dict[str, Any]:
    """Counts of recorded shadow verdicts: total, differing, and the (production, shadow) outcome table."""
    where, params = _of_model_since(model_sha, since_wall)
    w = " AND ".join(where or ["1 = 1"])
    n, differs, ejd = db.execute(
        f"SELECT COUNT(*), COALESCE(SUM(differs), 0), COALESCE(SUM(eject_differs), 0) FROM shadow_results s WHERE {w}",
        params,
    ).fetchone()
    pairs = db.execute(
        f"SELECT production_outcome, outcome, COUNT(*) FROM shadow_results s WHERE {w} "
        "GROUP BY production_outcome, outcome ORDER BY 1, 2",
        params,
    ).fetchall()
    return {
        "n": int(n),
        "differs": int(differs),
        "eject_differs": int(ejd),
        "pairs": [{"production": p, "shadow": s, "n": int(c)} for p, s, c in pairs],
    }
