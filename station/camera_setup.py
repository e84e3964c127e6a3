"""What each camera's verdicts depend on besides the model: its calibration and its drawn regions, in force.

:func:`load` reads the versions in force from the station database (``station/store/camera_setup.py``)
into one frozen :class:`CameraSetup` per camera, which :class:`~station.decide.Decider` applies:
per-camera mm per pixel, the ROI, ignore zones and named regions. The same objects are built by
the line, ``station replay`` and the golden-set evaluation, so all three judge alike.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import sqlite_utils

from .config.regions import CameraRegions, NamedRegion
from .store import camera_setup as store

log = logging.getLogger(__name__)

Poly = tuple[tuple[float, float], ...]


def inside(poly: Poly, x: float, y: float) -> bool:
    """Point-in-polygon (even-odd ray casting); ``poly`` need not be closed or convex."""
    hit = False
    n = len(poly)
    for i in range(n):
        x1, y1 = poly[i]
        x2, y2 = poly[(i + 1) % n]
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            hit = not hit
    return hit


@dataclass(frozen=True)
class Regions:
    """:class:`~station.config.regions.CameraRegions` ready for the hot path (tuples, no validation)."""

    roi: Poly | None
    ignore: tuple[tuple[str, Poly], ...]
    named: tuple[tuple[NamedRegion, Poly], ...]

    @classmethod
    def of(cls, spec: CameraRegions) -> Regions:
        """Compile a validated spec."""
        roi = tuple(map(tuple, spec.roi)) if spec.roi else None
        ign = tuple((z.name or f"zone {i + 1}", tuple(map(tuple, z.points))) for i, z in enumerate(spec.ignore))
        return cls(roi, ign, tuple((r, tuple(map(tuple, r.points))) for r in spec.regions))  # type: ignore[arg-type]

    def place(self, x: float, y: float) -> tuple[str | None, NamedRegion | None]:
        """(why the point is ignored or None, the named region holding it or None)."""
        if self.roi is not None and not inside(self.roi, x, y):
            return "outside the ROI", None
        for name, poly in self.ignore:
            if inside(poly, x, y):
                return f"ignore zone {name}", None
        for region, poly in self.named:
            if inside(poly, x, y):
                return None, region
        return None, None


@dataclass(frozen=True)
class CameraSetup:
    """The calibration and regions in force for one camera (any may be absent: the config's values apply)."""

    camera_id: str
    calibration_ref: str | None = None
    calibration_version: int | None = None
    mm_per_px: float | None = None
    camera_matrix: tuple[tuple[float, ...], ...] | None = None
    dist_coeffs: tuple[float, ...] | None = None
    image_size: tuple[int, int] | None = None
    regions: Regions | None = None
    regions_spec: CameraRegions | None = None
    regions_version: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (screens, API)."""
        return {
            "camera_id": self.camera_id,
            "calibration": self.calibration_ref,
            "calibration_version": self.calibration_version,
            "mm_per_px": self.mm_per_px,
            "regions_version": self.regions_version,
            "regions": self.regions_spec.model_dump(mode="json") if self.regions_spec else None,
        }


def from_versions(camera_id: str, cal: store.SetupVersion | None, reg: store.SetupVersion | None) -> CameraSetup:
    """A :class:`CameraSetup` from the stored versions in force."""
    kw: dict[str, Any] = {}
    if cal is not None:
        b = cal.body
        kw.update(
            calibration_ref=cal.ref,
            calibration_version=cal.version,
            mm_per_px=float(b["mm_per_px"]),
            camera_matrix=tuple(tuple(r) for r in b["camera_matrix"]),
            dist_coeffs=tuple(b["dist_coeffs"]),
            image_size=tuple(b["image_size"]),
        )
    if reg is not None:
        spec = CameraRegions.model_validate(reg.body)
        kw.update(regions=Regions.of(spec), regions_spec=spec, regions_version=reg.version)
    return CameraSetup(camera_id, **kw)


def load(db: sqlite_utils.Database, station: str, camera_ids: Iterable[str]) -> dict[str, CameraSetup]:
    """The setup in force of each camera that has any (cameras with none are left out)."""
    out: dict[str, CameraSetup] = {}
    for cam in camera_ids:
        cal = store.in_force(db, "calibration", station, cam)
        reg = store.in_force(db, "regions", station, cam)
        if cal is not None or reg is not None:
            out[cam] = from_versions(cam, cal, reg)
    return out


def load_file(db_path: Any, station: str, camera_ids: Sequence[str]) -> dict[str, CameraSetup]:
    """:func:`load` from a database file opened read-only for the call (replay, evaluation); {} when it does not
    exist."""
    from pathlib import Path

    from .store.db import open_db

    if db_path is None or not Path(db_path).is_file():
        return {}
    db = open_db(db_path, synchronous="NORMAL")
    try:
        return load(db, station, camera_ids)
    finally:
        db.close()


def regions_tag(setup: Mapping[str, CameraSetup]) -> str:
    """What a verdict's config hash gets appended when drawn regions judged it ('' when none)."""
    parts = [f"{c}:v{s.regions_version}" for c, s in sorted(setup.items()) if s.regions_version is not None]
    return "+g" + ",".join(parts) if parts else ""


def calibration_tag(default_id: str, setup: Mapping[str, CameraSetup]) -> str:
    """The calibration id a verdict carries: the config's, or the versions in force per camera."""
    refs = [(c, s.calibration_ref) for c, s in sorted(setup.items()) if s.calibration_ref is not None]
    if not refs:
        return default_id
    if len(refs) == 1 and len(setup) == 1:
        return refs[0][1]
    return "+".join(f"{c}:{r}" for c, r in refs)


def save_regions(
    db: sqlite_utils.Database,
    station: str,
    camera_id: str,
    spec: CameraRegions,
    *,
    user: str,
    reason: str | None = None,
) -> store.SetupVersion:
    """Store ``spec`` as the camera's next regions version and put it in force (audited)."""
    return store.save(
        db, "regions", station, camera_id, user=user, ref=None, body=spec.model_dump(mode="json"), reason=reason
    )


def zero_thresholds(setup: Mapping[str, CameraSetup]) -> dict[str, CameraSetup]:
    """``setup`` with the named regions' own thresholds at 0 (evaluation: does a detection count at all?)."""
    out: dict[str, CameraSetup] = {}
    for cam, s in setup.items():
        if s.regions_spec is None:
            out[cam] = s
            continue
        regs = [
            r.model_copy(
                update={
                    "reject_conf": 0.0 if r.reject_conf is not None else None,
                    "uncertain_conf": 0.0 if r.uncertain_conf is not None else None,
                }
            )
            for r in s.regions_spec.regions
        ]
        spec = s.regions_spec.model_copy(update={"regions": regs})
        out[cam] = replace(s, regions_spec=spec, regions=Regions.of(spec))
    return out


def to_json(setup: Mapping[str, CameraSetup]) -> dict[str, Any]:
    """What the decision needs of ``setup`` as JSON (an evaluation worker's spec); :func:`from_json` reads it back."""
    return {cam: s.as_dict() for cam, s in setup.items()}


def from_json(data: Mapping[str, Any] | None) -> dict[str, CameraSetup]:
    """The inverse of :func:`to_json` (no lens model: evaluations judge stored, already undistorted frames)."""
    out: dict[str, CameraSetup] = {}
    for cam, d in (data or {}).items():
        spec = CameraRegions.model_validate(d["regions"]) if d.get("regions") else None
        out[cam] = CameraSetup(
            cam,
            calibration_ref=d.get("calibration"),
            calibration_version=d.get("calibration_version"),
            mm_per_px=d.get("mm_per_px"),
            regions=Regions.of(spec) if spec else None,
            regions_spec=spec,
            regions_version=d.get("regions_version"),
        )
    return out


def undistorters(setup: Mapping[str, CameraSetup]) -> dict[str, Any]:
    """camera id -> a precomputed undistortion remap, for each camera whose calibration in force has a lens model."""
    from calibration.undistort import Undistorter

    return {
        cam: Undistorter(s.camera_matrix, s.dist_coeffs, s.image_size)
        for cam, s in setup.items()
        if s.camera_matrix is not None and s.dist_coeffs is not None and s.image_size is not None
    }
