"""The reference (golden template) inspector on real rendered parts: learn, inspect, save, load.

Recall and false-reject figures are measured the way the station decides by
default: a part is rejected when one detection reaches the default rule's
``reject_conf``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from station.acquire.synthetic import SyntheticCamera
from station.config import ReferenceInspectorConfig, SyntheticCameraConfig
from station.config.rules import ClassRule
from station.contracts import Detections, Frame, Trigger
from station.inspection.base import INSPECTORS, Inspector, InspectorError, ModelLoadError
from station.inspection.reference import NAMES, ReferenceInspector

REJECT_CONF = ClassRule().reject_conf
LEARN_IDS = range(0, 20)
TEST_IDS = range(1000, 1060)


def _trigger(part_id: int) -> Trigger:
    return Trigger(part_id=part_id, seq=part_id, t_trigger_ns=time.monotonic_ns())


def _camera(product: str, defect_rate: float, seed: int = 7, **kw: object) -> SyntheticCamera:
    cam = SyntheticCamera(SyntheticCameraConfig(product=product, defect_rate=defect_rate, seed=seed, **kw))  # type: ignore[arg-type]
    cam.open()
    return cam


def _learned(product: str, **cfg: object) -> ReferenceInspector:
    insp = ReferenceInspector(ReferenceInspectorConfig(**cfg))  # type: ignore[arg-type]
    cam = _camera(product, 0.0)
    for pid in LEARN_IDS:
        assert not insp.ready
        insp.learn(cam.grab(_trigger(pid), 1.0))
    assert insp.ready and insp.learned == len(LEARN_IDS)
    return insp


def _overlap(a: tuple[float, ...] | np.ndarray, b: tuple[float, ...] | np.ndarray) -> tuple[float, float]:
    """IoU and containment (intersection over the smaller box)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    ua = (a[2] - a[0]) * (a[3] - a[1])
    ub = (b[2] - b[0]) * (b[3] - b[1])
    return inter / (ua + ub - inter), inter / max(min(ua, ub), 1e-9)


@dataclass
class Run:
    frames: list[Frame]
    dets: list[Detections]


@pytest.fixture(scope="module", params=["machined", "pcb"])
def run(request: pytest.FixtureRequest) -> tuple[ReferenceInspector, Run]:
    """Learn from 20 good parts, inspect 60 parts of which about half are defective."""
    insp = _learned(request.param)
    cam = _camera(request.param, 0.5)
    frames = [cam.grab(_trigger(pid), 1.0) for pid in TEST_IDS]
    return insp, Run(frames, [insp.inspect(f) for f in frames])


def test_recall_and_false_rejects_on_sixty_parts(run: tuple[ReferenceInspector, Run]) -> None:
    _, r = run
    rejected = [bool(len(d)) and float(d.scores.max()) >= REJECT_CONF for d in r.dets]
    defective = [bool(f.meta["defective"]) for f in r.frames]
    n_def = sum(defective)
    assert 20 <= n_def <= 40  # the line really mixes good and bad parts
    recall = sum(rj for rj, df in zip(rejected, defective) if df) / n_def
    false_reject = sum(rj for rj, df in zip(rejected, defective) if not df) / (len(defective) - n_def)
    # measured: recall 1.0 (machined) / 1.0 (pcb), false rejects 0.0 / 0.0 with seed 7
    assert recall >= 0.9, recall
    assert false_reject <= 0.05, false_reject


def test_boxes_overlap_the_truth_and_classes_mostly_match(run: tuple[ReferenceInspector, Run]) -> None:
    _, r = run
    truths = matched = same_class = 0
    stray = flagged = 0
    for f, d in zip(r.frames, r.dets):
        boxes = [t["box_xyxy"] for t in f.meta["truth"]]
        for t in f.meta["truth"]:
            truths += 1
            overlaps = [_overlap(t["box_xyxy"], d.boxes_xyxy[k]) for k in range(len(d))]
            hits = [k for k, (iou, cont) in enumerate(overlaps) if iou >= 0.1 or cont >= 0.5]
            if hits:
                matched += 1
                same_class += any(d.names[d.class_ids[k]] == t["class_name"] for k in hits)
        for k in range(len(d)):
            if d.scores[k] >= REJECT_CONF:
                flagged += 1
                stray += not any(_overlap(b, d.boxes_xyxy[k])[0] > 0 for b in boxes)
    assert matched / truths >= 0.95, (matched, truths)
    assert same_class / matched >= 0.8, (same_class, matched)
    assert stray <= 0.05 * flagged, (stray, flagged)  # rejecting detections sit on real defects


