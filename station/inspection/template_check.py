"""A second look after the model: the golden template's differences, each judged by a verifier.

A supervised detector misses what it was seldom shown (a faint spot against a bright pad scores 0.01-0.06 with the
shipped pcb model); a golden template (:mod:`.reference`, learned from good parts) finds every difference from a
good part, the harmless ones included (an ink mark, a label). The check runs the template on the frame after the
model, crops the frame around each difference (:func:`blob_crop`) and asks a small classify model, the verifier
(trained on such crops labelled defect / harmless: :mod:`models.template_check`), whether it is harmless. The
differences it does not call harmless are added to the model's detections under the template's class names,
scored by the template (``reference.score_scale``), so the line's rules judge them as they judge the model's boxes
(per-class bands, ignore zones, minimum sizes). A difference whose centre lies in a box the model gave the same
class and at least the same score is already reported, and is not added twice (the rules would judge the two
alike, by the higher score); any other difference is added, even over a box of the model's: that box may score
under its class's band where the difference does not, and leaving it out would let the part through on the weaker
of two opinions. The added rows start at ``Detections.check_from``.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import cv2
import numpy as np

from ..config.inspection import OnnxInspectorConfig, TemplateCheckConfig, TilingConfig
from ..contracts import Detections, Frame
from .base import ModelLoadError
from .reference import NAMES as TEMPLATE_NAMES
from .reference import ReferenceInspector

log = logging.getLogger(__name__)


def blob_crop(image: np.ndarray, box: np.ndarray, out_px: int, context: float, min_px: int) -> np.ndarray:
    """A square ``out_px`` crop of ``image`` centred on ``box`` (x0, y0, x1, y1, frame pixels), ``context`` times the
    box's larger side wide and at least ``min_px`` (edges replicated): what the verifier is trained on and judges."""
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    side = max(float(min_px), context * max(x1 - x0, y1 - y0))
    k = out_px / side
    m = np.array([[k, 0, out_px / 2 - (x0 + x1) / 2 * k], [0, k, out_px / 2 - (y0 + y1) / 2 * k]], np.float32)
    interp = cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
    out: np.ndarray = cv2.warpAffine(image, m, (out_px, out_px), flags=interp, borderMode=cv2.BORDER_REPLICATE)
    return out


def _reported(det: Detections, box: np.ndarray, cls: int, score: float) -> bool:
    """True when a box of ``det`` of class ``cls`` with at least ``score`` contains the centre of ``box``."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    b = det.boxes_xyxy
    inside = (b[:, 0] <= cx) & (cx <= b[:, 2]) & (b[:, 1] <= cy) & (cy <= b[:, 3])
    return bool(np.any(inside & (det.class_ids == cls) & (det.scores >= score)))


class TemplateCheck:
    """The template (and verifier) of one model; built with it, so a hot swap rebuilds both (see module docstring)."""

    def __init__(self, cfg: TemplateCheckConfig, model_names: tuple[str, ...], line: OnnxInspectorConfig):
        self.cfg = cfg
        missing = [n for n in TEMPLATE_NAMES if n not in model_names]
        if missing:
            raise ModelLoadError(
                f"inspector.template_check: the template reports {list(TEMPLATE_NAMES)} but the model's classes are "
                f"{list(model_names)} (no {missing}): use it with a model that has those classes"
            )
        self._to_model = np.array([model_names.index(n) for n in TEMPLATE_NAMES], np.int32)
        self.reference = ReferenceInspector(cfg.reference)
        if not self.reference.ready:
            raise ModelLoadError(
                "inspector.template_check.reference: the template is not learned: set template_path to a template "
                "file (`models build-default --check-only` writes one) or learn_from to a folder of good images"
            )
        self.verifier = None
        self._harmless = np.zeros(0, np.int64)
        if cfg.verifier is not None:
            from .onnx_backend import OnnxInspector

            # the line's runtime settings (providers, runtime, precision, threads), for the verifier's own file
            own = {"model": cfg.verifier, "follow_registry": False, "keepalive_s": 0.0, "template_check": None}
            self.verifier = OnnxInspector(line.model_copy(update={**own, "tiling": TilingConfig()}))
            names = self.verifier.names
            unknown = [c for c in cfg.harmless_classes if c not in names]
            if self.verifier.task != "classify" or unknown:
                self.verifier.close()
                raise ModelLoadError(
                    f"inspector.template_check.verifier: {cfg.verifier} must be a classify model with the classes "
                    f"{cfg.harmless_classes} (it is a {self.verifier.task} model with {list(names)}): train one with "
                    "`models build-default --check-only` (models/template_check.py) or fix harmless_classes"
                )
            self._harmless = np.array([names.index(c) for c in cfg.harmless_classes])
            self._crop_px = int(self.verifier.input_hw[0])
        self.model_id = self.reference.model_id + (f"+{self.verifier.model_id}" if self.verifier else "")
        log.info("template check %s after the model", self.model_id)

    def harmless(self, image: np.ndarray, box: np.ndarray) -> float:
        """The verifier's probability that the difference in ``box`` is harmless (0 without a verifier)."""
        if self.verifier is None:
            return 0.0
        crop = blob_crop(image, box, self._crop_px, self.cfg.crop_context, self.cfg.crop_min_px)
        det = self.verifier.inspect(Frame(part_id=-1, camera_id="template-check", image=crop, t_exposure_ns=0))
        return float(det.scores[np.isin(det.class_ids, self._harmless)].sum())

    def apply(self, frame: Frame, det: Detections) -> Detections:
        """``det`` plus the template's differences that the verifier does not call harmless."""
        t0 = time.perf_counter()
        ref = self.reference.inspect(frame)
        cls = self._to_model[ref.class_ids]
        keep = [
            i
            for i, box in enumerate(ref.boxes_xyxy)
            if not _reported(det, box, int(cls[i]), float(ref.scores[i]))
            and self.harmless(frame.image, box) < self.cfg.harmless_conf
        ]
        timings = {**det.timings_ms, "template_check": (time.perf_counter() - t0) * 1e3}
        if not keep:
            return dataclasses.replace(det, timings_ms=timings, align_shift_px=ref.align_shift_px)
        k = np.asarray(keep)
        return dataclasses.replace(
            det,
            boxes_xyxy=np.concatenate([det.boxes_xyxy, ref.boxes_xyxy[k]]).astype(np.float32),
            scores=np.concatenate([det.scores, ref.scores[k]]).astype(np.float32),
            class_ids=np.concatenate([det.class_ids, cls[k]]).astype(np.int32),
            areas_px=np.concatenate([det.areas(), ref.areas()[k]]),
            timings_ms=timings,
            align_shift_px=ref.align_shift_px,
            check_from=len(det),
        )

    def warmup(self) -> None:
        """The template once on itself; the verifier warmed up when it loaded."""
        self.reference.warmup()

    def close(self) -> None:
        """Release the verifier's session."""
        if self.verifier is not None:
            self.verifier.close()
