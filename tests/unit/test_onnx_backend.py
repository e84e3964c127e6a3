"""OnnxInspector on REAL tiny Ultralytics exports, checked against Ultralytics' own predict().

The models are trained from yaml on generated shapes (tests/model_factory.py, cached on disk).
Decode correctness does not depend on the model being good: every frame is run through both
``OnnxInspector.inspect`` and ``YOLO(onnx).predict`` with the same conf/iou and the outputs must
agree; a low-conf run makes sure there is something to compare.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from station.config.inspection import OnnxInspectorConfig
from station.contracts import Detections, Frame
from station.inspection.base import INSPECTORS, Inspector, InspectorError, ModelLoadError
from station.inspection.model_meta import read_model_meta
from station.inspection.onnx_backend import OnnxInspector, choose_providers
from station.inspection.preprocess import InputTensor
from tests.model_factory import (
    CLS_NAMES,
    DET_NAMES,
    classifying_model,
    detecting_model,
    draw_scene,
    segmenting_model,
)

os.environ.setdefault("YOLO_OFFLINE", "1")
pytestmark = pytest.mark.slow  # trains tiny models on first use (cached afterwards)


@pytest.fixture(scope="session")
def det_path() -> Path:
    return detecting_model()


@pytest.fixture(scope="session")
def seg_path() -> Path:
    return segmenting_model()


@pytest.fixture(scope="session")
def cls_path() -> Path:
    return classifying_model()


_YOLO: dict[tuple[str, str], Any] = {}  # ultralytics YOLO models


def ultra(path: Path, task: str, img: np.ndarray, conf: float, iou: float, imgsz: int):
    """Ultralytics' own prediction on a BGR frame (retina masks: frame-size masks like ours)."""
    from ultralytics import YOLO

    key = (str(path), task)
    if key not in _YOLO:
        _YOLO[key] = YOLO(str(path), task=task)
    bgr = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img
    return _YOLO[key].predict(bgr, conf=conf, iou=iou, imgsz=imgsz, verbose=False, retina_masks=True, max_det=300)[0]


def with_ultralytics(
    insp: OnnxInspector, path: Path, task: str, conf: float, images: list[np.ndarray]
) -> Iterator[tuple[np.ndarray, Detections, Any]]:
    """(image, the inspector's detections, Ultralytics' result at the same conf, iou 0.5 and size 64) per image."""
    for img in images:
        yield img, insp.inspect(frame(img)), ultra(path, task, img, conf, 0.5, 64)


@pytest.fixture
def inspector() -> Iterator[Callable[..., OnnxInspector]]:
    """``inspector(path, **config)``: an inspector made by :func:`make`, closed when the test ends."""
    made: list[OnnxInspector] = []

    def _make(path: Path, **kw: Any) -> OnnxInspector:
        made.append(make(path, **kw))
        return made[-1]

    yield _make
    for insp in made:
        insp.close()


def make(path: Path, **kw) -> OnnxInspector:
    return OnnxInspector(OnnxInspectorConfig(model=path, keepalive_s=kw.pop("keepalive_s", 0.0), **kw))


def frame(img: np.ndarray, part: int = 1) -> Frame:
    return Frame(part_id=part, camera_id="cam0", image=img, t_exposure_ns=0)


def scenes(seed: int) -> list[np.ndarray]:
    """Frames of several sizes/aspects with objects sized for a 64-px model; BGR and Mono8."""
    rng = np.random.default_rng(seed)
    out = []
    for (h, w), lo, hi in (((64, 64), 8, 20), ((96, 128), 12, 30), ((200, 150), 25, 50), ((333, 500), 45, 90)):
        img, _ = draw_scene(rng, (h, w), 3, lo, hi)
        out += [img, cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)]
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter + 1e-9)


# ---------------------------------------------------------------------------- metadata


def test_metadata_read_from_the_export(det_path: Path) -> None:
    meta = read_model_meta(det_path)
    sha = hashlib.sha256(det_path.read_bytes()).hexdigest()
    assert meta.sha256 == sha
    assert meta.model_id == f"{det_path.stem}:{sha[:12]}"
    assert (meta.task, meta.names, meta.imgsz, meta.stride, meta.channels) == ("detect", DET_NAMES, (64, 64), 32, 3)
    assert not meta.end2end


