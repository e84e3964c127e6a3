"""Image health of one frame, cheaply: sharpness, brightness, clipped share, position.

Everything is computed on views of the frame without copying it whole:
sharpness is a Brenner score (squared difference of pixels two apart) at full
resolution on every ``ROW_STEP``-th row (horizontal and vertical pairs), over
the same score of pixels eight apart, so that a darker or brighter picture, or a
part with more structure, of the same focus scores the same; brightness and
clipping on a ``sub``-sampled grid; the position from edge profiles of a small thumbnail against those of the
first setup frame (:class:`ProfileShift`, used only when the inspector gives
no alignment of its own, see :func:`position_from`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..contracts import Detections

ROW_STEP = 4  # sharpness rows (and column pairs): 1/4 of the frame's rows at full resolution
THUMB_W = 128  # width of the position thumbnail
CLIP_LO, CLIP_HI = 3, 252  # grey levels counted as clipped (crushed black, blown white)


@dataclass(frozen=True, slots=True)
class FrameHealth:
    """The health figures of one frame (``shift_*`` in frame pixels, relative to the setup reference)."""

    sharpness: float  # Brenner(2 px) / Brenner(8 px): unitless, higher = sharper
    brightness: float  # mean grey level 0..255
    clipped: float  # share of pixels at or beyond CLIP_LO / CLIP_HI, 0..1
    shift_x: float
    shift_y: float


def gray_view(image: np.ndarray) -> np.ndarray:
    """A Mono8 view of the frame (the green channel of a BGR frame: no conversion pass)."""
    if image.ndim == 3:
        return image[:, :, 1] if image.shape[2] >= 2 else image[:, :, 0]
    return image


def sub_step(shape: tuple[int, ...]) -> int:
    """The sampling step that leaves about 256 columns for brightness and clipping."""
    return max(1, shape[1] // 256)


def _brenner(gray: np.ndarray, d: int) -> float:
    """Mean squared difference of pixels ``d`` apart, horizontally and vertically, on every ROW_STEP-th row."""
    s = n = 0.0
    if gray.shape[1] > d:
        rows = gray[::ROW_STEP]
        s += cv2.norm(rows[:, d:], rows[:, :-d], cv2.NORM_L2SQR)
        n += rows.shape[0] * (gray.shape[1] - d)
    below = gray[d::ROW_STEP]
    if below.shape[0]:
        s += cv2.norm(below, gray[0:-d:ROW_STEP][: below.shape[0]], cv2.NORM_L2SQR)
        n += below.size
    return s / max(n, 1.0)


def sharpness(gray: np.ndarray) -> float:
    """Brenner score (pixels 2 apart) over the same score at 4 times the distance (pixels 8 apart).

    A defocused or dirty lens takes the fine differences first: the ratio falls. A darker or brighter
    picture scales both alike, and a part with more or less structure changes both together, so the
    ratio varies little from part to part (measured on real ELPV cells: 13 % coefficient of variation,
    against 30 % for Brenner over the grey variance).
    """
    coarse = _brenner(gray, 8)
    return float(_brenner(gray, 2) / coarse) if coarse > 0 else 0.0


def thumbnail(gray: np.ndarray) -> np.ndarray:
    """A Mono8 thumbnail THUMB_W wide (from a strided view: cheap)."""
    step = max(1, gray.shape[1] // (THUMB_W * 2))
    small = np.ascontiguousarray(gray[::step, ::step])
    h = max(8, round(small.shape[0] * THUMB_W / small.shape[1]))
    return cv2.resize(small, (THUMB_W, h), interpolation=cv2.INTER_AREA)


def _edge_profile(t: np.ndarray, axis: int) -> np.ndarray:
    """The derivative of the column (axis 0) or row (axis 1) means, unit length: edges, without light level or
    gradient."""
    p = cv2.reduce(t, axis, cv2.REDUCE_AVG, dtype=cv2.CV_32F).ravel()
    d = np.diff(p)
    return d / (float(np.sqrt(np.dot(d, d))) + 1e-6)


def _lag(ref: np.ndarray, p: np.ndarray) -> float:
    """The shift of ``p`` against ``ref`` (cross-correlation peak within a quarter of the length, sub-sample by a
    parabola)."""
    max_lag = max(1, len(ref) // 4)
    c = np.correlate(p, ref, "full")
    mid = len(ref) - 1
    seg = c[mid - max_lag : mid + max_lag + 1]
    i = int(np.argmax(seg))
    frac = 0.0
    if 0 < i < len(seg) - 1:
        den = seg[i - 1] - 2 * seg[i] + seg[i + 1]
        if den != 0:
            frac = 0.5 * float(seg[i - 1] - seg[i + 1]) / float(den)
    return i - max_lag + frac


class ProfileShift:
    """Shift of a frame against a reference frame, in frame pixels, from edge profiles.

    The column and row means of a THUMB_W-wide thumbnail, differentiated (so a change of light or a
    gradient across the frame does not move them), are cross-correlated with those of the reference.
    Profiles follow the part's outline and not its texture: phase correlation of whole frames was tried
    first and locked onto the texture of real solar cells (ELPV), calling a different cell a shifted one.
    """

    def __init__(self, ref_x: np.ndarray, ref_y: np.ndarray, scale: float):
        self.ref_x, self.ref_y, self.scale = ref_x.astype(np.float32), ref_y.astype(np.float32), float(scale)
        self.shape = (len(ref_y) + 1, len(ref_x) + 1)

    @classmethod
    def of(cls, ref_gray: np.ndarray) -> ProfileShift:
        """The reference is ``ref_gray``'s profiles."""
        t = thumbnail(ref_gray)
        return cls(_edge_profile(t, 0), _edge_profile(t, 1), ref_gray.shape[1] / THUMB_W)

    def shift(self, gray: np.ndarray) -> tuple[float, float]:
        """(dx, dy) of ``gray`` relative to the reference; (0, 0) for a frame of another size."""
        t = thumbnail(gray)
        if t.shape != self.shape:
            return 0.0, 0.0
        return _lag(self.ref_x, _edge_profile(t, 0)) * self.scale, _lag(self.ref_y, _edge_profile(t, 1)) * self.scale


def position_from(det: Detections | None) -> tuple[float, float] | None:
    """The part's shift from the inspector's own alignment (reference backend), or None."""
    if det is None or det.align_shift_px is None:
        return None
    return float(det.align_shift_px[0]), float(det.align_shift_px[1])


def measure(image: np.ndarray, shift: tuple[float, float]) -> FrameHealth:
    """The health figures of ``image`` (``shift`` from the alignment or :class:`ProfileShift`)."""
    gray = gray_view(image)
    st = sub_step(gray.shape)
    sub = np.ascontiguousarray(gray[::st, ::st])
    clipped = (int(np.count_nonzero(sub <= CLIP_LO)) + int(np.count_nonzero(sub >= CLIP_HI))) / sub.size
    return FrameHealth(sharpness(gray), float(cv2.mean(sub)[0]), clipped, shift[0], shift[1])
