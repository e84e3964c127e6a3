"""Counts behind the quality statistics (:mod:`labeling.stats`): the SQL, grouped in UTC slots.

Only line inspections count (``inspections.source != 'import'``); times are the trigger time
(``t_trigger_wall``, else ``t_recorded_wall``) and ``since``/``until`` bound it as [since, until).
:mod:`labeling.stats` regroups the slots by local hour, day or shift and computes the rates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlite_utils

from .db import PART_T_WALL, part_time_range


def _time_where(since: float | None, until: float | None) -> tuple[str, list[float]]:
    where, params = part_time_range(since, until)
    return " AND ".join(["p.source != 'import'", *where]), params


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


def outcome_slots(
    db: sqlite_utils.Database, slot_s: int, since: float | None, until: float | None
) -> list[tuple[int, str, int]]:
    """(slot, outcome, parts) per ``slot_s``-second UTC slot (slot = time // slot_s) and outcome."""
    where, params = _time_where(since, until)
    sql = (
        f"SELECT CAST({PART_T_WALL} / {int(slot_s)} AS INTEGER) AS slot, p.outcome, COUNT(*) FROM inspections p "
        f"WHERE {where} AND {PART_T_WALL} IS NOT NULL GROUP BY slot, p.outcome"
    )
    return [(int(s), str(o), int(n)) for s, o, n in db.execute(sql, params)]


def defect_class_slots(
    db: sqlite_utils.Database, slot_s: int, actions: Sequence[str], since: float | None, until: float | None
) -> list[tuple[int, str, int]]:
    """(slot, class name, detections) per UTC slot and class, counting detections whose action is in ``actions``."""
    where, params = _time_where(since, until)
    sql = (
        f"SELECT CAST({PART_T_WALL} / {int(slot_s)} AS INTEGER) AS slot, d.class_name, COUNT(*) FROM defects d "
        f"JOIN inspections p ON p.part_id = d.part_id WHERE {where} AND {PART_T_WALL} IS NOT NULL "
        f"AND d.action IN ({_marks(actions)}) "
        "GROUP BY slot, d.class_name"
    )
    return [(int(s), str(c), int(n)) for s, c, n in db.execute(sql, [*params, *actions])]


def defect_class_counts(
    db: sqlite_utils.Database, actions: Sequence[str], since: float | None, until: float | None
) -> dict[str, int]:
    """``{class name: detections}`` of the line's detections whose action is in ``actions``."""
    where, params = _time_where(since, until)
    rows = db.query(
        f"SELECT d.class_name, COUNT(*) AS n FROM defects d JOIN inspections p ON p.part_id = d.part_id "
        f"WHERE {where} AND d.action IN ({_marks(actions)}) GROUP BY d.class_name",
        [*params, *actions],
    )
    return {str(r["class_name"]): int(r["n"]) for r in rows}


def reviewed_image_ids(db: sqlite_utils.Database, since: float | None, until: float | None) -> list[int]:
    """Ids of the images QA reviewed, of parts in the time range."""
    where, params = _time_where(since, until)
    rows = db.query(
        f"SELECT DISTINCT i.id FROM images i JOIN inspections p ON p.part_id = i.part_id "
        f"JOIN image_reviews r ON r.image_id = i.id WHERE {where}",
        params,
    )
    return [int(r["id"]) for r in rows]


def reviewed_label_rows(db: sqlite_utils.Database, since: float | None, until: float | None) -> list[tuple[Any, ...]]:
    """Every label row (superseded ones included) of reviewed images of parts in the time range, by id:
    (id, supersedes, status, class_name, x1, y1, x2, y2, source)."""
    where, params = _time_where(since, until)
    return [
        tuple(r)
        for r in db.execute(
            f"""
        SELECT l.id, l.supersedes, l.status, l.class_name, l.x1, l.y1, l.x2, l.y2, l.source
        FROM labels l JOIN inspections p ON p.part_id = l.part_id
        WHERE {where} AND l.image_id IN (SELECT image_id FROM image_reviews)
        ORDER BY l.id
        """,
            params,
        ).fetchall()
    ]
