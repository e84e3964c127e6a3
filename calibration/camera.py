"""Intrinsics, distortion and mm per pixel of one camera from views of a chessboard or ChArUco board.

:func:`calibrate_camera` checks every view (board found? sharp enough?), calibrates from the usable
ones and refuses, with the reason, when there are too few of them, when their corners cover too
little of the frame, or when the reprojection error is above the limit. The scale (mm per pixel at
the inspection plane) comes from the *plane view*: the same board lying where parts pass, its
corners undistorted first, so lens distortion does not bias it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np
from pydantic import Field

from station import serialize
from station.config import CalibrationLimits

from .targets import Points, Target, neighbour_distances

UNDISTORT_ITER = (
    cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS,
    40,
    1e-9,
)  # OpenCV's default: 5 iterations, no convergence test


class CalibrationRefused(ValueError):
    """The views do not give a calibration to trust; ``reasons`` says why (one line each) and ``views`` what each view
    gave."""

    def __init__(self, reasons: list[str], views: Sequence[ViewReport] = ()):
        self.reasons = reasons
        self.views = tuple(views)
        super().__init__("; ".join(reasons))


class Limits(CalibrationLimits):
    """When a calibration is refused: the station config's ``calibration.limits`` (defaults and bounds declared there
    once), and the grid the coverage is counted on."""

    grid: int = Field(
        4,
        ge=1,
        description="Coverage: share of the grid x grid cells of the frame that hold a corner of some used view.",
    )


@dataclass(frozen=True)
class ViewReport:
    """What one view gave: ``used`` or why not, corners found, sharpness (variance of the Laplacian on the board)."""

    name: str
    sha256: str
    used: bool
    reason: str
    corners: int
    sharpness: float


@dataclass(frozen=True)
class CameraCalibration:
    """A calibration of one camera, as stored (``id`` = hash of the figures)."""

    id: str
    image_size: tuple[int, int]
    camera_matrix: list[list[float]]
    dist_coeffs: list[float]
    rms_px: float
    mm_per_px: float
    coverage: float
    target: dict[str, object]
    plane_view: str
    views: tuple[ViewReport, ...] = field(default_factory=tuple)

    def figures(self) -> dict[str, object]:
        """Everything but the views, JSON-ready."""
        d = asdict(self)
        d.pop("views")
        return d


def sharpness(gray: np.ndarray, pts: Points | None = None) -> float:
    """Variance of the Laplacian, over the board's bounding box when its corners are known."""
    if pts is not None and len(pts.img):
        x1, y1 = np.floor(pts.img.min(axis=0)).astype(int)
        x2, y2 = np.ceil(pts.img.max(axis=0)).astype(int)
        roi = gray[max(0, y1) : max(0, y2) + 1, max(0, x1) : max(0, x2) + 1]
        if roi.size >= 64:
            gray = roi
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def coverage(points: Sequence[Points], size: tuple[int, int], grid: int) -> float:
    """Share of the frame's grid x grid cells that hold at least one corner of some view."""
    w, h = size
    cells: set[tuple[int, int]] = set()
    for p in points:
        cx = np.clip((p.img[:, 0] * grid / w).astype(int), 0, grid - 1)
        cy = np.clip((p.img[:, 1] * grid / h).astype(int), 0, grid - 1)
        cells.update(zip(cx.tolist(), cy.tolist()))
    return len(cells) / (grid * grid)


def calibrate_camera(
    views: Sequence[tuple[str, np.ndarray]],
    target: Target,
    limits: Limits = Limits(),
    plane_view: int = 0,
) -> CameraCalibration:
    """Calibrate from ``views`` = [(name, grayscale image)]; ``plane_view``: index of the board lying on the inspection
    plane.

    Raises :class:`CalibrationRefused` naming each problem (and the fix).
    """
    if not views:
        raise CalibrationRefused(["no views given: upload views of the calibration board"])
    size = (int(views[0][1].shape[1]), int(views[0][1].shape[0]))
    reports: list[ViewReport] = []
    used: list[tuple[int, Points]] = []
    for i, (name, img) in enumerate(views):
        gray = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        digest = hashlib.sha256(np.ascontiguousarray(gray).tobytes()).hexdigest()
        if (gray.shape[1], gray.shape[0]) != size:
            reports.append(
                ViewReport(
                    name,
                    digest,
                    False,
                    f"size {gray.shape[1]}x{gray.shape[0]} differs from the first view's {size[0]}x{size[1]}",
                    0,
                    0.0,
                )
            )
            continue
        pts = target.detect(gray)
        sharp = sharpness(gray, pts)
        if pts is None:
            reports.append(
                ViewReport(name, digest, False, f"no {target.kind} {target.cols}x{target.rows} found", 0, sharp)
            )
        elif sharp < limits.min_sharpness:
            reports.append(
                ViewReport(
                    name,
                    digest,
                    False,
                    f"blurred (sharpness {sharp:.1f} < {limits.min_sharpness:g}): refocus or hold the board still",
                    len(pts.img),
                    sharp,
                )
            )
        else:
            reports.append(ViewReport(name, digest, True, "used", len(pts.img), sharp))
            used.append((i, pts))
    reasons = [f"view {r.name}: {r.reason}" for r in reports if not r.used]
    if len(used) < limits.min_views:
        raise CalibrationRefused(
            [f"too few usable views: {len(used)} of {len(views)} (need {limits.min_views})"] + reasons, reports
        )
    if plane_view not in {i for i, _ in used}:
        name = views[plane_view][0] if 0 <= plane_view < len(views) else str(plane_view)
        raise CalibrationRefused(
            [f"the plane view {name} (the board lying on the inspection plane) is not usable; it gives mm per pixel"]
            + reasons,
            reports,
        )
    cov = coverage([p for _, p in used], size, limits.grid)
    if cov < limits.min_coverage:
        raise CalibrationRefused(
            [
                f"poor coverage of the frame: corners in {cov:.0%} of it (need {limits.min_coverage:.0%}): "
                "add views with the board near the corners and edges"
            ],
            reports,
        )
    rms, K, dist, _, _ = cv2.calibrateCamera(
        [p.obj for _, p in used], [p.img for _, p in used], size, None, None, flags=cv2.CALIB_FIX_K3
    )
    if rms > limits.max_rms_px:
        raise CalibrationRefused(
            [
                f"reprojection error {rms:.3f} px above the limit {limits.max_rms_px:g} px: "
                "remove blurred or moving views, check the board's size"
            ],
            reports,
        )
    plane = dict(used)[plane_view]
    und = cv2.undistortPoints(plane.img.reshape(-1, 1, 2), K, dist, P=K, criteria=UNDISTORT_ITER).reshape(-1, 2)
    mm_per_px = float(target.square_mm / np.median(neighbour_distances(plane.grid, und)))
    K_l, dist_l = np.asarray(K).tolist(), np.asarray(dist).ravel().tolist()
    payload = serialize.dumps(
        [K_l, dist_l, round(mm_per_px, 9), size, target.as_dict(), sorted(r.sha256 for r in reports if r.used)],
        canonical=True,
    ).encode()
    return CameraCalibration(
        id="cal-" + hashlib.sha256(payload).hexdigest()[:10],
        image_size=size,
        camera_matrix=K_l,
        dist_coeffs=dist_l,
        rms_px=float(rms),
        mm_per_px=mm_per_px,
        coverage=cov,
        target=target.as_dict(),
        plane_view=views[plane_view][0],
        views=tuple(reports),
    )
