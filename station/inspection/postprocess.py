"""Model output -> detections in ORIGINAL frame pixels (pure functions, numpy + OpenCV only).

Layouts (Ultralytics ONNX exports, one batch element at a time):

- detect: ``(4 + nc, N)`` rows cx, cy, w, h, class scores (already sigmoid) - YOLOv8/11;
- segment: ``(4 + nc + nm, N)`` plus prototypes ``(nm, mh, mw)``;
- end-to-end (``nms=True`` exports, YOLO26/v10 heads): ``(N, 6 + nm)`` rows x1, y1, x2, y2, score, class;
- classify: ``(nc,)`` probabilities (softmax is applied only if the export did not).

The score filter runs first, on a view of the class rows, so only candidates are transposed and
converted; per-class NMS is vectorised (:func:`nms_per_class`, flat cost at any number of
candidates; the same result as ``cv2.dnn.NMSBoxesBatched``). Matches ``ultralytics.utils.nms``:
strict ``score > conf``, best class per box, NMS IoU ``> iou`` suppresses, at most 30000
candidates into NMS, ``max_det`` after NMS.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

from .preprocess import Letterbox

log = logging.getLogger(__name__)

MAX_NMS = 30000


@dataclass(slots=True)
class Candidates:
    """Detections of one image in MODEL INPUT pixels (before undoing the letterbox)."""

    boxes: np.ndarray  # (n, 4) float32 xyxy
    scores: np.ndarray  # (n,) float32
    class_ids: np.ndarray  # (n,) int32
    coefs: np.ndarray | None = None  # (n, nm) float32 mask coefficients

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def take(self, idx: np.ndarray) -> Candidates:
        """A subset (in the order of ``idx``)."""
        return Candidates(
            self.boxes[idx], self.scores[idx], self.class_ids[idx], None if self.coefs is None else self.coefs[idx]
        )


@dataclass(slots=True)
class SparseMask:
    """A binary mask stored only over its box: ``mask`` (h, w) bool placed at (x0, y0) of the frame."""

    x0: int
    y0: int
    mask: np.ndarray

    @property
    def area(self) -> int:
        """Number of set pixels."""
        return int(np.count_nonzero(self.mask))


def _empty(nm: int) -> Candidates:
    return Candidates(
        np.zeros((0, 4), np.float32),
        np.zeros((0,), np.float32),
        np.zeros((0,), np.int32),
        np.zeros((0, nm), np.float32) if nm else None,
    )


def decode_yolo(out: np.ndarray, nc: int, conf: float, iou: float, max_det: int) -> Candidates:
    """Decode one image's ``(4 + nc + nm, N)`` YOLOv8/11 output: score filter, xywh->xyxy, per-class NMS."""
    nm = out.shape[0] - 4 - nc
    cls_rows = out[4 : 4 + nc]
    best = cls_rows.max(axis=0) if nc > 1 else cls_rows[0]
    cand = np.flatnonzero(best > conf)  # cheap filter first: only candidates go on
    if cand.size == 0:
        return _empty(nm)
    if cand.size > MAX_NMS:
        cand = cand[np.argsort(-best[cand], kind="stable")[:MAX_NMS]]
    sel = np.ascontiguousarray(out[:, cand].T, dtype=np.float32)  # (k, C)
    scores = best[cand].astype(np.float32)
    class_ids = (sel[:, 4 : 4 + nc].argmax(axis=1) if nc > 1 else np.zeros(len(cand), np.int64)).astype(np.int32)
    xywh = sel[:, :4]
    boxes = np.empty_like(xywh)
    half = xywh[:, 2:4] / 2
    boxes[:, :2] = xywh[:, :2] - half
    boxes[:, 2:] = xywh[:, :2] + half
    coefs = sel[:, 4 + nc :] if nm else None
    keep = nms_per_class(boxes, scores, class_ids, iou, max_det)
    return Candidates(boxes[keep], scores[keep], class_ids[keep], None if coefs is None else coefs[keep])


