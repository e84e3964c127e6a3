"""Contracts between the stages of the station: small frozen dataclasses.

Every object that crosses a stage boundary (trigger -> acquire -> inspect ->
decide -> actuate -> record/publish) is one of these. They carry no behaviour
beyond trivial derived properties, so any stage can be tested alone.

Times are ``time.monotonic_ns()`` on the station host unless the name says
otherwise (``*_wall`` is UNIX time in seconds).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import numpy as np

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class Outcome(StrEnum):
    """The four verdicts a part can get."""

    PASS = "PASS"
    FAIL = "FAIL"
    UNCERTAIN = "UNCERTAIN"
    FAILSAFE = "FAILSAFE"


@dataclass(frozen=True, slots=True)
class Trigger:
    """One part entering the inspection point.

    ``part_id`` is unique and monotonic for the life of the database; it
    follows the part to the ejector and into the records.
    """

    part_id: int
    seq: int
    t_trigger_ns: int
    encoder_count: int | None = None
    source: str = "timer"
    t_trigger_wall: float = 0.0


@dataclass(frozen=True, slots=True)
class Frame:
    """One image of one part from one camera.

    ``meta`` carries driver facts (exposure, gain, file name) and, for the
    synthetic camera, the ground truth under the key ``"truth"``.
    """

    part_id: int
    camera_id: str
    image: np.ndarray
    t_exposure_ns: int
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Detections:
    """What a model found on one frame, in pixel coordinates of that frame.

    ``boxes_xyxy`` is (N, 4) float32, ``scores`` (N,) float32, ``class_ids``
    (N,) int32. ``masks`` is an optional (N, H, W) bool array at frame size.
    ``areas_px`` is the defect area in pixels when the backend knows it better
    than the box (blobs, masks); otherwise the box area is used.

    No-labels backends also report ``anomaly_map``: a (h, w) uint8 heat map over the whole
    frame (any resolution with the frame's aspect ratio; 0 = normal, 128 = the decision
    threshold, 255 = twice the threshold or more), and ``image_score``: one number per frame,
    higher = more anomalous, on the same scale (1.0 = at the threshold).

    ``align_shift_px``: (dx, dy) of the part against the backend's reference, in frame pixels,
    when the backend aligns frames itself (reference backend); read by the image health monitor.

    ``check_from``: the rows from this index on were added by the template check after the model
    (station/inspection/template_check.py); None = every row is the model's. The rules judge all rows;
    box-level figures (precision, mAP) judge the model's own, :meth:`model_rows`.
    """

    boxes_xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    names: tuple[str, ...]
    model_id: str
    masks: np.ndarray | None = None
    areas_px: np.ndarray | None = None
    timings_ms: Mapping[str, float] = field(default_factory=dict)
    anomaly_map: np.ndarray | None = None
    image_score: float | None = None
    align_shift_px: tuple[float, float] | None = None
    check_from: int | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @staticmethod
    def empty(names: tuple[str, ...], model_id: str, timings_ms: Mapping[str, float] = _EMPTY) -> Detections:
        """No detections."""
        return Detections(
            boxes_xyxy=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            class_ids=np.zeros((0,), np.int32),
            names=names,
            model_id=model_id,
            timings_ms=timings_ms,
        )

    def model_rows(self) -> Detections:
        """The model's own detections, without the rows the template check added (``check_from``)."""
        n = self.check_from
        if n is None:
            return self
        return replace(
            self,
            boxes_xyxy=self.boxes_xyxy[:n],
            scores=self.scores[:n],
            class_ids=self.class_ids[:n],
            areas_px=None if self.areas_px is None else self.areas_px[:n],
            masks=None if self.masks is None else self.masks[:n],
            check_from=None,
        )

    def area_px(self, i: int) -> float:
        """Area of detection ``i`` in pixels (blob/mask area if known, else box)."""
        if self.areas_px is not None:
            return float(self.areas_px[i])
        return float(_box_areas(self.boxes_xyxy[i]))

    def areas(self) -> np.ndarray:
        """:meth:`area_px` of every detection, (N,) float32."""
        a = self.areas_px if self.areas_px is not None else _box_areas(self.boxes_xyxy)
        return np.asarray(a, np.float32)


def _box_areas(boxes_xyxy: np.ndarray) -> np.ndarray:
    """Areas of (..., 4) x1, y1, x2, y2 boxes; an inverted side counts 0."""
    b = boxes_xyxy
    areas: np.ndarray = np.maximum(b[..., 2] - b[..., 0], 0) * np.maximum(b[..., 3] - b[..., 1], 0)
    return areas


@dataclass(frozen=True, slots=True)
class Defect:
    """One detection after the rules judged it.

    ``action`` is ``"reject"``, ``"uncertain"`` or ``"ignore"``; ``rule`` says
    which rule decided (for the operator and the audit).
    """

    class_name: str
    confidence: float
    box_xyxy: tuple[float, float, float, float]
    area_mm2: float
    camera_id: str
    action: str
    rule: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """The one decision about one part; made only by ``station.decide``."""

    part_id: int
    outcome: Outcome
    reasons: tuple[str, ...]
    defects: tuple[Defect, ...]
    model_id: str
    config_hash: str
    calibration_id: str
    timings_ms: Mapping[str, float]
    t_trigger_ns: int = 0
    t_decided_ns: int = 0

    @property
    def rejects(self) -> bool:
        """True when the part must leave the line (FAIL or FAILSAFE)."""
        return self.outcome in (Outcome.FAIL, Outcome.FAILSAFE)


@dataclass(frozen=True, slots=True)
class RejectCommand:
    """Fire the ejector for one part, at a time or at an encoder count."""

    part_id: int
    pulse_ms: float
    line: str
    fire_at_ns: int | None = None
    fire_at_count: int | None = None


@dataclass(frozen=True, slots=True)
class StatusEvent:
    """A component changed state (camera lost, PLC back, writer stalled...)."""

    component: str
    state: str  # "ok" | "info" | "warning" | "alarm" (only warning and alarm need acknowledging)
    message: str
    t_wall: float = 0.0


@dataclass(frozen=True, slots=True)
class PartResult:
    """Everything known about one part once its verdict is final.

    This is what the bus carries to the recorder, the live screen and the
    publishers. ``frames`` and ``detections`` may be empty for a part that
    never got an image (FAILSAFE on a dropped frame).
    """

    trigger: Trigger
    verdict: Verdict
    frames: tuple[Frame, ...] = ()
    detections: tuple[Detections, ...] = ()
    reject_fire_at_ns: int | None = None
