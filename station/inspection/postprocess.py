"""Model output -> detections in ORIGINAL frame pixels (pure functions, numpy + OpenCV only).

Layouts (Ultralytics ONNX exports, one batch element at a time):

- detect: ``(4 + nc, N)`` rows cx, cy, w, h, class scores (already sigmoid) - YOLOv8/11;
- segment: ``(4 + nc + nm, N)`` plus prototypes ``(nm, mh, mw)``;
- end-to-end (``nms=True`` exports, YOLO26/v10 heads): ``(N, 6 + nm)`` rows x1, y1, x2, y2, score, class;
- classify: ``(nc,)`` probabilities (softmax is applied only if the export did not).

The score filter runs first, on a view of the class rows, so only candidates are gathered (none
at all when every anchor is one, at ``conf`` 0); classes and corners are computed on whole rows and
stacked once; per-class NMS (:func:`nms_per_class`) reads only the best-scored candidates it needs
(``cv2.dnn.NMSBoxesBatched`` on a prefix), so its cost follows the boxes kept, not the
candidates. Matches ``ultralytics.utils.nms``: strict ``score > conf``, best class per box, NMS
IoU ``> iou`` suppresses, at most 30000 candidates into NMS, ``max_det`` after NMS.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

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
    every = cand.size == out.shape[1]  # conf 0: every anchor is a candidate, no gather needed
    rows = out if every else out[:, cand]  # (C, k): row operations on contiguous rows, one transpose at the end
    cand_best = best if every else best[cand]
    class_ids = _best_class(rows[4 : 4 + nc], cand_best)
    scores = cand_best.astype(np.float32)
    if rows.dtype != np.float32:
        rows = rows.astype(np.float32)
    half_w, half_h = rows[2] * np.float32(0.5), rows[3] * np.float32(0.5)
    boxes = np.stack([rows[0] - half_w, rows[1] - half_h, rows[0] + half_w, rows[1] + half_h], axis=1)
    coefs = np.ascontiguousarray(rows[4 + nc :].T, dtype=np.float32) if nm else None
    keep = nms_per_class(boxes, scores, class_ids, iou, max_det)
    return Candidates(boxes[keep], scores[keep], class_ids[keep], None if coefs is None else coefs[keep])


def _best_class(cls_rows: np.ndarray, best: np.ndarray) -> np.ndarray:
    """Index of each column's highest class score (ties: the lowest index, as ``argmax``), int32.

    With few classes, one comparison per class against the known best is cheaper than ``argmax``
    over the (nc, k) rows, whose reduction runs across rows.
    """
    nc = cls_rows.shape[0]
    ids: np.ndarray
    if nc > 8:
        ids = cls_rows.argmax(axis=0).astype(np.int32)
        return ids
    ids = np.zeros(best.shape[0], np.int32)
    for c in range(nc - 1, -1, -1):  # descending: the lowest class reaching the best is written last
        ids[cls_rows[c] == best] = c
    return ids


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


NMS_HEAD = 64  # fewest best-scored candidates one NMS pass reads
NMS_FIRST = 2.0  # the first pass reads the best NMS_FIRST x max_det (about half survive at conf 0)


def _best_first(neg_scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best scores (ties at the cut included), as ``np.argsort(neg_scores, kind="stable")``.

    The first ``k`` of a longer call are the same indices in the same order.
    """
    if k >= len(neg_scores):
        return np.argsort(neg_scores, kind="stable")
    cut = np.partition(neg_scores, k - 1)[k - 1]
    head = np.flatnonzero(neg_scores <= cut)  # ascending indices: the stable sort keeps ties in index order
    picked: np.ndarray = head[np.argsort(neg_scores[head], kind="stable")]
    return picked


NMS_OWN_CALL = 64  # a class with at least this many boxes gets an OpenCV call of its own


