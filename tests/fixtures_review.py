"""Helpers for the review web tests: a real station whose synthetic line has produced recorded
inspections, and queries that find a false positive / a missed defect against the line's ground truth."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labeling.queue import iou
from station.app import Station
from station.store.db import open_db
from tests.web.helpers import decided, wait_for

LINE = {
    "cameras": [{"type": "synthetic", "id": "cam0", "width": 640, "height": 400, "defect_rate": 0.6, "seed": 11}],
    "inspector": {"type": "reference", "learn_parts": 3},
    "store": {"keep_pass_every": 3},
}


def recorded_station(make_station: Callable[..., Station], parts: int = 24, **overrides: Any) -> Station:
    """A started station (software trigger, reference inspector) after ``parts`` inspected and recorded parts."""
    st = make_station(**{**LINE, **overrides})
    decided(st, parts)
    wait_for(
        lambda: st.counters.snapshot().records_written >= st.counters.snapshot().verdicts,
        15,
        "the recorder to catch up",
    )
    return st


def query(station: Station, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` on the station database through a connection of its own (closed at once)."""
    db = open_db(station.cfg.store.db_path, migrate=False)
    try:
        return [tuple(r) for r in db.execute(sql, list(params)).fetchall()]
    finally:
        db.close()


@dataclass(frozen=True)
class Mistake:
    """Where the model was wrong on one image: a false-positive label and/or a missed ground-truth box."""

    image_id: int
    part_id: int
    false_positive: tuple[int, str, tuple[float, float, float, float]] | None  # label id, class, box
    missed: tuple[str, tuple[float, float, float, float]] | None  # class, box


def mistakes(station: Station, min_side: float = 8.0) -> list[Mistake]:
    """Images whose current model labels disagree with the synthetic ground truth (same class, IoU >= 0.5 = match).

    ``min_side``: only missed boxes at least this many pixels wide and high (a person can drag them).
    """
    out = []
    images = query(
        station,
        "SELECT i.id, i.part_id, i.camera_id, p.ground_truth FROM images i JOIN inspections p ON p.part_id = i.part_id "
        "WHERE i.deleted_at IS NULL AND p.source != 'import' ORDER BY i.id",
    )
    for image_id, part_id, cam, raw in images:
        truth = [(t["class_name"], tuple(t["box_xyxy"])) for t in (json.loads(raw or "{}").get(cam) or [])]
        labels = query(
            station,
            "SELECT l.id, l.class_name, l.x1, l.y1, l.x2, l.y2 FROM labels l WHERE l.image_id = ? AND l.status = "
            "'active' "
            "AND l.source = 'model' AND NOT EXISTS (SELECT 1 FROM labels s WHERE s.supersedes = l.id)",
            [image_id],
        )
        fp = next(
            (
                (lid, c, (x1, y1, x2, y2))
                for lid, c, x1, y1, x2, y2 in labels
                if not any(t[0] == c and iou(t[1], (x1, y1, x2, y2)) >= 0.5 for t in truth)
            ),
            None,
        )
        missed = next(
            (
                (c, b)
                for c, b in truth
                if b[2] - b[0] >= min_side
                and b[3] - b[1] >= min_side
                and not any(lab[1] == c and iou(b, lab[2:]) >= 0.5 for lab in labels)
            ),
            None,
        )
        if fp or missed:
            out.append(Mistake(image_id, part_id, fp, missed))
    return out


def zip_bytes(files: dict[str, bytes | str], *, symlink: str | None = None) -> bytes:
    """An in-memory zip of ``{name: content}`` (names are written as given, even unsafe ones);
    ``symlink`` adds one symbolic-link entry of that name."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(zipfile.ZipInfo(name), data)
        if symlink is not None:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def unzip(data: bytes, dest: Path) -> list[str]:
    """Unpack a zip the server sent into ``dest``; returns the names."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        zf.extractall(dest)
        return zf.namelist()
