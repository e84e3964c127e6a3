"""The anomaly inspector: learned from good parts only, run through onnxruntime; real solar cells (ELPV)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from models.anomaly import AnomalyLearnError, LearnSettings, learn, load_good_images
from models.elpv import anomaly_split, auroc, zscore_template_scores
from station.config import AnomalyInspectorConfig, AnomalyRegion, OnnxInspectorConfig
from station.contracts import Frame
from station.inspection.anomaly import AnomalyInspector
from station.inspection.base import ModelLoadError
from station.inspection.loader import inspector_for_file
from station.inspection.onnx_backend import OnnxInspector
from station.inspection.swap import SwappableInspector
from tests.model_factory import ANOMALY_CAMERA, anomaly_model, synthetic_good_frames, tiny_model

os.environ.setdefault("YOLO_OFFLINE", "1")
pytestmark = pytest.mark.slow

# ELPV floor: a fixed subset of mono cells (CI-sized learning); the full protocol is bench/bench_anomaly_elpv.py
ELPV_LEARN, ELPV_TEST = 150, 100
ELPV_FLOOR = 0.88  # measured 0.967 on this subset with the default pretrained features (filters 0.930; z-score 0.820)
ELPV_POLY_FLOOR = 0.88  # pretrained features on the same-sized poly subset: measured 0.901 (filter bank 0.828)


def frame(img: np.ndarray, pid: int = 1) -> Frame:
    return Frame(part_id=pid, camera_id="cam0", image=img, t_exposure_ns=0)


def elpv_subset(cell_type: str) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Learning, good and bad cells: a fixed random subset of the protocol's seed-0 split."""
    sp = anomaly_split(cell_type, seed=0)
    pick = np.random.default_rng(1)  # a fixed random subset (the data set's order groups similar cells)
    learn_imgs = [sp.learn[i].image() for i in pick.permutation(len(sp.learn))[:ELPV_LEARN]]
    good = [sp.good[i].image() for i in pick.permutation(len(sp.good))[:ELPV_TEST]]
    bad = [sp.bad[i].image() for i in pick.permutation(len(sp.bad))[:ELPV_TEST]]
    return learn_imgs, good, bad


def test_learns_real_solar_cells_and_ranks_defective_ones_first(tmp_path: Path) -> None:
    learn_imgs, good, bad = elpv_subset("mono")
    t0 = time.monotonic()
    res = learn(learn_imgs, tmp_path / "elpv.onnx", LearnSettings())
    learn_s = time.monotonic() - t0
    insp = AnomalyInspector(AnomalyInspectorConfig(model=res.path))
    sg = np.array([insp.inspect(frame(g)).image_score for g in good])
    sb = np.array([insp.inspect(frame(b)).image_score for b in bad])
    a = auroc(sg, sb)
    base = auroc(zscore_template_scores(learn_imgs, good), zscore_template_scores(learn_imgs, bad))
    print(f"ELPV mono subset: AUROC {a:.3f} (z-score template {base:.3f}); learned in {learn_s:.0f} s")
    assert a >= ELPV_FLOOR, f"AUROC {a:.3f} on real solar cells is below the floor {ELPV_FLOOR}"
    assert a > base + 0.05, f"AUROC {a:.3f} is not clearly above the plain z-score template ({base:.3f})"
    # the learned threshold holds most good parts under it (held-out cells, target 1 % + margin)
    assert (sg >= 1.0).mean() <= 0.10