def test_detections_follow_the_contract(run: tuple[ReferenceInspector, Run]) -> None:
    insp, r = run
    for f, d in zip(r.frames, r.dets):
        assert d.names == NAMES == insp.names
        assert d.model_id == insp.model_id and d.model_id.startswith("reference:")
        assert d.boxes_xyxy.dtype == np.float32 and d.boxes_xyxy.shape == (len(d), 4)
        assert d.scores.dtype == np.float32 and d.class_ids.dtype == np.int32
        assert d.areas_px is not None and (d.areas_px >= insp.cfg.min_blob_px).all()
        assert ((d.scores >= 0) & (d.scores <= 1)).all()
        assert (np.diff(d.scores) <= 0).all()  # best first
        h, w = f.image.shape
        b = d.boxes_xyxy
        assert ((b[:, 0] >= 0) & (b[:, 2] <= w) & (b[:, 1] >= 0) & (b[:, 3] <= h) & (b[:, 0] < b[:, 2])).all()
        assert set(d.timings_ms) == {"preprocess", "infer", "postprocess"}


def test_not_ready_until_learned_and_defective_frames_are_skipped() -> None:
    insp = ReferenceInspector(ReferenceInspectorConfig(learn_parts=3))
    bad_cam = _camera("machined", 1.0)
    frame = bad_cam.grab(_trigger(1), 1.0)
    with pytest.raises(InspectorError, match="still learning"):
        insp.inspect(frame)
    for pid in range(5):
        insp.learn(bad_cam.grab(_trigger(pid), 1.0))
    assert not insp.ready and insp.skipped == 5 and insp.learned == 0
    keep_all = ReferenceInspector(ReferenceInspectorConfig(learn_parts=3, learn_only_good=False))
    for pid in range(3):
        keep_all.learn(bad_cam.grab(_trigger(pid), 1.0))
    assert keep_all.ready


def test_save_and_load_give_identical_detections(tmp_path: Path, run: tuple[ReferenceInspector, Run]) -> None:
    insp, r = run
    path = insp.save(tmp_path / "tpl" / "template.npz")
    loaded = ReferenceInspector.load(path, insp.cfg)
    from_cfg = ReferenceInspector(insp.cfg.model_copy(update={"template_path": path}))
    assert loaded.ready and from_cfg.ready
    assert loaded.model_id == from_cfg.model_id == insp.model_id
    for f, d in zip(r.frames[:15], r.dets[:15]):
        for other in (loaded, from_cfg):
            e = other.inspect(f)
            assert np.array_equal(e.boxes_xyxy, d.boxes_xyxy)
            assert np.array_equal(e.scores, d.scores)
            assert np.array_equal(e.class_ids, d.class_ids)
            assert np.array_equal(e.areas_px, d.areas_px)  # type: ignore[arg-type]


def test_learning_from_the_line_writes_the_template_for_the_next_start(tmp_path: Path) -> None:
    path = tmp_path / "auto.npz"
    insp = _learned("pcb", template_path=path)
    assert path.exists()
    restarted = ReferenceInspector(ReferenceInspectorConfig(template_path=path))
    assert restarted.ready and restarted.model_id == insp.model_id


def test_learn_from_a_folder_of_good_images(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    cam = _camera("machined", 0.0, seed=3)
    for pid in range(12):
        cv2.imwrite(str(good / f"part_{pid:03d}.png"), cam.grab(_trigger(pid), 1.0).image)
    insp = ReferenceInspector(ReferenceInspectorConfig(learn_from=good))
    assert insp.ready and insp.learned == 12
    bad = _camera("machined", 1.0, seed=3)
    found = 0
    for pid in range(100, 110):
        f = bad.grab(_trigger(pid), 1.0)
        d = insp.inspect(f)
        found += bool(len(d)) and float(d.scores.max()) >= REJECT_CONF
    assert found >= 9
    ok = _camera("machined", 0.0, seed=3)
    passed = [len(insp.inspect(ok.grab(_trigger(pid), 1.0))) == 0 for pid in range(200, 210)]
    assert sum(passed) >= 9


def test_learn_from_a_bad_folder_names_it(tmp_path: Path) -> None:
    empty = tmp_path / "no_images"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="no_images"):
        ReferenceInspector(ReferenceInspectorConfig(learn_from=empty))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    cv2.imwrite(str(mixed / "a.png"), np.full((100, 200), 90, np.uint8))
    cv2.imwrite(str(mixed / "b.png"), np.full((120, 200), 90, np.uint8))
    with pytest.raises(ModelLoadError, match="b.png"):
        ReferenceInspector(ReferenceInspectorConfig(learn_from=mixed))