def test_registry_builds_an_inspector(det_path: Path) -> None:
    insp = INSPECTORS.create(OnnxInspectorConfig(model=det_path, keepalive_s=0))
    try:
        assert isinstance(insp, OnnxInspector)
        assert isinstance(insp, Inspector)
        assert insp.ready and insp.names == DET_NAMES
    finally:
        insp.close()
    assert not insp.ready
    with pytest.raises(InspectorError, match="closed"):
        insp.inspect(frame(np.zeros((64, 64), np.uint8)))


# ---------------------------------------------------------------------------- decode == Ultralytics


@pytest.mark.parametrize("conf", [0.25, 0.01])
def test_detect_matches_ultralytics(det_path: Path, conf: float, inspector: Callable[..., OnnxInspector]) -> None:
    insp = inspector(det_path, conf=conf, iou=0.5)
    total = 0
    for img, det, ref in with_ultralytics(insp, det_path, "detect", conf, scenes(11)):
        rb = ref.boxes
        assert len(det) == len(rb), f"count differs on {img.shape}"
        np.testing.assert_array_equal(det.class_ids, rb.cls.numpy().astype(np.int32))
        np.testing.assert_allclose(det.boxes_xyxy, rb.xyxy.numpy(), atol=1.0)
        np.testing.assert_allclose(det.scores, rb.conf.numpy(), atol=1e-4)
        h, w = img.shape[:2]
        assert (det.boxes_xyxy[:, [0, 2]] >= 0).all() and (det.boxes_xyxy[:, [0, 2]] <= w).all()
        assert (det.boxes_xyxy[:, [1, 3]] >= 0).all() and (det.boxes_xyxy[:, [1, 3]] <= h).all()
        assert set(det.timings_ms) == {"preprocess", "infer", "postprocess"}
        assert det.model_id == insp.model_id and det.names == DET_NAMES
        total += len(det)
    assert total > 0, "nothing detected at all: the comparison proved nothing"


def test_detector_finds_the_drawn_objects(det_path: Path, inspector: Callable[..., OnnxInspector]) -> None:
    """The trained tiny model is a real detector (needed by the tiling test)."""
    insp = inspector(det_path, conf=0.25)
    rng = np.random.default_rng(123)
    found = n = 0
    for _ in range(12):
        img, shapes = draw_scene(rng, (64, 64), 2, 10, 20)
        det = insp.inspect(frame(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)))
        for s in shapes:
            n += 1
            found += any(iou(np.array(s.box), b) > 0.5 for b in det.boxes_xyxy)
    assert found / n >= 0.6, f"recall {found}/{n}"


def test_mono8_and_bgr_give_the_same_detections(det_path: Path, inspector: Callable[..., OnnxInspector]) -> None:
    insp = inspector(det_path, conf=0.05)
    for img in scenes(5)[::2]:
        grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        a = insp.inspect(frame(grey))
        b = insp.inspect(frame(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)))
        c = insp.inspect(frame(grey[:, :, None]))  # (H, W, 1) is Mono8 too
        for other in (b, c):
            np.testing.assert_array_equal(a.class_ids, other.class_ids)
            np.testing.assert_allclose(a.boxes_xyxy, other.boxes_xyxy, atol=1e-3)


def test_end_to_end_export_matches_ultralytics(inspector: Callable[..., OnnxInspector]) -> None:
    path = detecting_model(nms=True)
    assert read_model_meta(path).end2end
    insp = inspector(path, conf=0.05)
    total = 0
    for _, det, ref in with_ultralytics(insp, path, "detect", 0.05, scenes(3)):
        assert len(det) == len(ref.boxes)
        np.testing.assert_array_equal(det.class_ids, ref.boxes.cls.numpy().astype(np.int32))
        np.testing.assert_allclose(det.boxes_xyxy, ref.boxes.xyxy.numpy(), atol=1.0)
        total += len(det)
    assert total > 0