def test_pretrained_features_rank_poly_cells_better_than_the_filter_bank(tmp_path: Path) -> None:
    """The shipped ImageNet backbone (models/pretrained.py) on the hard cell type: one station model, same inspector."""
    learn_imgs, good, bad = elpv_subset("poly")
    aurocs = {}
    for kind in ("filters", "pretrained"):
        res = learn(learn_imgs, tmp_path / f"{kind}.onnx", LearnSettings(features=kind))
        insp = AnomalyInspector(AnomalyInspectorConfig(model=res.path))
        assert insp.ready and insp.frame_size == (300, 300)
        sg = np.array([insp.inspect(frame(g)).image_score for g in good])
        sb = np.array([insp.inspect(frame(b)).image_score for b in bad])
        aurocs[kind] = auroc(sg, sb)
    print(f"ELPV poly subset AUROC: {aurocs}")
    assert aurocs["pretrained"] >= ELPV_POLY_FLOOR, f"pretrained AUROC {aurocs['pretrained']:.3f} below the floor"
    assert aurocs["pretrained"] > aurocs["filters"] + 0.04, f"pretrained features no better than the filters: {aurocs}"


def test_heat_map_score_and_blobs_follow_the_threshold(tmp_path: Path) -> None:
    path = anomaly_model()
    good = synthetic_good_frames(4, first=500)
    insp = AnomalyInspector(AnomalyInspectorConfig(model=path))
    assert insp.ready and insp.frame_size == (ANOMALY_CAMERA["width"], ANOMALY_CAMERA["height"])
    d = insp.inspect(frame(good[0]))
    assert d.anomaly_map is not None and d.image_score is not None  # an anomaly model's detections carry both
    h, w = d.anomaly_map.shape
    assert d.anomaly_map.dtype == np.uint8 and abs(w / h - 640 / 400) < 0.05
    # the heat map is the threshold-unit map: 128 at the threshold, and the image score is its maximum
    assert abs(int(d.anomaly_map.max()) - min(255, int(d.image_score * 128))) <= 1
    # a gross defect: a dark bar across tracks; the map there is above the threshold and becomes a box around it
    bad = good[1].copy()
    cv2.rectangle(bad, (300, 150), (340, 260), 0, -1)
    db = insp.inspect(frame(bad))
    assert db.image_score is not None and db.image_score > d.image_score
    assert len(db) >= 1 and db.names == ("anomaly",)
    x1, y1, x2, y2 = db.boxes_xyxy[0]
    assert x1 <= 340 and x2 >= 300 and y1 <= 260 and y2 >= 150, f"strongest blob {db.boxes_xyxy[0]} misses the defect"
    assert all(0 <= s <= 1 for s in db.scores) and np.all(np.diff(db.scores) <= 0)
    assert db.areas_px is not None and db.areas_px[0] > 0
    # a stricter threshold scales the map up; a lenient region over the defect scales it down
    strict = AnomalyInspector(AnomalyInspectorConfig(model=path, threshold_scale=0.5))
    assert strict.inspect(frame(bad)).image_score == pytest.approx(2 * db.image_score, rel=1e-3)
    region = AnomalyRegion(name="cosmetic", x1=0, y1=0, x2=640, y2=400, threshold_scale=4.0)
    lenient = AnomalyInspector(AnomalyInspectorConfig(model=path, regions=[region]))
    assert lenient.inspect(frame(bad)).image_score == pytest.approx(db.image_score / 4, rel=1e-3)


def good_folder(folder: Path, n: int, first: int = 0) -> Path:
    """``folder`` holding ``n`` good frames of the synthetic line as g0.png, g1.png, ..."""
    folder.mkdir()
    for i, img in enumerate(synthetic_good_frames(n, first=first)):
        cv2.imwrite(str(folder / f"g{i}.png"), img)
    return folder


def test_bad_learning_input_names_the_file_and_the_fix(tmp_path: Path) -> None:
    few = good_folder(tmp_path / "few", 3)
    with pytest.raises(AnomalyLearnError, match=r"has 3 image\(s\); at least 8 good images"):
        load_good_images(few)
    mixed = good_folder(tmp_path / "mixed", 8)
    cv2.imwrite(str(mixed / "odd.png"), np.zeros((100, 120), np.uint8))
    with pytest.raises(AnomalyLearnError, match=r"odd\.png is 120x100 but .* must come from the same camera view"):
        load_good_images(mixed)
    broken = good_folder(tmp_path / "broken", 8)
    (broken / "g3.png").write_bytes(b"not a png")
    with pytest.raises(AnomalyLearnError, match=r"cannot decode image file .*g3\.png.*remove or replace"):
        load_good_images(broken)
    # the station's own learning path (a subprocess) reports the same message as a ModelLoadError
    cfg = AnomalyInspectorConfig(model=tmp_path / "m.onnx", learn_from=few)
    with pytest.raises(ModelLoadError, match=r"learning from .*few failed: .*at least 8 good images"):
        AnomalyInspector(cfg)
    assert not (tmp_path / "m.onnx").exists()


