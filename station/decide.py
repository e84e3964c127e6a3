"""The one place a verdict is made.

:class:`Decider` turns the detections of every frame of a part into one
:class:`~station.types.Verdict` by the configured rules: per-class
confidence thresholds with an uncertain band, minimum defect area in mm²
(from calibration), ignore zones and a tolerated count. A classify model's
detections are one full-frame entry per class (its probability): a defect
class rejects at ``reject_conf``, is UNCERTAIN from ``uncertain_conf``, and the
``good_classes`` are recorded but never reject. It also makes the
FAILSAFE verdicts (dropped frame, grab failure, inspector error, deadline
missed), so every outcome comes from here.
"""

from __future__ import annotations

import logging
import time
from typing import Mapping, Sequence

from .config import CalibrationConfig, IgnoreZone, RulesConfig
from .types import Defect, Detections, Frame, Outcome, Trigger, Verdict

log = logging.getLogger(__name__)

GOOD_CLASS = "good class"  # the rule text of a classify model's good-class probability (recorded, never rejects)


def check_rules_for_model(rules: RulesConfig, task: str | None, names: Sequence[str]) -> None:
    """Refuse rules that cannot judge a model's output: ValueError naming the field and the fix.

    A classify model gives one probability per class; the rules must say which classes are good
    (``rules.good_classes``), else a confident good part would be judged as a defect of its class.
    """
    if task != "classify":
        return
    if not rules.good_classes:
        raise ValueError(
            f"rules.good_classes: a classify model (classes {list(names)}) needs its good classes named, "
            "e.g. good_classes: [functional]; the other classes reject at their rules.classes.<name>.reject_conf"
        )
    unknown = [c for c in rules.good_classes if c not in names]
    if unknown:
        raise ValueError(f"rules.good_classes: {unknown} not among the model's classes {list(names)}; fix the spelling")


def _overlap_fraction(box: Sequence[float], zone: IgnoreZone) -> float:
    """Fraction of ``box``'s area that lies inside ``zone``."""
    x1, y1, x2, y2 = box
    area = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    if area <= 0:
        inside = zone.x1 <= x1 <= zone.x2 and zone.y1 <= y1 <= zone.y2
        return 1.0 if inside else 0.0
    ix = max(0.0, min(x2, zone.x2) - max(x1, zone.x1))
    iy = max(0.0, min(y2, zone.y2) - max(y1, zone.y1))
    return ix * iy / area


class Decider:
    """Applies :class:`~station.config.RulesConfig` to detections."""

    def __init__(self, rules: RulesConfig, calibration: CalibrationConfig, config_hash: str):
        self.rules = rules
        self.calibration = calibration
        self.config_hash = config_hash
        self._mm2_per_px = calibration.mm_per_px**2

    def judge(self, det: Detections, i: int, camera_id: str) -> Defect | None:
        """Judge detection ``i``; None when it is too weak to be worth recording."""
        name = det.names[int(det.class_ids[i])] if int(det.class_ids[i]) < len(det.names) else str(int(det.class_ids[i]))
        conf = float(det.scores[i])
        rule = self.rules.for_class(name)
        box = tuple(float(v) for v in det.boxes_xyxy[i])
        area_mm2 = det.area_px(i) * self._mm2_per_px

        def defect(action: str, why: str) -> Defect:
            return Defect(name, conf, box, area_mm2, camera_id, action, why)  # type: ignore[arg-type]

        if conf < rule.uncertain_conf:
            return None
        if name in self.rules.good_classes:  # classify: a good class is recorded and shown, never a defect
            return defect("ignore", GOOD_CLASS)
        if not rule.enabled:
            return defect("ignore", "class disabled")
        for zone in self.rules.ignore_zones:
            if (zone.camera_id in (None, camera_id)) and _overlap_fraction(box, zone) >= zone.min_overlap:
                return defect("ignore", "ignore zone")
        if area_mm2 < rule.min_area_mm2:
            return defect("ignore", f"area {area_mm2:.3g} mm2 < {rule.min_area_mm2:g}")
        if conf >= rule.reject_conf:
            return defect("reject", f"conf {conf:.2f} >= {rule.reject_conf:g}")
        return defect("uncertain", f"conf {conf:.2f} in [{rule.uncertain_conf:g}, {rule.reject_conf:g})")

    def decide(
        self,
        trigger: Trigger,
        frames: Sequence[Frame],
        detections: Sequence[Detections],
        timings_ms: Mapping[str, float],
    ) -> Verdict:
        """The verdict of a part from the detections of each of its frames."""
        defects: list[Defect] = []
        for frame, det in zip(frames, detections, strict=True):
            for i in range(len(det)):
                d = self.judge(det, i, frame.camera_id)
                if d is not None:
                    defects.append(d)
        defects = self._apply_max_count(defects)
        rejecting = [d for d in defects if d.action == "reject"]
        uncertain = [d for d in defects if d.action == "uncertain"]
        if rejecting:
            outcome = Outcome.FAIL
            reasons = tuple(sorted({f"{d.class_name} ({d.rule})" for d in rejecting}))
        elif uncertain:
            outcome = Outcome.UNCERTAIN
            reasons = tuple(sorted({f"{d.class_name} ({d.rule})" for d in uncertain}))
        else:
            outcome = Outcome.PASS
            reasons = ()
        model_id = "+".join(sorted({det.model_id for det in detections})) or "none"
        return Verdict(
            part_id=trigger.part_id,
            outcome=outcome,
            reasons=reasons,
            defects=tuple(defects),
            model_id=model_id,
            config_hash=self.config_hash,
            calibration_id=self.calibration.id,
            timings_ms=dict(timings_ms),
            t_trigger_ns=trigger.t_trigger_ns,
            t_decided_ns=time.monotonic_ns(),
        )

    def _apply_max_count(self, defects: list[Defect]) -> list[Defect]:
        """Downgrade rejecting defects of a class while their count is tolerated."""
        counts: dict[str, int] = {}
        for d in defects:
            if d.action == "reject":
                counts[d.class_name] = counts.get(d.class_name, 0) + 1
        tolerated = {c for c, n in counts.items() if n <= self.rules.for_class(c).max_count}
        if not tolerated:
            return defects
        return [
            Defect(d.class_name, d.confidence, d.box_xyxy, d.area_mm2, d.camera_id, "ignore", f"count {counts[d.class_name]} tolerated")
            if d.action == "reject" and d.class_name in tolerated
            else d
            for d in defects
        ]

    def failsafe(self, trigger: Trigger, reason: str, model_id: str = "none", timings_ms: Mapping[str, float] | None = None) -> Verdict:
        """A FAILSAFE verdict: the part is rejected because it could not be judged."""
        return Verdict(
            part_id=trigger.part_id,
            outcome=Outcome.FAILSAFE,
            reasons=(reason,),
            defects=(),
            model_id=model_id,
            config_hash=self.config_hash,
            calibration_id=self.calibration.id,
            timings_ms=dict(timings_ms or {}),
            t_trigger_ns=trigger.t_trigger_ns,
            t_decided_ns=time.monotonic_ns(),
        )
