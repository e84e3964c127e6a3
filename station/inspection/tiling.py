"""Tiling for frames much larger than the model input (pure functions).

A 5 MP frame letterboxed into a 640 input shrinks 4x: a 15-pixel defect becomes 4 pixels and is
lost. Tiling runs the model on overlapping tiles at native resolution (tile = model input size),
optionally plus one downscaled full-frame pass for defects larger than a tile, then merges:

- duplicates seen whole by two tiles (in the overlap) are suppressed like NMS (IoU > iou);
- pieces of one object cut by a tile border are merged into the union of their boxes when one of
  them is cut and they overlap by more than ``ios`` of the smaller box, or when both are cut and
  they line up across the border (1-D overlap along the border > 0.5).

A box is "cut" when it touches a tile edge that is inside the frame (not the frame's own edge).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

CUT_MARGIN_PX = 2.0


@dataclass(frozen=True, slots=True)
class Tile:
    """A window of the frame in frame pixels."""

    x: int
    y: int
    w: int
    h: int


def _starts(length: int, tile: int, overlap: float) -> list[int]:
    if length <= tile:
        return [0]
    step = tile * (1.0 - overlap)
    n = math.ceil((length - tile) / step) + 1
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def tile_grid(frame_hw: tuple[int, int], tile_hw: tuple[int, int], overlap: float) -> list[Tile]:
    """Overlapping tiles of ``tile_hw`` covering the frame; neighbours overlap by at least ``overlap``.

    Tiles are spread evenly so the last one ends on the frame edge; a frame smaller than a tile in
    one direction gets one tile of the frame's size in that direction.
    """
    fh, fw = frame_hw
    th, tw = tile_hw
    return [Tile(x, y, min(tw, fw), min(th, fh)) for y in _starts(fh, th, overlap) for x in _starts(fw, tw, overlap)]


def needs_tiling(frame_hw: tuple[int, int], input_hw: tuple[int, int], min_ratio: float = 1.5) -> bool:
    """True when the frame is at least ``min_ratio`` times the input in some direction."""
    return frame_hw[0] >= min_ratio * input_hw[0] or frame_hw[1] >= min_ratio * input_hw[1]


def cut_flags(boxes: np.ndarray, tile: Tile, frame_hw: tuple[int, int], margin: float = CUT_MARGIN_PX) -> np.ndarray:
    """(n,) bool: which frame-pixel boxes of ``tile`` touch one of its edges that lies inside the frame."""
    fh, fw = frame_hw
    cut = np.zeros(len(boxes), bool)
    if tile.x > 0:
        cut |= boxes[:, 0] <= tile.x + margin
    if tile.x + tile.w < fw:
        cut |= boxes[:, 2] >= tile.x + tile.w - margin
    if tile.y > 0:
        cut |= boxes[:, 1] <= tile.y + margin
    if tile.y + tile.h < fh:
        cut |= boxes[:, 3] >= tile.y + tile.h - margin
    return cut


def _overlap_1d(a0: np.ndarray, a1: np.ndarray, b0: float, b1: float) -> np.ndarray:
    inter = np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0, None)
    union = np.maximum(a1, b1) - np.minimum(a0, b0)
    out: np.ndarray = inter / np.maximum(union, 1e-9)
    return out


def merge_tiled(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    cut: np.ndarray,
    iou: float,
    ios: float = 0.5,
    max_det: int = 300,
) -> list[list[int]]:
    """Greedy non-maximum merging across tiles.

    Returns clusters of indices; the first index of each cluster is its best-scoring member (its
    score and class are the cluster's). The merged box is the union of the members' boxes when a
    cut piece took part, else the best member's box (see :func:`cluster_boxes`).
    """
    n = len(scores)
    order = np.argsort(-scores, kind="stable")
    alive = np.ones(n, bool)
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    clusters: list[list[int]] = []
    for i in order:
        if not alive[i]:
            continue
        alive[i] = False
        members = [int(i)]
        box = boxes[i].astype(np.float64).copy()
        any_cut = bool(cut[i])
        changed = True
        while changed:  # a grown box may now reach further pieces
            changed = False
            cand = np.flatnonzero(alive & (class_ids == class_ids[i]))
            if cand.size == 0:
                break
            b = boxes[cand]
            iw = np.clip(np.minimum(b[:, 2], box[2]) - np.maximum(b[:, 0], box[0]), 0, None)
            ih = np.clip(np.minimum(b[:, 3], box[3]) - np.maximum(b[:, 1], box[1]), 0, None)
            inter = iw * ih
            a_box = max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])
            union = a_box + area[cand] - inter
            iou_v = inter / np.maximum(union, 1e-9)
            ios_v = inter / np.maximum(np.minimum(a_box, area[cand]), 1e-9)
            ortho = np.maximum(
                _overlap_1d(b[:, 0], b[:, 2], box[0], box[2]), _overlap_1d(b[:, 1], b[:, 3], box[1], box[3])
            )
            either_cut = cut[cand] | any_cut
            both_cut = cut[cand] & any_cut
            match = (iou_v > iou) | (either_cut & (ios_v > ios)) | (both_cut & (inter > 0) & (ortho > 0.5))
            for j in cand[match]:
                alive[j] = False
                members.append(int(j))
                if cut[j] or any_cut:
                    box[:2] = np.minimum(box[:2], boxes[j, :2])
                    box[2:] = np.maximum(box[2:], boxes[j, 2:])
                    any_cut = True
                    changed = True
        clusters.append(members)
        if len(clusters) >= max_det:
            break
    return clusters


def cluster_boxes(boxes: np.ndarray, cut: np.ndarray, clusters: list[list[int]]) -> np.ndarray:
    """One box per cluster: the union when a cut piece is in the cluster, else the best member's box."""
    out = np.empty((len(clusters), 4), np.float32)
    for k, members in enumerate(clusters):
        if len(members) > 1 and bool(cut[members].any()):
            m = boxes[members]
            out[k] = (m[:, 0].min(), m[:, 1].min(), m[:, 2].max(), m[:, 3].max())
        else:
            out[k] = boxes[members[0]]
    return out
