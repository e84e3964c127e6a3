"""Read functions over the station database, for the web app and the tools.

Every function takes an open :class:`sqlite_utils.Database` and returns plain
dicts/tuples with JSON columns already decoded. Nothing here writes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import sqlite_utils

from ..contracts import Outcome
from ..counters import CounterValues
from .db import given, rows

_JSON_COLUMNS = ("reasons", "timings", "ground_truth")


def _decode(row: dict[str, Any], columns: tuple[str, ...] = _JSON_COLUMNS) -> dict[str, Any]:
    for c in columns:
        if c in row and isinstance(row[c], str):
            row[c] = json.loads(row[c])
    return row


def recent_inspections(
    db: sqlite_utils.Database, limit: int = 50, outcome: Outcome | str | None = None, before_part_id: int | None = None
) -> list[dict[str, Any]]:
    """The newest inspections, newest first; page back with ``before_part_id`` (the last id of a page).

    ``outcome`` filters to one of PASS/FAIL/UNCERTAIN/FAILSAFE (ValueError otherwise).
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, not {limit}")
    where, params = given(("outcome = ?", outcome, lambda o: Outcome(o).value), ("part_id < ?", before_part_id, int))
    sql = (
        "SELECT * FROM inspections"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY part_id DESC LIMIT ?"
    )
    params.append(int(limit))
    return [_decode(r) for r in rows(db, sql, params)]


def get_inspection(db: sqlite_utils.Database, part_id: int) -> dict[str, Any] | None:
    """One inspection with ``defects`` and ``images`` (deleted images included, with ``deleted_at``); None if
    unknown."""
    found = rows(db, "SELECT * FROM inspections WHERE part_id = ?", [int(part_id)])
    if not found:
        return None
    out = _decode(found[0])
    out["defects"] = rows(db, "SELECT * FROM defects WHERE part_id = ? ORDER BY id", [int(part_id)])
    out["images"] = rows(db, "SELECT * FROM images WHERE part_id = ? ORDER BY id", [int(part_id)])
    return out


def image_for(db: sqlite_utils.Database, image_id: int) -> tuple[str, str] | None:
    """(sha256, format) of image ``image_id``; None if unknown or deleted by the disk budget."""
    row = db.execute(
        "SELECT sha256, format FROM images WHERE id = ? AND deleted_at IS NULL", [int(image_id)]
    ).fetchone()
    return (row[0], row[1]) if row else None


def last_part_id(db: sqlite_utils.Database) -> int:
    """The highest part id ever recorded (0 for a new database); the next part is this + 1."""
    a = db.execute("SELECT COALESCE(MAX(part_id), 0) FROM inspections").fetchone()[0]
    b = db.execute("SELECT COALESCE(MAX(last_part_id), 0) FROM counters").fetchone()[0]
    return int(max(a, b))


def load_counters(db: sqlite_utils.Database) -> dict[str, Any] | None:
    """The counters as of the last committed batch, or None for a new database.

    Only keys that :class:`~station.counters.CounterValues` knows are returned, so
    ``CounterValues(**load_counters(db))`` works across versions that add or drop a counter.
    """
    row = db.execute("SELECT counters FROM counters WHERE key = 'station'").fetchone()
    if not row:
        return None
    known = {f.name for f in dataclasses.fields(CounterValues)}
    return {k: v for k, v in json.loads(row[0]).items() if k in known}


def outcome_counts(db: sqlite_utils.Database) -> dict[str, int]:
    """Number of recorded inspections per outcome (every outcome present, 0 if none)."""
    counts = {o.value: 0 for o in Outcome}
    for outcome, n in db.execute("SELECT outcome, COUNT(*) FROM inspections WHERE source != 'import' GROUP BY outcome"):
        counts[outcome] = int(n)
    return counts


def recent_alarms(db: sqlite_utils.Database, limit: int = 50, unacknowledged: bool = False) -> list[dict[str, Any]]:
    """The newest alarms first; only those nobody acknowledged if ``unacknowledged``."""
    sql = (
        "SELECT * FROM alarms"
        + (" WHERE acknowledged_at IS NULL" if unacknowledged else "")
        + " ORDER BY t_wall DESC, id DESC LIMIT ?"
    )
    return rows(db, sql, [int(limit)])


