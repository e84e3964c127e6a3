"""Scoring, comparison and threshold tuning (models.evaluate) on hand-made detections, decided by the real Decider."""

from __future__ import annotations

import numpy as np
import pytest

from models.eval_tuning import tune_thresholds
from models.evaluate import (
    EvalResult,
    ImageResult,
    average_precision,
    box_iou,
    ejected,
    match_greedy,
    redecide,
    score,
)
from station.config import ClassRule, IgnoreZone, RulesConfig
from station.contracts import Detections

NAMES = ("scratch", "spot", "missing")


def _det(rows: list[tuple[int, float, tuple[float, float, float, float]]]) -> Detections:
    return Detections(
        boxes_xyxy=np.array([r[2] for r in rows], np.float32).reshape(-1, 4),
        scores=np.array([r[1] for r in rows], np.float32),
        class_ids=np.array([r[0] for r in rows], np.int32),
        names=NAMES,
        model_id="hand:0",
    )


def _image(
    stem: str,
    truth: list[tuple[int, tuple[float, ...]]],
    dets: list[tuple[int, float, tuple[float, float, float, float]]],
) -> ImageResult:
    det = _det(dets)
    return ImageResult(
        stem=stem,
        truth_classes=np.array([t[0] for t in truth], np.int32),
        truth_boxes=np.array([t[1] for t in truth], np.float32).reshape(-1, 4),
        detections=det,
        eligible=np.ones(len(det), bool),
        outcome="PASS",
        reasons=(),
        ejected=False,
        ms=1.0,
    )


def _decided(images: list[ImageResult], rules: RulesConfig) -> EvalResult:
    """Score hand-made images after the production Decider has judged them."""
    base = score(images, NAMES, rules, golden_id="hand")
    return redecide(base, rules)


BOX = (10.0, 10.0, 50.0, 30.0)
FAR = (200.0, 200.0, 240.0, 220.0)


def test_iou_and_greedy_matching() -> None:
    a = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], np.float32)
    assert box_iou(a, a[:1]).ravel() == pytest.approx([1.0, 50 / 150])
    gt = np.array([[0, 0, 10, 10]], np.float32)
    tp, which = match_greedy(
        np.array([[0, 0, 10, 10], [0, 0, 10, 9]], np.float32), np.array([0.5, 0.9], np.float32), gt
    )
    assert tp.tolist() == [False, True] and which.tolist() == [
        -1,
        0,
    ]  # the higher score takes the truth; the duplicate is FP


def test_average_precision_all_point_interpolation() -> None:
    # 3 truths; detections by score: TP, FP, TP, TP -> (R, P) = (1/3, 1), (1/3, 1/2), (2/3, 2/3), (1, 3/4)
    # envelope: 1 up to R=1/3, then 3/4 up to R=1 -> AP = 1/3 + 2/3 * 3/4
    ap = average_precision(np.array([True, False, True, True]), np.array([0.9, 0.8, 0.7, 0.6]), 3)
    assert ap == pytest.approx(1 / 3 + 2 / 3 * 0.75)
    assert average_precision(np.array([True]), np.array([0.5]), 2) == pytest.approx(0.5)
    assert average_precision(np.zeros(0, bool), np.zeros(0), 2) == 0.0
    assert np.isnan(average_precision(np.zeros(0, bool), np.zeros(0), 0))


def test_escape_and_false_reject_follow_the_decider() -> None:
    rules = RulesConfig(default=ClassRule(reject_conf=0.5, uncertain_conf=0.3))
    images = [
        _image("d1", [(0, BOX)], [(0, 0.9, BOX)]),  # FAIL: caught
        _image("d2", [(1, BOX)], [(1, 0.4, BOX)]),  # UNCERTAIN: ejected under uncertain_action=reject
        _image("d3", [(2, BOX)], [(2, 0.2, BOX)]),  # below uncertain_conf: PASS -> escape
        _image("g1", [], [(0, 0.6, FAR)]),  # good part rejected
        _image("g2", [], []),
        _image("g3", [], [(1, 0.35, FAR)]),  # good part UNCERTAIN -> ejected too
    ]
    r = _decided(images, rules)
    assert [im.outcome for im in r.images] == ["FAIL", "UNCERTAIN", "PASS", "FAIL", "PASS", "UNCERTAIN"]
    assert (r.n_defective, r.n_good, r.escapes, r.false_rejects) == (3, 3, 1, 2)
    assert r.escape_rate == pytest.approx(1 / 3) and r.false_reject_rate == pytest.approx(2 / 3)
    assert r.per_class["missing"].escape_rate == 1.0 and r.per_class["scratch"].escape_rate == 0.0
    # precision/recall at reject_conf: only d1's scratch and g1's false scratch reach 0.5
    assert (r.per_class["scratch"].tp, r.per_class["scratch"].fp, r.per_class["scratch"].fn) == (1, 1, 0)
    assert r.recall == pytest.approx(1 / 3) and r.precision == pytest.approx(1 / 2)
    # confusion at reject_conf: rows truth, cols predicted, last = background
    c = r.confusion
    assert c[0, 0] == 1 and c[1, 3] == 1 and c[2, 3] == 1 and c[3, 0] == 1 and c.sum() == 4
    assert r.outcomes["defective"] == {"FAIL": 1, "UNCERTAIN": 1, "PASS": 1}
    passing = rules.model_copy(update={"uncertain_action": "pass"})
    r2 = redecide(r, passing)
    assert (r2.escapes, r2.false_rejects) == (2, 1)
    assert not ejected("UNCERTAIN", passing) and ejected("FAILSAFE", passing)
    assert "escape rate" in r.table() and "confusion" in r.table()


