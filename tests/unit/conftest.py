"""Fixtures for the store tests: real SQLite databases and real image folders."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import sqlite_utils

from station.contracts import Defect, Frame, Outcome, PartResult, Trigger, Verdict
from station.store.db import open_db
from station.store.images import ImageStore


@dataclass(frozen=True)
class Truth:
    """Same shape as the synthetic camera's ground truth entries."""

    class_name: str
    box_xyxy: tuple[float, float, float, float]
    area_px: float


@dataclass
class TmpStore:
    """A database file and an image folder under ``tmp_path``."""

    db_path: Path
    images_dir: Path
    images: ImageStore
    db: sqlite_utils.Database


@pytest.fixture
def fresh_db() -> Iterator[sqlite_utils.Database]:
    """An in-memory database with every migration applied."""
    db = open_db(None)
    yield db
    db.close()


@pytest.fixture
def tmp_store(tmp_path: Path) -> Iterator[TmpStore]:
    """A migrated database file and an ImageStore (png, keep 1 PASS in 5, 50 MB budget) in tmp_path."""
    db_path = tmp_path / "station.db"
    db = open_db(db_path)
    store = TmpStore(db_path, tmp_path / "images", ImageStore(tmp_path / "images", "png", 5, 50.0), db)
    yield store
    db.close()


def build_result(
    part_id: int,
    outcome: Outcome = Outcome.PASS,
    *,
    rng: np.random.Generator | None = None,
    cameras: tuple[str, ...] = ("cam0",),
    shape: tuple[int, ...] = (48, 64, 3),
    n_defects: int | None = None,
    truth: str | None = "dataclass",
) -> PartResult:
    """A PartResult made from the real dataclasses, with small random images.

    ``truth``: "dataclass" (synthetic camera style), "dict", or None (no ground truth).
    """
    rng = rng or np.random.default_rng(part_id)
    if n_defects is None:
        n_defects = 0 if outcome is Outcome.PASS else int(rng.integers(1, 4))
    action = {Outcome.FAIL: "reject", Outcome.UNCERTAIN: "uncertain"}.get(outcome, "ignore")
    defects = tuple(
        Defect(
            class_name=str(rng.choice(["scratch", "dent", "stain"])),
            confidence=float(rng.uniform(0.3, 0.99)),
            box_xyxy=(float(i), float(i + 1), float(i + 10.5), float(i + 12.25)),
            area_mm2=float(rng.uniform(0.1, 5.0)),
            camera_id=cameras[i % len(cameras)],
            action=action,
            rule=f"rule {i}",
        )
        for i in range(n_defects)
    )
    t0 = 1_000_000_000 + part_id * 10_000_000
    trig = Trigger(
        part_id=part_id, seq=part_id - 1, t_trigger_ns=t0, source="timer", t_trigger_wall=1.7e9 + part_id * 0.01
    )
    frames = []
    for cam in cameras:
        meta: dict = {"exposure_us": 500}
        if truth == "dataclass":
            meta["truth"] = tuple(Truth(d.class_name, d.box_xyxy, 42.0) for d in defects)
        elif truth == "dict":
            meta["truth"] = [
                {"class_name": d.class_name, "box_xyxy": list(d.box_xyxy), "area_px": np.float32(42.0)} for d in defects
            ]
        img = rng.integers(0, 256, size=shape, dtype=np.uint8)
        frames.append(Frame(part_id=part_id, camera_id=cam, image=img, t_exposure_ns=t0 + 1000, meta=meta))
    verdict = Verdict(
        part_id=part_id,
        outcome=outcome,
        reasons=tuple(f"{d.class_name} ({d.rule})" for d in defects if outcome is not Outcome.PASS),
        defects=defects,
        model_id="model-abc",
        config_hash="cfg123",
        calibration_id="nominal",
        timings_ms={"acquire": 1.5, "inspect": 7.25, "total": 9.0, "deadline_slack": 41.0},
        t_trigger_ns=t0,
        t_decided_ns=t0 + 9_000_000,
    )
    return PartResult(trigger=trig, verdict=verdict, frames=tuple(frames))


@pytest.fixture
def make_result() -> Callable[..., PartResult]:
    """``make_result(part_id, outcome=..., ...)``: see :func:`build_result`."""
    return build_result


def _wait_until(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def wait_until() -> Callable[..., None]:
    """``wait_until(pred, timeout=10, what="...")``: poll until true, fail the test on timeout."""
    return _wait_until
