"""Views of a calibration board rendered through a known camera (matrix + distortion), for the calibration tests.

Each output pixel is undistorted (the inverse of the lens model), its ray is intersected with the
board plane, and the board's texture is sampled there: the image a real camera with exactly these
intrinsics would see, so a calibration must recover them.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from calibration.targets import Target

SIZE = (960, 720)  # w, h
K = np.array([[820.0, 0.0, 486.0], [0.0, 820.0, 352.0], [0.0, 0.0, 1.0]])
DIST = np.array([-0.18, 0.06, 0.0, 0.0, 0.0])
PPM = 8.0  # texture pixels per mm
PLANE_Z = 500.0  # mm from the camera to the plane view's board
CHESS = Target("chessboard", 9, 6, 15.0)
CHARUCO = Target("charuco", 8, 6, 18.0, 13.0, "5x5_100")
# (rotation about x, about y, about z in degrees; board centre x, y in mm; distance z in mm); the first is the plane
# view
POSES = [
    (0, 0, 0, 0, 0, PLANE_Z),
    (22, -18, 5, -120, -85, 560),
    (-20, 22, -8, 120, -85, 560),
    (18, 20, 10, -120, 85, 560),
    (-22, -20, -5, 120, 85, 560),
    (30, 0, 0, 0, 0, 520),
    (0, -30, 15, 0, 0, 520),
]


def texture(target: Target) -> tuple[np.ndarray, float]:
    """(board image at PPM px/mm, object coordinate in mm of its pixel (0, 0)) with a white margin of one square."""
    sq = target.square_mm
    if target.kind == "chessboard":
        nx, ny = target.cols + 1, target.rows + 1  # squares
        step = int(round(sq * PPM))
        img = np.full(((ny + 2) * step, (nx + 2) * step), 255, np.uint8)
        for r in range(ny):
            for c in range(nx):
                if (r + c) % 2 == 0:
                    img[(r + 1) * step : (r + 2) * step, (c + 1) * step : (c + 2) * step] = 0
        return img, -2 * sq  # inner corner (0, 0) lies two squares in from the image edge
    w, h = int(round(target.cols * sq * PPM)), int(round(target.rows * sq * PPM))
    board = target.charuco_board().generateImage((w, h), marginSize=0)
    m = int(round(sq * PPM))
    return cv2.copyMakeBorder(board, m, m, m, m, cv2.BORDER_CONSTANT, value=255), -sq


@lru_cache(maxsize=1)
def _rays() -> np.ndarray:
    """Normalised ideal coordinates (x, y) of every output pixel: the undistortion of the pixel grid."""
    u, v = np.meshgrid(np.arange(SIZE[0], dtype=np.float64), np.arange(SIZE[1], dtype=np.float64))
    pts = np.stack([u.ravel(), v.ravel()], axis=1).reshape(-1, 1, 2)
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-10)
    return cv2.undistortPoints(pts, K, DIST, criteria=crit).reshape(SIZE[1], SIZE[0], 2)


def render(target: Target, pose: tuple[float, ...], blur_sigma: float = 0.0) -> np.ndarray:
    """The grayscale view of ``target`` at ``pose`` (see :data:`POSES`), optionally blurred."""
    tex, origin = texture(target)
    rx, ry, rz, cx, cy, z = pose
    R = (
        cv2.Rodrigues(np.deg2rad([rx, 0, 0]))[0]
        @ cv2.Rodrigues(np.deg2rad([0, ry, 0]))[0]
        @ cv2.Rodrigues(np.deg2rad([0, 0, rz]))[0]
    )
    ext = target.cols * target.square_mm if target.kind == "charuco" else (target.cols - 1) * target.square_mm
    eyt = target.rows * target.square_mm if target.kind == "charuco" else (target.rows - 1) * target.square_mm
    centre = np.array([ext / 2, eyt / 2, 0.0])
    t = np.array([cx, cy, z]) - R @ centre  # the board's centre at (cx, cy, z)
    H = np.column_stack([R[:, 0], R[:, 1], t])  # board (X, Y, 1) -> normalised (x, y, 1) up to scale
    rays = _rays()
    xyz = np.concatenate([rays, np.ones(rays.shape[:2] + (1,))], axis=2) @ np.linalg.inv(H).T
    X, Y = xyz[..., 0] / xyz[..., 2], xyz[..., 1] / xyz[..., 2]
    mx, my = ((X - origin) * PPM).astype(np.float32), ((Y - origin) * PPM).astype(np.float32)
    soft = cv2.GaussianBlur(tex, (0, 0), PPM / 4)  # the lens' own slight softness; avoids aliasing
    img = cv2.remap(soft, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=120)
    if blur_sigma > 0:
        img = cv2.GaussianBlur(img, (0, 0), blur_sigma)
    return img


def views(target: Target, n: int = len(POSES), blur: tuple[int, ...] = ()) -> list[tuple[str, np.ndarray]]:
    """The first ``n`` poses rendered; views whose index is in ``blur`` are blurred (sigma 4 px)."""
    return [(f"v{i}.png", render(target, POSES[i], 4.0 if i in blur else 0.0)) for i in range(n)]
