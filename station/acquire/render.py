"""Procedural parts with known defects: the images of the synthetic camera.

Pure functions of a :class:`numpy.random.Generator` and a
:class:`~station.config.SyntheticCameraConfig`; no global random state.

How a frame is made (fast: a few ms per 1 MP frame on one core):

1. Once per (product, frame size) a *base* is built and cached
   (:func:`station.acquire.products.product_base`): the clean part drawn in
   its own crop (the "structure"), the same part with its removable features
   absent (for the ``missing`` defect), a few zero-centred texture layers, the
   part's silhouette mask and the conveyor belt texture; here, a bank of
   sensor noise. Both come from fixed internal seeds, so every run of every
   station sees the same product.
2. Per part, every random number is drawn first (defects, harmless mark, pose,
   texture weights, lighting, belt and noise offsets) so that
   ``render_part(rng, cfg, draw_defects=False)`` renders the very same part
   without its defects (used by tests to check the ground truth).
3. The textures are mixed into a copy of the crop with random weights
   (per-part surface variation), defects are drawn in crop coordinates, the
   crop is rotated and shifted onto the belt with one ``cv2.warpAffine`` into
   the part's bounding box, and lighting (gain and a gentle linear gradient)
   and sensor noise are applied to the whole frame with 8-bit cv2 arithmetic.

Sensor noise comes from a precomputed bank read at a random offset, which is
what keeps the frame cost down (drawing 1 M normal numbers costs ~10 ms);
parts get different noise because their offsets differ.

Ground truth boxes are in frame pixels (``x1, y1`` = left/top edge,
``x2, y2`` = right/bottom edge), clipped to the frame.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

from ..config.camera import SyntheticCameraConfig
from .products import BELT_PAD, OFF_FEATURE_PX, ProductBase, product_base

DEFECT_CLASSES: tuple[str, ...] = ("scratch", "spot", "missing")
HARMLESS_CLASSES: tuple[str, ...] = ("mark",)

_NOISE_PAD = 128  # extra noise-bank size in x and y: the read offset range


@dataclass(frozen=True, slots=True)
class TruthDefect:
    """One drawn defect (or harmless mark) of a rendered part.

    ``box_xyxy`` is in frame pixels (edges, clipped to the frame); ``area_px``
    is the number of frame pixels the defect changed (approximately).
    """

    class_name: str
    box_xyxy: tuple[float, float, float, float]
    area_px: float

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (box as a list)."""
        d = asdict(self)
        d["box_xyxy"] = list(self.box_xyxy)
        return d


@dataclass(frozen=True, slots=True)
class RenderedPart:
    """A rendered frame and what is on it."""

    image: np.ndarray  # (H, W) uint8
    product: str
    truth: tuple[TruthDefect, ...]  # the defects
    marks: tuple[TruthDefect, ...]  # harmless features (class "mark"), not defects
    pose: tuple[float, float, float]  # dx, dy (px) and rotation (deg) of the part
    gain: float  # global lighting gain of this frame

    @property
    def defective(self) -> bool:
        """True when the part carries at least one defect."""
        return bool(self.truth)


