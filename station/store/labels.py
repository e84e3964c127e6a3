"""The ``labels`` and ``image_reviews`` tables: the SQL behind :mod:`labeling.labels`.

Labels are append-only: a change is a new row that ``supersedes`` the one it replaces, and a
label is current while it is active and nothing supersedes it. Readers return plain tuples in
the column order :mod:`labeling.labels` builds its ``Label``/``ImageInfo``/``Review`` from; the
writers run in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlite_utils

from .db import inserted_id

LABEL_COLUMNS = (
    "id, image_id, class_name, x1, y1, x2, y2, source, status, created_by, created_at, supersedes, confidence"
)
_LABEL_SQL = """
SELECT l.id, l.image_id, l.class_name, l.x1, l.y1, l.x2, l.y2, l.source, l.status, l.created_by, l.created_at,
       l.supersedes, d.confidence
FROM labels l LEFT JOIN defects d ON d.id = l.defect_id
"""
_CURRENT = "l.status = 'active' AND NOT EXISTS (SELECT 1 FROM labels s WHERE s.supersedes = l.id)"
_CHUNK = 500


def image_row(db: sqlite_utils.Database, image_id: int) -> tuple[Any, ...] | None:
    """(id, part_id, camera_id, sha256, format, width, height, deleted_at) of image ``image_id``, or None."""
    row: tuple[Any, ...] | None = db.execute(
        "SELECT id, part_id, camera_id, sha256, format, width, height, deleted_at FROM images WHERE id = ?",
        [int(image_id)],
    ).fetchone()
    return row


def current_label_rows(db: sqlite_utils.Database, image_ids: Iterable[int]) -> list[tuple[Any, ...]]:
    """The current labels (:data:`LABEL_COLUMNS`) of ``image_ids``, by image in chunks, in id order within a chunk."""
    ids = sorted({int(i) for i in image_ids})
    out: list[tuple[Any, ...]] = []
    for k in range(0, len(ids), _CHUNK):
        chunk = ids[k : k + _CHUNK]
        marks = ",".join("?" * len(chunk))
        out.extend(db.execute(f"{_LABEL_SQL} WHERE l.image_id IN ({marks}) AND {_CURRENT} ORDER BY l.id", chunk))
    return out


def label_rows_of_image(db: sqlite_utils.Database, image_id: int) -> list[tuple[Any, ...]]:
    """Every label row (:data:`LABEL_COLUMNS`) ever written for ``image_id``, oldest first."""
    return list(db.execute(f"{_LABEL_SQL} WHERE l.image_id = ? ORDER BY l.id", [int(image_id)]))


def label_row(db: sqlite_utils.Database, label_id: int) -> tuple[Any, ...] | None:
    """One label row (:data:`LABEL_COLUMNS`), or None."""
    row: tuple[Any, ...] | None = db.execute(f"{_LABEL_SQL} WHERE l.id = ?", [int(label_id)]).fetchone()
    return row


def successor(db: sqlite_utils.Database, label_id: int) -> tuple[int, str] | None:
    """(id, status) of the label row that supersedes ``label_id``, or None while it is the newest."""
    row: tuple[int, str] | None = db.execute(
        "SELECT id, status FROM labels WHERE supersedes = ?", [int(label_id)]
    ).fetchone()
    return row


def latest_review_row(db: sqlite_utils.Database, image_id: int) -> tuple[Any, ...] | None:
    """(image_id, verdict, reviewed_by, reviewed_at) of the latest review of ``image_id``, or None."""
    row: tuple[Any, ...] | None = db.execute(
        "SELECT image_id, verdict, reviewed_by, reviewed_at FROM image_reviews WHERE image_id = ? "
        "ORDER BY id DESC LIMIT 1",
        [int(image_id)],
    ).fetchone()
    return row


def used_class_names(db: sqlite_utils.Database) -> set[str]:
    """Class names used by any label or recorded detection."""
    names = {str(r["class_name"]) for r in db.query("SELECT DISTINCT class_name FROM labels")}
    names.update(str(r["class_name"]) for r in db.query("SELECT DISTINCT class_name FROM defects"))
    return names


def model_names_json(db: sqlite_utils.Database) -> list[str | None]:
    """The ``names`` JSON text of every registered model."""
    return [r["names"] for r in db["models"].rows_where(select="names")]


def insert_label(db: sqlite_utils.Database, row: Mapping[str, Any]) -> int:
    """Append one label row (its columns but ``id``: part_id, image_id, class_name, x1..y2, source, status,
    created_by, created_at, supersedes); returns its id."""
    return inserted_id(db.table("labels").insert(dict(row)).last_rowid)


def insert_review(db: sqlite_utils.Database, image_id: int, verdict: str, user: str, now: float) -> None:
    """Append one review row."""
    db.table("image_reviews").insert(
        {"image_id": image_id, "verdict": verdict, "reviewed_by": user, "reviewed_at": now}
    )


def reviews_after(db: sqlite_utils.Database, after_id: int, limit: int) -> list[tuple[int, int, str, str, float]]:
    """(id, image_id, verdict, reviewed_by, reviewed_at) of the review rows after ``after_id``, oldest first.

    Every QA operation appends one review row, so the review id is a cursor over label changes
    (what the plant uplink sends: :mod:`station.plant.labels_up`).
    """
    return [
        (int(r[0]), int(r[1]), str(r[2]), str(r[3]), float(r[4]))
        for r in db.execute(
            "SELECT id, image_id, verdict, reviewed_by, reviewed_at FROM image_reviews "
            "WHERE id > ? ORDER BY id LIMIT ?",
            [int(after_id), int(limit)],
        )
    ]
