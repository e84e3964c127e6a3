"""The reference inspector: a golden template / variation model learned from good parts.

No labels are needed. The inspector learns, at a working scale (``cfg.scale``),
the per-pixel mean and spread of aligned, brightness-normalised good frames,
then flags pixels of a new frame that differ from the mean by more than their
threshold, and reports the connected blobs as detections.

Per frame (all cv2 operations, no Python loop over pixels):

1. grey, downscale to the working scale (``INTER_AREA``);
2. alignment to the template: phase correlation for the shift, then ECC with
   ``MOTION_EUCLIDEAN`` (shift + rotation), both on a small pyramid level
   (``cfg.align_scale`` of the frame); the ECC template is the part's box;
3. warp the working image into template coordinates, only over the template's
   part region (the bounding box of its mask, grown to whole 16-px blocks);
4. brightness: fit ``gain(x, y) = a + b*x + c*y`` to the ratios of template /
   frame block means inside the part mask (refit without outlier blocks, so a
   defect does not bend the fit), multiply;
5. residual ``r = x - mean`` minus its robust low-pass (``lowpass_px`` blocks,
   each pixel clipped at 2 x ``min_abs_diff`` first): slow tint and shading
   differences between parts go, defects stay. Learning applies the same
   steps, so the learned spread is the spread of this residual;
6. ``|r| > thr`` where, per pixel,
   ``thr = max(sigma_k * spread, min_abs_diff, edge_tolerance * |grad mean|)``;
   ``spread`` is the learned std, 3x3 max-filtered and floored at
   ``std_floor``; the gradient term lets strong edges move by the residual
   alignment error without creating blobs;
7. only inside the part mask (the filled outline of the part found in the
   template, eroded by ``border_px``: the conveyor and the moving outline are
   ignored); a 3x3 closing joins the fragments of thin scratches;
8. connected components; blobs of at least ``min_blob_px`` (full-resolution
   pixels) become detections, boxes mapped back through the inverse alignment
   and the scale into frame pixels, ``areas_px`` in full-resolution pixels.

Blob classes (a shape heuristic, no training):

- ``missing``: at least half of the blob lies on template *features* (pixels
  more than 30 grey levels from the part's dominant surface level, i.e. the
  median of the part: holes, pads, components, chamfers) and on at least 70 %
  of those the frame moved toward the surface level (a dark hole now bright, a
  dark chip now bare board);
- ``scratch``: elongated: the ratio of the principal axes of the blob's second
  moments is >= 3 and its length (sqrt(12 x major variance)) is >= 20
  full-resolution pixels;
- ``spot``: anything else (dent, stain, blob).

Score: ``1 - exp(-mean_excess / score_scale)``, with ``mean_excess`` the mean
over the blob of ``(|r| - thr) / spread``: how far beyond its threshold the
blob lies, in units of the learned spread.

The template is saved with :meth:`ReferenceInspector.save` (``np.savez``) and
loaded at start from ``cfg.template_path`` so a restart does not relearn. One
template describes one camera view: a station with several cameras of
different views needs one reference inspector per view.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.ma  # noqa: F401 - np.median imports it on first use: 14 ms holding the GIL, not on the line

from ..config.inspect import ReferenceInspectorConfig
from ..types import Detections, Frame
from .base import InspectorError, ModelLoadError

log = logging.getLogger(__name__)

NAMES: tuple[str, ...] = ("scratch", "spot", "missing")
_SCRATCH, _SPOT, _MISSING = 0, 1, 2
_FORMAT = 1  # version of the saved template file
_FEATURE_CONTRAST = 30.0  # grey levels from the surface level that make a template pixel a "feature"
_BLOCK_PX = 16  # brightness-fit block size at working scale
_ALIGN_MIN_PX = 160  # the alignment level is at least this wide
_LP_CLIP = 2.0  # the low-pass of the residual sees each pixel clipped at this x min_abs_diff
_ECC_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 6, 1e-4)  # 6 steps: as accurate as 10 here, half the time


def _gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    raise InspectorError(f"reference inspector: unsupported image shape {image.shape} (expected Mono8 or BGR)")


def _level_map(src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """3x3 affine from pixel-centre coords of a (w, h) image to those of its resize to dst (w, h)."""
    fx, fy = dst[0] / src[0], dst[1] / src[1]
    return np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1]], np.float64)


class _Aligner:
    """Estimates the warp template -> frame (working-scale pixel centres).

    ``roi`` (working pixels x0, y0, x1, y1) limits the ECC template to the
    part's box (plus a small margin): faster, and the moving conveyor around
    the part does not pull the estimate.
    """

    def __init__(self, ref_work: np.ndarray, mode: str, tiny_size: tuple[int, int], roi: tuple[int, int, int, int] | None = None):
        self.mode = mode
        h, w = ref_work.shape
        self.work_size = (w, h)
        self.tiny_size = tiny_size
        self.tref = cv2.resize(ref_work, tiny_size, interpolation=cv2.INTER_AREA).astype(np.float32)
        self.win = cv2.createHanningWindow(tiny_size, cv2.CV_32F)
        self.up = np.linalg.inv(_level_map(self.work_size, tiny_size))  # tiny -> work
        self.down = _level_map(self.work_size, tiny_size)  # work -> tiny
        tx0, ty0, tx1, ty1 = 0, 0, tiny_size[0], tiny_size[1]
        if roi is not None:
            fx, fy = tiny_size[0] / w, tiny_size[1] / h
            tx0, ty0 = max(int(roi[0] * fx) - 2, 0), max(int(roi[1] * fy) - 2, 0)
            tx1, ty1 = min(int(math.ceil(roi[2] * fx)) + 2, tiny_size[0]), min(int(math.ceil(roi[3] * fy)) + 2, tiny_size[1])
            if (tx1 - tx0) < 16 or (ty1 - ty0) < 16:
                tx0, ty0, tx1, ty1 = 0, 0, tiny_size[0], tiny_size[1]
        self.ecc_off = (tx0, ty0)
        self.ecc_tpl = np.ascontiguousarray(self.tref[ty0:ty1, tx0:tx1])
        self.failures = 0

    def estimate(self, work: np.ndarray) -> np.ndarray:
        """2x3 float64 warp W with frame(W p) ~ template(p), working pixels."""
        if self.mode == "none":
            return np.eye(2, 3)
        tiny = cv2.resize(work, self.tiny_size, interpolation=cv2.INTER_AREA).astype(np.float32)
        # phaseCorrelate applies the window in place (OpenCV 5.0): give it copies
        (dx, dy), _resp = cv2.phaseCorrelate(self.tref.copy(), tiny.copy(), self.win)
        shift = np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1]], np.float64)
        w3 = shift
        if self.mode == "euclidean":
            ox, oy = self.ecc_off
            init = np.array([[1, 0, dx + ox], [0, 1, dy + oy]], np.float32)  # ECC template is the part's box
            try:
                _cc, warp = cv2.findTransformECC(self.ecc_tpl, tiny, init, cv2.MOTION_EUCLIDEAN, _ECC_CRITERIA, None, 1)
                w3 = np.vstack([warp.astype(np.float64), [0, 0, 1]]) @ np.array([[1, 0, -ox], [0, 1, -oy], [0, 0, 1]], np.float64)
            except cv2.error as exc:  # no convergence (no part, wrong product): keep the shift
                self.failures += 1
                log.debug("ECC did not converge (%s); using the phase-correlation shift", str(exc).splitlines()[0][:120])
        return (self.up @ w3 @ self.down)[:2]


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    x, y, w, h = cv2.boundingRect(mask)
    return (x, y, x + w, y + h) if w and h else None


def _fit_span(a: int, b: int, size: int, block: int) -> tuple[int, int]:
    """Grow [a, b) about its centre to a multiple of ``block`` inside [0, size) (fast integer-factor resizes)."""
    want = -(-(b - a) // block) * block
    if want > size:
        want = (size // block) * block
        if want == 0:
            return a, b
    a2 = max(min((a + b - want) // 2, size - want), 0)
    return a2, a2 + want


def _part_mask(mean: np.ndarray) -> np.ndarray:
    """Filled outline of the part in the template (uint8 0/255); whole image if none is found.

    The background level is taken from a strip along the image border.
    """
    h, w = mean.shape
    b = max(2, min(h, w) // 50)
    border = np.concatenate([mean[:b].ravel(), mean[-b:].ravel(), mean[:, :b].ravel(), mean[:, -b:].ravel()])
    level = float(np.median(border))
    spread = float(np.median(np.abs(border - level))) * 1.4826
    diff = np.abs(mean - level) > max(4.0 * spread, 12.0)
    m = cv2.morphologyEx(diff.astype(np.uint8) * 255, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = np.zeros((h, w), np.uint8)
    if contours:
        big = max(contours, key=cv2.contourArea)
        if cv2.contourArea(big) >= 0.01 * h * w:
            cv2.drawContours(out, [big], -1, 255, -1)
            return out
    log.warning("reference inspector: no part outline found in the template; comparing the whole frame")
    out[:] = 255
    return out


@dataclass(frozen=True)
class _Template:
    """What is learned (and saved): per-pixel mean and std at working scale."""

    mean: np.ndarray  # (h, w) float32
    std: np.ndarray  # (h, w) float32
    frame_size: tuple[int, int]  # (W, H) of the frames learned from
    n: int  # frames learned from


class _Normaliser:
    """Brightness and low-frequency normalisation over one masked region.

    ``brightness``: fit ``gain = a + b*u + c*v`` to the ratios of reference /
    frame block means inside the mask (refit without outlier blocks, so a
    defect does not bend the plane) and multiply.

    ``residual``: ``r = x - ref`` minus a robust low-pass of ``r`` (each
    pixel's ``r`` clipped at +/- ``clip`` before a masked block average, so a
    real defect barely moves the low-pass while slow tint and shading
    differences between parts are removed).
    """

    def __init__(self, ref: np.ndarray, mask: np.ndarray, clip: float, lowpass_px: int):
        h, w = ref.shape
        self.ref = ref
        self.m01 = (mask > 0).astype(np.float32)
        self.size = (w, h)
        self.grid = (max(w // _BLOCK_PX, 1), max(h // _BLOCK_PX, 1))
        self.ref_blocks = cv2.resize(ref * self.m01, self.grid, interpolation=cv2.INTER_AREA).ravel()
        self.block_ok = cv2.resize(self.m01, self.grid, interpolation=cv2.INTER_AREA).ravel() > 0.5
        gu = (np.arange(self.grid[0], dtype=np.float32) + 0.5) / self.grid[0]
        gv = (np.arange(self.grid[1], dtype=np.float32) + 0.5) / self.grid[1]
        self.block_u = np.broadcast_to(gu[None, :], (self.grid[1], self.grid[0])).ravel()
        self.block_v = np.broadcast_to(gv[:, None], (self.grid[1], self.grid[0])).ravel()
        self.U = np.ascontiguousarray(np.broadcast_to((np.arange(w, dtype=np.float32) + 0.5)[None, :] / w, (h, w)))
        self.V = np.ascontiguousarray(np.broadcast_to((np.arange(h, dtype=np.float32) + 0.5)[:, None] / h, (h, w)))
        self.clip = float(clip)
        self.lp_grid: tuple[int, int] | None = None
        if lowpass_px > 0 and clip > 0:
            self.lp_grid = (max(w // lowpass_px, 1), max(h // lowpass_px, 1))
            cover = cv2.resize(cv2.resize(self.m01, self.lp_grid, interpolation=cv2.INTER_AREA), self.size, interpolation=cv2.INTER_LINEAR)
            self.lp_inv_cover = (1.0 / np.maximum(cover, 0.05)).astype(np.float32)

    def brightness(self, x: np.ndarray) -> np.ndarray:
        """``x`` (float32) times the gain plane that maps it onto the reference's brightness."""
        blocks = cv2.resize(x * self.m01, self.grid, interpolation=cv2.INTER_AREA).ravel()
        ok = self.block_ok & (blocks > 1.0)
        if ok.sum() < 3:
            return x
        ratio = self.ref_blocks[ok] / blocks[ok]
        A = np.stack([np.ones(int(ok.sum()), np.float32), self.block_u[ok], self.block_v[ok]], 1)
        coef = np.linalg.lstsq(A, ratio, rcond=None)[0]
        res = ratio - A @ coef
        keep = np.abs(res) <= 3.0 * float(np.median(np.abs(res))) * 1.4826 + 0.005
        if keep.sum() >= 3 and not keep.all():
            coef = np.linalg.lstsq(A[keep], ratio[keep], rcond=None)[0]
        a, b, c = (float(v) for v in coef)
        return cv2.multiply(x, cv2.addWeighted(self.U, b, self.V, c, a))

    def residual(self, x: np.ndarray) -> np.ndarray:
        """``x - ref`` without its robust low-frequency part (float32)."""
        r = cv2.subtract(x, self.ref)
        if self.lp_grid is None:
            return r
        rc = cv2.multiply(np.clip(r, -self.clip, self.clip), self.m01)
        lp = cv2.resize(cv2.resize(rc, self.lp_grid, interpolation=cv2.INTER_AREA), self.size, interpolation=cv2.INTER_LINEAR)
        return cv2.subtract(r, cv2.multiply(lp, self.lp_inv_cover))