def decode_end2end(out: np.ndarray, conf: float, max_det: int) -> Candidates:
    """Decode one image's end-to-end ``(N, 6 + nm)`` output (NMS already done inside the model)."""
    nm = out.shape[1] - 6
    keep = np.flatnonzero(out[:, 4] > conf)[:max_det]
    sel = out[keep].astype(np.float32, copy=False)
    return Candidates(
        np.ascontiguousarray(sel[:, :4]),
        np.ascontiguousarray(sel[:, 4]),
        sel[:, 5].astype(np.int32),
        np.ascontiguousarray(sel[:, 6:]) if nm else None,
    )


NMS_CHUNK = 128  # candidates per vectorised NMS step


def _iou_matrix(a: np.ndarray, area_a: np.ndarray, b: np.ndarray, area_b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of xyxy boxes (no +1: the cv::Rect2d / torchvision convention)."""
    w: np.ndarray = np.minimum(a[:, None, 2], b[None, :, 2])
    w -= np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3])
    h -= np.maximum(a[:, None, 1], b[None, :, 1])
    np.maximum(w, 0, out=w)
    np.maximum(h, 0, out=h)
    w *= h  # intersection
    h = area_a[:, None] + area_b[None, :]
    h -= w  # union
    np.maximum(h, 1e-12, out=h)
    w /= h
    return w


def nms_per_class(
    boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou: float, max_det: int | None = None
) -> np.ndarray:
    """Indices kept by greedy per-class NMS, highest score first (ties: lower index first), at most ``max_det``.

    The same result as ``cv2.dnn.NMSBoxesBatched`` / torchvision's batched NMS (a box is suppressed
    by a kept box of its class with IoU > ``iou``), vectorised so its cost stays flat with the
    number of candidates: boxes are visited in score order in chunks of ``NMS_CHUNK``; a chunk is
    first checked against every box kept so far (one matrix), then its own survivors are resolved
    with its own IoU matrix (greedy, one row step per box that overlaps another); it stops as
    soon as ``max_det`` boxes are kept. Classes never suppress each other (each class is shifted
    to its own coordinate range).
    """
    n = len(scores)
    if n == 0:
        return np.zeros((0,), np.int64)
    limit = n if max_det is None else min(n, int(max_det))
    order = np.argsort(-scores, kind="stable")
    if n == 1:
        return order[:limit]
    b = boxes[order].astype(np.float64)
    span = float(np.abs(b).max()) + 1.0
    b += (class_ids[order].astype(np.float64) * 2.0 * span)[:, None]
    area = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    kept: list[np.ndarray] = []
    n_kept = 0
    kb = np.zeros((0, 4), np.float64)
    ka = np.zeros((0,), np.float64)
    for start in range(0, n, NMS_CHUNK):
        idx = np.arange(start, min(n, start + NMS_CHUNK))
        if n_kept:
            idx = idx[~(_iou_matrix(b[idx], area[idx], kb, ka) > iou).any(axis=1)]
        if len(idx) > 1:
            sup = np.triu(
                _iou_matrix(b[idx], area[idx], b[idx], area[idx]) > iou, 1
            )  # sup[j, i]: j (earlier) would suppress i
            keep = np.ones(len(idx), bool)
            for j in np.flatnonzero(sup.any(axis=1)):  # greedy, in score order, over the boxes that overlap a later one
                if keep[j]:
                    keep &= ~sup[j]
            idx = idx[keep]
        if len(idx):
            kept.append(idx)
            n_kept += len(idx)
            kb, ka = np.concatenate([kb, b[idx]]), np.concatenate([ka, area[idx]])
        if n_kept >= limit:
            break
    if not kept:
        return np.zeros((0,), np.int64)
    picked: np.ndarray = order[np.concatenate(kept)[:limit]]
    return picked


def boxes_to_frame(boxes: np.ndarray, lb: Letterbox, clip_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Undo the letterbox in place: model input pixels -> frame pixels (plus the tile offset), clipped.

    ``clip_hw`` is the frame (height, width); boxes are first clipped to the letterboxed source
    (a tile's own area), then to the frame.
    """
    boxes[:, [0, 2]] -= lb.pad_x
    boxes[:, [1, 3]] -= lb.pad_y
    boxes[:, [0, 2]] /= lb.gain_x
    boxes[:, [1, 3]] /= lb.gain_y
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, lb.src_w)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, lb.src_h)
    if lb.off_x or lb.off_y:
        boxes[:, [0, 2]] += lb.off_x
        boxes[:, [1, 3]] += lb.off_y
    if clip_hw is not None:
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, clip_hw[1])
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, clip_hw[0])
    return boxes


