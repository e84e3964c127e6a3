"""Export parity: the exported ONNX file must compute what its PyTorch weights compute.

Every export (:func:`models.export.export_onnx`) runs both on the same input tensors - the golden
set's images when one is given, else a few fixed synthetic frames - prepared as the station
prepares a part (:class:`station.inspection.preprocess.InputTensor`), and compares every output
element: boxes in input pixels, class scores, mask coefficients and prototypes, class
probabilities. A silent export bug (a wrong opset lowering, a dropped layer, altered weights)
shows as a mismatch and fails the export loudly instead of reaching the line as a worse model.

Needs torch and ultralytics (the ``train`` extra): never imported by the station runtime.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from station.inspection.model_meta import ModelMeta, read_model_meta
from station.inspection.preprocess import InputTensor

log = logging.getLogger(__name__)

N_SYNTHETIC = 4
ATOL_PX = 0.5  # box coordinates, in model input pixels
ATOL = 5e-3  # scores, probabilities, mask coefficients and prototypes
RTOL = 1e-3


class ParityError(RuntimeError):
    """The exported model does not compute what its weights compute."""


@dataclass(frozen=True)
class ParityReport:
    """Worst differences between the ONNX file and the PyTorch weights over the parity images."""

    n_images: int
    max_box_diff_px: float
    max_score_diff: float
    source: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (goes into the export's log line)."""
        return asdict(self)


def synthetic_frames(n: int = N_SYNTHETIC, hw: tuple[int, int] = (480, 640)) -> list[np.ndarray]:
    """``n`` fixed Mono8 frames with bright and dark shapes on a noisy gradient (no golden set at hand)."""
    import cv2

    rng = np.random.default_rng(7)
    h, w = hw
    out = []
    for _ in range(n):
        img = (np.linspace(40, 120, w)[None, :] + rng.normal(0, 6, (h, w))).clip(0, 255).astype(np.uint8)
        for _ in range(6):
            x, y = int(rng.integers(0, w - 60)), int(rng.integers(0, h - 60))
            s, v = int(rng.integers(8, 60)), int(rng.choice([10, 230]))
            if rng.random() < 0.5:
                cv2.rectangle(img, (x, y), (x + s, y + s), v, -1)
            else:
                cv2.circle(img, (x + s // 2, y + s // 2), s // 2, v, -1)
        out.append(img)
    return out


def input_tensors(
    images: Iterable[np.ndarray], input_hw: tuple[int, int], channels: int, task: str
) -> list[np.ndarray]:
    """(1, C, H, W) float32 model inputs prepared as the station prepares a part (letterbox, or center-crop for
    classify)."""
    t = InputTensor(input_hw, channels, batch=1)
    out = []
    for img in images:
        if task == "classify":
            t.center_crop(img)
        else:
            t.letterbox(img)
        out.append(t.view(1).copy())
    return out


def _flat(x: Any) -> list[np.ndarray]:
    """Every tensor of a (nested) PyTorch model output, depth first, as numpy."""
    if isinstance(x, (list, tuple)):
        return [a for v in x for a in _flat(v)]
    if isinstance(x, dict):
        return [a for v in x.values() for a in _flat(v)]
    return [x.detach().cpu().numpy()] if hasattr(x, "detach") else []


def _torch_model(weights: Path | str, meta: ModelMeta) -> Any:
    """The PyTorch module the ONNX file was exported from (Ultralytics', or the torch classify backend's)."""
    from . import efficientnet

    if efficientnet.is_checkpoint(weights):
        return efficientnet.export_module(weights, tta=meta.raw.get("tta_views") == "8")
    from ultralytics import YOLO

    return YOLO(str(weights), task=meta.task).model.float().eval()  # type: ignore[union-attr]  # ultralytics types .model as str | None


def check_parity(
    weights: Path | str, onnx_path: Path | str, images: Sequence[np.ndarray] | None = None, *, source: str = ""
) -> ParityReport:
    """Compare ``onnx_path`` (run by onnxruntime, FP32) with ``weights`` (PyTorch) on ``images``; ParityError on a
    mismatch."""
    import onnxruntime as ort
    import torch

    meta = read_model_meta(onnx_path)
    if images is None:
        images, source = synthetic_frames(), source or f"{N_SYNTHETIC} synthetic frames"
    tensors = input_tensors(images, meta.imgsz, meta.channels, meta.task)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    net = _torch_model(weights, meta)
    nc = len(meta.names)
    worst_box = worst_score = 0.0
    for i, x in enumerate(tensors):
        got = sess.run(None, {sess.get_inputs()[0].name: x})
        with torch.no_grad():
            ref_all = _flat(net(torch.from_numpy(x)))
        for o, g in zip(sess.get_outputs(), got):
            ref = next((r for r in ref_all if r.shape == g.shape), None)
            if ref is None:
                raise ParityError(
                    f"{onnx_path}: output {o.name}{list(g.shape)} has no counterpart in the weights' outputs "
                    f"{[list(r.shape) for r in ref_all]}: the export changed the model's outputs"
                )
            diff = np.abs(g.astype(np.float64) - ref.astype(np.float64))
            tol = RTOL * np.abs(ref)
            if (
                meta.task in ("detect", "segment")
                and o.name == sess.get_outputs()[0].name
                and g.ndim == 3
                and g.shape[1] >= 4 + nc
            ):
                box, rest = diff[:, :4], diff[:, 4:]
                box_bad = box > ATOL_PX + tol[:, :4]
                rest_bad = rest > ATOL + tol[:, 4:]
                worst_box = max(worst_box, float(box.max(initial=0.0)))
                worst_score = max(worst_score, float(rest.max(initial=0.0)))
                bad = int(box_bad.sum() + rest_bad.sum())
            else:
                worst_score = max(worst_score, float(diff.max(initial=0.0)))
                bad = int((diff > ATOL + tol).sum())
            if bad:
                raise ParityError(
                    f"{onnx_path} does not match its weights {weights} on parity image {i + 1} of {len(tensors)} "
                    f"({source}): "
                    f"output {o.name} differs in {bad} of {diff.size} values (max {float(diff.max()):.4g}; tolerance "
                    f"{ATOL_PX} px for boxes, {ATOL} otherwise). Do not deploy it: re-export, check the "
                    "Ultralytics/onnx "
                    "versions, and report the model"
                )
    report = ParityReport(len(tensors), round(worst_box, 6), round(worst_score, 6), source)
    log.info("export parity %s vs %s: %s", onnx_path, weights, report.as_dict())
    return report
