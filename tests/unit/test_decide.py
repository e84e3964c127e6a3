"""The rules that turn detections into one verdict."""

from __future__ import annotations

import numpy as np
import pytest

from station.config import CalibrationConfig, ClassRule, ConfigError, IgnoreZone, RulesConfig, parse_config
from station.contracts import Detections, Frame, Outcome, Trigger
from station.decide import Decider

NAMES = ("scratch", "spot", "missing")


def dets(*rows: tuple[str, float, tuple[float, float, float, float]]) -> Detections:
    return Detections(
        boxes_xyxy=np.array([r[2] for r in rows], np.float32).reshape(-1, 4),
        scores=np.array([r[1] for r in rows], np.float32),
        class_ids=np.array([NAMES.index(r[0]) for r in rows], np.int32),
        names=NAMES,
        model_id="m1",
    )


def frame(camera_id: str = "cam0") -> Frame:
    return Frame(1, camera_id, np.zeros((100, 100), np.uint8), 0)


def decide(rules: RulesConfig, *rows, mm_per_px: float = 0.1, camera_id: str = "cam0"):
    d = Decider(rules, CalibrationConfig(mm_per_px=mm_per_px), "cfg")
    return d.decide(Trigger(1, 1, 0), [frame(camera_id)], [dets(*rows)], {})


BOX = (10.0, 10.0, 30.0, 30.0)  # 400 px = 4 mm² at 0.1 mm/px


def test_no_detections_pass():
    v = decide(RulesConfig())
    assert v.outcome is Outcome.PASS and v.defects == () and v.model_id == "m1"


@pytest.mark.parametrize(
    "conf,outcome",
    [
        (0.29, Outcome.PASS),
        (0.3, Outcome.UNCERTAIN),
        (0.49, Outcome.UNCERTAIN),
        (0.5, Outcome.FAIL),
        (0.99, Outcome.FAIL),
    ],
)
def test_threshold_band(conf, outcome):
    assert decide(RulesConfig(), ("spot", conf, BOX)).outcome is outcome


def test_fail_beats_uncertain_and_reasons_name_the_class():
    v = decide(RulesConfig(), ("spot", 0.4, BOX), ("scratch", 0.9, BOX))
    assert v.outcome is Outcome.FAIL
    assert v.reasons == ("scratch (conf 0.90 >= 0.5)",)
    assert [d.action for d in v.defects] == ["uncertain", "reject"]


def test_per_class_rule_overrides_default():
    rules = RulesConfig(classes={"spot": ClassRule(reject_conf=0.95, uncertain_conf=0.9)})
    assert decide(rules, ("spot", 0.8, BOX)).outcome is Outcome.PASS
    assert decide(rules, ("scratch", 0.8, BOX)).outcome is Outcome.FAIL


def test_min_area_in_mm2_uses_calibration():
    rules = RulesConfig(default=ClassRule(min_area_mm2=5.0))
    v = decide(rules, ("spot", 0.9, BOX), mm_per_px=0.1)  # 4 mm²
    assert v.outcome is Outcome.PASS and v.defects[0].action == "ignore"
    assert v.defects[0].area_mm2 == pytest.approx(4.0)
    assert decide(rules, ("spot", 0.9, BOX), mm_per_px=0.2).outcome is Outcome.FAIL  # 16 mm²


def test_ignore_zone_by_camera():
    rules = RulesConfig(ignore_zones=[IgnoreZone(camera_id="cam0", x1=0, y1=0, x2=20, y2=20)])
    assert decide(rules, ("spot", 0.9, BOX)).outcome is Outcome.FAIL  # 25 % of the box inside: counts
    rules = RulesConfig(ignore_zones=[IgnoreZone(camera_id="cam0", x1=0, y1=0, x2=40, y2=40)])
    assert decide(rules, ("spot", 0.9, BOX)).outcome is Outcome.PASS
    assert decide(rules, ("spot", 0.9, BOX), camera_id="cam1").outcome is Outcome.FAIL


def test_partial_overlap_respects_min_overlap():
    zone = IgnoreZone(x1=0, y1=0, x2=20, y2=40, min_overlap=0.5)  # covers exactly half the box
    assert decide(RulesConfig(ignore_zones=[zone]), ("spot", 0.9, BOX)).outcome is Outcome.PASS
    zone = IgnoreZone(x1=0, y1=0, x2=19, y2=40, min_overlap=0.5)
    assert decide(RulesConfig(ignore_zones=[zone]), ("spot", 0.9, BOX)).outcome is Outcome.FAIL


def test_max_count_tolerates_a_few():
    rules = RulesConfig(classes={"spot": ClassRule(max_count=2)})
    assert decide(rules, ("spot", 0.9, BOX), ("spot", 0.9, BOX)).outcome is Outcome.PASS
    assert decide(rules, ("spot", 0.9, BOX), ("spot", 0.9, BOX), ("spot", 0.9, BOX)).outcome is Outcome.FAIL


def test_disabled_class_never_counts():
    rules = RulesConfig(classes={"scratch": ClassRule(enabled=False)})
    v = decide(rules, ("scratch", 0.99, BOX))
    assert v.outcome is Outcome.PASS and v.defects[0].rule == "class disabled"


def test_multi_camera_combines():
    d = Decider(RulesConfig(), CalibrationConfig(), "cfg")
    frames = [frame("top"), frame("bottom")]
    v = d.decide(Trigger(7, 7, 0), frames, [dets(), dets(("missing", 0.8, BOX))], {})
    assert v.outcome is Outcome.FAIL and v.defects[0].camera_id == "bottom"


def test_failsafe_verdict():
    d = Decider(RulesConfig(), CalibrationConfig(id="cal-3"), "abc")
    v = d.failsafe(Trigger(5, 5, 0), "deadline missed")
    assert (
        v.outcome is Outcome.FAILSAFE
        and v.rejects
        and v.calibration_id == "cal-3"
        and v.reasons == ("deadline missed",)
    )


def test_band_must_be_ordered():
    with pytest.raises(ConfigError) as e:
        parse_config({"rules": {"default": {"reject_conf": 0.3, "uncertain_conf": 0.5}}})
    assert "rules.default" in str(e.value) and "uncertain_conf" in str(e.value)