class _Model:
    """A template prepared for fast inspection with the current config."""

    def __init__(self, tpl: _Template, cfg: ReferenceInspectorConfig):
        self.tpl = tpl
        h, w = tpl.mean.shape
        W, H = tpl.frame_size
        self.work_size = (w, h)
        self.sx, self.sy = w / W, h / H
        mean = tpl.mean

        outline = _part_mask(mean)
        er = int(round(cfg.border_px * self.sx))
        mask = cv2.erode(outline, np.ones((2 * er + 1, 2 * er + 1), np.uint8)) if er > 0 else outline
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            raise ModelLoadError("reference template: the part mask is empty after border erosion (lower border_px)")
        lp = _lowpass_work_px(cfg, self.sx)
        block = math.lcm(_BLOCK_PX, lp) if lp > 0 and math.lcm(_BLOCK_PX, lp) <= 128 else _BLOCK_PX
        x0, x1 = _fit_span(int(xs.min()), int(xs.max()) + 1, w, block)
        y0, y1 = _fit_span(int(ys.min()), int(ys.max()) + 1, h, block)
        self.roi = (x0, y0, x1, y1)
        sl = (slice(y0, y1), slice(x0, x1))
        self.mask = np.ascontiguousarray(mask[sl])
        self.mean = np.ascontiguousarray(mean[sl])
        self.norm = _Normaliser(self.mean, self.mask, _LP_CLIP * cfg.min_abs_diff, lp)
        tiny = _tiny_size(tpl.frame_size, self.work_size, cfg)
        self.aligner = _Aligner(np.clip(mean, 0, 255).astype(np.uint8), cfg.align, tiny, _bbox(outline))

        # few learning parts give noisy per-pixel stds: never trust a pixel to be steadier than its 3x3 neighbours
        spread = np.maximum(cv2.dilate(tpl.std, np.ones((3, 3), np.uint8)), cfg.std_floor)
        gx = cv2.Sobel(mean, cv2.CV_32F, 1, 0, ksize=3) / 8.0
        gy = cv2.Sobel(mean, cv2.CV_32F, 0, 1, ksize=3) / 8.0
        grad = cv2.dilate(cv2.magnitude(gx, gy), np.ones((3, 3), np.uint8))
        thr = np.maximum(np.maximum(cfg.sigma_k * spread, cfg.min_abs_diff), cfg.edge_tolerance_px * self.sx * grad)
        self.thr = np.ascontiguousarray(thr[sl].astype(np.float32))
        self.inv_spread = np.ascontiguousarray((1.0 / spread[sl]).astype(np.float32))  # excess = (d - thr) / spread

        inside = mask > 0
        self.surface = float(np.median(mean[inside]))  # the dominant surface: most of the part's pixels
        dev = self.mean - self.surface
        self.feature_sign = np.where(np.abs(dev) > _FEATURE_CONTRAST, np.sign(dev), 0).astype(np.int8)

        digest = hashlib.sha256(tpl.mean.tobytes() + tpl.std.tobytes() + repr(tpl.frame_size).encode()).hexdigest()[:12]
        self.model_id = f"reference:{digest}"