def resume_counters(db: sqlite_utils.Database) -> dict[str, Any] | None:
    """Counters to resume with after a restart, rebuilt from the committed rows.

    Parts in flight when the station stopped (or was killed) have no row and
    are not counted: after a restart every counter reconciles with the
    database. Returns None for a new database. The persisted snapshot is kept
    for ``started_wall`` and for the log line that says how many parts were lost.
    """
    snap = load_counters(db)
    if snap is None:
        return None
    row = db.execute(
        "SELECT COUNT(*), COALESCE(SUM(n_frames > 0), 0), COALESCE(SUM(rejected), 0) FROM inspections WHERE source != "
        "'import'"
    ).fetchone()
    n, with_frames, rejected = (int(x) for x in row)
    counts = outcome_counts(db)
    resumed = {
        **snap,
        "triggers": n,
        "frames": with_frames,
        "dropped": n - with_frames,
        "verdicts": n,
        **counts,
        "rejects_scheduled": rejected,
        "rejects_fired": rejected,
        "records_written": n,
        "records_dropped": 0,
    }
    return resumed


def recent_rejects(db: sqlite_utils.Database, outcomes: Sequence[str], limit: int) -> list[dict[str, Any]]:
    """The newest parts whose outcome is one of ``outcomes``: part_id, t_wall (trigger time), outcome, reasons
    (decoded)."""
    if not outcomes:
        return []
    newest = db["inspections"].rows_where(
        f"outcome IN ({','.join('?' * len(outcomes))})",
        list(outcomes),
        select="part_id, t_trigger_wall AS t_wall, outcome, reasons",
        order_by="part_id DESC",
        limit=int(limit),
    )
    return [{**r, "reasons": json.loads(r["reasons"] or "[]")} for r in newest]


def image_sizes(db: sqlite_utils.Database, image_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
    """``{image id: (width, height)}`` of the known images among ``image_ids`` (deleted ones included)."""
    if not image_ids:
        return {}
    rows = db["images"].rows_where(
        f"id IN ({','.join('?' * len(image_ids))})", list(image_ids), select="id, width, height"
    )
    return {int(r["id"]): (int(r["width"]), int(r["height"])) for r in rows}


def review_verdicts(db: sqlite_utils.Database, image_ids: Sequence[int]) -> dict[int, str]:
    """``{image id: verdict}`` of the latest review of each reviewed image among ``image_ids``."""
    if not image_ids:
        return {}
    rows = db.query(
        f"SELECT image_id, verdict FROM image_review_latest WHERE image_id IN ({','.join('?' * len(image_ids))})",
        list(image_ids),
    )
    return {int(r["image_id"]): str(r["verdict"]) for r in rows}


def line_models(db: sqlite_utils.Database, limit: int = 100) -> list[str]:
    """Model ids that decided parts on the line (imports excluded), the most recently used first."""
    rows = db.query(
        "SELECT model_id FROM inspections WHERE source != 'import' "
        "GROUP BY model_id ORDER BY MAX(part_id) DESC LIMIT ?",
        [int(limit)],
    )
    return [r["model_id"] for r in rows]


def line_time_range(db: sqlite_utils.Database) -> tuple[float | None, float | None]:
    """(first, last) UNIX time of the parts recorded on the line (imports excluded); (None, None) when there are
    none."""
    row = db.execute(
        "SELECT MIN(COALESCE(t_trigger_wall, t_recorded_wall)), MAX(COALESCE(t_trigger_wall, t_recorded_wall)) FROM "
        "inspections "
        "WHERE source != 'import'"
    ).fetchone()
    return row[0], row[1]


def latest_shadow_model(db: sqlite_utils.Database) -> str | None:
    """sha256 of the model that shadow mode ran last (its newest ``shadow_results`` row), or None."""
    for r in db["shadow_results"].rows_where(select="model_sha", order_by="id DESC", limit=1):
        sha: str | None = r["model_sha"]
        return sha
    return None
