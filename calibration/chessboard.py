"""Chessboard calibration with OpenCV: intrinsics and millimetres per pixel."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from station import serialize

log = logging.getLogger(__name__)


class CalibrationError(ValueError):
    """Calibration could not be computed from the given images."""


@dataclass(frozen=True)
class CalibrationResult:
    """A calibration, as written to JSON and referenced by verdicts."""

    id: str
    mm_per_px: float
    image_size: tuple[int, int]
    camera_matrix: list[list[float]] | None
    dist_coeffs: list[float] | None
    reprojection_error_px: float | None
    pattern: tuple[int, int]
    square_mm: float
    images_used: int
    created_wall: float

    def save(self, path: Path) -> None:
        """Write as JSON."""
        path.write_text(serialize.dumps(asdict(self), indent=2))


def find_corners(gray: np.ndarray, pattern: tuple[int, int]) -> np.ndarray | None:
    """Sub-pixel inner corners of a chessboard with ``pattern`` = (cols, rows) inner corners."""
    ok, corners = cv2.findChessboardCorners(
        gray, pattern, flags=cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
    )
    if not ok:
        return None
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-3)
    return cv2.cornerSubPix(gray, corners, (5, 5), (-1, -1), crit)


def mm_per_px_from_corners(corners: np.ndarray, pattern: tuple[int, int], square_mm: float) -> float:
    """Scale on the board plane: median neighbour-corner distance over the square size."""
    grid = corners.reshape(pattern[1], pattern[0], 2)
    d = np.concatenate(
        [np.linalg.norm(np.diff(grid, axis=1), axis=2).ravel(), np.linalg.norm(np.diff(grid, axis=0), axis=2).ravel()]
    )
    return float(square_mm / np.median(d))


def calibrate(images: list[np.ndarray], pattern: tuple[int, int], square_mm: float) -> CalibrationResult:
    """Calibrate from grayscale images of a chessboard lying on the part plane.

    The scale comes from the first image (the board placed where parts pass);
    intrinsics need at least 3 views and are skipped with fewer.
    """
    if not images:
        raise CalibrationError("no images given")
    size = (images[0].shape[1], images[0].shape[0])
    found = [(i, c) for i, img in enumerate(images) if (c := find_corners(img, pattern)) is not None]
    if not found:
        raise CalibrationError(
            f"no {pattern[0]}x{pattern[1]} chessboard found in {len(images)} image(s): check `pattern` (inner corners)"
        )
    mm_per_px = mm_per_px_from_corners(found[0][1], pattern, square_mm)
    K = dist = err = None
    if len(found) >= 3:
        objp = np.zeros((pattern[0] * pattern[1], 3), np.float32)
        objp[:, :2] = np.mgrid[0 : pattern[0], 0 : pattern[1]].T.reshape(-1, 2) * square_mm
        err, K_, dist_, _, _ = cv2.calibrateCamera([objp] * len(found), [c for _, c in found], size, None, None)
        K, dist = K_.tolist(), dist_.ravel().tolist()
    payload = serialize.dumps([mm_per_px, K, dist, pattern, square_mm], canonical=True).encode()
    return CalibrationResult(
        id="cal-" + hashlib.sha256(payload).hexdigest()[:10],
        mm_per_px=mm_per_px,
        image_size=size,
        camera_matrix=K,
        dist_coeffs=dist,
        reprojection_error_px=float(err) if err is not None else None,
        pattern=pattern,
        square_mm=square_mm,
        images_used=len(found),
        created_wall=time.time(),
    )


def load(path: Path) -> CalibrationResult:
    """Read a calibration JSON written by :meth:`CalibrationResult.save`."""
    d = json.loads(Path(path).read_text())
    d["image_size"] = tuple(d["image_size"])
    d["pattern"] = tuple(d["pattern"])
    return CalibrationResult(**d)