def _tiny_size(frame_size: tuple[int, int], work_size: tuple[int, int], cfg: ReferenceInspectorConfig) -> tuple[int, int]:
    """Size of the alignment level: ``align_scale`` of the frame, but at least _ALIGN_MIN_PX wide
    (smaller levels lose the detail that pins the pose down), and never above the working size."""
    W, H = frame_size
    f = max(cfg.align_scale, min(_ALIGN_MIN_PX / W, 1.0))
    return (min(max(int(round(W * f)), 16), work_size[0]), min(max(int(round(H * f)), 16), work_size[1]))


def _lowpass_work_px(cfg: ReferenceInspectorConfig, sx: float) -> int:
    return int(round(cfg.lowpass_px * sx)) if cfg.lowpass_px > 0 else 0


class ReferenceInspector:
    """An :class:`~station.inspect.base.Inspector` comparing frames with a learned template.

    Construction: from ``cfg.template_path`` if that file exists, else from the
    images of ``cfg.learn_from`` if set (ready at once), else not ready until
    ``cfg.learn_parts`` frames were offered to :meth:`learn`. Extra keyword
    arguments from the station's composition root are accepted and ignored.
    """

    names: tuple[str, ...] = NAMES

    def __init__(self, cfg: ReferenceInspectorConfig, **_: Any):
        self.cfg = cfg
        self.model_id = "reference:learning"
        self._model: _Model | None = None
        self._lock = threading.Lock()
        # learning state
        self._norm: _Normaliser | None = None
        self._ref_aligner: _Aligner | None = None
        self._frame_size: tuple[int, int] | None = None
        self._sum: np.ndarray | None = None
        self._sumsq: np.ndarray | None = None
        self._n = 0
        self.skipped = 0  # learning frames refused (defective per ground truth)

        if cfg.template_path is not None and Path(cfg.template_path).exists():
            self._set_template(_load_template(Path(cfg.template_path), cfg))
            log.info("reference template loaded from %s (%s)", cfg.template_path, self.model_id)
        elif cfg.learn_from is not None:
            self._learn_folder(Path(cfg.learn_from))

    # ------------------------------------------------------------------ API

    @property
    def ready(self) -> bool:
        """True once a template is learned or loaded."""
        return self._model is not None

    @property
    def learned(self) -> int:
        """Frames accumulated so far (or in the finished template)."""
        return self._model.tpl.n if self._model is not None else self._n

    def learn(self, frame: Frame) -> None:
        """Accumulate one good frame; after ``cfg.learn_parts`` of them the inspector is ready.

        Frames whose ``meta["defective"]`` is True are skipped when
        ``cfg.learn_only_good``. A no-op once ready.
        """
        if self._model is not None:
            return
        if self.cfg.learn_only_good and frame.meta.get("defective") is True:
            self.skipped += 1
            return
        with self._lock:
            self._accumulate(_gray(frame.image))
            if self._n >= self.cfg.learn_parts:
                self._finish_learning()

    def inspect(self, frame: Frame) -> Detections:
        """Compare ``frame`` with the template; boxes in frame pixels."""
        model = self._model
        if model is None:
            raise InspectorError(f"reference inspector is still learning ({self._n}/{self.cfg.learn_parts} good parts)")
        t0 = time.perf_counter()
        gray = _gray(frame.image)
        W, H = model.tpl.frame_size
        if gray.shape != (H, W):
            raise InspectorError(
                f"frame of camera {frame.camera_id} is {gray.shape[1]}x{gray.shape[0]} but the reference template was learned on "
                f"{W}x{H} frames (relearn: delete {self.cfg.template_path or 'the template'} or fix the camera size)"
            )
        work = cv2.resize(gray, model.work_size, interpolation=cv2.INTER_AREA)
        warp = model.aligner.estimate(work)
        x0, y0, x1, y1 = model.roi
        w_roi = warp.copy()
        w_roi[:, 2] += warp[:, 0] * x0 + warp[:, 1] * y0
        al = cv2.warpAffine(work, w_roi, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REPLICATE)
        if self.cfg.blur_px:
            al = cv2.GaussianBlur(al, (self.cfg.blur_px, self.cfg.blur_px), 0)
        x = model.norm.brightness(al.astype(np.float32))
        t1 = time.perf_counter()

        r = model.norm.residual(x)
        d = np.abs(r)
        bad = cv2.compare(d, model.thr, cv2.CMP_GT)
        bad = cv2.bitwise_and(bad, model.mask)
        bad = cv2.morphologyEx(bad, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
        bad = cv2.bitwise_and(bad, model.mask)
        t2 = time.perf_counter()

        return self._blobs(model, bad, d, r, warp, (t1 - t0, t2 - t1, t2))

    def warmup(self) -> None:
        """Inspect the template itself once (allocations, code paths) when ready."""
        model = self._model
        if model is None:
            return
        W, H = model.tpl.frame_size
        img = cv2.resize(np.clip(model.tpl.mean, 0, 255).astype(np.uint8), (W, H), interpolation=cv2.INTER_LINEAR)
        self.inspect(Frame(part_id=-1, camera_id="warmup", image=img, t_exposure_ns=0))

    def close(self) -> None:
        """Nothing to release."""

    def save(self, path: str | Path) -> Path:
        """Write the learned template to ``path`` (.npz); InspectorError if not learned yet."""
        model = self._model
        if model is None:
            raise InspectorError("reference inspector: nothing to save, the template is not learned yet")
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp.npz")
        t = model.tpl
        np.savez_compressed(
            tmp, format=np.int32(_FORMAT), mean=t.mean, std=t.std, frame_size=np.array(t.frame_size, np.int32),
            n=np.int32(t.n), scale=np.float64(self.cfg.scale),
        )
        tmp.replace(p)  # atomic: a crash never leaves half a template
        log.info("reference template saved to %s (%s, %d parts)", p, self.model_id, t.n)
        return p

    @classmethod
    def load(cls, path: str | Path, cfg: ReferenceInspectorConfig | None = None) -> "ReferenceInspector":
        """An inspector using the template saved at ``path`` (thresholds from ``cfg``)."""
        base = cfg or ReferenceInspectorConfig()
        insp = cls(base.model_copy(update={"template_path": None, "learn_from": None}))
        insp._set_template(_load_template(Path(path), base))
        return insp

    # ------------------------------------------------------------------ internals

    def _set_template(self, tpl: _Template) -> None:
        model = _Model(tpl, self.cfg)
        with self._lock:
            self._model = model
            self.model_id = model.model_id

    def _work(self, gray: np.ndarray) -> np.ndarray:
        H, W = gray.shape
        size = (max(int(round(W * self.cfg.scale)), 8), max(int(round(H * self.cfg.scale)), 8))
        return cv2.resize(gray, size, interpolation=cv2.INTER_AREA)

    def _accumulate(self, gray: np.ndarray) -> None:
        H, W = gray.shape
        if self._frame_size is None:
            self._frame_size = (W, H)
        elif self._frame_size != (W, H):
            raise InspectorError(f"learning frame is {W}x{H} but earlier ones were {self._frame_size[0]}x{self._frame_size[1]}")
        work = self._work(gray)
        if self._norm is None:
            ref = work.astype(np.float32)
            if self.cfg.blur_px:
                ref = cv2.GaussianBlur(ref, (self.cfg.blur_px, self.cfg.blur_px), 0)
            outline = _part_mask(ref)
            tiny = _tiny_size((W, H), (work.shape[1], work.shape[0]), self.cfg)
            self._ref_aligner = _Aligner(work, self.cfg.align, tiny, _bbox(outline))
            sx = work.shape[1] / W
            self._norm = _Normaliser(ref, outline, _LP_CLIP * self.cfg.min_abs_diff, _lowpass_work_px(self.cfg, sx))
            self._sum = np.zeros(work.shape, np.float64)
            self._sumsq = np.zeros(work.shape, np.float64)
        assert self._ref_aligner is not None and self._sum is not None and self._sumsq is not None
        warp = self._ref_aligner.estimate(work)
        h, w = work.shape
        al = cv2.warpAffine(work, warp, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
        if self.cfg.blur_px:
            al = cv2.GaussianBlur(al, (self.cfg.blur_px, self.cfg.blur_px), 0)
        x = self._norm.brightness(al.astype(np.float32))
        # the frame with its slow deviation from the reference removed, as at inspection
        y = cv2.add(self._norm.ref, self._norm.residual(x))
        self._sum += y
        self._sumsq += np.square(y, dtype=np.float64)
        self._n += 1

    def _finish_learning(self) -> None:
        assert self._sum is not None and self._sumsq is not None and self._frame_size is not None
        n = self._n
        mean = self._sum / n
        var = np.maximum(self._sumsq / n - mean * mean, 0.0) * (n / max(n - 1, 1))
        tpl = _Template(mean.astype(np.float32), np.sqrt(var).astype(np.float32), self._frame_size, n)
        model = _Model(tpl, self.cfg)
        self._model = model
        self.model_id = model.model_id
        self._sum = self._sumsq = None
        self._norm = self._ref_aligner = None
        log.info("reference template learned from %d parts (%d skipped): %s", n, self.skipped, self.model_id)
        if self.cfg.template_path is not None:
            try:
                self.save(self.cfg.template_path)
            except OSError as exc:
                log.error("could not save the reference template to %s: %s", self.cfg.template_path, exc)

    def _learn_folder(self, folder: Path) -> None:
        from ..acquire.base import CameraError
        from ..acquire.folder import list_images, read_image

        try:
            files = list_images(folder)
        except CameraError as exc:
            raise ModelLoadError(f"reference inspector learn_from: {exc}") from None
        for f in files:
            try:
                img = read_image(f, grayscale=True)
            except CameraError as exc:
                raise ModelLoadError(f"reference inspector learn_from: {exc}") from None
            try:
                self._accumulate(img)
            except InspectorError as exc:
                raise ModelLoadError(f"reference inspector learn_from: {f}: {exc}") from None
        self._finish_learning()
        log.info("reference template learned from %d images in %s", len(files), folder)

    def _blobs(self, model: _Model, bad: np.ndarray, d: np.ndarray, r: np.ndarray, warp: np.ndarray,
               times: tuple[float, float, float]) -> Detections:
        cfg = self.cfg
        # labelling only the box around the abnormal pixels: on a whole ROI it costs ~0.7 ms even when empty
        rx, ry, rw, rh = cv2.boundingRect(bad)
        if rw and rh:
            n, labels, stats, _ = cv2.connectedComponentsWithStats(bad[ry:ry + rh, rx:rx + rw], connectivity=8)
        else:
            n, labels, stats = 1, None, np.zeros((1, 5), np.int32)
        px_full = 1.0 / (model.sx * model.sy)
        min_area = cfg.min_blob_px / px_full
        cand = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= min_area]
        if len(cand) > cfg.max_blobs:
            cand = sorted(cand, key=lambda i: -stats[i, cv2.CC_STAT_AREA])[: cfg.max_blobs]
        d, r = d[ry:ry + rh, rx:rx + rw], r[ry:ry + rh, rx:rx + rw]
        thr = model.thr[ry:ry + rh, rx:rx + rw]
        inv_spread = model.inv_spread[ry:ry + rh, rx:rx + rw]
        feat = model.feature_sign[ry:ry + rh, rx:rx + rw]
        x0, y0 = model.roi[0] + rx, model.roi[1] + ry
        boxes, scores, classes, areas = [], [], [], []
        for i in cand:
            bx, by, bw, bh, area = (int(v) for v in stats[i])
            sl = (slice(by, by + bh), slice(bx, bx + bw))
            blob = labels[sl] == i  # type: ignore[index]
            excess = float(np.mean((d[sl][blob] - thr[sl][blob]) * inv_spread[sl][blob]))
            scores.append(1.0 - math.exp(-max(excess, 0.0) / cfg.score_scale))
            classes.append(_classify(blob, r[sl][blob], feat[sl][blob], model.sx))
            areas.append(area * px_full)
            # box corners (template working pixel edges) -> frame working centres -> full-res edges
            ex = np.array([bx + x0, bx + x0 + bw], np.float64) - 0.5
            ey = np.array([by + y0, by + y0 + bh], np.float64) - 0.5
            cx, cy = np.meshgrid(ex, ey)
            qx = warp[0, 0] * cx + warp[0, 1] * cy + warp[0, 2] + 0.5
            qy = warp[1, 0] * cx + warp[1, 1] * cy + warp[1, 2] + 0.5
            boxes.append((qx.min() / model.sx, qy.min() / model.sy, qx.max() / model.sx, qy.max() / model.sy))
        t3 = time.perf_counter()
        pre, infer, t2 = times
        timings = {"preprocess": pre * 1e3, "infer": infer * 1e3, "postprocess": (t3 - t2) * 1e3}
        if not boxes:
            empty = Detections.empty(NAMES, model.model_id, timings)
            return Detections(empty.boxes_xyxy, empty.scores, empty.class_ids, NAMES, model.model_id,
                              areas_px=np.zeros((0,), np.float32), timings_ms=timings)
        order = np.argsort(-np.asarray(scores), kind="stable")
        W, H = model.tpl.frame_size
        b = np.asarray(boxes, np.float32)[order]
        b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, W)
        b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, H)
        return Detections(
            boxes_xyxy=b,
            scores=np.asarray(scores, np.float32)[order],
            class_ids=np.asarray(classes, np.int32)[order],
            names=NAMES,
            model_id=model.model_id,
            areas_px=np.asarray(areas, np.float32)[order],
            timings_ms=timings,
        )


