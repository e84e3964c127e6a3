"""Speed work of issue 11: the OpenVINO runtime, the vectorised NMS, INT8 candidates through the gate, export parity.

Real parts only: cached tiny Ultralytics models (tests/model_factory.py) run by onnxruntime and
OpenVINO, NNCF quantisation, real SQLite registries, OpenCV's own NMS as the NMS reference.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from pydantic import ValidationError

from labeling.queue import iou as box_iou
from models import registry
from models.evaluate import evaluate
from models.export import export_onnx
from models.parity import ParityError, check_parity
from models.quantize import QuantizeError, head_fp32_patterns, quantize_int8
from models.registry import PromotionRefused
from station.config import ConfigError, parse_config
from station.config.inspection import OnnxInspectorConfig
from station.contracts import Frame
from station.inspection.model_meta import read_model_meta
from station.inspection.onnx_backend import OnnxInspector
from station.inspection.postprocess import decode_yolo, nms_per_class
from station.inspection.runtime import resolve_runtime
from station.store.db import open_db
from tests.fixtures_models_web import write_golden
from tests.model_factory import DETECTING, detecting_model, draw_scene, segmenting_model, tiny_model, trained_weights

pytest.importorskip("openvino")
pytest.importorskip("nncf")


def _frames(n: int, hw: tuple[int, int] = (96, 128)) -> list[Frame]:
    rng = np.random.default_rng(11)
    out = []
    for i in range(n):
        img, _ = draw_scene(rng, hw, 3, 8, 30)
        out.append(Frame(part_id=i, camera_id="cam0", image=cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), t_exposure_ns=0))
    return out


def _insp(model: Path, runtime: str, **kw: object) -> OnnxInspector:
    return OnnxInspector(OnnxInspectorConfig(model=model, runtime=runtime, keepalive_s=0, conf=0.05, **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize("make", [detecting_model, segmenting_model], ids=["detect", "segment"])
def test_openvino_gives_the_same_detections_as_onnxruntime(make) -> None:
    model = make()
    ort_i, ov_i = _insp(model, "onnxruntime"), _insp(model, "openvino")
    try:
        assert (
            ov_i.providers == ["openvino:CPU:f32"] and ov_i.session is None
        )  # precision set explicitly, never bf16 silently
        assert ort_i.providers == ["CPUExecutionProvider"]
        found = 0
        for f in _frames(6):
            a, b = ort_i.inspect(f), ov_i.inspect(f)
            assert len(a) == len(b), f"part {f.part_id}: onnxruntime {len(a)} detections, openvino {len(b)}"
            np.testing.assert_array_equal(a.class_ids, b.class_ids)
            np.testing.assert_allclose(a.scores, b.scores, atol=2e-3)
            np.testing.assert_allclose(a.boxes_xyxy, b.boxes_xyxy, atol=0.5)
            if len(a) and a.masks is not None:
                assert b.masks is not None and np.mean(a.masks != b.masks) < 0.01
            found += len(a)
        assert found > 0  # the comparison saw real detections
    finally:
        ort_i.close()
        ov_i.close()


def test_runtime_choice_and_config_errors_name_the_field() -> None:
    assert resolve_runtime(OnnxInspectorConfig(runtime="auto")) == "openvino"  # installed here
    assert resolve_runtime(OnnxInspectorConfig(runtime="auto", providers=["CUDAExecutionProvider"])) == "onnxruntime"
    assert resolve_runtime(OnnxInspectorConfig(runtime="onnxruntime")) == "onnxruntime"
    with pytest.raises(ValidationError, match=r"runtime\n.*'auto', 'onnxruntime' or 'openvino'"):
        OnnxInspectorConfig(runtime="tensorrt")  # type: ignore[arg-type]  # the wrong value under test
    with pytest.raises(ValidationError, match=r"precision\n.*'f32', 'bf16' or 'f16'"):
        OnnxInspectorConfig(precision="int8")  # type: ignore[arg-type]  # the wrong value under test
    with pytest.raises(
        ConfigError,
        match=r"inspector\.onnx\.runtime: Input should be 'auto', 'onnxruntime' or 'openvino' \(got 'openvin'\)",
    ):
        parse_config({"inspector": {"type": "onnx", "runtime": "openvin"}})
    with pytest.raises(ConfigError, match=r"inspector\.onnx\.precison"):
        parse_config({"inspector": {"type": "onnx", "precison": "f32"}})


def test_vectorised_nms_equals_opencv_at_any_candidate_count() -> None:
    rng = np.random.default_rng(5)
    for trial, n in enumerate([2, 3, 40, 127, 128, 129, 600, 2500]):
        centre = rng.uniform(280, 360, (n, 2)) if trial % 2 else rng.uniform(0, 640, (n, 2))
        wh = rng.uniform(4, 120, (n, 2))
        boxes = np.concatenate([centre - wh / 2, centre + wh / 2], 1).astype(np.float32)
        scores = rng.uniform(0, 1, n).astype(np.float32)
        scores[: n // 4] = scores[n // 2 : n // 2 + n // 4]  # ties
        cls = rng.integers(0, 3, n).astype(np.int32)
        xywh = boxes.astype(np.float64)
        xywh[:, 2:] -= xywh[:, :2]
        ref = np.asarray(
            cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(), cls.tolist(), 0.0, 0.5), np.int64
        ).reshape(-1)
        ref = ref[np.argsort(-scores[ref], kind="stable")]
        got = nms_per_class(boxes, scores, cls, 0.5)
        assert set(got.tolist()) == set(ref.tolist()), f"{n} boxes: kept sets differ"
        np.testing.assert_array_equal(scores[got], scores[ref])
        np.testing.assert_array_equal(nms_per_class(boxes, scores, cls, 0.5, max_det=7), got[:7])


def _greedy_nms(boxes: np.ndarray, scores: np.ndarray, cls: np.ndarray, iou: float) -> list[int]:
    """The textbook greedy per-class NMS, one box at a time (the reference for the prefix passes)."""
    kept: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        box = boxes[i].astype(np.float64).tolist()
        if not any(cls[j] == cls[i] and box_iou(boxes[j].astype(np.float64).tolist(), box) > iou for j in kept):
            kept.append(int(i))
    return kept


def test_nms_reads_more_candidates_when_the_best_ones_overlap() -> None:
    """Most of the best boxes suppress each other: the prefix passes must widen until max_det are kept."""
    rng = np.random.default_rng(11)
    for n, max_det in [(900, 50), (3000, 300), (400, 1), (257, None)]:
        crowd = n * 2 // 3  # the best scores on near-copies of one box; the rest spread out
        centre = np.concatenate([rng.uniform(318, 322, (crowd, 2)), rng.uniform(0, 640, (n - crowd, 2))])
        wh = np.concatenate([rng.uniform(60, 62, (crowd, 2)), rng.uniform(4, 40, (n - crowd, 2))])
        boxes = np.concatenate([centre - wh / 2, centre + wh / 2], 1).astype(np.float32)
        scores = np.concatenate([rng.uniform(0.5, 1, crowd), rng.uniform(0, 0.5, n - crowd)]).astype(np.float32)
        cls = rng.integers(0, 2, n).astype(np.int32)
        want = _greedy_nms(boxes, scores, cls, 0.6)[:max_det]
        assert nms_per_class(boxes, scores, cls, 0.6, max_det).tolist() == want, f"{n} boxes, max_det {max_det}"


@pytest.mark.parametrize("nc", [1, 3, 9])
def test_decode_gives_the_best_class_and_corner_boxes_with_every_anchor_or_a_subset(nc: int) -> None:
    """decode_yolo against a plain transpose + argmax + xywh->xyxy decode, at conf 0 (every anchor a
    candidate: no gather) and with one more anchor below conf (the gathered subset)."""
    rng = np.random.default_rng(nc)
    n = 3000
    out = np.empty((4 + nc, n), np.float32)
    out[0:2] = rng.uniform(0, 640, (2, n))
    out[2:4] = rng.uniform(4, 80, (2, n))
    out[4:] = rng.uniform(0.001, 1, (nc, n))
    if nc > 1:
        out[4 + nc - 1, ::5] = out[4, ::5]  # ties between the first and the last class: the first wins, as argmax
    sel = out.T.astype(np.float64)
    cls = sel[:, 4:].argmax(axis=1).astype(np.int32)
    scores = sel[:, 4:].max(axis=1).astype(np.float32)
    boxes = np.concatenate([sel[:, :2] - sel[:, 2:4] / 2, sel[:, :2] + sel[:, 2:4] / 2], 1).astype(np.float32)
    keep = nms_per_class(boxes, scores, cls, 0.5, 300)
    padded = np.concatenate([out, np.zeros((4 + nc, 1), np.float32)], axis=1)  # an anchor at score 0: not a candidate
    for got in (decode_yolo(out, nc, 0.0, 0.5, 300), decode_yolo(padded, nc, 0.0, 0.5, 300)):
        np.testing.assert_array_equal(got.class_ids, cls[keep])
        np.testing.assert_array_equal(got.scores, scores[keep])
        np.testing.assert_allclose(got.boxes, boxes[keep], atol=1e-3)
        assert got.boxes.dtype == np.float32 and got.class_ids.dtype == np.int32 and len(got) == 300


def test_int8_scheme_keeps_only_the_detect_heads_output_layers_in_fp32() -> None:
    """The 3x3 convolutions of the head run INT8; each branch's last 1x1 conv, the DFL and the box math stay FP32."""
    names = [n.name for n in onnx.load(str(detecting_model())).graph.node]
    pats = head_fp32_patterns(names)
    fp32 = {n for n in names if any(re.match(p, n) for p in pats)}
    h = max(int(m.group(1)) for n in names if (m := re.match(r"/model\.(\d+)/", n)))
    head_convs = {n for n in names if n.startswith(f"/model.{h}/") and n.endswith("/Conv")}
    out_convs = {n for n in head_convs if re.search(r"/cv\d\.\d+\.2/Conv$", n) or "/dfl/" in n}
    assert out_convs and len(out_convs) < len(head_convs)
    assert fp32 & head_convs == out_convs  # the branches' 3x3 convolutions are quantised
    assert not {n for n in fp32 if not n.startswith(f"/model.{h}/")}  # backbone and neck: all INT8-able
    assert {n for n in names if n.startswith(f"/model.{h}/") and n.count("/") == 2} <= fp32  # box arithmetic
    classify = ["/model.1/conv/Conv", "/model.9/conv/conv/Conv", "/model.9/linear/Gemm"]
    assert [n for n in classify if any(re.match(p, n) for p in head_fp32_patterns(classify))] == classify[1:]


