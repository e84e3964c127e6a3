"""The reference inspector's template: what is learned from good parts, saved and loaded, and prepared for inspection.

:class:`Template` is what learning produces and :func:`save_template` writes (``np.savez``, atomically);
:func:`load_template` reads it back, refusing a file of another format or scale with the fix in the message.
:class:`PreparedTemplate` is a template made ready for fast inspection under one
:class:`~station.config.inspection.ReferenceInspectorConfig`: the part mask (eroded, limited to ``roi``,
without ``ignore_mask``), the brightness normaliser, the aligner, the per-pixel thresholds and the template
band. :mod:`station.inspection.reference` (the inspector) learns, inspects and finds the blobs.
"""

from __future__ import annotations

import hashlib
import logging
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..config.inspection import ReferenceInspectorConfig
from .base import ModelLoadError
from .reference_util import BLOCK_PX, Aligner, Normaliser, bbox, fit_span, part_mask

log = logging.getLogger(__name__)

FORMAT = 1  # version of the saved template file
FEATURE_CONTRAST = 30.0  # grey levels from the surface level that make a template pixel a "feature"
ALIGN_MIN_PX = 160  # the alignment level is at least this wide
LP_CLIP = 2.0  # the low-pass of the residual sees each pixel clipped at this x min_abs_diff


@dataclass(frozen=True)
class Template:
    """What is learned (and saved): per-pixel mean and std at working scale."""

    mean: np.ndarray  # (h, w) float32
    std: np.ndarray  # (h, w) float32
    frame_size: tuple[int, int]  # (W, H) of the frames learned from
    n: int  # frames learned from


class PreparedTemplate:
    """A template prepared for fast inspection with the current config."""

    def __init__(self, tpl: Template, cfg: ReferenceInspectorConfig):
        self.tpl = tpl
        h, w = tpl.mean.shape
        W, H = tpl.frame_size
        self.work_size = (w, h)
        self.sx, self.sy = w / W, h / H
        mean = tpl.mean

        outline, found = part_mask(mean, cfg.part)
        mask = outline
        er = int(round(cfg.border_px * self.sx)) if found else 0
        if er > 0:
            mask = cv2.erode(outline, np.ones((2 * er + 1, 2 * er + 1), np.uint8))
            if not mask.any():
                log.warning(
                    "reference template: border_px %d leaves nothing of the part; using its un-eroded outline",
                    cfg.border_px,
                )
                mask = outline
        mask = restrict(mask, cfg, (W, H))
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            raise ModelLoadError(
                "reference template: nothing left to compare (roi and ignore_mask cover the whole part)"
            )
        lp = lowpass_work_px(cfg, self.sx)
        block = math.lcm(BLOCK_PX, lp) if lp > 0 and math.lcm(BLOCK_PX, lp) <= 128 else BLOCK_PX
        x0, x1 = fit_span(int(xs.min()), int(xs.max()) + 1, w, block)
        y0, y1 = fit_span(int(ys.min()), int(ys.max()) + 1, h, block)
        self.roi = (x0, y0, x1, y1)
        sl = (slice(y0, y1), slice(x0, x1))
        self.mask = np.ascontiguousarray(mask[sl])
        self.mean = np.ascontiguousarray(mean[sl])
        self.norm = Normaliser(self.mean, self.mask, LP_CLIP * cfg.min_abs_diff, lp)
        tiny = tiny_size(tpl.frame_size, self.work_size, cfg)
        self.aligner = Aligner(
            np.clip(mean, 0, 255).astype(np.uint8), cfg.align, tiny, bbox(outline), cfg.align_patches
        )

        # few learning parts give noisy per-pixel stds: never trust a pixel to be steadier than its 3x3 neighbours
        spread = np.maximum(cv2.dilate(tpl.std, np.ones((3, 3), np.uint8)), cfg.std_floor)
        thr = np.maximum(cfg.sigma_k * spread, cfg.min_abs_diff)
        self.thr = np.ascontiguousarray(thr[sl].astype(np.float32))
        self.inv_thr = np.ascontiguousarray((1.0 / np.maximum(thr[sl], 1e-3)).astype(np.float32))
        # the template band: a pixel may take any value of the template within +- b working pixels (residual
        # misalignment)
        b = max(1, int(round(cfg.edge_tolerance_px * self.sx))) if cfg.edge_tolerance_px > 0 else 0
        k = np.ones((2 * b + 1, 2 * b + 1), np.uint8)
        self.band_up = np.ascontiguousarray((cv2.dilate(mean, k) - mean)[sl]) if b else np.zeros_like(self.mean)
        self.band_ndn = np.ascontiguousarray((cv2.erode(mean, k) - mean)[sl]) if b else np.zeros_like(self.mean)
        self.merge = int(math.ceil(cfg.merge_px * self.sx / 2))

        inside = mask > 0
        self.surface = float(np.median(mean[inside]))  # the dominant surface: most of the part's pixels
        dev = self.mean - self.surface
        self.feature_sign = np.where(np.abs(dev) > FEATURE_CONTRAST, np.sign(dev), 0).astype(np.int8)

        digest = hashlib.sha256(tpl.mean.tobytes() + tpl.std.tobytes() + repr(tpl.frame_size).encode()).hexdigest()[:12]
        self.model_id = f"reference:{digest}"


