"""The one place a verdict is made.

:class:`Decider` turns the detections of every frame of a part into one
:class:`~station.contracts.Verdict` by the configured rules: per-class
confidence thresholds with an uncertain band, minimum defect area in mm²
(from calibration), ignore zones and a tolerated count, and each camera's setup
in force (:mod:`station.camera_setup`: its own mm per pixel, the drawn ROI,
ignore polygons and named regions with their own thresholds). A classify model's
detections are one full-frame entry per class (its probability): a defect
class rejects at ``reject_conf``, is UNCERTAIN from ``uncertain_conf``, and the
``good_classes`` are recorded but never reject. It also makes the
FAILSAFE verdicts (dropped frame, grab failure, inspector error, deadline
missed), so every outcome comes from here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace

from .camera_setup import CameraSetup, calibration_tag, regions_tag
from .config import CalibrationConfig, ClassRule, IgnoreZone, RulesConfig
from .config.regions import NamedRegion
from .contracts import Defect, Detections, Frame, Outcome, Trigger, Verdict

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


def _region_rule(rule: ClassRule, region: NamedRegion) -> ClassRule:
    """The class rule with the region's own thresholds and minimum size laid over it."""
    upd = {k: v for k in ("reject_conf", "uncertain_conf", "min_area_mm2") if (v := getattr(region, k)) is not None}
    if "reject_conf" in upd and "uncertain_conf" not in upd:
        upd["uncertain_conf"] = min(rule.uncertain_conf, upd["reject_conf"])
    if "uncertain_conf" in upd and "reject_conf" not in upd:
        upd["reject_conf"] = max(rule.reject_conf, upd["uncertain_conf"])
    return rule.model_copy(update=upd) if upd else rule


class Decider:
    """Applies :class:`~station.config.RulesConfig` to detections."""

    def __init__(
        self,
        rules: RulesConfig,
        calibration: CalibrationConfig,
        config_hash: str,
        setup: Mapping[str, CameraSetup] | None = None,
    ):
        """``setup``: per-camera calibration and regions in force; verdicts then carry their versions."""
        self.rules = rules
        self.calibration = calibration
        self.setup: Mapping[str, CameraSetup] = dict(setup or {})
        self.base_config_hash = config_hash
        self.config_hash = config_hash + regions_tag(self.setup)
        self.calibration_id = calibration_tag(calibration.id, self.setup)
        self._mm2_per_px = calibration.mm_per_px**2
        self._mm2 = {c: s.mm_per_px**2 for c, s in self.setup.items() if s.mm_per_px is not None}

    def judge(self, det: Detections, i: int, camera_id: str) -> Defect | None:
        """Judge detection ``i``; None when it is too weak to be worth recording."""
        name = (
            det.names[int(det.class_ids[i])] if int(det.class_ids[i]) < len(det.names) else str(int(det.class_ids[i]))
        )
        conf = float(det.scores[i])
        rule = self.rules.for_class(name)
        box = tuple(float(v) for v in det.boxes_xyxy[i])
        area_mm2 = det.area_px(i) * self._mm2.get(camera_id, self._mm2_per_px)
        # a row the template check added after the model says so in its rule (operator screen, records, review)
        where = "template check: " if det.check_from is not None and i >= det.check_from else ""
        cam = self.setup.get(camera_id)
        if cam is not None and cam.regions is not None:
            ignored, region = cam.regions.place((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
            if region is not None:
                rule = _region_rule(rule, region)
                where += f"region {region.name}: "
        else:
            ignored = None

        def defect(action: str, why: str) -> Defect:
            return Defect(name, conf, box, area_mm2, camera_id, action, where + why)  # type: ignore[arg-type]

        if conf < rule.uncertain_conf:
            return None
        if name in self.rules.good_classes:  # classify: a good class is recorded and shown, never a defect
            return defect("ignore", GOOD_CLASS)
        if not rule.enabled:
            return defect("ignore", "class disabled")
        if ignored is not None:
            return defect("ignore", ignored)
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
            calibration_id=self.calibration_id,
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
            Defect(
                d.class_name,
                d.confidence,
                d.box_xyxy,
                d.area_mm2,
                d.camera_id,
                "ignore",
                f"count {counts[d.class_name]} tolerated",
            )
            if d.action == "reject" and d.class_name in tolerated
            else d
            for d in defects
        ]

    def uncertain(self, verdict: Verdict, reason: str) -> Verdict:
        """``verdict`` made UNCERTAIN for ``reason`` (image health: a drifting picture is no basis for a PASS)."""
        return replace(verdict, outcome=Outcome.UNCERTAIN, reasons=(*verdict.reasons, reason))

    def failsafe(
        self, trigger: Trigger, reason: str, model_id: str = "none", timings_ms: Mapping[str, float] | None = None
    ) -> Verdict:
        """A FAILSAFE verdict: the part is rejected because it could not be judged."""
        return Verdict(
            part_id=trigger.part_id,
            outcome=Outcome.FAILSAFE,
            reasons=(reason,),
            defects=(),
            model_id=model_id,
            config_hash=self.config_hash,
            calibration_id=self.calibration_id,
            timings_ms=dict(timings_ms or {}),
            t_trigger_ns=trigger.t_trigger_ns,
            t_decided_ns=time.monotonic_ns(),
        )