@pytest.fixture(scope="module")
def goldens(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("goldens")
    write_golden(root / "cal", 16, seed=31)
    write_golden(root / "eval", 21, seed=32)
    return root / "cal", root / "eval"


def test_int8_candidate_goes_through_the_gate(tmp_path: Path, goldens: tuple[Path, Path]) -> None:
    cal, ev = goldens
    fp32 = detecting_model()
    rep = quantize_int8(fp32, tmp_path / "int8.onnx", cal)
    assert rep.n_calibration == 16 and 0 < rep.n_defective < 16
    ov_i, ort_i, fp_i = _insp(rep.path, "openvino"), _insp(rep.path, "onnxruntime"), _insp(fp32, "onnxruntime")
    try:  # OpenVINO runs the INT8 form the file carries; onnxruntime, the fallback, its FP32 graph
        assert ov_i.providers == ["openvino:CPU:f32:int8"]
        for f in _frames(3):
            a, b = ort_i.inspect(f), fp_i.inspect(f)
            np.testing.assert_array_equal(a.scores, b.scores)
            np.testing.assert_array_equal(a.boxes_xyxy, b.boxes_xyxy)
    finally:
        for i in (ov_i, ort_i, fp_i):
            i.close()
    with pytest.raises(QuantizeError, match="already INT8"):
        quantize_int8(rep.path, tmp_path / "again.onnx", cal)
    undertrained = tiny_model("detect", imgsz=64, epochs=1)  # the registry tests' model: finds little
    db = open_db(tmp_path / "station.db")
    try:
        store = tmp_path / "store"
        cur = registry.ensure_current(db, fp32, store_dir=store)
        int8 = registry.register(db, rep.path, store_dir=store, parent_sha=rep.parent_sha)
        weak = registry.register(db, undertrained, store_dir=store)
        assert int8.lineage["precision"] == "int8" and int8.parent_sha == cur.sha256
        res = {}
        for rec in (cur, int8, weak):  # the production path, on the line's runtime
            r = evaluate(rec.path, ev, inspector_cfg=OnnxInspectorConfig(runtime="openvino"))
            registry.record_evaluation(db, rec.sha256, r.summary())
            res[rec.sha256] = r
        assert res[weak.sha256].escape_rate > res[cur.sha256].escape_rate
        with pytest.raises(PromotionRefused, match=r"escape rate .* is worse than the current model's"):
            registry.promote(db, weak.sha256, "qa")
        q8, q32 = res[int8.sha256], res[cur.sha256]
        if (
            q8.escape_rate > q32.escape_rate or q8.map50 < q32.map50 - 0.01
        ):  # a tiny 64-px model may lose to INT8: refused
            with pytest.raises(PromotionRefused, match=r"escape rate .* is worse|mAP50 .* is more than 1 point below"):
                registry.promote(db, int8.sha256, "qa")
        else:
            assert registry.promote(db, int8.sha256, "qa").status == "current"
    finally:
        db.close()


def test_gate_refuses_an_map50_drop_of_more_than_one_point(tmp_path: Path) -> None:
    a = tiny_model("detect", imgsz=64, epochs=1)
    b = tiny_model("detect", imgsz=64, epochs=1, export_imgsz=96)
    db = open_db(tmp_path / "station.db")
    try:
        cur = registry.ensure_current(db, a, store_dir=tmp_path / "store")
        cand = registry.register(db, b, store_dir=tmp_path / "store")
        summary = {"golden_id": "g1", "escape_rate": 0.05, "false_reject_rate": 0.0}
        registry.record_evaluation(db, cur.sha256, {**summary, "model_sha": cur.sha256, "mAP50": 0.80})
        registry.record_evaluation(db, cand.sha256, {**summary, "model_sha": cand.sha256, "mAP50": 0.785})
        with pytest.raises(
            PromotionRefused, match=r"mAP50 0\.7850 is more than 1 point below the current model's 0\.8000"
        ):
            registry.promote(db, cand.sha256, "qa")
        registry.record_evaluation(db, cand.sha256, {**summary, "model_sha": cand.sha256, "mAP50": 0.795})
        assert registry.promote(db, cand.sha256, "qa").status == "current"
    finally:
        db.close()


def test_export_leaves_the_weights_folder_as_it_was(tmp_path: Path) -> None:
    """Ultralytics writes <weights>.onnx beside the weights: exporting models/pcb/model.pt at another size removed the
    shipped models/pcb/model.onnx next to it. The export works in a folder of its own."""
    import shutil

    shipped = tmp_path / "shipped"
    shipped.mkdir()
    weights = shutil.copyfile(trained_weights("detect", **DETECTING), shipped / "model.pt")
    (shipped / "model.onnx").write_bytes(b"the shipped model")
    out = export_onnx(weights, tmp_path / "elsewhere" / "m96.onnx", 96)
    assert (shipped / "model.onnx").read_bytes() == b"the shipped model"
    assert sorted(p.name for p in shipped.iterdir()) == ["model.onnx", "model.pt"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["m96.onnx", "m96.pt"]  # no work folder left behind
    assert read_model_meta(out).imgsz == (96, 96)


def test_export_parity_passes_a_good_export_and_catches_altered_weights(
    tmp_path: Path, goldens: tuple[Path, Path]
) -> None:
    weights = trained_weights("detect", **DETECTING)
    out = export_onnx(weights, tmp_path / "m.onnx", 64, parity_golden=goldens[1], keep_weights=False)
    rep = check_parity(weights, out)
    assert rep.n_images == 4 and rep.max_score_diff < 1e-3
    proto = onnx.load(str(out))
    first_conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    init = next(t for t in proto.graph.initializer if t.name == first_conv.input[1])  # as a wrong BatchNorm fold would
    w = numpy_helper.to_array(init).copy()
    w *= 1.2
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(proto, str(broken))
    with pytest.raises(ParityError, match=r"broken\.onnx does not match its weights .* output output0 differs"):
        check_parity(weights, broken)