@pytest.mark.parametrize("conf", [0.25, 0.02])
def test_segment_matches_ultralytics(seg_path: Path, conf: float, inspector: Callable[..., OnnxInspector]) -> None:
    insp = inspector(seg_path, conf=conf, iou=0.5)
    total = 0
    for img, det, ref in with_ultralytics(insp, seg_path, "segment", conf, scenes(21)):
        assert len(det) == len(ref.boxes), f"count differs on {img.shape}"
        h, w = img.shape[:2]
        if len(det) == 0:
            assert det.masks is not None and det.masks.shape == (0, h, w)
            continue
        np.testing.assert_array_equal(det.class_ids, ref.boxes.cls.numpy().astype(np.int32))
        np.testing.assert_allclose(det.boxes_xyxy, ref.boxes.xyxy.numpy(), atol=1.0)
        assert det.masks is not None and det.masks.shape == (len(det), h, w) and det.masks.dtype == bool
        ref_masks = ref.masks.data.numpy() > 0.5
        assert ref_masks.shape == det.masks.shape
        for i in range(len(det)):
            m, r = det.masks[i], ref_masks[i]
            assert det.areas_px is not None and det.areas_px[i] == m.sum()
            inter, union = (m & r).sum(), (m | r).sum()
            # tiny masks are all boundary: the two bilinear resamplings may differ by a pixel ring
            assert inter / union > 0.8 or union < 40, f"mask {i} IoU {inter / union:.2f} on {img.shape}"
            x1, y1, x2, y2 = det.boxes_xyxy[i]
            ys, xs = np.nonzero(m)
            assert (
                xs.min() >= np.floor(x1)
                and xs.max() < np.ceil(x2)
                and ys.min() >= np.floor(y1)
                and ys.max() < np.ceil(y2)
            )
        total += len(det)
    assert total > 0, "no masks at all: the comparison proved nothing"