def _classify(blob: np.ndarray, signed: np.ndarray, feat: np.ndarray, scale: float) -> int:
    """Class of one blob (see the module docstring): missing, scratch or spot."""
    on_feature = feat != 0
    if on_feature.mean() >= 0.5:
        toward_surface = np.sign(signed[on_feature]) == -feat[on_feature]
        if toward_surface.mean() >= 0.7:
            return _MISSING
    m = cv2.moments(blob.astype(np.uint8), binaryImage=True)
    if m["m00"] > 0:
        mu20, mu02, mu11 = m["mu20"] / m["m00"], m["mu02"] / m["m00"], m["mu11"] / m["m00"]
        common = math.sqrt(((mu20 - mu02) / 2) ** 2 + mu11 * mu11)
        lam1 = (mu20 + mu02) / 2 + common
        lam2 = max((mu20 + mu02) / 2 - common, 1.0 / 12)  # a 1-px-wide line has variance 1/12 across
        length_full = math.sqrt(12 * lam1) / scale
        if math.sqrt(lam1 / lam2) >= 3.0 and length_full >= 20.0:
            return _SCRATCH
    return _SPOT


def _load_template(path: Path, cfg: ReferenceInspectorConfig) -> _Template:
    """Read a template saved by :meth:`ReferenceInspector.save`; ModelLoadError naming the file and the fix."""
    try:
        with np.load(path, allow_pickle=False) as z:
            fmt = int(z["format"])
            if fmt != _FORMAT:
                raise ModelLoadError(f"{path}: template format {fmt}, this station reads format {_FORMAT} (relearn: delete the file)")
            scale = float(z["scale"])
            if abs(scale - cfg.scale) > 1e-9:
                raise ModelLoadError(
                    f"{path}: template learned at scale {scale}, config says scale {cfg.scale} "
                    f"(set scale: {scale} or delete the file to relearn)"
                )
            fs = tuple(int(v) for v in z["frame_size"])
            tpl = _Template(z["mean"].astype(np.float32), z["std"].astype(np.float32), (fs[0], fs[1]), int(z["n"]))
    except ModelLoadError:
        raise
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ModelLoadError(f"{path}: not a reference template file ({exc}); delete it to relearn") from None
    if tpl.mean.shape != tpl.std.shape or tpl.mean.ndim != 2:
        raise ModelLoadError(f"{path}: corrupt template (mean {tpl.mean.shape}, std {tpl.std.shape}); delete it to relearn")
    return tpl
