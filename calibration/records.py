"""Calibrations as versioned records of the station database (kind ``calibration`` of ``camera_setup``)."""

from __future__ import annotations

from dataclasses import asdict

import sqlite_utils

from station.store import camera_setup as store

from .camera import CameraCalibration


def record(
    db: sqlite_utils.Database,
    station: str,
    camera_id: str,
    cal: CameraCalibration,
    *,
    user: str,
    reason: str | None = None,
) -> store.SetupVersion:
    """Store ``cal`` as the camera's next version and put it in force (audited): who, when, views used, figures."""
    return store.save(
        db,
        "calibration",
        station,
        camera_id,
        user=user,
        ref=cal.id,
        body=cal.figures(),
        images=[asdict(v) for v in cal.views],
        reason=reason,
    )


def rollback(
    db: sqlite_utils.Database, station: str, camera_id: str, version: int, *, user: str, reason: str | None = None
) -> store.SetupVersion:
    """Put calibration ``version`` of the camera back in force (audited)."""
    return store.rollback(db, "calibration", station, camera_id, version, user=user, reason=reason)
