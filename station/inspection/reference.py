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
   with ``cfg.align_patches`` > 0, refined at working scale: the residual
   shift of each textured template patch (phase correlation), a rigid fit
   without outlier patches (sub-pixel; fine-pitch AOI boards);
3. warp the working image into template coordinates, only over the template's
   part region (the bounding box of its mask, grown to whole 16-px blocks);
4. brightness: fit ``gain(x, y) = a + b*x + c*y`` to the ratios of template /
   frame block means inside the part mask (refit without outlier blocks, so a
   defect does not bend the fit), multiply;
5. residual ``r = x - mean`` minus its robust low-pass (``lowpass_px`` blocks,
   each pixel clipped at 2 x ``min_abs_diff`` first): slow tint and shading
   differences between parts go, defects stay. Learning applies the same
   steps, so the learned spread is the spread of this residual;
6. ``d > thr`` where ``d`` is how far the (normalised) frame lies outside the
   template band ``[min, max]`` of the template over +- ``edge_tolerance_px``
   (a dilated/eroded template: an edge that moves by the residual alignment
   error stays inside, an open, bite, spur or short leaves it) and, per pixel,
   ``thr = max(sigma_k * spread, min_abs_diff)``; ``spread`` is the learned
   std, 3x3 max-filtered and floored at ``std_floor``;
7. only inside the part mask (``part``: the filled outline of a part found on
   a plain background, eroded by ``border_px``, falling back to the un-eroded
   outline; or the whole frame when the part fills it), limited to ``roi`` and
   outside ``ignore_mask``; a 3x3 closing joins the fragments of thin scratches;
8. connected components of the abnormal pixels dilated by ``merge_px`` / 2
   (nearby fragments make one defect); blobs of at least ``min_blob_px``
   (full-resolution pixels) become detections, boxes mapped back through the
   inverse alignment and the scale into frame pixels and grown by
   ``box_margin_px`` + ``box_margin_frac`` x their larger side, ``areas_px`` in
   full-resolution pixels. ``anomaly_map`` is ``128 * d / thr`` (uint8, frame
   orientation, working scale), ``image_score`` its maximum ratio ``d / thr``.

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

Score: ``m / (m + score_scale)``, with ``m`` the blob's defect mass: the sum
over its pixels of ``max(d / thr - 1, 0)`` in full-resolution pixels (faint or
small: low; large or high contrast: high; never saturates).

The template is saved with :meth:`ReferenceInspector.save` (``np.savez``) and
loaded at start from ``cfg.template_path`` so a restart does not relearn; the
template, its file and its preparation for a config (mask, thresholds, band,
aligner) are in :mod:`station.inspection.reference_template`. One
template describes one camera view: a station with several cameras of
different views needs one reference inspector per view.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.ma  # noqa: F401 - np.median imports it on first use: 14 ms holding the GIL, not on the line

from ..config.inspection import ReferenceInspectorConfig
from ..contracts import Detections, Frame
from .base import InspectorError, ModelLoadError
from .preprocess import to_gray
from .reference_template import (
    LP_CLIP,
    PreparedTemplate,
    Template,
    load_template,
    lowpass_work_px,
    save_template,
    tiny_size,
)
from .reference_util import Aligner, Normaliser, bbox, part_mask

log = logging.getLogger(__name__)

NAMES: tuple[str, ...] = ("scratch", "spot", "missing")
_SCRATCH, _SPOT, _MISSING = 0, 1, 2


def _gray(image: np.ndarray) -> np.ndarray:
    return to_gray(image, "reference inspector")


