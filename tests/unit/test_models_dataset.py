"""Synthetic training datasets and frozen golden sets (models.dataset, models.golden), on real rendered parts."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from models.dataset import (
    NAMES,
    TEST_START,
    VAL_START,
    DatasetError,
    TrainView,
    dataset_snapshot,
    make_golden_set,
    make_synthetic_dataset,
)
from models.golden import GoldenSetError, freeze_split, load_golden, parse_label_file
from station.acquire.synthetic import iter_parts
from station.config import SyntheticCameraConfig

CAM = SyntheticCameraConfig(width=640, height=400, defect_rate=0.6, harmless_mark_rate=0.2)


def _labels(path: Path) -> list[list[float]]:
    return [[float(v) for v in ln.split()] for ln in path.read_text().splitlines() if ln.strip()]


def test_dataset_labels_are_the_renderer_truth(tmp_path: Path) -> None:
    data = make_synthetic_dataset(tmp_path / "ds", 6, 3, seed=41, camera_cfg=CAM, n_test=2, min_box_px=0)
    cfg = yaml.safe_load(data.read_text())
    assert cfg["names"] == dict(enumerate(NAMES))
    assert (cfg["train"], cfg["val"], cfg["test"]) == ("images/train", "images/val", "images/test")
    root = data.parent
    seeded = CAM.model_copy(update={"seed": 41})
    for split, start, n in (("train", 0, 6), ("val", VAL_START, 3), ("test", TEST_START, 2)):
        for part_id, part in iter_parts(seeded, start, n):
            stem = f"{split}_{part_id:08d}"
            img = cv2.imread(str(root / "images" / split / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
            assert img is not None
            assert np.array_equal(img, part.image)  # exactly the camera's frame
            rows = _labels(root / "labels" / split / f"{stem}.txt")
            assert len(rows) == len(part.truth)  # marks are not labelled
            for row, t in zip(rows, part.truth):
                x1, y1, x2, y2 = t.box_xyxy
                assert int(row[0]) == NAMES.index(t.class_name)
                assert row[1:] == pytest.approx(
                    [(x1 + x2) / 2 / 640, (y1 + y2) / 2 / 400, (x2 - x1) / 640, (y2 - y1) / 400], abs=2e-6
                )
    manifest = json.loads((root / "dataset.json").read_text())
    counts = manifest["counts"]
    assert counts["train"]["images"] == 6 and counts["val"]["images"] == 3 and counts["test"]["images"] == 2
    assert 0 < counts["train"]["defective"] < 6  # negatives are kept, with empty label files
    empty = [p for p in (root / "labels" / "train").glob("*.txt") if p.read_text() == ""]
    assert len(empty) == 6 - counts["train"]["defective"]


def test_dataset_is_reproducible_and_splits_never_share_parts(tmp_path: Path) -> None:
    a = make_synthetic_dataset(tmp_path / "a", 4, 2, seed=9, camera_cfg=CAM)
    b = make_synthetic_dataset(tmp_path / "b", 4, 2, seed=9, camera_cfg=CAM)
    c = make_synthetic_dataset(tmp_path / "c", 4, 2, seed=10, camera_cfg=CAM)
    assert dataset_snapshot(a) == dataset_snapshot(b) != dataset_snapshot(c)
    stems = {s: {p.stem.split("_")[1] for p in (a.parent / "images" / s).glob("*.png")} for s in ("train", "val")}
    assert stems["train"].isdisjoint(stems["val"])
    # same parameters on the same folder: reused, not rewritten
    mtime = (a.parent / "dataset.json").stat().st_mtime_ns
    assert make_synthetic_dataset(tmp_path / "a", 4, 2, seed=9, camera_cfg=CAM) == a
    assert (a.parent / "dataset.json").stat().st_mtime_ns == mtime
    with pytest.raises(DatasetError, match="not empty"):
        make_synthetic_dataset(tmp_path / "a", 5, 2, seed=9, camera_cfg=CAM)


def test_train_view_resizes_like_the_letterbox_and_crops_around_the_part(tmp_path: Path) -> None:
    cam = SyntheticCameraConfig(defect_rate=1.0)  # 1280x800
    view = TrainView(input_hw=(416, 640), crop=384)
    data = make_synthetic_dataset(tmp_path / "v", 5, 1, seed=3, camera_cfg=cam, view=view, min_box_px=0)
    root = data.parent
    seeded = cam.model_copy(update={"seed": 3})
    n_boxes = 0
    for part_id, part in iter_parts(seeded, 0, 5):
        img = cv2.imread(str(root / "images" / "train" / f"train_{part_id:08d}.png"), cv2.IMREAD_UNCHANGED)
        assert img is not None
        assert img.shape == (384, 384)
        half = cv2.resize(part.image, (640, 400), interpolation=cv2.INTER_LINEAR)
        # the crop is a window of the half-scale frame near its centre
        res = cv2.matchTemplate(half, img, cv2.TM_SQDIFF)
        _, _, (x0, y0), _ = cv2.minMaxLoc(res)
        assert np.array_equal(half[y0 : y0 + 384, x0 : x0 + 384], img)
        assert abs(x0 - 128) <= 0.12 * 384 + 1 and 0 <= y0 <= 16
        rows = _labels(root / "labels" / "train" / f"train_{part_id:08d}.txt")
        for row in rows:  # every label box is inside the crop and is a truth box at half scale, shifted
            cx, cy, w, h = (v * 384 for v in row[1:])
            assert cx - w / 2 >= 0 and cx + w / 2 <= 384 + 1e-3
            fx1, fy1 = (cx - w / 2 + x0) * 2, (cy - h / 2 + y0) * 2
            assert any(
                abs(fx1 - max(t.box_xyxy[0], x0 * 2)) < 1.5 and abs(fy1 - max(t.box_xyxy[1], y0 * 2)) < 1.5
                for t in part.truth
            )
        n_boxes += len(rows)
    assert n_boxes >= 5


def test_small_and_thin_boxes_are_grown_to_the_labelling_minimum(tmp_path: Path) -> None:
    data = make_synthetic_dataset(tmp_path / "m", 12, 1, seed=8, camera_cfg=CAM, min_box_px=32)
    seeded = CAM.model_copy(update={"seed": 8})
    grown = 0
    for part_id, part in iter_parts(seeded, 0, 12):
        rows = _labels(data.parent / "labels" / "train" / f"train_{part_id:08d}.txt")
        for row, t in zip(rows, part.truth):
            x1, y1, x2, y2 = t.box_xyxy
            cx, cy, w, h = row[1] * 640, row[2] * 400, row[3] * 640, row[4] * 400
            # at least 32 px (unless clipped by the frame edge), never smaller than the truth, same centre when not
            # clipped
            assert w >= min(32.0, 640.0) - 1e-3 or cx - w / 2 <= 1e-3 or cx + w / 2 >= 640 - 1e-3
            assert w >= (x2 - x1) - 1e-3 and h >= (y2 - y1) - 1e-3
            assert (
                cx - w / 2 <= x1 + 1e-3
                and cx + w / 2 >= x2 - 1e-3
                and cy - h / 2 <= y1 + 1e-3
                and cy + h / 2 >= y2 - 1e-3
            )
            grown += (x2 - x1) < 32 or (y2 - y1) < 32
    assert grown > 0
    assert json.loads((data.parent / "dataset.json").read_text())["min_box_px"] == 32.0


def test_golden_set_is_frozen(tmp_path: Path) -> None:
    gs = make_golden_set(tmp_path / "g", 6, seed=5, camera_cfg=CAM)
    assert len(gs) == 6 and gs.names == NAMES
    again = load_golden(tmp_path / "g")
    assert again.golden_id == gs.golden_id
    assert make_golden_set(tmp_path / "g", 6, seed=5, camera_cfg=CAM).golden_id == gs.golden_id
    with pytest.raises(DatasetError, match="different golden set"):
        make_golden_set(tmp_path / "g", 6, seed=6, camera_cfg=CAM)
    lab = next(p for p in sorted((tmp_path / "g" / "labels").glob("*.txt")))
    lab.write_text(lab.read_text() + "0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(GoldenSetError, match=r"1 changed \(labels/"):
        load_golden(tmp_path / "g")
    (tmp_path / "g" / "images" / "extra.png").write_bytes(b"x")
    with pytest.raises(GoldenSetError, match="added"):
        load_golden(tmp_path / "g")
    with pytest.raises(GoldenSetError, match="golden.json missing"):
        load_golden(tmp_path)


def test_freeze_split_copies_a_yolo_split(tmp_path: Path) -> None:
    data = make_synthetic_dataset(tmp_path / "ds", 2, 2, seed=1, camera_cfg=CAM, n_test=3)
    gs = freeze_split(data, "test", tmp_path / "golden")
    assert len(gs) == 3 and gs.source["split"] == "test"
    item = gs.items[0]
    img = cv2.imread(str(item.image_path), cv2.IMREAD_UNCHANGED)
    assert img is not None
    ids, boxes = parse_label_file(data.parent / "labels" / "test" / f"{item.stem}.txt", 3)
    assert np.array_equal(ids, item.class_ids) and np.allclose(boxes, item.boxes_cxcywh)
    assert item.boxes_xyxy(img.shape[1], img.shape[0]).shape == (len(ids), 4)
    with pytest.raises(GoldenSetError, match="never overwritten"):
        freeze_split(data, "test", tmp_path / "golden")
    with pytest.raises(GoldenSetError, match="no 'nope' split"):
        freeze_split(data, "nope", tmp_path / "g2")


def test_bad_label_lines_name_the_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "x.txt"
    p.write_text("0 0.5 0.5 0.1 0.1\n1 0.5 0.5 0.1\n")
    with pytest.raises(GoldenSetError, match=r"x.txt:2: expected 5 numbers"):
        parse_label_file(p, 3)
    p.write_text("7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(GoldenSetError, match=r"x.txt:1: class 7 is outside 0..2"):
        parse_label_file(p, 3)