def test_station_learns_with_the_configured_features(tmp_path: Path) -> None:
    """`features: pretrained` in the inspector config reaches the learning subprocess and the model's metadata."""
    import json

    import onnx

    folder = good_folder(tmp_path / "good", 8, first=900)
    insp = AnomalyInspector(AnomalyInspectorConfig(model=tmp_path / "p.onnx", learn_from=folder, features="pretrained"))
    assert insp.ready
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "p.onnx")).metadata_props}
    assert json.loads(meta["anomaly"])["features"] == "pretrained"


def test_wrong_model_files_are_refused_and_the_running_model_keeps_running(tmp_path: Path) -> None:
    path = anomaly_model()
    other_size = anomaly_model(camera={**ANOMALY_CAMERA, "width": 480, "height": 480})
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    yolo = tiny_model("detect")

    with pytest.raises(ModelLoadError, match="corrupt or truncated"):
        AnomalyInspector(AnomalyInspectorConfig(model=corrupt))
    with pytest.raises(ModelLoadError, match="is a detect model, not an anomaly model"):
        AnomalyInspector(AnomalyInspectorConfig(model=yolo))
    with pytest.raises(ModelLoadError, match="is an anomaly model: run it with `inspector: {type: anomaly"):
        OnnxInspector(OnnxInspectorConfig(model=path, keepalive_s=0))
    assert isinstance(inspector_for_file(yolo, None, onnx_overrides={"keepalive_s": 0}), OnnxInspector)

    running = AnomalyInspector(AnomalyInspectorConfig(model=path))
    sw = SwappableInspector(running)
    img = synthetic_good_frames(1, first=700)[0]
    before = sw.inspect(frame(img)).model_id
    done: list[Exception | None] = []
    sw.load_async(lambda: inspector_for_file(other_size, None, expect_frame_size=running.frame_size), done.append).join(
        60
    )
    assert len(done) == 1 and isinstance(done[0], ModelLoadError)
    assert "learned on 480x480 frames but this camera gives 640x400" in str(done[0])
    sw.load_async(lambda: inspector_for_file(corrupt, None), done.append).join(60)
    assert isinstance(done[1], ModelLoadError)
    assert sw.inspect(frame(img)).model_id == before  # still the running model
    # and a frame of another size never reaches the model
    with pytest.raises(Exception, match="was learned on 640x400 frames"):
        sw.inspect(frame(np.zeros((480, 480), np.uint8)))


def test_models_learn_anomaly_command_learns_and_registers(tmp_path: Path) -> None:
    import subprocess
    import sys

    from models import registry
    from station.store.db import open_db

    folder = good_folder(tmp_path / "good", 10, first=300)
    out, db_path = tmp_path / "a.onnx", tmp_path / "station.db"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "models.cli",
            "learn-anomaly",
            str(folder),
            str(out),
            "--register",
            "--db",
            str(db_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr
    assert "from 10 good images" in proc.stdout and "threshold" in proc.stdout and "registered" in proc.stdout
    db = open_db(db_path)
    try:
        (rec,) = registry.list_models(db)
        assert rec.task == "anomaly" and rec.status == "candidate" and Path(rec.path).is_file()
    finally:
        db.close()
    bad = subprocess.run(
        [sys.executable, "-m", "models.cli", "learn-anomaly", str(tmp_path / "nowhere"), str(tmp_path / "b.onnx")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert bad.returncode == 2 and "does not exist" in bad.stderr and not (tmp_path / "b.onnx").exists()
