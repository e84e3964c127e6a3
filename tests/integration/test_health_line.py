"""Image health on the real station: blurred, darkened, over-exposed and shifted frames raise the right alarm and
clear."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from station.acquire.synthetic import iter_parts
from station.app import Station
from station.config import SyntheticCameraConfig
from station.contracts import Outcome
from tests.fixtures_floor import Mosquitto, MqttCollector, wait_for

from .test_line import run_station

N_ALARM, N_CLEAR, SETUP = 3, 2, 8
W, H = 640, 400


def _blur(img: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), 2.5)


def _dark(img: np.ndarray) -> np.ndarray:
    return cv2.convertScaleAbs(img, alpha=0.55)


def _over(img: np.ndarray) -> np.ndarray:
    return cv2.convertScaleAbs(img, alpha=1.9)


def _shift(img: np.ndarray) -> np.ndarray:
    return cv2.warpAffine(
        img,
        np.array([[1, 0, 60], [0, 1, 30]], np.float32),
        (img.shape[1], img.shape[0]),
        borderMode=cv2.BORDER_REPLICATE,
    )


# (what is done to the frames, how many, the alarms it must raise, alarms it must not raise)
SEGMENTS = [
    (None, 15, set(), set()),  # 5 parts the reference inspector learns from, then SETUP inspected frames and 2 more
    (_blur, 5, {"sharpness"}, {"position", "brightness"}),
    (None, 4, set(), set()),
    (_dark, 5, {"brightness"}, {"position", "sharpness"}),
    (None, 4, set(), set()),
    (_over, 5, {"clipped"}, {"position"}),
    (None, 4, set(), set()),
    (_shift, 5, {"position"}, {"sharpness", "brightness", "clipped"}),
    (None, 4, set(), set()),
]


def _write_line(folder: Path) -> list[tuple[int, int, set[str], set[str]]]:
    """Frames 001.png... in the order of SEGMENTS; returns (first part id, count, must, must_not) per degraded
    segment."""
    folder.mkdir()
    n = sum(s[1] for s in SEGMENTS)
    cfg = SyntheticCameraConfig(width=W, height=H, defect_rate=0.0, harmless_mark_rate=0.0, jitter_px=6, seed=11)
    parts = [p.image for _, p in iter_parts(cfg, 1, n)]
    out, pid = [], 1
    for fn, count, must, must_not in SEGMENTS:
        if fn is not None:
            out.append((pid, count, must, must_not))
        for _ in range(count):
            img = parts[pid - 1] if fn is None else fn(parts[pid - 1])
            cv2.imwrite(str(folder / f"{pid:03d}.png"), img)
            pid += 1
    return out


def test_degraded_frames_raise_the_right_alarm_and_clear(make_config, tmp_path):
    segments = _write_line(tmp_path / "line")
    n = sum(s[1] for s in SEGMENTS)
    broker = Mosquitto(tmp_path).start()
    col = MqttCollector(broker.port, "station/station-1/status")
    try:
        _run_degraded_line(make_config, tmp_path, segments, n, broker, col)
    finally:
        col.close()
        broker.stop()


def _run_degraded_line(make_config, tmp_path, segments, n, broker, col) -> None:
    cfg = make_config(
        publish={"mqtt": {"port": broker.port, "outbox_path": str(tmp_path / "outbox.db")}},
        cameras=[{"type": "folder", "id": "cam0", "path": str(tmp_path / "line"), "loop": False}],
        inspector={"type": "reference", "learn_parts": 5},
        trigger={"type": "timer", "parts_per_minute": 900},
        # a slow CI machine must not miss a deadline: a FAILSAFE part is not measured, and the test counts parts
        reject={"travel_ms": 1500, "safety_margin_ms": 100, "pulse_ms": 20},
        health={
            "setup_parts": SETUP,
            "alarm_after_parts": N_ALARM,
            "clear_after_parts": N_CLEAR,
            "uncertain_on_drift": True,
        },
    )
    station = Station(cfg, max_parts=n)
    results = {r.trigger.part_id: r for r in run_station(station, n)}
    assert not [p for p, r in results.items() if r.verdict.outcome is Outcome.FAILSAFE and p > 5], (
        "every part after learning was inspected"
    )
    assert station.image_health is not None
    events = list(station.image_health.events)
    active: set[str] = set()
    drifting: set[int] = set()  # parts decided while an image alarm was active
    by_part: dict[int, list] = {}
    for e in events:
        by_part.setdefault(e.part_id, []).append(e)
    for pid in range(1, n + 1):
        if active:
            drifting.add(pid)
        for e in by_part.get(pid, []):
            (active.add if e.state == "alarm" else active.discard)(e.component)
    assert not active, f"alarms still active at the end: {active}"
    for first, count, must, must_not in segments:
        raised = {
            e.component.split(":")[-1]: e for e in events if e.state == "alarm" and first <= e.part_id < first + count
        }
        assert must <= set(raised), (
            f"segment at part {first}: raised {sorted(raised)}, expected {sorted(must)}: {events}"
        )
        assert not (must_not & set(raised)), f"segment at part {first}: raised {sorted(raised)}"
        for check in must:
            assert raised[check].part_id <= first + N_ALARM - 1  # within N parts
            cleared = [
                e
                for e in events
                if e.component == f"health:cam0:{check}" and e.state == "ok" and e.part_id >= first + count
            ]
            assert cleared and cleared[0].part_id <= first + count + N_CLEAR - 1, (
                f"{check} not cleared after part {first + count}"
            )
    msg = next(e.message for e in events if e.component == "health:cam0:sharpness" and e.state == "alarm")
    assert msg.startswith("camera cam0: image ") and "% less sharp than at setup: lens dirty or focus moved" in msg
    # UNCERTAIN while drifting: no part decided under an active image alarm passes; the clean parts after it do
    assert drifting
    for pid in drifting:
        assert results[pid].verdict.outcome is not Outcome.PASS, (pid, results[pid].verdict)
    assert any(
        results[p].verdict.outcome is Outcome.UNCERTAIN
        and "image health: camera cam0" in results[p].verdict.reasons[-1]
        for p in drifting
    )
    clean_after = [first + count + N_CLEAR + k for first, count, _, _ in segments for k in range(2)]
    assert all(results[p].verdict.outcome is Outcome.PASS for p in clean_after if p <= n), [
        (p, results[p].verdict.outcome) for p in clean_after
    ]
    # every alarm and its clearing went out over MQTT, in order
    expected = [(e.component, e.state, e.message) for e in events]

    def over_mqtt() -> list[tuple[str, str, str]]:
        published = [json.loads(p)["event"] for p, _ in col.of("/status")]
        return [
            (e["component"], e["state"], e["message"]) for e in published if e and e["component"].startswith("health:")
        ]

    wait_for(lambda: len(over_mqtt()) >= len(expected), 5, "the health alarms over MQTT")
    assert over_mqtt() == expected
    # the bands were saved at the stop: the next run on this database starts with them, not with a new setup
    again = Station(cfg)
    try:
        assert again.image_health is not None
        restored, learned = again.image_health.cameras["cam0"], station.image_health.cameras["cam0"]
        assert restored.bands == learned.bands and restored.shift_limit == learned.shift_limit
    finally:
        again.db.close()
