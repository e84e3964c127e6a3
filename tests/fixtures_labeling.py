"""Helpers for the labeling tests: parts recorded through the real Recorder into a real SQLite file."""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import sqlite_utils

from labeling.labels import Review, review_state
from station.bus import Bus
from station.contracts import Defect, Frame, Outcome, PartResult, Trigger, Verdict
from station.counters import Counters
from station.store.db import open_db
from station.store.images import ImageStore
from station.store.recorder import Recorder

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z
W, H = 64, 48
ACTION = {Outcome.FAIL: "reject", Outcome.UNCERTAIN: "uncertain", Outcome.PASS: "ignore", Outcome.FAILSAFE: "ignore"}
CLASSES = ("dent", "scratch", "stain")


@dataclass
class Line:
    """A database file and an image store in a temp folder, filled by the real recorder."""

    root: Path
    db_path: Path
    images: ImageStore
    db: sqlite_utils.Database

    def record(self, results: Sequence[PartResult]) -> None:
        """Publish ``results`` on a bus and let a Recorder write them (keeps every image: keep_pass_every=1)."""
        bus, counters = Bus(), Counters()
        rec = Recorder(self.db_path, self.images, counters, bus.subscribe("recorder", maxsize=10_000), batch_size=64)
        rec.start()
        for r in results:
            bus.publish(r)
        assert rec.stop(timeout=20), "recorder did not write everything"

    def image_id(self, part_id: int, camera_id: str = "cam0") -> int:
        """The image row of one part and camera."""
        row = self.db.execute(
            "SELECT id FROM images WHERE part_id = ? AND camera_id = ?", [part_id, camera_id]
        ).fetchone()
        assert row is not None, f"no image for part {part_id} camera {camera_id}"
        return int(row[0])


def draw(
    part_id: int,
    boxes: Sequence[tuple[float, float, float, float]],
    shape: tuple[int, int] = (H, W),
    camera_id: str = "",
) -> np.ndarray:
    """A dark noisy BGR image with a bright filled rectangle at every box (so a detector could learn them).

    The noise depends on the part and the camera, so every image of a test is a different file.
    """
    rng = np.random.default_rng([part_id, zlib.crc32(camera_id.encode())])
    img = np.clip(rng.normal(40, 8, size=(*shape, 3)), 0, 255).astype(np.uint8)
    for x1, y1, x2, y2 in boxes:
        cv2.rectangle(img, (int(x1), int(y1)), (int(x2) - 1, int(y2) - 1), (220, 220, 220), -1)
    return img


def part(
    part_id: int,
    outcome: Outcome = Outcome.PASS,
    defects: Sequence[tuple[str, float, tuple[float, float, float, float]]] = (),
    *,
    truth: Sequence[tuple[str, tuple[float, float, float, float]]] | None = None,
    t_wall: float | None = None,
    cameras: Sequence[str] = ("cam0",),
    model_id: str = "model-a",
    shape: tuple[int, int] = (H, W),
) -> PartResult:
    """A PartResult of real dataclasses: ``defects`` (class, confidence, box) on every camera, optional ground truth."""
    t_wall = T0 + part_id * 60.0 if t_wall is None else t_wall
    action = ACTION[outcome]
    defs = tuple(
        Defect(cls, conf, box, 1.0, cam, action, f"conf {conf:.2f}") for cam in cameras for cls, conf, box in defects
    )
    t0 = 1_000_000_000 + part_id * 10_000_000
    frames = []
    for cam in cameras:
        meta: dict = {}
        if truth is not None:
            meta["truth"] = tuple({"class_name": c, "box_xyxy": list(b), "area_px": 1.0} for c, b in truth)
        frames.append(Frame(part_id, cam, draw(part_id, [b for _, _, b in defects], shape, cam), t0 + 1000, meta))
    verdict = Verdict(
        part_id=part_id,
        outcome=outcome,
        reasons=tuple(d.rule for d in defs),
        defects=defs,
        model_id=model_id,
        config_hash="cfg",
        calibration_id="nominal",
        timings_ms={"total": 5.0},
        t_trigger_ns=t0,
        t_decided_ns=t0 + 5_000_000,
    )
    trig = Trigger(part_id=part_id, seq=part_id, t_trigger_ns=t0, source="timer", t_trigger_wall=t_wall)
    return PartResult(trigger=trig, verdict=verdict, frames=tuple(frames))


@pytest.fixture
def line(tmp_path: Path) -> Iterator[Line]:
    """An empty station database file and image store (every image kept)."""
    db_path = tmp_path / "station.db"
    db = open_db(db_path)
    ln = Line(
        tmp_path,
        db_path,
        ImageStore(tmp_path / "images", "png", keep_pass_every=1, disk_budget_mb=100.0, fsync=False),
        db,
    )
    yield ln
    db.close()


def review_of(db: sqlite_utils.Database, image_id: int) -> Review:
    """The review state of a reviewed image (fails the test when the image has none)."""
    state = review_state(db, image_id)
    assert state is not None, f"image {image_id} has no review"
    return state
