"""SQL of the versioned camera setup (migration m0009): calibrations and drawn regions, per station and camera.

A save appends a version and puts it in force, with its audit row, in one transaction; a rollback
appends an in-force row naming an older version (and its audit row). Nothing is updated or deleted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sqlite_utils

from station import serialize

from . import audit
from .db import inserted_id, write_transaction

Kind = Literal["calibration", "regions"]
_COLS = "s.id, s.kind, s.station, s.camera_id, s.version, s.ref, s.created_by, s.created_at, s.images, s.body, s.reason"


class SetupError(LookupError):
    """A version that does not exist (or cannot be rolled back to); the message names it."""


@dataclass(frozen=True)
class SetupVersion:
    """One stored version of a camera's calibration or regions."""

    id: int
    kind: str
    station: str
    camera_id: str
    version: int
    ref: str
    created_by: str
    created_at: float
    images: tuple[Mapping[str, Any], ...]
    body: Mapping[str, Any]
    reason: str | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return serialize.fields_to_dict(self)


def _row(r: Sequence[Any]) -> SetupVersion:
    return SetupVersion(
        int(r[0]),
        r[1],
        r[2],
        r[3],
        int(r[4]),
        r[5],
        r[6],
        float(r[7]),
        tuple(json.loads(r[8] or "[]")),
        json.loads(r[9]),
        r[10],
    )


def in_force(db: sqlite_utils.Database, kind: Kind, station: str, camera_id: str) -> SetupVersion | None:
    """The version in force for the camera, or None when none was ever saved."""
    if "camera_setup" not in db.table_names():
        return None
    r = db.execute(
        f"SELECT {_COLS} FROM camera_setup_in_force f JOIN camera_setup s ON s.id = f.setup_id "
        "WHERE f.kind = ? AND f.station = ? AND f.camera_id = ? ORDER BY f.id DESC LIMIT 1",
        [kind, station, camera_id],
    ).fetchone()
    return _row(r) if r else None


def history(db: sqlite_utils.Database, kind: Kind, station: str, camera_id: str, limit: int = 50) -> list[SetupVersion]:
    """Every version of the camera's ``kind``, newest first."""
    rows = db.execute(
        f"SELECT {_COLS} FROM camera_setup s WHERE s.kind = ? AND s.station = ? AND s.camera_id = ? ORDER BY s.version "
        "DESC LIMIT ?",
        [kind, station, camera_id, limit],
    ).fetchall()
    return [_row(r) for r in rows]


def get(db: sqlite_utils.Database, kind: Kind, station: str, camera_id: str, version: int) -> SetupVersion:
    """One version; SetupError when there is none."""
    r = db.execute(
        f"SELECT {_COLS} FROM camera_setup s WHERE s.kind = ? AND s.station = ? AND s.camera_id = ? AND s.version = ?",
        [kind, station, camera_id, version],
    ).fetchone()
    if r is None:
        raise SetupError(
            f"{kind} of {station}/{camera_id}: no version {version} (see the history for the versions there are)"
        )
    return _row(r)


def save(
    db: sqlite_utils.Database,
    kind: Kind,
    station: str,
    camera_id: str,
    *,
    user: str,
    ref: str | None,
    body: Mapping[str, Any],
    images: Sequence[Mapping[str, Any]] = (),
    reason: str | None = None,
) -> SetupVersion:
    """Append a version, put it in force and audit it; ``ref``: the id verdicts carry (None: ``<kind>-v<version>``)."""
    now = time.time()
    body_json = serialize.dumps(dict(body), canonical=True)
    images_json = serialize.dumps([dict(i) for i in images], canonical=True)
    with write_transaction(db):
        before = in_force(db, kind, station, camera_id)
        version = int(
            db.execute(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM camera_setup WHERE kind = ? AND station = ? AND camera_id = "
                "?",
                [kind, station, camera_id],
            ).fetchone()[0]
        )
        ref = ref or f"{kind}-v{version}"
        cur = db.execute(
            "INSERT INTO camera_setup (kind, station, camera_id, version, ref, created_by, created_at, images, body, "
            "reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [kind, station, camera_id, version, ref, user, now, images_json, body_json, reason],
        )
        sid = inserted_id(cur.lastrowid)
        _put_in_force(db, kind, station, camera_id, sid, user, "new", reason)
        audit.record(
            db,
            user,
            f"{kind}_new",
            kind,
            f"{station}/{camera_id}/v{version}",
            before={"version": before.version, "ref": before.ref} if before else None,
            after={"version": version, "ref": ref},
            reason=reason,
        )
    return SetupVersion(
        sid,
        kind,
        station,
        camera_id,
        version,
        ref,
        user,
        now,
        tuple(json.loads(images_json)),
        json.loads(body_json),
        reason,
    )


def rollback(
    db: sqlite_utils.Database, kind: Kind, station: str, camera_id: str, version: int, *, user: str, reason: str | None
) -> SetupVersion:
    """Put an older (or any stored) ``version`` back in force, audited; returns it."""
    with write_transaction(db):
        target = get(db, kind, station, camera_id, version)
        before = in_force(db, kind, station, camera_id)
        if before is not None and before.id == target.id:
            raise SetupError(f"{kind} of {station}/{camera_id}: version {version} is already in force")
        _put_in_force(db, kind, station, camera_id, target.id, user, "rollback", reason)
        audit.record(
            db,
            user,
            f"{kind}_rollback",
            kind,
            f"{station}/{camera_id}/v{version}",
            before={"version": before.version, "ref": before.ref} if before else None,
            after={"version": target.version, "ref": target.ref},
            reason=reason,
        )
    return target


def _put_in_force(
    db: sqlite_utils.Database,
    kind: str,
    station: str,
    camera_id: str,
    setup_id: int,
    user: str,
    action: str,
    reason: str | None,
) -> None:
    db.execute(
        "INSERT INTO camera_setup_in_force (kind, station, camera_id, setup_id, t_wall, user, action, reason) VALUES "
        "(?, ?, ?, ?, ?, ?, ?, ?)",
        [kind, station, camera_id, setup_id, time.time(), user, action, reason],
    )


def newest_image(db: sqlite_utils.Database, camera_id: str) -> tuple[str, str, int, int] | None:
    """(sha256, format, width, height) of the camera's newest kept image, or None (a reference image after a
    restart)."""
    r = db.execute(
        "SELECT sha256, format, width, height FROM images WHERE camera_id = ? AND deleted_at IS NULL ORDER BY id DESC "
        "LIMIT 1",
        [camera_id],
    ).fetchone()
    return (r[0], r[1], int(r[2]), int(r[3])) if r else None
