"""What each synthetic product looks like: the part, its removable features, its textures and the belt.

Built once per (product, frame size) from a fixed seed and cached (:func:`product_base`), so every run of
every station sees the same product; :mod:`station.acquire.render` draws each part from it (pose,
lighting, defects, harmless marks, sensor noise). Crop coordinates: the part drawn in its own image.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

log = logging.getLogger(__name__)

PRODUCTS: tuple[str, ...] = ("machined", "pcb")

BELT_PAD = 256  # extra belt width: the belt texture slides by up to this much
OFF_FEATURE_PX = 4  # surface defects are centred at least this far outside a removable feature's box
_BASE_SEED = {"machined": 1701, "pcb": 2602}


@dataclass(frozen=True, slots=True)
class Feature:
    """A removable feature (bolt hole, component) in crop coordinates."""

    x0: int
    y0: int
    x1: int
    y1: int
    mask: np.ndarray  # (y1-y0, x1-x0) uint8 0/255: pixels replaced when it is missing
    area: int  # pixels that visibly change when it is missing


@dataclass(frozen=True, slots=True)
class ProductBase:
    """Everything about a product that does not change from part to part."""

    product: str
    s: float  # geometry scale relative to 1280x800
    crop: np.ndarray  # the clean part (uint8), fill value outside its silhouette
    empty: np.ndarray  # the same with every removable feature absent
    textures: tuple[np.ndarray, ...]  # uint8 layers centred on 128 (128 = no change)
    tex_weights: tuple[tuple[float, float], ...]  # per-layer random weight range
    mask: np.ndarray  # uint8 0/255 silhouette of the part in the crop
    features: tuple[Feature, ...]
    region: tuple[
        str, tuple[float, ...]
    ]  # where surface defects go: ("annulus", (cx, cy, r1, r2)) | ("rect", (x0, y0, x1, y1))
    belt: np.ndarray  # (H, W + BELT_PAD) uint8
    bright: np.ndarray  # (N, 2) float32 x, y of the bright fixed-feature pixels where surface defects may go


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise scaled to unit standard deviation (float32)."""
    n: np.ndarray = rng.standard_normal(shape, dtype=np.float32)
    if sigma > 0:
        n = cv2.GaussianBlur(n, (0, 0), sigma)
    sd = float(n.std()) or 1.0
    return n / sd


def _to_layer(values: np.ndarray, where: np.ndarray) -> np.ndarray:
    """A texture layer: 128 + values inside ``where``, 128 elsewhere (uint8)."""
    layer = np.full(values.shape, 128.0, np.float32)
    layer[where] += values[where]
    return np.clip(np.rint(layer), 0, 255).astype(np.uint8)


def _i(v: float) -> int:
    return int(round(v))


