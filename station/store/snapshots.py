"""The ``dataset_snapshots`` and ``dataset_snapshot_items`` tables: the SQL behind :mod:`labeling.snapshot`.

:mod:`labeling.snapshot` resolves labels, computes the content hash and builds ``Snapshot``
objects; this module selects the candidate images and reads and appends the rows. The writers
run in the caller's transaction (:func:`~station.store.db.transaction`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlite_utils

from .db import PART_T_WALL, inserted_id, part_time_range, rows


def snapshot_candidates(
    db: sqlite_utils.Database, since: float | None, until: float | None, only_reviewed: bool
) -> list[dict[str, Any]]:
    """Images with a kept file triggered in [``since``, ``until``) (reviewed ones only if ``only_reviewed``), by id.

    Each row: image_id, part_id, camera_id, sha256, format, width, height, t_wall, verdict (latest review or None).
    """
    times, params = part_time_range(since, until)
    where = ["i.deleted_at IS NULL", *times]
    if only_reviewed:
        where.append("r.verdict IS NOT NULL")
    return rows(
        db,
        f"""
        SELECT i.id AS image_id, i.part_id, i.camera_id, i.sha256, i.format, i.width, i.height,
               {PART_T_WALL} AS t_wall, r.verdict
        FROM images i JOIN inspections p ON p.part_id = i.part_id
        LEFT JOIN image_review_latest r ON r.image_id = i.id
        WHERE {" AND ".join(where)}
        ORDER BY i.id
        """,
        params,
    )


def insert_snapshot(db: sqlite_utils.Database, row: Mapping[str, Any], items: Sequence[Mapping[str, Any]]) -> int:
    """Append a snapshot row and its item rows (``snapshot_id`` filled in); returns the new snapshot id."""
    sid = inserted_id(db.table("dataset_snapshots").insert(dict(row)).last_rowid)
    db.table("dataset_snapshot_items").insert_all([{"snapshot_id": sid, **it} for it in items])
    return sid


def snapshot_row(db: sqlite_utils.Database, snapshot_id: int) -> dict[str, Any] | None:
    """The ``dataset_snapshots`` row of ``snapshot_id`` (JSON columns still encoded), or None."""
    for r in db["dataset_snapshots"].rows_where("id = ?", [int(snapshot_id)]):
        return r
    return None


def snapshot_image_ids(db: sqlite_utils.Database, snapshot_id: int) -> tuple[int, ...]:
    """The image ids frozen in snapshot ``snapshot_id``, ascending."""
    found = db["dataset_snapshot_items"].rows_where(
        "snapshot_id = ?", [int(snapshot_id)], select="image_id", order_by="image_id"
    )
    return tuple(int(r["image_id"]) for r in found)


def snapshot_ids(db: sqlite_utils.Database) -> list[int]:
    """Every snapshot id, oldest first."""
    return [int(r["id"]) for r in db["dataset_snapshots"].rows_where(select="id", order_by="id")]


def snapshot_item_rows(db: sqlite_utils.Database, snapshot_id: int) -> list[dict[str, Any]]:
    """The ``dataset_snapshot_items`` rows of ``snapshot_id`` by image id (``labels`` still JSON text)."""
    return list(db["dataset_snapshot_items"].rows_where("snapshot_id = ?", [int(snapshot_id)], order_by="image_id"))