class ReferenceInspector:
    """An :class:`~station.inspection.base.Inspector` comparing frames with a learned template.

    Construction: from ``cfg.template_path`` if that file exists, else from the
    images of ``cfg.learn_from`` if set (ready at once), else not ready until
    ``cfg.learn_parts`` frames were offered to :meth:`learn`. Extra keyword
    arguments from the station's composition root are accepted and ignored.
    """

    names: tuple[str, ...] = NAMES

    def __init__(self, cfg: ReferenceInspectorConfig, **_: Any):
        self.cfg = cfg
        self.model_id = "reference:learning"
        self._model: PreparedTemplate | None = None
        self._lock = threading.Lock()
        # learning state
        self._norm: Normaliser | None = None
        self._ref_aligner: Aligner | None = None
        self._frame_size: tuple[int, int] | None = None
        self._sum: np.ndarray | None = None
        self._sumsq: np.ndarray | None = None
        self._n = 0
        self.skipped = 0  # learning frames refused (defective per ground truth)

        if cfg.template_path is not None and Path(cfg.template_path).exists():
            self._set_template(load_template(Path(cfg.template_path), cfg))
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
                f"frame of camera {frame.camera_id} is {gray.shape[1]}x{gray.shape[0]} but the reference template was "
                "learned on "
                f"{W}x{H} frames (relearn: delete {self.cfg.template_path or 'the template'} or fix the camera size)"
            )
        work = gray if model.work_size == (W, H) else cv2.resize(gray, model.work_size, interpolation=cv2.INTER_AREA)
        warp = model.aligner.estimate(work)
        x0, y0, x1, y1 = model.roi
        w_roi = warp.copy()
        w_roi[:, 2] += warp[:, 0] * x0 + warp[:, 1] * y0
        al = cv2.warpAffine(
            work,
            w_roi,
            (x1 - x0, y1 - y0),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
        if self.cfg.blur_px:
            al = cv2.GaussianBlur(al, (self.cfg.blur_px, self.cfg.blur_px), 0)
        x = model.norm.brightness(al.astype(np.float32))
        t1 = time.perf_counter()

        r = model.norm.residual(x)
        # distance outside the template band [min, max] of the +-b neighbourhood (|r| when b = 0)
        d = cv2.max(cv2.subtract(r, model.band_up), cv2.subtract(model.band_ndn, r))
        bad = cv2.compare(d, model.thr, cv2.CMP_GT)
        bad = cv2.bitwise_and(bad, model.mask)
        bad = cv2.morphologyEx(bad, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
        bad = cv2.bitwise_and(bad, model.mask)
        q = cv2.multiply(cv2.max(d, 0.0), model.inv_thr)  # d / thr: 1 = at the threshold
        t2 = time.perf_counter()

        return self._blobs(model, bad, q, r, warp, (t1 - t0, t2 - t1, t2))

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
        p = save_template(model.tpl, Path(path), self.cfg.scale)
        log.info("reference template saved to %s (%s, %d parts)", p, self.model_id, model.tpl.n)
        return p

    @classmethod
    def load(cls, path: str | Path, cfg: ReferenceInspectorConfig | None = None) -> ReferenceInspector:
        """An inspector using the template saved at ``path`` (thresholds from ``cfg``)."""
        base = cfg or ReferenceInspectorConfig()
        insp = cls(base.model_copy(update={"template_path": None, "learn_from": None}))
        insp._set_template(load_template(Path(path), base))
        return insp

    # ------------------------------------------------------------------ internals

    def _set_template(self, tpl: Template) -> None:
        model = PreparedTemplate(tpl, self.cfg)
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
            raise InspectorError(
                f"learning frame is {W}x{H} but earlier ones were {self._frame_size[0]}x{self._frame_size[1]}"
            )
        work = self._work(gray)
        if self._norm is None:
            ref: np.ndarray = work.astype(np.float32)
            if self.cfg.blur_px:
                ref = cv2.GaussianBlur(ref, (self.cfg.blur_px, self.cfg.blur_px), 0)
            outline, _ = part_mask(ref, self.cfg.part)
            tiny = tiny_size((W, H), (work.shape[1], work.shape[0]), self.cfg)
            self._ref_aligner = Aligner(work, self.cfg.align, tiny, bbox(outline), self.cfg.align_patches)
            sx = work.shape[1] / W
            self._norm = Normaliser(ref, outline, LP_CLIP * self.cfg.min_abs_diff, lowpass_work_px(self.cfg, sx))
            self._sum = np.zeros(work.shape, np.float64)
            self._sumsq = np.zeros(work.shape, np.float64)
        assert self._ref_aligner is not None and self._sum is not None and self._sumsq is not None
        warp = self._ref_aligner.estimate(work)
        h, w = work.shape
        al = cv2.warpAffine(
            work, warp, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
        )
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
        tpl = Template(mean.astype(np.float32), np.sqrt(var).astype(np.float32), self._frame_size, n)
        model = PreparedTemplate(tpl, self.cfg)
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

    def _blobs(
        self,
        model: PreparedTemplate,
        bad: np.ndarray,
        q: np.ndarray,
        r: np.ndarray,
        warp: np.ndarray,
        times: tuple[float, float, float],
    ) -> Detections:
        cfg = self.cfg
        x0, y0 = model.roi[0], model.roi[1]
        # heat map in frame orientation (working scale) and the frame's score
        qm = cv2.bitwise_and(cv2.convertScaleAbs(q, alpha=128.0), model.mask)
        image_score = float(cv2.minMaxLoc(q, model.mask)[1])
        w_roi = warp.copy()
        w_roi[:, 2] += warp[:, 0] * x0 + warp[:, 1] * y0
        amap = cv2.warpAffine(qm, w_roi, model.work_size, flags=cv2.INTER_NEAREST)
        # labelling only the box around the abnormal pixels (grown by the merge distance): a whole ROI costs ~0.7 ms
        # even when empty
        rx, ry, rw, rh = cv2.boundingRect(bad)
        if rw and rh:
            m = model.merge
            hh, ww = bad.shape
            rx, ry = max(rx - m, 0), max(ry - m, 0)
            rw, rh = min(rw + 2 * m, ww - rx), min(rh + 2 * m, hh - ry)
            crop = bad[ry : ry + rh, rx : rx + rw]
            joined = cv2.dilate(crop, np.ones((2 * m + 1, 2 * m + 1), np.uint8)) if m else crop
            n, labels, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
        else:
            n, labels, stats, crop = 1, None, np.zeros((1, 5), np.int32), bad[:0, :0]
        px_full = 1.0 / (model.sx * model.sy)
        min_area = cfg.min_blob_px / px_full
        q, r = q[ry : ry + rh, rx : rx + rw], r[ry : ry + rh, rx : rx + rw]
        feat = model.feature_sign[ry : ry + rh, rx : rx + rw]
        cand = []
        for i in range(1, n):
            bx, by, bw, bh, _a = (int(v) for v in stats[i])
            sl = (slice(by, by + bh), slice(bx, bx + bw))
            blob = (labels[sl] == i) & (crop[sl] > 0)  # type: ignore[index]
            area = int(np.count_nonzero(blob))
            if area >= min_area:
                mass = float(np.sum(np.maximum(q[sl][blob] - 1.0, 0.0))) * px_full
                cand.append((mass, area, sl, blob))
        if len(cand) > cfg.max_blobs:
            cand = sorted(cand, key=lambda c: -c[0])[: cfg.max_blobs]
        ox, oy = x0 + rx, y0 + ry
        mg = cfg.box_margin_px
        boxes, scores, classes, areas = [], [], [], []
        for mass, area, sl, blob in cand:
            scores.append(mass / (mass + cfg.score_scale))
            classes.append(_classify(blob, r[sl][blob], feat[sl][blob], model.sx))
            areas.append(area * px_full)
            bx, by, bw, bh = cv2.boundingRect(blob.view(np.uint8))
            bx, by = bx + sl[1].start, by + sl[0].start
            # box corners (template working pixel edges) -> frame working centres -> full-res edges
            ex = np.array([bx + ox, bx + ox + bw], np.float64) - 0.5
            ey = np.array([by + oy, by + oy + bh], np.float64) - 0.5
            cx, cy = np.meshgrid(ex, ey)
            qx = warp[0, 0] * cx + warp[0, 1] * cy + warp[0, 2] + 0.5
            qy = warp[1, 0] * cx + warp[1, 1] * cy + warp[1, 2] + 0.5
            fx0, fy0, fx1, fy1 = qx.min() / model.sx, qy.min() / model.sy, qx.max() / model.sx, qy.max() / model.sy
            m = mg + cfg.box_margin_frac * max(fx1 - fx0, fy1 - fy0)
            boxes.append((fx0 - m, fy0 - m, fx1 + m, fy1 + m))
        t3 = time.perf_counter()
        pre, infer, t2 = times
        timings = {"preprocess": pre * 1e3, "infer": infer * 1e3, "postprocess": (t3 - t2) * 1e3}
        W, H = model.tpl.frame_size
        order = np.argsort(-np.asarray(scores), kind="stable")
        b = np.asarray(boxes, np.float32).reshape(-1, 4)[order]
        b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, W)
        b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, H)
        return Detections(
            boxes_xyxy=b,
            scores=np.asarray(scores, np.float32).reshape(-1)[order],
            class_ids=np.asarray(classes, np.int32).reshape(-1)[order],
            names=NAMES,
            model_id=model.model_id,
            areas_px=np.asarray(areas, np.float32).reshape(-1)[order],
            timings_ms=timings,
            anomaly_map=amap,
            image_score=image_score,
            align_shift_px=_centre_shift(model, warp),
        )


def _centre_shift(model: PreparedTemplate, warp: np.ndarray) -> tuple[float, float]:
    """Where the template's centre lies in the frame, relative to the template, in frame pixels (for image health)."""
    w, h = model.work_size
    cx, cy = w / 2, h / 2
    qx = warp[0, 0] * cx + warp[0, 1] * cy + warp[0, 2]
    qy = warp[1, 0] * cx + warp[1, 1] * cy + warp[1, 2]
    return float((qx - cx) / model.sx), float((qy - cy) / model.sy)


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
