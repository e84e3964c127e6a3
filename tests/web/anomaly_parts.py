"""Parts judged by a no-labels (anomaly) inspector, built from the real stage contracts for the web tests.

:func:`anomaly_part` makes a ``PartResult`` whose one frame shows a machined disc with a bright spot,
whose ``Detections`` carry a synthetic ``anomaly_map`` (hot around the spot) and an ``image_score``,
and whose verdict rejects the spot as an ``anomaly`` defect. :func:`publish_part` hands it to a running
station the way the pipeline does (counters, ``last_result``, the bus): the recorder stores it and
the live screen shows it.
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from station.app import Station
from station.contracts import Defect, Detections, Frame, Outcome, PartResult, Trigger, Verdict

W, H = 640, 400  # frame size (the web tests' synthetic camera)
MAP_W, MAP_H = 160, 100  # heat map size: the frame's aspect ratio, a quarter of its resolution
SPOT = (440.0, 160.0)  # frame pixel of the anomaly (x, y)
BOX = (410.0, 130.0, 470.0, 190.0)  # its box in frame pixels


def part_image(seed: int = 0) -> np.ndarray:
    """A gray disc with a bore on a dark belt, and a bright spot at :data:`SPOT`."""
    rng = np.random.default_rng(seed)
    img = np.full((H, W, 3), 40, np.uint8)
    cv2.circle(img, (W // 2, H // 2), 170, (150, 150, 150), -1)
    cv2.circle(img, (W // 2, H // 2), 45, (30, 30, 30), -1)
    cv2.circle(img, (int(SPOT[0]), int(SPOT[1])), 14, (235, 235, 235), -1)
    noise = rng.integers(0, 12, img.shape, dtype=np.uint8)
    return cv2.add(img, noise)


def heat_map(peak: int = 255) -> np.ndarray:
    """A (MAP_H, MAP_W) uint8 map: ~10 (normal) everywhere, a Gaussian blob peaking at ``peak`` over the spot."""
    yy, xx = np.mgrid[0:MAP_H, 0:MAP_W].astype(np.float32)
    cx, cy = SPOT[0] * MAP_W / W, SPOT[1] * MAP_H / H
    blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 5.0**2))
    return np.clip(10 + (peak - 10) * blob, 0, 255).astype(np.uint8)


def anomaly_part(
    part_id: int, *, with_map: bool = True, score: float | None = 1.8, outcome: Outcome = Outcome.FAIL
) -> PartResult:
    """A part with one ``anomaly`` detection at :data:`BOX`; ``with_map=False``: a supervised model's result (no map,
    no score)."""
    now_ns = time.monotonic_ns()
    frame = Frame(part_id=part_id, camera_id="cam0", image=part_image(part_id), t_exposure_ns=now_ns)
    det = Detections(
        boxes_xyxy=np.array([BOX], np.float32),
        scores=np.array([0.9], np.float32),
        class_ids=np.array([0], np.int32),
        names=("anomaly",),
        model_id="anomaly-test",
        anomaly_map=heat_map() if with_map else None,
        image_score=score if with_map else None,
    )
    action = {Outcome.FAIL: "reject", Outcome.UNCERTAIN: "uncertain"}.get(outcome, "ignore")
    defects = (
        (Defect("anomaly", 0.9, BOX, 3.5, "cam0", action, "anomaly score >= 1"),) if outcome is not Outcome.PASS else ()
    )
    verdict = Verdict(
        part_id=part_id,
        outcome=outcome,
        reasons=tuple(f"anomaly ({d.rule})" for d in defects),
        defects=defects,
        model_id="anomaly-test",
        config_hash="cfg-test",
        calibration_id="nominal",
        timings_ms={"inspect": 5.0},
        t_trigger_ns=now_ns,
        t_decided_ns=now_ns + 5_000_000,
    )
    trig = Trigger(part_id=part_id, seq=part_id, t_trigger_ns=now_ns, source="test", t_trigger_wall=time.time())
    return PartResult(trig, verdict, (frame,), (det,))


def publish_part(station: Station, result: PartResult) -> None:
    """What the pipeline does with a decided part: count it, make it the last result, publish it on the bus."""
    station.counters.add("triggers")
    station.counters.add("frames")
    station.counters.verdict(result.verdict.outcome)
    station.last_result = result
    station.bus.publish(result)
