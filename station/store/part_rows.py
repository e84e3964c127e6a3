"""One part as database rows: build them, insert them, spill them to a file and replay that file.

:class:`PartRows` is a :class:`~station.contracts.PartResult` turned into the rows of the
``inspections``, ``defects``, ``images`` and ``anomaly_maps`` tables (its image files already
written by :class:`~station.store.recorder.Recorder`). :func:`insert_part` writes them in a
savepoint, so a part the database refuses (IntegrityError) leaves the rest of the batch alone.
The spill record (:func:`to_spill`, :func:`from_spill`) is the format of :mod:`station.store.spill`;
:func:`replay_spill` moves a spill file into the database.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

from ..contracts import Outcome, PartResult
from ..serialize import dumps
from .db import write_transaction
from .heatmaps import part_score
from .images import ImageStore, StoredImage
from .spill import SpillFile

log = logging.getLogger(__name__)

SLACK_KEYS = ("deadline_slack", "deadline_slack_ms", "slack")


@dataclasses.dataclass
class PartRows:
    """One PartResult as rows, its images already on disk."""

    part_id: int
    inspection: tuple[Any, ...]
    defects: list[tuple[Any, ...]]
    images: list[tuple[str, StoredImage, str]]  # camera_id, stored file, kept reason
    maps: dict[int, tuple[StoredImage, float | None]] = dataclasses.field(
        default_factory=dict
    )  # images index -> heat map, score


INSERT_INSPECTION = """
INSERT INTO inspections (part_id, seq, t_trigger_wall, t_decided_wall, t_recorded_wall, outcome, reasons, model_id,
    config_hash, calibration_id, timings, deadline_slack_ms, ground_truth, defect_count, max_score, source, station,
    n_frames, rejected, image_score)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_INSERT_DEFECT = """
INSERT INTO defects (part_id, camera_id, class_name, confidence, x1, y1, x2, y2, area_mm2, action, rule, model_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_INSERT_IMAGE = """
INSERT INTO images (part_id, camera_id, sha256, relpath, width, height, format, bytes, kept_reason)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_INSERT_MAP = """
INSERT INTO anomaly_maps (image_id, part_id, camera_id, sha256, width, height, bytes, image_score)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""


def part_rows(r: PartResult, station: str) -> tuple[tuple[Any, ...], list[tuple[Any, ...]]]:
    """The ``inspections`` row and the ``defects`` rows of one part (its images are the recorder's)."""
    v, t = r.verdict, r.trigger
    outcome = Outcome(v.outcome).value
    slack = next((float(v.timings_ms[k]) for k in SLACK_KEYS if k in v.timings_ms), None)
    t_trig_wall = float(t.t_trigger_wall) if t.t_trigger_wall else None
    t_decided_wall = None
    if t_trig_wall is not None and v.t_decided_ns and (v.t_trigger_ns or t.t_trigger_ns):
        t_decided_wall = t_trig_wall + (v.t_decided_ns - (v.t_trigger_ns or t.t_trigger_ns)) / 1e9
    truth = {f.camera_id: f.meta["truth"] for f in r.frames if "truth" in f.meta}
    scores = [float(d.confidence) for d in v.defects]
    inspection = (
        int(t.part_id),
        int(t.seq),
        t_trig_wall,
        t_decided_wall,
        time.time(),
        outcome,
        dumps(list(v.reasons)),
        str(v.model_id),
        str(v.config_hash),
        str(v.calibration_id),
        dumps({str(k): float(x) for k, x in v.timings_ms.items()}),
        slack,
        dumps(truth) if truth else None,
        len(v.defects),
        max(scores) if scores else None,
        str(t.source),
        station,
        len(r.frames),
        int(r.reject_fire_at_ns is not None),
        part_score(r.detections),
    )
    defects = [
        (
            int(t.part_id),
            str(d.camera_id),
            str(d.class_name),
            float(d.confidence),
            *(float(x) for x in d.box_xyxy),
            float(d.area_mm2),
            str(d.action),
            str(d.rule),
            str(v.model_id),
        )
        for d in v.defects
    ]
    return inspection, defects


def insert_part(conn: sqlite3.Connection, p: PartRows) -> str | None:
    """The rows of one part, in a savepoint: None, or why the database refused them (rows rolled back)."""
    conn.execute("SAVEPOINT part")
    try:
        _insert_rows(conn, p)
    except sqlite3.IntegrityError as exc:
        conn.execute("ROLLBACK TO part")
        conn.execute("RELEASE part")
        return str(exc)
    conn.execute("RELEASE part")
    return None


def _insert_rows(conn: sqlite3.Connection, p: PartRows) -> None:
    """The rows of one part (raises sqlite3.IntegrityError for a duplicate part id or invalid values)."""
    conn.execute(INSERT_INSPECTION, p.inspection)
    if p.defects:
        conn.executemany(_INSERT_DEFECT, p.defects)
    if p.images and not p.maps:
        conn.executemany(
            _INSERT_IMAGE,
            [
                (p.part_id, cam, s.sha256, s.relpath, s.width, s.height, s.format, s.bytes, why)
                for cam, s, why in p.images
            ],
        )
    elif p.images:
        for i, (cam, s, why) in enumerate(p.images):
            cur = conn.execute(
                _INSERT_IMAGE, (p.part_id, cam, s.sha256, s.relpath, s.width, s.height, s.format, s.bytes, why)
            )
            if i in p.maps:
                m, score = p.maps[i]
                conn.execute(_INSERT_MAP, (cur.lastrowid, p.part_id, cam, m.sha256, m.width, m.height, m.bytes, score))


def to_spill(p: PartRows, run: str) -> dict[str, Any]:
    """The spill file record (``v`` 1) of one part, tagged with the recorder run that spilled it."""
    return {
        "v": 1,
        "run": run,
        "part_id": p.part_id,
        "inspection": list(p.inspection),
        "defects": [list(d) for d in p.defects],
        "images": [[cam, dataclasses.asdict(s), why] for cam, s, why in p.images],
        "maps": {str(i): [dataclasses.asdict(m), score] for i, (m, score) in p.maps.items()},
    }


def from_spill(rec: dict[str, Any], images: ImageStore | None) -> PartRows:
    """A spilled record back to rows; image (and map) files that are gone are left out."""
    kept: list[tuple[str, StoredImage, str]] = []
    maps: dict[int, tuple[StoredImage, float | None]] = {}
    for i, (cam, s, why) in enumerate(rec.get("images", [])):
        stored = StoredImage(**s)
        if images is not None and not (images.root / stored.relpath).is_file():
            continue
        m = rec.get("maps", {}).get(str(i))
        if m is not None:
            ms = StoredImage(**m[0])
            if images is None or (images.maps_root / ms.relpath).is_file():
                maps[len(kept)] = (ms, m[1])
        kept.append((str(cam), stored, str(why)))
    return PartRows(
        int(rec["part_id"]), tuple(rec["inspection"]), [tuple(d) for d in rec.get("defects", [])], kept, maps
    )


@dataclasses.dataclass
class ReplayResult:
    """What :func:`replay_spill` did."""

    inserted: int = 0  # records now in the database
    already: int = 0  # their part was in the database already (an earlier replay): skipped
    refused: int = 0  # the database refused them (invalid values): dropped
    unreadable: int = 0  # torn or foreign lines: dropped
    own_inserted: int = 0  # of ``inserted``, records spilled by the run named ``run``


def replay_spill(
    db: Any, spill_path: Path | str | None, images: ImageStore | None = None, *, run: str | None = None
) -> ReplayResult:
    """Write the records of the spill file into ``db`` in one transaction, then remove the file.

    Idempotent: a part already in the database is skipped. Image rows whose file is gone
    are left out. Raises sqlite3.Error when the database cannot be written (the file stays).
    """
    res = ReplayResult()
    if spill_path is None:
        return res
    spill = SpillFile(spill_path)
    records, res.unreadable = spill.read()
    if not records and not res.unreadable:
        return res
    conn: sqlite3.Connection = db.conn
    with write_transaction(db):
        for rec in records:
            own = run is not None and rec.get("run") == run
            try:
                p = from_spill(rec, images)
            except (KeyError, TypeError, ValueError) as exc:
                log.error("spill file %s: a record cannot be read (%s); dropped", spill_path, exc)
                res.refused += 1
                continue
            if conn.execute("SELECT 1 FROM inspections WHERE part_id = ?", (p.part_id,)).fetchone():
                res.already += 1
                continue
            why = insert_part(conn, p)
            if why is None:
                res.inserted += 1
                res.own_inserted += own
            else:
                log.error("spill file %s: part %d refused by the database and dropped: %s", spill_path, p.part_id, why)
                res.refused += 1
    spill.remove()
    log.warning(
        "spill file %s replayed: %d records written, %d already in the database, %d refused, %d unreadable lines",
        spill_path,
        res.inserted,
        res.already,
        res.refused,
        res.unreadable,
    )
    return res


def replay_at_start(db: Any, spill_path: Path | str | None, images: ImageStore | None = None) -> ReplayResult:
    """At start, before the counters are rebuilt from the rows: replay what an earlier run spilled.

    Never raises for a database that cannot be written: the file stays and the recorder
    replays it once it can write (its records are then recovered, not counted as this run's).
    """
    try:
        return replay_spill(db, spill_path, images)
    except (sqlite3.Error, OSError) as exc:
        log.error(
            "spill file %s not replayed at start (%s); the recorder will retry when the database can be written",
            spill_path,
            exc,
        )
        return ReplayResult()