@lru_cache(maxsize=8)
def _noise_bank(width: int, height: int, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative parts of a fixed bank of Gaussian sensor noise."""
    rng = np.random.default_rng(31337)
    n = np.rint(rng.standard_normal((height + _NOISE_PAD, width + _NOISE_PAD), dtype=np.float32) * sigma)
    n = np.clip(n, -255, 255)
    return np.maximum(n, 0).astype(np.uint8), np.maximum(-n, 0).astype(np.uint8)


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True, slots=True)
class _Mark:
    """One thing to draw on the crop: a defect or a harmless mark."""

    kind: str  # scratch | spot | missing | mark
    params: tuple[float, ...]


def _sample_point(rng: np.random.Generator, base: ProductBase, on_features: float = 0.0) -> tuple[float, float]:
    """Where a surface defect goes: anywhere on the part's surface off its removable features, or, with
    probability ``on_features``, on one of its bright fixed features (no draw is made when it is 0)."""
    if on_features > 0 and len(base.bright) and rng.random() < on_features:
        bx, by = base.bright[int(rng.integers(0, len(base.bright)))]
        return float(bx), float(by)
    kind, p = base.region
    m = OFF_FEATURE_PX
    for _ in range(12):
        if kind == "annulus":
            cx, cy, r1, r2 = p
            r = math.sqrt(rng.uniform(r1 * r1, r2 * r2))
            a = rng.uniform(0, 2 * math.pi)
            x, y = cx + r * math.cos(a), cy + r * math.sin(a)
        else:
            x, y = rng.uniform(p[0], p[2]), rng.uniform(p[1], p[3])
        # keep surface defects off removable features, where they would hide
        if not any(f.x0 - m <= x <= f.x1 + m and f.y0 - m <= y <= f.y1 + m for f in base.features):
            break
    return x, y


def _plan_marks(rng: np.random.Generator, cfg: SyntheticCameraConfig, base: ProductBase) -> list[_Mark]:
    s = base.s
    marks: list[_Mark] = []
    classes = list(cfg.defect_classes)
    defective = bool(classes) and rng.random() < cfg.defect_rate
    n = (1 if rng.random() < 0.6 else 2) if defective else 0
    used_features: set[int] = set()
    for _ in range(n):
        kind = classes[int(rng.integers(0, len(classes)))]
        if kind == "missing" and len(used_features) >= len(base.features):
            kind = "spot"
        if kind == "scratch":
            x, y = _sample_point(rng, base, cfg.defects_on_features)
            length = max(rng.uniform(30, 200) * s, 6.0)
            ang = rng.uniform(0, math.pi)
            bend = rng.uniform(-0.08, 0.08) * length
            width = max(float(rng.integers(2, 5)) * s, 1.0)
            delta = rng.uniform(30, 90) * (1 if rng.random() < 0.5 else -1)
            marks.append(_Mark("scratch", (x, y, length, ang, bend, width, delta)))
        elif kind == "spot":
            x, y = _sample_point(rng, base, cfg.defects_on_features)
            d = max(rng.uniform(8, 40) * s, 3.0)
            ratio = rng.uniform(0.6, 1.0)
            ang = rng.uniform(0, 180)
            delta = rng.uniform(30, 75) * (1 if rng.random() < 0.35 else -1)
            marks.append(_Mark("spot", (x, y, d, ratio, ang, delta)))
        else:
            free = [i for i in range(len(base.features)) if i not in used_features]
            idx = free[int(rng.integers(0, len(free)))]
            used_features.add(idx)
            marks.append(_Mark("missing", (float(idx),)))
    if cfg.harmless_mark_rate > 0 and rng.random() < cfg.harmless_mark_rate:
        x, y = _sample_point(rng, base)
        rad = max(rng.uniform(7, 11) * s, 2.0)
        delta = -rng.uniform(60, 90)
        marks.append(_Mark("mark", (x, y, rad, delta)))
    return marks


# --------------------------------------------------------------------------- draw


def _apply_delta(img: np.ndarray, x0: int, y0: int, alpha: np.ndarray, delta: float) -> tuple[int, int, int, int, int]:
    """img[roi] += delta * alpha/255 (clipped); returns the changed box and area."""
    h, w = img.shape
    ah, aw = alpha.shape
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x0 + aw, w), min(y0 + ah, h)
    if cx1 <= cx0 or cy1 <= cy0:
        return 0, 0, 0, 0, 0
    a = alpha[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    roi = img[cy0:cy1, cx0:cx1]
    new = roi.astype(np.float32) + a.astype(np.float32) * (delta / 255.0)
    roi[...] = np.clip(np.rint(new), 0, 255).astype(np.uint8)
    ys, xs = np.nonzero(a)
    if len(xs) == 0:
        return 0, 0, 0, 0, 0
    area = int(np.count_nonzero(a >= 128))
    return cx0 + int(xs.min()), cy0 + int(ys.min()), cx0 + int(xs.max()) + 1, cy0 + int(ys.max()) + 1, area


def _draw_scratch(img: np.ndarray, p: tuple[float, ...]) -> tuple[int, int, int, int, int]:
    x, y, length, ang, bend, width, delta = p
    ux, uy = math.cos(ang), math.sin(ang)
    t = np.linspace(-0.5, 0.5, 9)
    pts = np.stack(
        [x + t * length * ux - (1 - 4 * t * t) * bend * uy, y + t * length * uy + (1 - 4 * t * t) * bend * ux], 1
    )
    pad = int(width) + 3
    x0, y0 = int(pts[:, 0].min()) - pad, int(pts[:, 1].min()) - pad
    x1, y1 = int(pts[:, 0].max()) + pad + 1, int(pts[:, 1].max()) + pad + 1
    alpha = np.zeros((y1 - y0, x1 - x0), np.uint8)
    local = np.rint((pts - (x0, y0)) * 16).astype(np.int32)
    cv2.polylines(alpha, [local], False, 255, max(int(round(width)), 1), cv2.LINE_AA, 4)
    return _apply_delta(img, x0, y0, alpha, delta)


def _draw_spot(img: np.ndarray, p: tuple[float, ...]) -> tuple[int, int, int, int, int]:
    x, y, d, ratio, ang, delta = p
    pad = int(d / 2) + 4
    x0, y0 = int(x) - pad, int(y) - pad
    alpha: np.ndarray = np.zeros((2 * pad + 1, 2 * pad + 1), np.uint8)
    centre = (int(round((x - x0) * 16)), int(round((y - y0) * 16)))
    axes = (max(int(round(d / 2 * 16)), 16), max(int(round(d / 2 * ratio * 16)), 16))
    cv2.ellipse(alpha, centre, axes, ang, 0, 360, 255, -1, cv2.LINE_AA, 4)
    alpha = cv2.GaussianBlur(alpha, (5, 5), 0)
    return _apply_delta(img, x0, y0, alpha, delta)


def _draw_ring_mark(img: np.ndarray, p: tuple[float, ...]) -> tuple[int, int, int, int, int]:
    """A harmless ink stamp: a thin ring with a dot in the middle."""
    x, y, rad, delta = p
    pad = int(rad) + 4
    x0, y0 = int(x) - pad, int(y) - pad
    alpha = np.zeros((2 * pad + 1, 2 * pad + 1), np.uint8)
    c = (int(round((x - x0) * 16)), int(round((y - y0) * 16)))
    cv2.circle(alpha, c, int(round(rad * 16)), 255, max(int(round(rad / 4)), 1), cv2.LINE_AA, 4)
    cv2.circle(alpha, c, max(int(round(rad * 16 / 4)), 16), 255, -1, cv2.LINE_AA, 4)
    return _apply_delta(img, x0, y0, alpha, delta)


def _draw_missing(
    img: np.ndarray, base: ProductBase, p: tuple[float, ...], tex_w: tuple[float, ...]
) -> tuple[int, int, int, int, int]:
    f = base.features[int(p[0])]
    ys, xs = slice(f.y0, f.y1), slice(f.x0, f.x1)
    patch = base.empty[ys, xs]
    for layer, w in zip(base.textures, tex_w):
        patch = cv2.addWeighted(patch, 1.0, layer[ys, xs], w, -128.0 * w)
    cv2.copyTo(patch, f.mask, img[ys, xs])
    return f.x0, f.y0, f.x1, f.y1, f.area


def _box_to_frame(
    M: np.ndarray, box: tuple[int, int, int, int], width: int, height: int
) -> tuple[float, float, float, float]:
    """Map a crop box (pixel edges) through the crop->frame affine; clip to the frame."""
    x0, y0, x1, y1 = box
    corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], np.float64) - 0.5  # edges -> centre coords
    mapped = corners @ M[:, :2].T + M[:, 2] + 0.5
    fx0, fy0 = mapped.min(0) - 0.5  # half a pixel for the bilinear spread
    fx1, fy1 = mapped.max(0) + 0.5
    return (
        float(np.clip(fx0, 0, width)),
        float(np.clip(fy0, 0, height)),
        float(np.clip(fx1, 0, width)),
        float(np.clip(fy1, 0, height)),
    )


def part_to_frame(crop_hw: tuple[int, int], frame_wh: tuple[int, int], ang: float, dx: float, dy: float) -> np.ndarray:
    """The 2x3 affine matrix that places the part's crop in the frame: rotated by ``ang`` degrees about its centre,
    centred in the frame, shifted by (dx, dy)."""
    ch, cw = crop_hw
    W, H = frame_wh
    M = cv2.getRotationMatrix2D(((cw - 1) / 2.0, (ch - 1) / 2.0), ang, 1.0)
    M[0, 2] += (W - 1) / 2.0 - (cw - 1) / 2.0 + dx
    M[1, 2] += (H - 1) / 2.0 - (ch - 1) / 2.0 + dy
    return M


def render_part(rng: np.random.Generator, cfg: SyntheticCameraConfig, *, draw_defects: bool = True) -> RenderedPart:
    """Render one part of ``cfg.product`` on the belt, with its ground truth.

    Every random number comes from ``rng``; the same generator state gives the
    same frame. ``draw_defects=False`` renders the identical part without its
    defects and harmless marks (the returned truth still lists them): tests use
    it to see exactly which pixels the defects changed.
    """
    W, H = cfg.width, cfg.height
    base = product_base(cfg.product, W, H)
    marks = _plan_marks(rng, cfg, base)
    ang = float(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))
    dx = float(rng.uniform(-cfg.jitter_px, cfg.jitter_px))
    dy = float(rng.uniform(-cfg.jitter_px, cfg.jitter_px))
    tex_w = tuple(float(rng.uniform(lo, hi)) for lo, hi in base.tex_weights)
    lv = cfg.lighting_variation
    gain = float(1.0 + rng.uniform(-lv, lv))
    gx, gy = (float(v) for v in rng.uniform(-lv / 2, lv / 2, 2))
    belt_off = int(rng.integers(0, BELT_PAD + 1))
    nx, ny = (int(v) for v in rng.integers(0, _NOISE_PAD + 1, 2))

    # 1. the part in its crop: textures with this part's weights, then defects
    part = base.crop
    for layer, w in zip(base.textures, tex_w):
        part = cv2.addWeighted(part, 1.0, layer, w, -128.0 * w)
    if part is base.crop:
        part = part.copy()
    ch, cw = part.shape
    M = part_to_frame((ch, cw), (W, H), ang, dx, dy)
    truth: list[TruthDefect] = []
    harmless: list[TruthDefect] = []
    for mk in marks:
        if draw_defects:
            if mk.kind == "scratch":
                bx = _draw_scratch(part, mk.params)
            elif mk.kind == "spot":
                bx = _draw_spot(part, mk.params)
            elif mk.kind == "mark":
                bx = _draw_ring_mark(part, mk.params)
            else:
                bx = _draw_missing(part, base, mk.params, tex_w)
        else:  # same geometry, drawn on a scratch copy so truth is identical
            bx = _truth_only(part, base, mk, tex_w)
        box = _box_to_frame(M, bx[:4], W, H)
        td = TruthDefect(mk.kind, tuple(round(v, 2) for v in box), float(bx[4]))  # type: ignore[arg-type]
        if box[2] - box[0] <= 0 or box[3] - box[1] <= 0 or bx[4] == 0:
            continue  # drawn outside the frame (tiny frames only)
        (harmless if mk.kind == "mark" else truth).append(td)

    # 2. onto the belt: warp only into the part's bounding box
    out = np.ascontiguousarray(base.belt[:, belt_off : belt_off + W])
    corners = np.array([[-0.5, -0.5], [cw - 0.5, -0.5], [-0.5, ch - 0.5], [cw - 0.5, ch - 0.5]]) @ M[:, :2].T + M[:, 2]
    x0, y0 = max(int(math.floor(corners[:, 0].min())), 0), max(int(math.floor(corners[:, 1].min())), 0)
    x1, y1 = min(int(math.ceil(corners[:, 0].max())) + 1, W), min(int(math.ceil(corners[:, 1].max())) + 1, H)
    if x1 > x0 and y1 > y0:
        Mr = M.copy()
        Mr[0, 2] -= x0
        Mr[1, 2] -= y0
        size = (x1 - x0, y1 - y0)
        warped = cv2.warpAffine(part, Mr, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        wmask = cv2.warpAffine(
            base.mask, Mr, size, flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0
        )
        cv2.copyTo(warped, wmask, out[y0:y1, x0:x1])

    # 3. lighting: gain x (1 + linear gradient), as an 8-bit multiply (gain/128)
    if lv > 0:
        gw, gh = 17, 11
        u = (np.arange(gw, dtype=np.float32) * (W / gw) + W / gw / 2 - W / 2) / W
        v = (np.arange(gh, dtype=np.float32) * (H / gh) + H / gh / 2 - H / 2) / H
        field = gain * (1.0 + 2 * gx * u[None, :] + 2 * gy * v[:, None]) * 128.0
        field_u8 = np.clip(np.rint(field), 0, 255).astype(np.uint8)
        out = cv2.multiply(out, cv2.resize(field_u8, (W, H), interpolation=cv2.INTER_LINEAR), scale=1.0 / 128.0)

    # 4. sensor noise from the bank at this part's offset
    if cfg.noise_sigma > 0:
        pos, neg = _noise_bank(W, H, float(cfg.noise_sigma))
        out = cv2.add(out, pos[ny : ny + H, nx : nx + W])
        out = cv2.subtract(out, neg[ny : ny + H, nx : nx + W])

    return RenderedPart(out, cfg.product, tuple(truth), tuple(harmless), (dx, dy, ang), gain)


def _truth_only(
    part: np.ndarray, base: ProductBase, mk: _Mark, tex_w: tuple[float, ...]
) -> tuple[int, int, int, int, int]:
    """Box and area of a mark as if drawn, without touching ``part``."""
    if mk.kind == "missing":
        f = base.features[int(mk.params[0])]
        return f.x0, f.y0, f.x1, f.y1, f.area
    scratch = part.copy()
    draw = {"scratch": _draw_scratch, "spot": _draw_spot, "mark": _draw_ring_mark}[mk.kind]
    return draw(scratch, mk.params)


def part_rng(seed: int, part_id: int) -> np.random.Generator:
    """The generator of part ``part_id`` on a line seeded with ``seed``.

    The same (seed, part_id) always gives the same part, whatever order parts
    are rendered in.
    """
    return np.random.default_rng([int(seed) % (1 << 63), int(part_id) % (1 << 63)])