def masks_to_frame(
    protos: np.ndarray,
    coefs: np.ndarray,
    boxes_frame: np.ndarray,
    lb: Letterbox,
    input_hw: tuple[int, int],
    frame_hw: tuple[int, int],
) -> list[SparseMask]:
    """Instance masks for the KEPT detections only, sampled straight from the prototypes into each box.

    ``mask_logits = coefs @ protos``; each one is resampled (bilinear, like Ultralytics'
    ``process_mask_native``) from prototype resolution to frame pixels with one ``cv2.warpAffine``
    over the detection's box only, thresholded at 0 and cropped to the box (pixel ``r`` is inside
    when ``x1 <= r < x2``, as Ultralytics' ``crop_mask``).
    """
    nm, mh, mw = protos.shape
    n = coefs.shape[0]
    if n == 0:
        return []
    logits = (coefs.astype(np.float32) @ protos.reshape(nm, -1).astype(np.float32)).reshape(n, mh, mw)
    # frame pixel u (centre u + 0.5) -> source-local -> input pixels -> prototype sample index
    sx, sy = mw / input_hw[1], mh / input_hw[0]
    ax, ay = lb.gain_x * sx, lb.gain_y * sy
    bx = ((0.5 - lb.off_x) * lb.gain_x + lb.pad_x) * sx - 0.5
    by = ((0.5 - lb.off_y) * lb.gain_y + lb.pad_y) * sy - 0.5
    fh, fw = frame_hw
    out: list[SparseMask] = []
    for i in range(n):
        x1, y1, x2, y2 = (float(v) for v in boxes_frame[i])
        c0, c1 = max(0, math.ceil(x1)), min(fw, math.ceil(x2))
        r0, r1 = max(0, math.ceil(y1)), min(fh, math.ceil(y2))
        if c1 <= c0 or r1 <= r0:
            out.append(SparseMask(c0, r0, np.zeros((max(0, r1 - r0), max(0, c1 - c0)), bool)))
            continue
        m = np.array([[ax, 0.0, ax * c0 + bx], [0.0, ay, ay * r0 + by]], np.float64)
        roi = cv2.warpAffine(
            logits[i],
            m,
            (c1 - c0, r1 - r0),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
        out.append(SparseMask(c0, r0, roi > 0))
    return out


def paste_masks(masks: list[SparseMask], frame_hw: tuple[int, int]) -> np.ndarray:
    """(N, H, W) bool frame-size masks from sparse ones."""
    full = np.zeros((len(masks), *frame_hw), bool)
    for i, sm in enumerate(masks):
        h, w = sm.mask.shape
        full[i, sm.y0 : sm.y0 + h, sm.x0 : sm.x0 + w] = sm.mask
    return full


def classify_probs(out: np.ndarray) -> np.ndarray:
    """Class probabilities from a classify output row; softmax only when it is not one already."""
    v = out.astype(np.float32).reshape(-1)
    if v.size and float(v.min()) >= 0.0 and float(v.max()) <= 1.0 and abs(float(v.sum()) - 1.0) < 1e-3:
        return v
    e = np.exp(v - v.max())
    probs: np.ndarray = e / e.sum()
    return probs