def test_bad_template_files_are_refused_naming_the_file(tmp_path: Path, run: tuple[ReferenceInspector, Run]) -> None:
    insp, _ = run
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ModelLoadError, match="junk.npz"):
        ReferenceInspector(ReferenceInspectorConfig(template_path=junk))
    path = insp.save(tmp_path / "t.npz")
    with pytest.raises(ModelLoadError, match="scale"):
        ReferenceInspector(ReferenceInspectorConfig(template_path=path, scale=0.25))


def test_wrong_frame_size_is_an_inspector_error(run: tuple[ReferenceInspector, Run]) -> None:
    insp, _ = run
    small = Frame(part_id=1, camera_id="cam0", image=np.zeros((480, 640), np.uint8), t_exposure_ns=0)
    with pytest.raises(InspectorError, match="640x480.*1280x800"):
        insp.inspect(small)


def test_no_part_in_view_is_never_a_pass(run: tuple[ReferenceInspector, Run]) -> None:
    insp, _ = run
    belt = Frame(part_id=1, camera_id="cam0", image=np.full((800, 1280), 50, np.uint8), t_exposure_ns=0)
    d = insp.inspect(belt)
    assert len(d) and float(d.scores.max()) >= REJECT_CONF


def test_colour_frames_are_inspected_like_mono(run: tuple[ReferenceInspector, Run]) -> None:
    insp, r = run
    f = r.frames[0]
    bgr = Frame(f.part_id, f.camera_id, cv2.cvtColor(f.image, cv2.COLOR_GRAY2BGR), f.t_exposure_ns, f.meta)
    d = insp.inspect(bgr)
    assert np.array_equal(d.boxes_xyxy, r.dets[0].boxes_xyxy)


def test_harmless_marks_are_flagged_by_the_reference_model() -> None:
    """The template knows no 'harmless': an ink mark is an anomaly (what a trained model must learn to ignore)."""
    insp = _learned("machined")
    cam = _camera("machined", 0.0, harmless_mark_rate=1.0)
    hits = 0
    for pid in range(300, 315):
        f = cam.grab(_trigger(pid), 1.0)
        d = insp.inspect(f)
        mark = f.meta["marks"][0]["box_xyxy"]
        hits += any(_overlap(mark, d.boxes_xyxy[k])[0] > 0 and d.scores[k] >= REJECT_CONF for k in range(len(d)))
    assert hits >= 13


def test_registry_warmup_and_protocol() -> None:
    insp = INSPECTORS.create(ReferenceInspectorConfig(learn_parts=2), camera_ids=("cam0",))
    assert isinstance(insp, ReferenceInspector) and isinstance(insp, Inspector)
    insp.warmup()  # not ready: nothing to do
    cam = _camera("pcb", 0.0)
    for pid in range(2):
        insp.learn(cam.grab(_trigger(pid), 1.0))
    insp.warmup()
    insp.close()


def test_small_frames_and_few_learning_parts() -> None:
    """640x400 frames, 5 learning parts (the lead's integration settings): good parts pass, bad ones are found."""
    insp = ReferenceInspector(ReferenceInspectorConfig(learn_parts=5))
    good = _camera("pcb", 0.0, seed=3, width=640, height=400)
    pid = 0
    while not insp.ready:
        insp.learn(good.grab(_trigger(pid), 1.0))
        pid += 1
    uncertain = ClassRule().uncertain_conf
    flagged_good = sum(
        float(insp.inspect(good.grab(_trigger(p), 1.0)).scores.max(initial=0)) >= uncertain for p in range(100, 130)
    )
    bad = _camera("pcb", 1.0, seed=3, width=640, height=400)
    found = sum(
        float(insp.inspect(bad.grab(_trigger(p), 1.0)).scores.max(initial=0)) >= REJECT_CONF for p in range(100, 130)
    )
    # measured: 0 good parts flagged, 27/30 defective found (the smallest spots are ~2 px at working scale)
    assert flagged_good == 0
    assert found >= 24