def tiny_size(
    frame_size: tuple[int, int], work_size: tuple[int, int], cfg: ReferenceInspectorConfig
) -> tuple[int, int]:
    """Size of the alignment level: ``align_scale`` of the frame, but at least ALIGN_MIN_PX wide
    (smaller levels lose the detail that pins the pose down), and never above the working size."""
    W, H = frame_size
    f = max(cfg.align_scale, min(ALIGN_MIN_PX / W, 1.0))
    return (min(max(int(round(W * f)), 16), work_size[0]), min(max(int(round(H * f)), 16), work_size[1]))


def lowpass_work_px(cfg: ReferenceInspectorConfig, sx: float) -> int:
    return int(round(cfg.lowpass_px * sx)) if cfg.lowpass_px > 0 else 0


def restrict(mask: np.ndarray, cfg: ReferenceInspectorConfig, frame_size: tuple[int, int]) -> np.ndarray:
    """``mask`` (working scale) limited to ``cfg.roi`` and without ``cfg.ignore_mask``."""
    h, w = mask.shape
    W, H = frame_size
    if cfg.roi is not None:
        x0, y0, x1, y1 = cfg.roi
        keep = np.zeros_like(mask)
        keep[int(y0 * h / H) : int(math.ceil(y1 * h / H)), int(x0 * w / W) : int(math.ceil(x1 * w / W))] = 255
        mask = cv2.bitwise_and(mask, keep)
    if cfg.ignore_mask is not None:
        ign = cv2.imread(str(cfg.ignore_mask), cv2.IMREAD_GRAYSCALE)
        if ign is None:
            raise ModelLoadError(f"reference inspector ignore_mask: cannot read {cfg.ignore_mask}")
        if abs(ign.shape[1] / ign.shape[0] - W / H) > 0.01:
            raise ModelLoadError(
                f"reference inspector ignore_mask {cfg.ignore_mask}: {ign.shape[1]}x{ign.shape[0]} is not the frame's "
                f"aspect ({W}x{H})"
            )
        ignored = cv2.resize(ign, (w, h), interpolation=cv2.INTER_AREA) > 0
        mask = np.where(ignored, 0, mask).astype(np.uint8)
    return mask


def save_template(tpl: Template, path: Path, scale: float) -> Path:
    """Write ``tpl`` (learned at working ``scale``) to ``path`` atomically: a crash never leaves half a template."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(
        tmp,
        format=np.int32(FORMAT),
        mean=tpl.mean,
        std=tpl.std,
        frame_size=np.array(tpl.frame_size, np.int32),
        n=np.int32(tpl.n),
        scale=np.float64(scale),
    )
    tmp.replace(path)
    return path


def load_template(path: Path, cfg: ReferenceInspectorConfig) -> Template:
    """Read a template saved by :meth:`ReferenceInspector.save`; ModelLoadError naming the file and the fix."""
    try:
        with np.load(path, allow_pickle=False) as z:
            fmt = int(z["format"])
            if fmt != FORMAT:
                raise ModelLoadError(
                    f"{path}: template format {fmt}, this station reads format {FORMAT} (relearn: delete the file)"
                )
            scale = float(z["scale"])
            if abs(scale - cfg.scale) > 1e-9:
                raise ModelLoadError(
                    f"{path}: template learned at scale {scale}, config says scale {cfg.scale} "
                    f"(set scale: {scale} or delete the file to relearn)"
                )
            fs = tuple(int(v) for v in z["frame_size"])
            tpl = Template(z["mean"].astype(np.float32), z["std"].astype(np.float32), (fs[0], fs[1]), int(z["n"]))
    except ModelLoadError:
        raise
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ModelLoadError(f"{path}: not a reference template file ({exc}); delete it to relearn") from None
    if tpl.mean.shape != tpl.std.shape or tpl.mean.ndim != 2:
        raise ModelLoadError(
            f"{path}: corrupt template (mean {tpl.mean.shape}, std {tpl.std.shape}); delete it to relearn"
        )
    return tpl