def _build_belt(rng: np.random.Generator, width: int, height: int, s: float) -> np.ndarray:
    w = width + BELT_PAD
    yy, xx = np.mgrid[0:height, 0:w].astype(np.float32)
    belt = 50.0 + 5.0 * _smooth_noise(rng, (height, w), 1.2 * max(s, 0.3))
    belt += 2.5 * np.sin((xx + yy) * (2 * np.pi / max(6.0 * s, 3.0)))  # weave
    belt += 4.0 * _smooth_noise(rng, (height, w), 40 * max(s, 0.1))  # wear, dirt
    period = max(_i(420 * s), 8)
    for x in range(period // 2, w, period):  # belt joints
        cv2.line(belt, (x, 0), (x + _i(30 * s), height - 1), 34.0, max(_i(3 * s), 1))
    return np.clip(np.rint(belt), 0, 255).astype(np.uint8)


def _feature_from(crop: np.ndarray, empty: np.ndarray, box: tuple[int, int, int, int], pad: int) -> Feature:
    """The feature in ``box`` (crop coords): pixels where crop and empty differ."""
    h, w = crop.shape
    x0, y0, x1, y1 = max(box[0] - pad, 0), max(box[1] - pad, 0), min(box[2] + pad, w), min(box[3] + pad, h)
    diff = cv2.absdiff(crop[y0:y1, x0:x1], empty[y0:y1, x0:x1])
    changed = (diff > 10).astype(np.uint8) * 255
    m = cv2.dilate(changed, np.ones((3, 3), np.uint8))
    ys, xs = np.nonzero(m)
    if len(xs) == 0:
        return Feature(x0, y0, x0 + 1, y0 + 1, np.zeros((1, 1), np.uint8), 0)
    bx0, bx1, by0, by1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    return Feature(
        x0 + int(bx0),
        y0 + int(by0),
        x0 + int(bx1),
        y0 + int(by1),
        np.ascontiguousarray(m[by0:by1, bx0:bx1]),
        int(np.count_nonzero(changed)),
    )


@dataclass(frozen=True, slots=True)
class _Drawn:
    """What a product builder draws (before features and the belt are derived)."""

    crop: np.ndarray  # float32 clean part
    empty: np.ndarray  # float32, removable features absent
    mask: np.ndarray  # uint8 0/255 silhouette
    feature_boxes: list[tuple[int, int, int, int]]  # removable features, crop coords
    textures: tuple[np.ndarray, ...]
    tex_weights: tuple[tuple[float, float], ...]
    region: tuple[str, tuple[float, ...]]


def _u8(a: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return out


def _build_machined(rng: np.random.Generator, s: float) -> _Drawn:
    """A turned flange: chamfered rim, hub with groove, bore, six bolt holes."""
    R = 330.0 * s
    half = _i(R + 10 * s) + 2
    size = 2 * half + 1
    c = float(half)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = np.hypot(xx - c, yy - c)
    th = np.arctan2(yy - c, xx - c)
    r_bore, r_hub, r_bolt, r_hole = 80.0 * s, 150.0 * s, 240.0 * s, max(22.0 * s, 2.0)

    face = np.full((size, size), 150.0, np.float32)
    face[r < r_hub] = 160.0
    face += 3.0 * _smooth_noise(rng, face.shape, 0.8 * max(s, 0.3))  # static grain
    face += 6.0 * _smooth_noise(rng, face.shape, 25 * max(s, 0.1))  # static tone
    groove = np.abs(r - r_hub) < max(1.5 * s, 0.75)
    face[groove] = 100.0
    rim = (r > R - 9 * s) & (r <= R)
    face[rim] = 200.0 - 30.0 * ((r[rim] - (R - 9 * s)) / max(9 * s, 1.0))
    bore_ch = (r >= r_bore) & (r < r_bore + 7 * s)
    face[bore_ch] = 195.0
    face[r < r_bore] = 22.0
    fill = 52.0
    face[r > R] = fill
    part_mask = (r <= R + 0.5).astype(np.uint8) * 255

    empty = face.copy()
    holes = []
    crop = face.copy()
    for k in range(6):
        a = k * math.pi / 3 + math.pi / 6
        hx, hy = c + r_bolt * math.cos(a), c + r_bolt * math.sin(a)
        rr = np.hypot(xx - hx, yy - hy)
        crop[(rr < r_hole + 4 * s) & (rr >= r_hole)] = 190.0
        crop[rr < r_hole] = 22.0
        m = _i(r_hole + 6 * s) + 2
        holes.append((_i(hx) - m, _i(hy) - m, _i(hx) + m + 1, _i(hy) + m + 1))

    face_area = (r > r_bore + 8 * s) & (r < R - 10 * s)
    turning = 10.0 * np.sin(2 * np.pi * r / max(3.2 * s, 2.0))
    turning2 = 8.0 * np.sin(2 * np.pi * r / max(5.1 * s, 2.5) + 1.3)
    sheen = 14.0 * np.cos(2 * th) * np.clip(r / R, 0, 1)
    grain = 5.0 * _smooth_noise(rng, face.shape, 1.5 * max(s, 0.3))
    textures = tuple(_to_layer(v, face_area) for v in (turning, turning2, sheen, grain))
    weights = ((0.5, 1.3), (0.0, 0.8), (0.6, 1.0), (0.0, 1.0))
    region = ("annulus", (c, c, r_bore + 20 * s, R - 25 * s))
    return _Drawn(crop, empty, part_mask, holes, textures, weights, region)


def _build_pcb(rng: np.random.Generator, s: float) -> _Drawn:
    """A populated board: traces, vias, fiducials, ICs with pins, passives."""
    bw, bh = 900.0 * s, 560.0 * s
    m = _i(10 * s) + 2
    cw, ch = _i(bw) + 2 * m, _i(bh) + 2 * m
    fill = 52.0
    board = np.full((ch, cw), fill, np.float32)
    mask = np.zeros((ch, cw), np.uint8)
    rad = max(_i(14 * s), 1)
    x0, y0, x1, y1 = m, m, m + _i(bw) - 1, m + _i(bh) - 1
    cv2.rectangle(mask, (x0 + rad, y0), (x1 - rad, y1), 255, -1)
    cv2.rectangle(mask, (x0, y0 + rad), (x1, y1 - rad), 255, -1)
    for cx, cy in ((x0 + rad, y0 + rad), (x1 - rad, y0 + rad), (x0 + rad, y1 - rad), (x1 - rad, y1 - rad)):
        cv2.circle(mask, (cx, cy), rad, 255, -1)
    inside = mask > 0
    board[inside] = 95.0
    board += np.where(inside, 2.5 * _smooth_noise(rng, board.shape, 0.7 * max(s, 0.3)), 0)

    def P(x: float, y: float) -> tuple[int, int]:
        return (x0 + _i(x * s), y0 + _i(y * s))

    # copper traces under the solder mask (slightly brighter), fixed layout
    trng = np.random.default_rng(77)
    tw = max(_i(5 * s), 1)
    for _ in range(38):
        xa, ya = trng.uniform(40, 860), trng.uniform(40, 520)
        xb = xa + trng.choice([-1, 1]) * trng.uniform(60, 260)
        yb = ya + trng.choice([-1, 1]) * trng.uniform(40, 200)
        xb, yb = float(np.clip(xb, 30, 870)), float(np.clip(yb, 30, 530))
        cv2.polylines(board, [np.array([P(xa, ya), P(xb, ya), P(xb, yb)], np.int32)], False, 118.0, tw, cv2.LINE_AA)
    for _ in range(30):  # vias
        vx, vy = P(trng.uniform(40, 860), trng.uniform(40, 520))
        cv2.circle(board, (vx, vy), max(_i(6 * s), 1), 170.0, -1, cv2.LINE_AA)
        cv2.circle(board, (vx, vy), max(_i(2.5 * s), 1), 30.0, -1, cv2.LINE_AA)
    for fx, fy in ((40, 40), (860, 40), (40, 520)):  # fiducials
        cv2.circle(board, P(fx, fy), max(_i(16 * s), 1), 70.0, -1, cv2.LINE_AA)
        cv2.circle(board, P(fx, fy), max(_i(8 * s), 1), 215.0, -1, cv2.LINE_AA)
    for hx, hy in ((40, 280), (860, 520), (860, 280)):  # mounting holes
        cv2.circle(board, P(hx, hy), max(_i(18 * s), 2), 185.0, -1, cv2.LINE_AA)
        cv2.circle(board, P(hx, hy), max(_i(12 * s), 1), 22.0, -1, cv2.LINE_AA)

    empty = board.copy()  # footprints only: ICs and passive bodies are removable
    crop = board.copy()
    boxes: list[tuple[int, int, int, int]] = []
    pitch = 16.0
    ics = ((210, 150, 150, 90), (520, 170, 110, 110), (330, 390, 180, 70), (690, 400, 90, 60))
    silk_t = max(_i(2 * s), 1)
    for cx, cy, w, h in ics:
        n = int(w // pitch) - 1
        bx0, by0, bx1, by1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        for img in (crop, empty):
            cv2.rectangle(img, P(bx0 - 10, by0 - 26), P(bx1 + 10, by1 + 26), 215.0, silk_t)
        for k in range(n):
            px = bx0 + (k + 1) * pitch
            for top in (True, False):
                ya, yb = (by0 - 16, by0 + 2) if top else (by1 - 2, by1 + 16)
                cv2.rectangle(empty, P(px - 4, ya + 3), P(px + 4, yb), 175.0, -1)  # bare footprint pad
                cv2.rectangle(crop, P(px - 4, ya + 3), P(px + 4, yb), 175.0, -1)
                cv2.rectangle(crop, P(px - 3, ya), P(px + 3, yb), 190.0, -1)  # pin on the pad
        cv2.rectangle(crop, P(bx0, by0), P(bx1, by1), 38.0, -1)
        cv2.circle(crop, P(bx0 + 12, by0 + 12), max(_i(4 * s), 1), 120.0, -1, cv2.LINE_AA)
        boxes.append((*P(bx0 - 6, by0 - 18), *P(bx1 + 6, by1 + 18)))
    prng = np.random.default_rng(99)
    passives: list[tuple[float, float, bool]] = []
    while len(passives) < 14:
        px, py = prng.uniform(80, 820), prng.uniform(80, 480)
        vertical = bool(prng.integers(0, 2))
        if any(abs(px - qx) < 60 and abs(py - qy) < 60 for qx, qy, _ in passives):
            continue
        if any(
            cx - w / 2 - 45 < px < cx + w / 2 + 45 and cy - h / 2 - 50 < py < cy + h / 2 + 50 for cx, cy, w, h in ics
        ):
            continue
        passives.append((px, py, vertical))
    for px, py, vertical in passives:
        hw, hh = (9, 24) if vertical else (24, 9)  # half extents of the body
        for sgn in (-1, 1):
            ox, oy = (0, sgn * 22) if vertical else (sgn * 22, 0)
            for img in (crop, empty):
                cv2.rectangle(img, P(px + ox - 9, py + oy - 9), P(px + ox + 9, py + oy + 9), 180.0, -1)
        cv2.rectangle(
            crop,
            P(px - hw + (0 if vertical else 6), py - hh + (6 if vertical else 0)),
            P(px + hw - (0 if vertical else 6), py + hh - (6 if vertical else 0)),
            45.0,
            -1,
        )
        boxes.append((*P(px - hw - 2, py - hh - 2), *P(px + hw + 2, py + hh + 2)))

    weave = 4.0 * np.sin(np.add.outer(np.arange(ch), np.arange(cw)).astype(np.float32) * (2 * np.pi / max(7 * s, 3)))
    blotch = 9.0 * _smooth_noise(rng, board.shape, 30 * max(s, 0.1))
    grain = 5.0 * _smooth_noise(rng, board.shape, 1.2 * max(s, 0.3))
    textures = tuple(_to_layer(v, inside) for v in (weave, blotch, grain))
    weights = ((0.5, 1.5), (-1.0, 1.0), (0.0, 1.0))
    region = ("rect", (x0 + 30 * s, y0 + 30 * s, x1 - 30 * s, y1 - 30 * s))
    crop[~inside] = fill
    empty[~inside] = fill
    return _Drawn(crop, empty, mask, boxes, textures, weights, region)


@lru_cache(maxsize=8)
def product_base(product: str, width: int, height: int) -> ProductBase:
    """The cached base of ``product`` for frames of ``width`` x ``height``.

    Built once (tens of ms) from a fixed seed; call it at camera open so the
    first part is not slow.
    """
    if product not in PRODUCTS:
        raise ValueError(f"unknown product {product!r}; expected one of {PRODUCTS}")
    s = min(width / 1280.0, height / 800.0)
    rng = np.random.default_rng(_BASE_SEED[product])
    build = _build_machined if product == "machined" else _build_pcb
    drawn = build(rng, s)
    crop, empty = _u8(drawn.crop), _u8(drawn.empty)
    features = tuple(_feature_from(crop, empty, b, pad=_i(3 * s) + 1) for b in drawn.feature_boxes)
    features = tuple(f for f in features if f.area > 0)
    belt = _build_belt(np.random.default_rng(_BASE_SEED[product] + 1), width, height, s)
    log.debug("built %s base %dx%d (crop %s, %d features)", product, width, height, crop.shape, len(features))
    bright = _bright_points(crop, drawn.region, features)
    return ProductBase(
        product, s, crop, empty, drawn.textures, drawn.tex_weights, drawn.mask, features, drawn.region, belt, bright
    )


def _bright_points(
    crop: np.ndarray, region: tuple[str, tuple[float, ...]], features: tuple[Feature, ...]
) -> np.ndarray:
    """The pixels of the clean part's bright fixed features (pads, silkscreen, vias, holes: 40 grey levels over
    the bare surface's median) where a surface defect may go: inside the defect region, off the removable
    features."""
    where = np.zeros(crop.shape, bool)
    kind, p = region
    if kind == "annulus":
        cx, cy, r1, r2 = p
        yy, xx = np.mgrid[: crop.shape[0], : crop.shape[1]]
        d2 = (xx - cx) ** 2 + (yy - cy) ** 2
        where = (d2 >= r1 * r1) & (d2 <= r2 * r2)
    else:
        where[int(p[1]) : int(p[3]) + 1, int(p[0]) : int(p[2]) + 1] = True
    where &= crop.astype(np.int16) >= np.median(crop[where]) + 40  # brighter than the bare surface
    m = OFF_FEATURE_PX
    for f in features:
        where[max(f.y0 - m, 0) : f.y1 + m + 1, max(f.x0 - m, 0) : f.x1 + m + 1] = False
    ys, xs = np.nonzero(where)
    return np.stack([xs, ys], 1).astype(np.float32)
