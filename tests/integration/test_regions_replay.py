"""Drawn regions judge replay and golden-set evaluation as they judge the line (real anomaly model, real database)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from models.dataset import make_golden_set
from models.evaluate import evaluate
from station import camera_setup
from station.cli import main as station_main
from station.config import SyntheticCameraConfig
from station.config.regions import CameraRegions, Zone
from station.store.db import open_db
from tests.model_factory import ANOMALY_CAMERA, anomaly_model, synthetic_good_frames

pytestmark = pytest.mark.slow  # a learned anomaly model (cached after its first use), like test_anomaly_line.py
DEFECT = (300, 150, 340, 260)  # the painted defect (x1, y1, x2, y2)
AROUND: list[tuple[float, float]] = [(280, 130), (360, 130), (360, 280), (280, 280)]  # an ignore zone around it


def draw(db_path: Path, spec: CameraRegions) -> None:
    db = open_db(db_path)
    try:
        camera_setup.save_regions(db, "line-r", "cam0", spec, user="boss", reason="test")
    finally:
        db.close()


def test_replay_uses_the_regions_in_force(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    bad = synthetic_good_frames(1, first=900)[0].copy()
    cv2.rectangle(bad, DEFECT[:2], DEFECT[2:], 0, -1)
    cv2.imwrite(str(folder / "bad.png"), bad)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        json.dumps(
            {
                "name": "line-r",
                "cameras": [ANOMALY_CAMERA],
                "inspector": {"type": "anomaly", "model": str(anomaly_model())},
                "rules": {
                    "default": {"reject_conf": 0.5, "uncertain_conf": 0.5}
                },  # no uncertain band: weak blobs elsewhere pass
                "store": {"db_path": str(tmp_path / "s.db"), "images_dir": str(tmp_path / "i")},
            }
        )
    )

    def replay() -> dict:
        out = tmp_path / "r.jsonl"
        assert station_main(["replay", str(folder), "--out", str(out), "-c", str(cfg)]) == 0
        return json.loads(out.read_text().splitlines()[0])

    before = replay()
    assert before["outcome"] == "FAIL"
    draw(tmp_path / "s.db", CameraRegions(image_size=(640, 400), ignore=[Zone(name="clamp", points=AROUND)]))
    after = replay()
    assert after["outcome"] == "PASS" and after["config_hash"].endswith("+gcam0:v1")
    assert [d["rule"] for d in after["defects"]] == ["ignore zone clamp"]


def test_golden_set_evaluation_uses_the_regions(tmp_path: Path) -> None:
    golden = make_golden_set(
        tmp_path / "golden",
        8,
        seed=4242,
        camera_cfg=SyntheticCameraConfig.model_validate({**ANOMALY_CAMERA, "defect_rate": 0.6}),
    )
    plain = evaluate(anomaly_model(), golden)
    assert any(im.outcome == "FAIL" for im in plain.images)
    # an ROI on a corner where no part is: nothing counts, every part passes
    corner = CameraRegions(image_size=(640, 400), roi=[(0, 0), (20, 0), (20, 20), (0, 20)])
    draw(tmp_path / "s.db", corner)
    setup = camera_setup.load_file(tmp_path / "s.db", "line-r", ["cam0"])
    masked = evaluate(anomaly_model(), golden, setup=setup)
    assert all(im.outcome == "PASS" for im in masked.images)
    assert all(not im.eligible.any() for im in masked.images if len(im.detections))