def test_ignore_zones_and_disabled_classes_do_not_count() -> None:
    rules = RulesConfig(
        default=ClassRule(reject_conf=0.5, uncertain_conf=0.3),
        classes={"spot": ClassRule(enabled=False)},
        ignore_zones=[IgnoreZone(x1=0, y1=0, x2=100, y2=100)],
    )
    images = [_image("g1", [], [(0, 0.9, BOX)]), _image("g2", [], [(1, 0.9, FAR)]), _image("g3", [], [(0, 0.9, FAR)])]
    r = _decided(images, rules)
    assert [im.outcome for im in r.images] == ["PASS", "PASS", "FAIL"]
    assert [im.eligible.tolist() for im in r.images] == [[False], [False], [True]]


def test_tune_thresholds_meets_the_target_at_the_least_false_rejects() -> None:
    rules = RulesConfig(default=ClassRule(reject_conf=0.5, uncertain_conf=0.5))
    images = [
        _image("d1", [(0, BOX)], [(0, 0.9, BOX)]),
        _image("d2", [(0, BOX)], [(0, 0.4, BOX)]),
        _image("d3", [(0, BOX)], [(0, 0.2, BOX)]),
        _image("d4", [(1, BOX)], [(1, 0.15, BOX)]),
        _image("d5", [(2, BOX)], []),  # never detected: no threshold can catch it
        _image("g1", [], [(0, 0.3, FAR)]),
        _image("g2", [], [(1, 0.12, FAR)]),
        _image("g3", [], [(0, 0.1, FAR)]),
        _image("g4", [], []),
    ]
    base = _decided(images, rules)
    assert base.escapes == 4  # d2..d5 at 0.5
    t = tune_thresholds(base, 0.4)  # at most 2 escapes of 5
    assert t.achieved and t.result.escapes <= 2
    # cheapest: scratch down to 0.4 (d2) and spot to 0.15 (d4) cost no good part; scratch at 0.2 would cost g1;
    # then each sits halfway between the good part it spares and the defect it catches: 0.3 | 0.4, 0.12 | 0.15
    assert t.thresholds["scratch"] == pytest.approx(0.35)
    assert t.thresholds["spot"] == pytest.approx(0.135) and t.thresholds["missing"] == pytest.approx(1.0)
    assert t.result.escapes == 2 and t.false_reject_rate == 0.0
    assert t.floor_escape_rate == pytest.approx(1 / 5)
    # uncertain_action is "reject": the uncertain band's floor becomes the eject threshold, FAIL stays at 0.5
    assert t.rules.for_class("scratch").uncertain_conf == pytest.approx(0.35)
    assert t.rules.for_class("scratch").reject_conf == pytest.approx(0.5)
    assert [im.outcome for im in t.result.images[:2]] == ["FAIL", "UNCERTAIN"]
    t2 = tune_thresholds(base, 0.2)  # 1 escape: d3 must go too -> scratch 0.2, which costs g1
    assert t2.achieved and t2.result.escapes == 1
    # halfway between g3's 0.1 (spared) and d3's 0.2; spot as above
    assert t2.thresholds["scratch"] == pytest.approx(0.15) and t2.thresholds["spot"] == pytest.approx(0.135)
    assert t2.false_reject_rate == pytest.approx(1 / 4)
    t4 = tune_thresholds(
        base, 0.2, min_conf=0.16
    )  # the line drops scores below its inspector conf: spot 0.15 is out of reach
    assert not t4.achieved and t4.result.escapes == 2 and t4.thresholds["spot"] == pytest.approx(1.0)
    t3 = tune_thresholds(base, 0.0)  # d5 has no detection: unreachable
    assert not t3.achieved and t3.escape_rate == pytest.approx(1 / 5)
    assert "NOT met" in t3.table() and "never ejects" in t.table()
