"""Image health figures, bands and model drift on real rendered frames and the real reference inspector."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from station.acquire.synthetic import iter_parts
from station.alarms import AlarmBoard
from station.config import ConfigError, ReferenceInspectorConfig, SyntheticCameraConfig, config_hash, parse_config
from station.config.health import HealthConfig
from station.contracts import Frame, StatusEvent
from station.health import HealthMonitor
from station.health.bands import Streak, ks_distance, learn_band
from station.health.measure import ProfileShift, measure
from station.inspection.reference import ReferenceInspector

W, H = 640, 400


def _images(n: int, start: int = 1, **kw: object) -> list[np.ndarray]:
    cfg = SyntheticCameraConfig(width=W, height=H, harmless_mark_rate=0.0, jitter_px=0, rotation_deg=0.0, seed=21, **kw)  # type: ignore[arg-type]
    return [p.image for _, p in iter_parts(cfg, start, n)]


def _shifted(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    return cv2.warpAffine(
        img,
        np.array([[1, 0, dx], [0, 1, dy]], np.float32),
        (img.shape[1], img.shape[0]),
        borderMode=cv2.BORDER_REPLICATE,
    )


def test_figures_follow_blur_light_and_position() -> None:
    img = _images(1, defect_rate=0.0)[0]
    ref = ProfileShift.of(img)
    base = measure(img, ref.shift(img))
    dark = measure(cv2.convertScaleAbs(img, alpha=0.5), (0, 0))
    blur = measure(cv2.GaussianBlur(img, (0, 0), 2.0), (0, 0))
    over = measure(cv2.convertScaleAbs(img, alpha=2.0), (0, 0))
    assert dark.brightness == pytest.approx(base.brightness * 0.5, rel=0.03)
    assert dark.sharpness == pytest.approx(base.sharpness, rel=0.1), "sharpness does not depend on the light"
    assert blur.sharpness < 0.4 * base.sharpness
    assert base.clipped < 0.01 < 0.1 < over.clipped
    for dx, dy in ((40, 0), (-25, 30), (7, -12)):
        sx, sy = ref.shift(_shifted(img, dx, dy))
        assert sx == pytest.approx(dx, abs=4) and sy == pytest.approx(dy, abs=4)
    # a colour frame is measured on its green channel
    assert measure(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR), (0, 0)).brightness == pytest.approx(base.brightness)


def test_bands_streaks_and_ks() -> None:
    b = learn_band([10.0, 10.2, 9.8], rel_low=0.3, rel_high=None, sigma=4)
    assert b.low == pytest.approx(7.0) and b.high == float("inf") and not b.outside(7.5) and b.outside(6.9)
    wide = learn_band([5.0, 15.0], rel_low=0.1, rel_high=0.1, sigma=1)
    assert (wide.low, wide.high) == (5.0, 15.0), "a spread setup widens the band to band_sigma deviations"
    s = Streak(3, 2)
    assert [s.update(x) for x in (True, True, False, True, True, True, True, False, False)] == [
        None,
        None,
        None,
        None,
        None,
        "raise",
        None,
        None,
        "clear",
    ]
    rng = np.random.default_rng(0)
    a = np.sort(rng.normal(0, 1, 200))
    assert ks_distance(a, a) == 0.0
    assert ks_distance(a, rng.normal(0, 1, 200)) < 0.2
    assert ks_distance(a, a + 100) == 1.0
    assert ks_distance(np.zeros(10), np.ones(10)) == 1.0


def test_reference_alignment_gives_the_position() -> None:
    insp = ReferenceInspector(ReferenceInspectorConfig(learn_parts=5))
    for i, img in enumerate(_images(5, defect_rate=0.0)):
        insp.learn(Frame(i, "cam0", img, 0))
    img = _images(1, start=50, defect_rate=0.0)[0]
    det = insp.inspect(Frame(50, "cam0", _shifted(img, 30, -20), 0))
    assert det.align_shift_px is not None
    assert det.align_shift_px[0] == pytest.approx(30, abs=2) and det.align_shift_px[1] == pytest.approx(-20, abs=2)


def test_model_whose_scores_shift_raises_the_drift_alarm() -> None:
    """The real reference model: a baseline on good parts, then a run of defective parts, then good parts again."""
    insp = ReferenceInspector(ReferenceInspectorConfig(learn_parts=8))
    for i, img in enumerate(_images(8, start=1, defect_rate=0.0)):
        insp.learn(Frame(i, "cam0", img, 0))
    published: list[StatusEvent] = []
    cfg = HealthConfig(
        setup_parts=5,
        model_baseline_parts=12,
        model_window_parts=8,
        alarm_after_parts=2,
        clear_after_parts=2,
        uncertain_on_drift=True,
    )
    mon = HealthMonitor(cfg, AlarmBoard(published.append).report)
    uncertain: dict[int, str | None] = {}
    good = _images(40, start=100, defect_rate=0.0)
    bad = _images(16, start=300, defect_rate=1.0, defect_classes=["spot", "missing"])
    for pid, img in enumerate(good[:20] + bad + good[20:], start=1):
        frame = Frame(pid, "cam0", img, time.monotonic_ns())
        mon.observe(pid, [frame], [insp.inspect(frame)])
        uncertain[pid] = mon.uncertain_reason
    events = [e for e in mon.events if e.component.startswith("drift:")]
    comp = f"drift:{insp.model_id}:scores"
    raised = [e for e in events if e.component == comp and e.state == "alarm"]
    assert raised and 21 <= raised[0].part_id <= 20 + cfg.model_window_parts, events
    assert raised[0].message.startswith(
        f"model {insp.model_id}: image scores drifted from the baseline taken at promotion"
    )
    cleared = [e for e in events if e.component == comp and e.state == "ok"]
    assert cleared and cleared[0].part_id > 36, "clears once the window holds good parts again"
    # uncertain_on_drift: the next parts may not PASS exactly while the alarm lasts
    assert [p for p, r in uncertain.items() if r] == list(range(raised[0].part_id, cleared[0].part_id))
    assert uncertain[raised[0].part_id] == f"model drift: {raised[0].message}"
    assert any(e.component == comp and e.state == "alarm" for e in published), (
        "raised on the alarm board (screen, MQTT, OPC UA)"
    )
    assert not [e for e in mon.events if e.component.startswith("health:") and e.state == "alarm"], (
        "the picture itself did not change"
    )
    snap = mon.snapshot()
    assert snap["model"]["ready"] and snap["model"]["ks"] < cfg.score_ks_limit and not snap["model"]["alarms"]


def test_model_swap_takes_a_new_baseline_and_clears_the_old_alarm() -> None:
    from station.contracts import Detections

    published: list[StatusEvent] = []
    mon = HealthMonitor(
        HealthConfig(setup_parts=3, model_baseline_parts=3, model_window_parts=3, alarm_after_parts=1),
        AlarmBoard(published.append).report,
    )
    img = _images(1, defect_rate=0.0)[0]

    def det(model: str, n: int) -> Detections:
        d = Detections.empty(("spot",), model)
        if n:
            d = Detections(
                np.tile(np.array([[1, 1, 5, 5]], np.float32), (n, 1)),
                np.full(n, 0.9, np.float32),
                np.zeros(n, np.int32),
                ("spot",),
                model,
            )
        return d

    for pid, (model, n) in enumerate([("a", 0)] * 3 + [("a", 3)] * 3 + [("b", 3)] * 2, start=1):
        mon.observe(pid, [Frame(pid, "cam0", img, 0)], [det(model, n)])
    states = [(e.component, e.state) for e in mon.events]
    assert ("drift:a:detections", "alarm") in states and ("drift:a:scores", "alarm") in states
    assert set(states[-2:]) == {("drift:a:scores", "ok"), ("drift:a:detections", "ok")}
    assert mon.model is not None and mon.model.model_id == "b" and not mon.model.ready
    assert "model replaced by b" in [e.message for e in published if e.state == "ok"]


def test_config_errors_and_hash() -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config({"health": {"sharpnes_drop": 0.2}})
    assert "health.sharpnes_drop" in str(ei.value) and "unknown key" in str(ei.value)
    with pytest.raises(ConfigError) as ei:
        parse_config({"health": {"sharpness_drop": 1.5}})
    assert "health.sharpness_drop" in str(ei.value)
    plain = config_hash(parse_config({}))
    assert config_hash(parse_config({"health": {"setup_parts": 50}})) == plain, "bands and alarms change no verdict"
    assert config_hash(parse_config({"health": {"uncertain_on_drift": True}})) != plain, (
        "UNCERTAIN while drifting changes verdicts"
    )


def test_real_cells_no_false_alarm_then_each_fault_its_own_alarm() -> None:
    """Real ELPV solar cells (every cell a different real part): normal part-to-part variation raises nothing;
    blurred, darkened, over-exposed and shifted cells each raise their own alarm within N parts."""
    from models.elpv import cells
    from station.contracts import Detections

    mono = [c for c in cells() if c.cell_type == "mono" and c.probability == 0.0][:60]
    imgs = [c.image() for c in mono]
    n_alarm = 3
    # real cells differ more from one another than rendered parts: a band of 2 setup deviations, 20 % for sharpness
    cfg = HealthConfig(
        setup_parts=20, alarm_after_parts=n_alarm, clear_after_parts=2, band_sigma=2.0, sharpness_drop=0.2
    )
    mon = HealthMonitor(cfg, AlarmBoard(lambda ev: None).report)
    empty = Detections.empty(("defect",), "elpv")  # no alignment: the position comes from the edge profiles
    pid = 0

    def feed(batch: list[np.ndarray]) -> list[tuple[str, str]]:
        nonlocal pid
        before = len(mon.events)
        for img in batch:
            pid += 1
            mon.observe(pid, [Frame(pid, "cam0", img, 0)], [empty])
        return [(e.component.split(":")[-1], e.state) for e in list(mon.events)[before:]]

    assert feed(imgs[:20]) == [] and not mon.cameras["cam0"].messages
    assert feed(imgs[20:40]) == [], "twenty more real cells, none of them a false alarm"
    faults = {
        "sharpness": lambda x: cv2.GaussianBlur(x, (0, 0), 3.0),
        "brightness": lambda x: cv2.convertScaleAbs(x, alpha=0.3),  # ELPV cells' own brightness varies 24 % (1 sd)
        "clipped": lambda x: cv2.convertScaleAbs(x, alpha=2.5),
        "position": lambda x: _shifted(x, 30, 0),
    }
    for k, (check, fault) in enumerate(faults.items()):
        batch = imgs[40 + 4 * k : 44 + 4 * k]
        got = feed([fault(x) for x in batch[:n_alarm]])
        assert (check, "alarm") in got, (check, got)
        assert ("position", "alarm") not in got or check == "position", (check, got)
        cleared = feed(imgs[:2])
        assert (check, "ok") in cleared and not [c for c, s in cleared if s == "alarm"], (check, cleared)


def test_bands_and_baselines_survive_a_restart(tmp_path) -> None:
    """What was learned is saved in the real station database and taken up by the next run; another frame size learns
    again."""
    from station.contracts import Detections
    from station.store import health_baselines
    from station.store.db import open_db

    imgs = _images(12, defect_rate=0.0)
    cfg = HealthConfig(setup_parts=6, model_baseline_parts=6, model_window_parts=4, alarm_after_parts=2)
    det = Detections.empty(("spot",), "model-a")
    first = HealthMonitor(cfg, AlarmBoard(lambda ev: None).report)
    for pid, img in enumerate(imgs[:8], start=1):
        first.observe(pid, [Frame(pid, "cam0", img, 0)], [det])
    db = open_db(tmp_path / "station.db")
    try:
        health_baselines.save(db, first.export())
        rows = health_baselines.load(db)
    finally:
        db.close()
    assert [(k, key) for k, key, _ in rows] == [("camera", "cam0"), ("model", "model-a")]

    events: list[StatusEvent] = []
    second = HealthMonitor(cfg, AlarmBoard(events.append).report)
    second.restore(rows)
    cam = second.cameras["cam0"]
    assert cam.bands["sharpness"].low == pytest.approx(first.cameras["cam0"].bands["sharpness"].low)
    blurred = [cv2.GaussianBlur(x, (0, 0), 2.0) for x in imgs[8:10]]
    for pid, img in enumerate(blurred, start=100):  # no setup: the alarm comes within N parts of the new run
        second.observe(pid, [Frame(pid, "cam0", img, 0)], [det])
    assert [(e.component, e.state) for e in events] == [("health:cam0:sharpness", "alarm")]
    assert second.model is not None and second.model.ready, "the model's baseline was taken up, not taken again"
    small = cv2.resize(imgs[10], (W // 2, H // 2))
    second.observe(200, [Frame(200, "cam0", small, 0)], [det])
    assert not cam.bands and len(cam.setup) == 1, "frames of another size: the bands are learned again"


def test_an_unreadable_saved_row_is_learned_again() -> None:
    mon = HealthMonitor(HealthConfig(), AlarmBoard(lambda ev: None).report)
    mon.restore([("camera", "cam0", {"stats": {"sharpness": [1.0, 0.1]}}), ("camera", "cam1", {"frame_hw": "x"})])
    assert mon.cameras == {}, "the station starts and learns those bands again"
