"""Rows of imported datasets (:mod:`labeling.importer`): an imported group is a part, each file an image.

Imported parts have negative part ids (below every recorded one), ``source = 'import'`` and
model id ``import``, so the line's statistics and counters leave them out. The writers run in
the caller's transaction.
"""

from __future__ import annotations

from typing import Any

import sqlite_utils

from .db import inserted_id
from .images import StoredImage


def kept_image_ids(db: sqlite_utils.Database, sha256: str, fmt: str) -> list[int]:
    """Ids of the images not deleted whose file is ``sha256`` in format ``fmt``, ascending."""
    found = db["images"].rows_where(
        "sha256 = ? AND format = ? AND deleted_at IS NULL", [sha256, fmt], select="id", order_by="id"
    )
    return [int(r["id"]) for r in found]


def lowest_part_id(db: sqlite_utils.Database) -> int:
    """The lowest part id in use, or 0 when it is positive or there is none."""
    return int(db.execute("SELECT MIN(COALESCE(MIN(part_id), 0), 0) FROM inspections").fetchone()[0])


def insert_imported_part(
    db: sqlite_utils.Database,
    part_id: int,
    t_wall: float | None,
    recorded_at: float,
    n_boxes: int,
    station: str,
    n_frames: int,
) -> None:
    """The ``inspections`` row of an imported group: FAIL when it has boxes, else PASS."""
    row: dict[str, Any] = {
        "part_id": part_id,
        "seq": 0,
        "t_trigger_wall": t_wall,
        "t_decided_wall": None,
        "t_recorded_wall": recorded_at,
        "outcome": "FAIL" if n_boxes else "PASS",
        "reasons": "[]",
        "model_id": "import",
        "config_hash": "",
        "calibration_id": "",
        "timings": "{}",
        "ground_truth": None,
        "defect_count": n_boxes,
        "max_score": None,
        "source": "import",
        "station": station,
        "n_frames": n_frames,
        "rejected": 0,
    }
    db.table("inspections").insert(row)


def insert_imported_image(db: sqlite_utils.Database, part_id: int, camera_id: str, stored: StoredImage) -> int:
    """The ``images`` row of an imported file (kept reason ``import``); returns its id."""
    table = db.table("images").insert(
        {
            "part_id": part_id,
            "camera_id": camera_id,
            "sha256": stored.sha256,
            "relpath": stored.relpath,
            "width": stored.width,
            "height": stored.height,
            "format": stored.format,
            "bytes": stored.bytes,
            "kept_reason": "import",
        }
    )
    return inserted_id(table.last_rowid)
