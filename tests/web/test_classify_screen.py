"""The operator screen (headless Chromium) shows a classify model's class and probability per part.

The parts are judged by the real classify export (tests/model_factory.py) through the production
path (inspect_part: OnnxInspector + Decider with good_classes), then published as the line does.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from playwright.sync_api import Page, expect

from station.app import Station
from station.config import CalibrationConfig, ClassRule, OnnxInspectorConfig, RulesConfig
from station.contracts import Frame, PartResult, Trigger
from station.decide import Decider
from station.inspection.onnx_backend import OnnxInspector
from station.pipeline import inspect_part
from tests.model_factory import classifying_model, draw_scene

from .anomaly_parts import publish_part
from .helpers import (
    needs_chromium,
    panel_viewport,  # noqa: F401 - the viewport fixture: the line-side panel
)
from .test_heatmap_browser import served  # noqa: F401 - the served station

pytestmark = [needs_chromium, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def judged(part_id: int, shape: int | None, reject_conf: float) -> tuple[PartResult, dict[str, float]]:
    """A 64x64 scene (None: background only, 0: a square) judged by the classify model; returns it and its
    probabilities."""
    img, _ = draw_scene(
        np.random.default_rng(part_id), (64, 64), 0 if shape is None else 1, 16, 32, classes=(shape or 0,)
    )
    rule = ClassRule(reject_conf=reject_conf, uncertain_conf=reject_conf)
    rules = RulesConfig(good_classes=["good"], classes={"square": rule, "disc": rule})
    insp = OnnxInspector(OnnxInspectorConfig(model=classifying_model(), keepalive_s=0.0))
    try:
        now = time.monotonic_ns()
        trig = Trigger(part_id=part_id, seq=part_id, t_trigger_ns=now, source="test", t_trigger_wall=time.time())
        res = inspect_part(
            insp, Decider(rules, CalibrationConfig(), "cfg-test"), trig, [Frame(part_id, "cam0", img, now)]
        )
    finally:
        insp.close()
    det = res.detections[0]
    return res, {det.names[c]: float(s) for c, s in zip(det.class_ids, det.scores)}


def test_operator_screen_shows_class_and_probability(served: tuple[Station, str], page: Page) -> None:
    station, base = served
    page.goto(base + "/")  # assertions wait up to 20 s (the browser fixture): a busy 2-core machine
    expect(page.locator("#conn-text")).to_have_text("LIVE")

    good, p = judged(3001, None, reject_conf=0.99)
    assert good.verdict.outcome == "PASS" and p["good"] >= 0.3  # a good scene the model knows
    publish_part(station, good)
    expect(page.locator("#live-part")).to_have_text("3001")
    expect(page.locator("#live-defects")).to_contain_text(f"GOOD good {round(p['good'] * 100)}%")

    bad, p = judged(3002, 0, reject_conf=0.05)
    assert bad.verdict.outcome == "FAIL" and p["square"] >= 0.05
    publish_part(station, bad)
    expect(page.locator("#live-part")).to_have_text("3002")
    expect(page.locator("#live-defects")).to_contain_text(f"REJECT square {round(p['square'] * 100)}%")
