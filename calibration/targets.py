"""Calibration targets: a chessboard or a ChArUco board, and finding their corners in a view.

Each target turns a grayscale view into matched (object point in mm, image point in px) pairs,
plus the integer grid position of every point, so the scale at the inspection plane can be
measured the same way for both kinds (neighbouring grid points are one square apart).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import cv2
import numpy as np

from .chessboard import find_corners

ARUCO_DICTS = {
    "4x4_50": cv2.aruco.DICT_4X4_50,
    "4x4_100": cv2.aruco.DICT_4X4_100,
    "5x5_100": cv2.aruco.DICT_5X5_100,
    "5x5_250": cv2.aruco.DICT_5X5_250,
    "6x6_250": cv2.aruco.DICT_6X6_250,
}
DICT_SIZE = {"4x4_50": 50, "4x4_100": 100, "5x5_100": 100, "5x5_250": 250, "6x6_250": 250}
MIN_CHARUCO_CORNERS = 6  # fewer and the view's pose (and so its use for intrinsics) is unreliable


@dataclass(frozen=True)
class Target:
    """A calibration board.

    ``cols`` x ``rows``: for a chessboard the *inner corners*, for ChArUco the *squares* (OpenCV's conventions).
    ``marker_mm`` and ``dictionary`` only for ChArUco.
    """

    kind: Literal["chessboard", "charuco"]
    cols: int
    rows: int
    square_mm: float
    marker_mm: float | None = None
    dictionary: str = "5x5_100"

    def __post_init__(self) -> None:
        if self.kind not in ("chessboard", "charuco"):
            raise ValueError(f"target kind {self.kind!r}: use chessboard or charuco")
        if self.cols < 2 or self.rows < 2:
            raise ValueError(f"target {self.cols}x{self.rows}: at least 2x2")
        if self.square_mm <= 0:
            raise ValueError(f"square_mm {self.square_mm}: must be > 0")
        if self.kind == "charuco":
            if self.marker_mm is None or not 0 < self.marker_mm < self.square_mm:
                raise ValueError(
                    f"marker_mm {self.marker_mm}: a ChArUco board needs 0 < marker_mm < square_mm ({self.square_mm})"
                )
            if self.dictionary not in ARUCO_DICTS:
                raise ValueError(f"dictionary {self.dictionary!r}: use one of {', '.join(ARUCO_DICTS)}")
            if self.cols * self.rows // 2 > DICT_SIZE[self.dictionary]:
                raise ValueError(
                    f"a {self.cols}x{self.rows} ChArUco board has {self.cols * self.rows // 2} markers, more than "
                    "dictionary "
                    f"{self.dictionary} holds ({DICT_SIZE[self.dictionary]}): use a larger dictionary"
                )

    def as_dict(self) -> dict[str, object]:
        """JSON-ready (stored with the calibration)."""
        return asdict(self)

    def charuco_board(self) -> cv2.aruco.CharucoBoard:
        """The OpenCV board object (ChArUco only); units: mm."""
        d = cv2.aruco.getPredefinedDictionary(ARUCO_DICTS[self.dictionary])
        return cv2.aruco.CharucoBoard((self.cols, self.rows), self.square_mm, float(self.marker_mm or 0), d)

    def detect(self, gray: np.ndarray) -> Points | None:
        """The target's corners in ``gray`` (sub-pixel), or None when it is not found."""
        if self.kind == "chessboard":
            c = find_corners(gray, (self.cols, self.rows))
            if c is None:
                return None
            grid = np.mgrid[0 : self.cols, 0 : self.rows].T.reshape(-1, 2).astype(np.int32)
            obj = np.zeros((len(grid), 3), np.float32)
            obj[:, :2] = grid * self.square_mm
            return Points(obj, c.reshape(-1, 2).astype(np.float32), grid)
        board = self.charuco_board()
        corners, ids, _, _ = cv2.aruco.CharucoDetector(board).detectBoard(gray)
        if ids is None or len(ids) < MIN_CHARUCO_CORNERS:
            return None
        ids = ids.ravel()
        obj = np.asarray(board.getChessboardCorners(), np.float32)[ids]
        inner = self.cols - 1
        grid = np.stack([ids % inner, ids // inner], axis=1).astype(np.int32)
        return Points(obj, corners.reshape(-1, 2).astype(np.float32), grid)


@dataclass(frozen=True)
class Points:
    """Matched points of one view: ``obj`` (N, 3) mm on the board, ``img`` (N, 2) px, ``grid`` (N, 2) integer board
    positions."""

    obj: np.ndarray
    img: np.ndarray
    grid: np.ndarray


def neighbour_distances(grid: np.ndarray, img: np.ndarray) -> np.ndarray:
    """Image distances (px) between every pair of points one square apart on the board."""
    where = {(int(g[0]), int(g[1])): i for i, g in enumerate(grid)}
    out = []
    for i, (gx, gy) in enumerate(grid):
        for dx, dy in ((1, 0), (0, 1)):
            j = where.get((int(gx) + dx, int(gy) + dy))
            if j is not None:
                out.append(float(np.linalg.norm(img[j] - img[i])))
    return np.asarray(out, np.float64)
