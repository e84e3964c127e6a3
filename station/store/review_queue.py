"""The rows behind the QA review queue (:mod:`labeling.queue`): candidate images, their detections, shadow verdicts.

:mod:`labeling.queue` ranks the candidates (tiers, usefulness); this module only selects them.
Lists of part ids are bound in chunks of 500 (SQLite's variable limit on old builds).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import sqlite_utils

from ..contracts import Outcome
from .db import PART_T_WALL, given, rows

log = logging.getLogger(__name__)

_CHUNK = 500

# filter name -> (SQL condition with one placeholder, how the value is bound); a None value skips it
FILTERS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "outcome": ("p.outcome = ?", lambda v: Outcome(v).value),
    "min_conf": ("COALESCE(p.max_score, 0) >= ?", float),
    "max_conf": ("COALESCE(p.max_score, 0) <= ?", float),
    "since": (f"{PART_T_WALL} >= ?", float),
    "until": (f"{PART_T_WALL} < ?", float),
    "model_id": ("p.model_id = ?", str),
    "class_name": (
        "EXISTS (SELECT 1 FROM labels l WHERE l.image_id = i.id AND l.class_name = ? AND l.status = 'active' "
        "AND NOT EXISTS (SELECT 1 FROM labels s WHERE s.supersedes = l.id))",
        str,
    ),
}


def _chunks(part_ids: Sequence[int]) -> list[list[int]]:
    return [list(part_ids[k : k + _CHUNK]) for k in range(0, len(part_ids), _CHUNK)]


def queue_candidates(db: sqlite_utils.Database, *, reviewed: bool | None, **filters: Any) -> list[dict[str, Any]]:
    """Kept images of line parts matching ``filters`` (names of :data:`FILTERS`; None skips one) and ``reviewed``.

    Each row: image_id, part_id, camera_id, outcome, max_score, model_id, t_wall, ground_truth, reviewed.
    """
    unknown = set(filters) - set(FILTERS)
    if unknown:
        raise ValueError(f"unknown queue filter(s) {sorted(unknown)}: use {', '.join(FILTERS)}")
    chosen, params = given(*((cond, filters.get(name), bind) for name, (cond, bind) in FILTERS.items()))
    where = ["i.deleted_at IS NULL", "p.source != 'import'", *chosen]
    if reviewed is not None:
        where.append(("" if reviewed else "NOT ") + "EXISTS (SELECT 1 FROM image_reviews r WHERE r.image_id = i.id)")
    sql = f"""
        SELECT i.id AS image_id, i.part_id, i.camera_id, p.outcome, p.max_score, p.model_id,
               {PART_T_WALL} AS t_wall, p.ground_truth,
               EXISTS (SELECT 1 FROM image_reviews r WHERE r.image_id = i.id) AS reviewed
        FROM images i JOIN inspections p ON p.part_id = i.part_id
        WHERE {" AND ".join(where)}
    """
    return rows(db, sql, params)


def shadow_outcomes(db: sqlite_utils.Database, part_ids: Sequence[int]) -> dict[int, str]:
    """``{part id: outcome}`` the shadow model gave (its latest row per part).

    {} without a usable ``shadow_results`` table.
    """
    table = db["shadow_results"]
    if not table.exists():
        return {}
    cols = set(table.columns_dict)
    if not {"part_id", "outcome"} <= cols:
        log.warning("shadow_results has no part_id/outcome columns (%s): shadow disagreements ignored", sorted(cols))
        return {}
    out: dict[int, str] = {}
    for chunk in _chunks(part_ids):
        marks = ",".join("?" * len(chunk))
        for r in table.rows_where(f"part_id IN ({marks})", chunk, select="part_id, outcome", order_by="rowid"):
            out[int(r["part_id"])] = str(r["outcome"])  # later rows win
    return out


def detections_of_parts(
    db: sqlite_utils.Database, part_ids: Sequence[int]
) -> dict[tuple[int, str], list[dict[str, Any]]]:
    """The recorded detections of ``part_ids`` by (part id, camera id), in detection order."""
    out: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for chunk in _chunks(part_ids):
        for d in db["defects"].rows_where(
            f"part_id IN ({','.join('?' * len(chunk))})",
            chunk,
            select="part_id, camera_id, class_name, confidence, action, x1, y1, x2, y2",
            order_by="id",
        ):
            out.setdefault((int(d["part_id"]), str(d["camera_id"])), []).append(d)
    return out
