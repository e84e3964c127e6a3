"""Heat maps of no-labels inspectors: compact PNGs of ``Detections.anomaly_map``.

A map is a (h, w) uint8 array over the whole frame (0 = normal, 128 = the decision
threshold, 255 = twice the threshold or more) at any resolution with the frame's aspect
ratio. It is stored and served as a grayscale PNG at most :data:`MAX_SIDE` pixels on its
long side; the browser colours it (station/web/static/heatmap.js). Downscaling keeps the
*maximum* of each block, so a small hot spot stays as hot as it was.

The files live in the image store (:meth:`ImageStore.save_map`), one row per kept image in
``anomaly_maps`` (migration ``m0008_anomaly_maps``); they are deleted with their image.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import cv2
import numpy as np
import sqlite_utils

from ..contracts import Detections

MAX_SIDE = 256


def check_map(anomaly_map: object) -> np.ndarray:
    """``anomaly_map`` as a 2-D uint8 array; ValueError for anything else (wrong type, shape, dtype, empty)."""
    if not isinstance(anomaly_map, np.ndarray) or anomaly_map.ndim != 2 or anomaly_map.size == 0:
        raise ValueError(
            f"anomaly_map must be a non-empty (h, w) array, not {getattr(anomaly_map, 'shape', type(anomaly_map))}"
        )
    if anomaly_map.dtype != np.uint8:
        raise ValueError(f"anomaly_map must be uint8 (0 normal, 128 threshold, 255 twice it), not {anomaly_map.dtype}")
    return anomaly_map


def downscale(anomaly_map: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """The map with its long side at most ``max_side``: each output pixel is the maximum of its block."""
    a = check_map(anomaly_map)
    h, w = a.shape
    k = math.ceil(max(h, w) / max_side)
    if k <= 1:
        return np.ascontiguousarray(a)
    ph, pw = math.ceil(h / k) * k, math.ceil(w / k) * k
    if (ph, pw) != (h, w):  # pad with zeros (normal) to whole blocks
        a = np.pad(a, ((0, ph - h), (0, pw - w)))
    return np.ascontiguousarray(a.reshape(ph // k, k, pw // k, k).max(axis=(1, 3)))


def encode_map(anomaly_map: np.ndarray, max_side: int = MAX_SIDE) -> tuple[bytes, int, int]:
    """(grayscale PNG bytes, width, height) of the downscaled map."""
    small = downscale(anomaly_map, max_side)
    ok, buf = cv2.imencode(".png", small, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {small.shape} heat map as PNG")
    return buf.tobytes(), int(small.shape[1]), int(small.shape[0])


def frame_score(det: Detections | None) -> float | None:
    """The frame's image score if the backend gave a finite one, else None."""
    s = getattr(det, "image_score", None)
    if s is None:
        return None
    try:
        v = float(s)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def part_score(detections: Iterable[Detections]) -> float | None:
    """The part's image score: the highest over its frames (None when no frame has one)."""
    scores = [s for s in (frame_score(d) for d in detections) if s is not None]
    return max(scores) if scores else None


def has_map(detections: Iterable[Detections]) -> bool:
    """True when some frame of the part carries a heat map."""
    return any(getattr(d, "anomaly_map", None) is not None for d in detections)


def live_map_of(db: sqlite_utils.Database, image_id: int) -> tuple[str, int, int, float | None] | None:
    """(sha256, width, height, image_score) of image ``image_id``'s heat map not yet deleted, or None."""
    for r in db["anomaly_maps"].rows_where(
        "image_id = ? AND deleted_at IS NULL", [image_id], select="sha256, width, height, image_score"
    ):
        return str(r["sha256"]), int(r["width"]), int(r["height"]), r["image_score"]
    return None