def _greedy_positions(xywh: np.ndarray, cls: np.ndarray, iou: float) -> np.ndarray:
    """Positions (ascending) that greedy per-class NMS keeps, for boxes given best first.

    OpenCV's pass tests each box against every box kept before it, classes offset apart included,
    so one call costs about boxes x kept. Boxes of different classes never suppress each other: a
    class with many boxes gets a call of its own (the sum of squares is smaller than the square of
    the sum), the rest share one batched call. OpenCV gets ranks (exact to 2**24 boxes), not scores.
    """
    rank: Any = np.arange(len(cls), 0, -1).astype(np.float32)
    counts = np.bincount(cls)
    big = np.flatnonzero(counts >= NMS_OWN_CALL)
    if counts.max() == len(cls):  # a single class: one plain call
        groups: list[tuple[np.ndarray, bool]] = [(np.arange(len(cls)), False)]
    else:
        own = np.isin(cls, big)
        groups = [(np.flatnonzero(cls == c), False) for c in big]
        if not own.all():
            groups.append((np.flatnonzero(~own), True))
    parts = []
    for sub, batched in groups:
        if batched:
            got = cv2.dnn.NMSBoxesBatched(xywh[sub], rank[sub], cls[sub], 0.0, iou)
        else:
            got = cv2.dnn.NMSBoxes(xywh[sub], rank[sub], 0.0, iou)
        parts.append(sub[np.asarray(got, np.int64).reshape(-1)])
    pos = np.concatenate(parts)
    pos.sort()  # positions in the given order = the greedy (score) order
    return pos


def nms_per_class(
    boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou: float, max_det: int | None = None
) -> np.ndarray:
    """Indices kept by greedy per-class NMS, highest score first (ties: lower index first), at most ``max_det``.

    A box is suppressed by a kept box of its class with IoU > ``iou`` (the torchvision / Ultralytics
    rule). OpenCV's ``cv2.dnn.NMSBoxesBatched`` (C++) does the greedy pass, on the best-scored
    candidates only: greedy NMS decides each box from the boxes ranked above it, so NMS over the
    best ``k`` keeps exactly the full result's boxes among them. The first pass reads the best
    ``NMS_FIRST x max_det``; while fewer than ``max_det`` are kept and candidates remain, the next
    pass reads the next block, sized from the share kept so far: its boxes that a kept box
    suppresses are dropped in one array step (every kept box ranks above them), and OpenCV runs
    the greedy pass on the rest. The cost follows the boxes kept, not the thousands of
    low-score candidates of a low ``conf`` (OpenCV alone over all of them: candidates x kept).
    OpenCV gets ranks, not scores, so the order (ties by index) is exactly this function's.
    """
    n = len(scores)
    if n == 0:
        return np.zeros((0,), np.int64)
    limit = n if max_det is None else min(n, int(max_det))
    neg = -np.asarray(scores)  # the scores as given: no cast that could merge two of them into a tie
    order = _best_first(neg, max(NMS_HEAD, int(NMS_FIRST * limit)))
    read, kept = 0, np.zeros((0,), np.int64)
    while True:
        block = order[read:]
        if len(kept):  # every kept box ranks above the block: drop what they suppress, in one array step
            block = block[~_suppressed_by(boxes, class_ids, block, kept, iou)]
        xywh = boxes[block].astype(np.float64)
        xywh[:, 2:] -= xywh[:, :2]
        pos = _greedy_positions(xywh, class_ids[block].astype(np.int32), float(iou))
        kept = np.concatenate([kept, block[pos]])
        added, read = len(pos), len(order)
        if len(kept) >= limit or read == n:
            picked: np.ndarray = kept[:limit]
            return picked
        share = max(added / max(len(block), 1), 1 / 16)  # of the block's boxes, the share that survived
        order = _best_first(neg, read + int((limit - len(kept)) / share * 1.25) + NMS_HEAD)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of xyxy boxes."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float64)
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    out: np.ndarray = inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)
    return out


def _suppressed_by(
    boxes: np.ndarray, class_ids: np.ndarray, block: np.ndarray, kept: np.ndarray, iou: float
) -> np.ndarray:
    """For each box of ``block``: does a box of ``kept`` of its class overlap it with IoU > ``iou``?

    Class by class: only boxes of one class can suppress each other.
    """
    out = np.zeros(len(block), bool)
    cb, ck = class_ids[block], class_ids[kept]
    for c in np.intersect1d(cb, ck):
        bi = np.flatnonzero(cb == c)
        out[bi] = (box_iou(boxes[block[bi]], boxes[kept[ck == c]]) > iou).any(axis=1)
    return out


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