def test_classify_matches_ultralytics(cls_path: Path, inspector: Callable[..., OnnxInspector]) -> None:
    insp = inspector(cls_path)
    rng = np.random.default_rng(8)
    agree = 0
    assert insp.names == CLS_NAMES
    for k, (h, w) in enumerate(((64, 64), (64, 64), (64, 64), (90, 120), (200, 160), (480, 640))):
        shape = (None, 0, 1)[k % 3]  # background only, a square, a disc
        n_obj = 0 if shape is None else 1
        img, _ = draw_scene(rng, (h, w), n_obj, min(h, w) // 4, min(h, w) // 2, classes=(shape or 0,))
        img = img if k % 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        det = insp.inspect(frame(img))
        ref = ultra(cls_path, "classify", img, 0.25, 0.5, 64)
        probs = ref.probs.data.numpy()
        assert len(det) == len(CLS_NAMES)  # one full-frame entry per class, most probable first
        assert sorted(det.class_ids.tolist()) == list(range(len(CLS_NAMES))) and (np.diff(det.scores) <= 0).all()
        np.testing.assert_array_equal(det.boxes_xyxy, [[0, 0, w, h]] * len(CLS_NAMES))
        # same resize when no scaling is involved; PIL's antialiased resize vs OpenCV's otherwise
        tol = 1e-4 if (h, w) == (64, 64) else 0.05
        np.testing.assert_allclose(det.scores, probs[det.class_ids], atol=tol)
        agree += int(det.class_ids[0]) == int(ref.probs.top1)
    assert agree >= 5  # a near-tie between two classes may flip with a different resize kernel


# ---------------------------------------------------------------------------- refusals


def _refused(path: Path, *words: str) -> str:
    with pytest.raises(ModelLoadError) as ei:
        make(path)
    msg = str(ei.value)
    assert str(path) in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


def test_refuses_missing_empty_truncated_and_random_files(det_path: Path, tmp_path: Path) -> None:
    _refused(tmp_path / "nope.onnx", "does not exist")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    _refused(empty, "empty")
    data = det_path.read_bytes()
    for frac in (0.5, 0.999):
        trunc = tmp_path / f"trunc{frac}.onnx"
        trunc.write_bytes(data[: int(len(data) * frac)])
        _refused(trunc, "not a valid ONNX model", "truncated")
    rnd = tmp_path / "random.onnx"
    rnd.write_bytes(np.random.default_rng(0).integers(0, 256, 100_000, dtype=np.uint8).tobytes())
    _refused(rnd, "not a valid ONNX model")
    text = tmp_path / "text.onnx"
    text.write_text("this is a text file, not a model\n")
    _refused(text, "not a valid ONNX model")


def _tiny_onnx(path: Path, in_shape: list[int], out_shape: list[int], meta: dict[str, str] | None) -> Path:
    import onnx
    from onnx import TensorProto, helper

    shape_init = helper.make_tensor("shape", TensorProto.INT64, [len(out_shape)], out_shape)
    node = helper.make_node("Reshape", ["images", "shape"], ["output0"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, out_shape)],
        [shape_init],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, v in (meta or {}).items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    onnx.save(model, str(path))
    return path


def test_refuses_a_non_ultralytics_onnx(tmp_path: Path) -> None:
    p = _tiny_onnx(tmp_path / "plain.onnx", [1, 3, 64, 64], [1, 3, 4096], None)
    _refused(p, "not an Ultralytics export", "task", "names")


def test_refuses_wrong_input_and_output_shapes(tmp_path: Path) -> None:
    meta = {"task": "detect", "names": "{0: 'a', 1: 'b'}", "imgsz": "[64, 64]", "stride": "32", "channels": "3"}
    p = _tiny_onnx(tmp_path / "rank.onnx", [1, 12288], [1, 6, 2048], meta)
    _refused(p, "rank 4")
    p = _tiny_onnx(tmp_path / "chan.onnx", [1, 4, 64, 64], [1, 8, 2048], meta)
    _refused(p, "channels")
    p = _tiny_onnx(tmp_path / "out.onnx", [1, 3, 64, 64], [1, 3, 4096], meta)
    _refused(p, "output0 must be (N, 6, anchors)")
    p = _tiny_onnx(tmp_path / "size.onnx", [1, 3, 32, 128], [1, 6, 2048], meta)
    _refused(p, "imgsz")


def test_refuses_an_ultralytics_model_whose_metadata_does_not_fit(det_path: Path, tmp_path: Path) -> None:
    import onnx

    def variant(name: str, **changes: str) -> Path:
        m = onnx.load(str(det_path))
        for p in m.metadata_props:
            if p.key in changes:
                p.value = changes[p.key]
        out = tmp_path / name
        onnx.save(m, str(out))
        return out

    _refused(variant("nc.onnx", names="{0: 'a', 1: 'b', 2: 'c'}"), "output0 must be (N, 7, anchors)")
    _refused(variant("seg.onnx", task="segment"), "expected 2 output(s)")
    _refused(variant("cls.onnx", task="classify"), "classify model must have one output")
    _refused(variant("pose.onnx", task="pose"), "'pose' is not supported")
    _refused(variant("names.onnx", names="{0: 'a', 2: 'b'}"), "names")
    _refused(variant("imgsz.onnx", imgsz="[64, 96]"), "imgsz")


def test_refuses_external_data(det_path: Path, tmp_path: Path) -> None:
    import onnx

    m = onnx.load(str(det_path))
    out = tmp_path / "ext.onnx"
    onnx.save_model(
        m, str(out), save_as_external_data=True, all_tensors_to_one_file=True, location="ext.data", size_threshold=1024
    )
    assert (tmp_path / "ext.data").exists()
    _refused(out, "external data", "self-contained")


def test_a_refused_load_leaves_a_running_inspector_alone(det_path: Path, tmp_path: Path) -> None:
    insp = make(det_path, conf=0.05)
    img = scenes(1)[0]
    before = insp.inspect(frame(img))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(det_path.read_bytes()[:1000])
    with pytest.raises(ModelLoadError):
        make(bad)
    after = insp.inspect(frame(img))
    np.testing.assert_allclose(before.boxes_xyxy, after.boxes_xyxy)
    insp.close()


# ---------------------------------------------------------------------------- runtime behaviour


def test_bad_frames_raise_inspector_error(det_path: Path, inspector: Callable[..., OnnxInspector]) -> None:
    insp = inspector(det_path)
    for bad in (np.zeros((64, 64), np.float32), np.zeros((64, 64, 4), np.uint8), np.zeros((1, 64), np.uint8)):
        with pytest.raises(InspectorError, match="cam0"):
            insp.inspect(frame(bad))


def test_unavailable_providers_are_skipped_and_cpu_appended(det_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert choose_providers(["XYZExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"]) == [
        "CPUExecutionProvider"
    ]
    assert choose_providers(["A", "B"], ["B", "CPUExecutionProvider"]) == ["B", "CPUExecutionProvider"]
    with caplog.at_level(logging.INFO, logger="station.inspection.onnx_backend"):
        insp = make(det_path, providers=["TensorrtExecutionProvider", "CUDAExecutionProvider"])
    try:
        assert insp.providers == ["CPUExecutionProvider"]
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("TensorrtExecutionProvider" in m for m in warned) and any(
            "CUDAExecutionProvider" in m for m in warned
        )
        info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "runs on" in r.getMessage()]
        assert len(info) == 1 and "CPUExecutionProvider" in info[0] and insp.model_id in info[0]
    finally:
        insp.close()


def test_keepalive_runs_when_idle_not_while_busy_and_stops_on_close(det_path: Path) -> None:
    insp = make(det_path, keepalive_s=0.3)
    try:
        assert insp._keepalive is not None and insp._keepalive.is_alive()
        img = scenes(2)[1]
        # busy: parts closer together than the keep-alive period -> no dummy run
        start = insp.keepalive_runs
        t_end = time.monotonic() + 1.0
        while time.monotonic() < t_end:
            insp.inspect(frame(img))
        assert insp.keepalive_runs == start
        # idle: it runs (about every 0.3 s)
        deadline = time.monotonic() + 10
        while insp.keepalive_runs < start + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert insp.keepalive_runs >= start + 2
    finally:
        insp.close()
    assert not insp._keepalive.is_alive()
    n = insp.keepalive_runs
    time.sleep(0.7)
    assert insp.keepalive_runs == n


def test_keepalive_never_runs_during_a_part(det_path: Path) -> None:
    """Hammer inspect() from a thread right at the keep-alive period: every part is served, none overlap."""
    insp = make(det_path, keepalive_s=0.02)
    active = threading.Semaphore(1)
    overlaps = []
    original_run = insp._run

    def guarded_run(tensor: np.ndarray):
        # counts concurrent session runs (keep-alive and parts both go through _run)
        if not active.acquire(blocking=False):
            overlaps.append(1)
            return original_run(tensor)
        try:
            return original_run(tensor)
        finally:
            active.release()

    insp._run = guarded_run  # type: ignore[method-assign]
    img = scenes(2)[0]
    try:
        for i in range(40):
            insp.inspect(frame(img, i))
            time.sleep(0.03 if i % 2 else 0.0)
    finally:
        insp.close()
    assert insp.keepalive_runs > 0 and not overlaps


def test_preprocess_equals_ultralytics_letterbox() -> None:
    from ultralytics.data.augment import LetterBox

    rng = np.random.default_rng(0)
    for shape, dst in (
        ((1024, 1280), (640, 640)),
        ((333, 500, 3), (64, 64)),
        ((50, 70), (64, 96)),
        ((2048, 2448, 3), (320, 320)),
    ):
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        t = InputTensor(dst)
        lb = t.letterbox(img)
        t.letterbox(img)  # second call reuses the buffers and the padding
        bgr = img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        # LetterBox.__call__ is annotated to return the labels dict; given only an image it returns the image
        ref = LetterBox(dst, auto=False)(image=bgr)[..., ::-1].transpose(2, 0, 1).astype(np.float32) / 255  # type: ignore[index]
        np.testing.assert_allclose(t.tensor[0], ref, atol=1e-6)
        assert lb.new_w <= dst[1] and lb.new_h <= dst[0]
