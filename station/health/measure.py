"""Image health of one frame, cheaply: sharpness, brightness, clipped share, position.

Everything is computed on views of the frame without copying it whole:
sharpness is a Brenner score (squared difference of pixels two apart) at full
resolution on every ``ROW_STEP``-th row (horizontal and vertical pairs), normalised by the
frame's grey-level variance so that a darker or brighter picture of the same
sharpness scores the same; brightness and clipping on a ``sub``-sampled grid;
the position by phase correlation of a small grey thumbnail against the
thumbnail of the first setup frame (used only when the inspector gives no
alignment of its own, see :func:`position_from`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..types import Detections

ROW_STEP = 4  # sharpness rows (and column pairs): 1/4 of the frame's rows at full resolution
THUMB_W = 64  # width of the position thumbnail
CLIP_LO, CLIP_HI = 3, 252  # grey levels counted as clipped (crushed black, blown white)


@dataclass(frozen=True, slots=True)
class FrameHealth:
    """The health figures of one frame (``shift_*`` in frame pixels, relative to the setup reference)."""

    sharpness: float  # Brenner / variance: unitless, higher = sharper
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


def sharpness(gray: np.ndarray, var: float) -> float:
    """Brenner score (horizontal and vertical) on every ROW_STEP-th row, over the grey variance ``var``."""
    rows = gray[::ROW_STEP]
    s = n = 0.0
    if gray.shape[1] > 2:
        s += cv2.norm(rows[:, 2:], rows[:, :-2], cv2.NORM_L2SQR)
        n += rows.shape[0] * (gray.shape[1] - 2)
    below = gray[2::ROW_STEP]
    if below.shape[0]:
        s += cv2.norm(below, gray[0 : -2 : ROW_STEP][: below.shape[0]], cv2.NORM_L2SQR)
        n += below.size
    return float(s / max(n, 1.0) / max(var, 1.0))


def thumbnail(gray: np.ndarray) -> np.ndarray:
    """A float32 thumbnail THUMB_W wide for phase correlation (from a strided view: cheap)."""
    step = max(1, gray.shape[1] // (THUMB_W * 2))
    small = np.ascontiguousarray(gray[::step, ::step])
    h = max(8, round(small.shape[0] * THUMB_W / small.shape[1]))
    return cv2.resize(small, (THUMB_W, h), interpolation=cv2.INTER_AREA).astype(np.float32)


class PhaseShift:
    """Shift of a frame against a reference thumbnail, in frame pixels (phase correlation)."""

    def __init__(self, ref_gray: np.ndarray):
        self.ref = thumbnail(ref_gray)
        self.scale = ref_gray.shape[1] / THUMB_W
        self.window = cv2.createHanningWindow((self.ref.shape[1], self.ref.shape[0]), cv2.CV_32F)

    def shift(self, gray: np.ndarray) -> tuple[float, float]:
        """(dx, dy) of ``gray`` relative to the reference; (0, 0) for a frame of another size."""
        t = thumbnail(gray)
        if t.shape != self.ref.shape:
            return 0.0, 0.0
        (dx, dy), _ = cv2.phaseCorrelate(self.ref, t, self.window)
        return float(dx * self.scale), float(dy * self.scale)


def position_from(det: Detections | None) -> tuple[float, float] | None:
    """The part's shift from the inspector's own alignment (reference backend), or None."""
    if det is None or det.align_shift_px is None:
        return None
    return float(det.align_shift_px[0]), float(det.align_shift_px[1])


def measure(image: np.ndarray, shift: tuple[float, float]) -> FrameHealth:
    """The health figures of ``image`` (``shift`` from the alignment or :class:`PhaseShift`)."""
    gray = gray_view(image)
    st = sub_step(gray.shape)
    sub = np.ascontiguousarray(gray[::st, ::st])
    m, sd = cv2.meanStdDev(sub)
    clipped = (int(np.count_nonzero(sub <= CLIP_LO)) + int(np.count_nonzero(sub >= CLIP_HI))) / sub.size
    return FrameHealth(sharpness(gray, float(sd[0, 0]) ** 2), float(m[0, 0]), clipped, shift[0], shift[1])
