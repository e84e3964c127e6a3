"""INT8 post-training quantisation (NNCF) of an Ultralytics ONNX export, calibrated on a golden set.

The calibration images are the golden set's good AND bad images, prepared exactly as the station
prepares a part (:class:`station.inspect.preprocess.InputTensor`: letterbox or center-crop), so the
activation ranges NNCF measures are the ones the line produces. The result is an ONNX file with
QuantizeLinear/DequantizeLinear pairs (QDQ): OpenVINO runs it in INT8 (fast), onnxruntime runs it
too (slowly on CPUs without VNNI kernels for every layer; measure with ``bench/bench_inference.py``).

As in Ultralytics' own ``format=openvino, int8=True`` export, the detection head's box decoding
(DFL, the grid Add/Sub/Mul/Div) and the Sigmoid stay in floating point: quantising them moves the
boxes and scores the rules read. The file keeps the source's metadata (names, imgsz, task, ...) and
gets lineage: ``parent_sha`` = the FP32 model's sha256, ``precision`` = int8, the calibration golden
set id. It is a candidate like any other: ``models register``, ``models evaluate`` (the production
path on a golden set) and ``models promote`` (refused when its escape rate is worse or its mAP50
more than 1 point below the current model's).

Needs ``nncf`` and ``onnx`` (the ``train`` extra); the station runtime never imports this module.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from station.inspect.model_meta import read_model_meta
from station.inspect.preprocess import InputTensor

from .export import LINEAGE_KEY, LINEAGE_PREFIX, _set_props, _text, read_lineage
from .golden import GoldenSet, iter_images, load_golden

log = logging.getLogger(__name__)

DEFAULT_SUBSET = 300  # NNCF's default calibration size


class QuantizeError(RuntimeError):
    """The model cannot be quantised as asked; the message names the file and the fix."""


@dataclass(frozen=True)
class QuantizeReport:
    """What ``quantize_int8`` wrote."""

    path: Path
    parent_sha: str
    golden_id: str
    n_calibration: int
    n_defective: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"path": str(self.path), "parent_sha": self.parent_sha, "golden_id": self.golden_id,
                "n_calibration": self.n_calibration, "n_defective": self.n_defective, "seconds": round(self.seconds, 1)}


def calibration_tensors(golden: GoldenSet, input_hw: tuple[int, int], channels: int, task: str, limit: int) -> tuple[list[np.ndarray], int]:
    """Up to ``limit`` (1, C, H, W) float32 inputs from the golden set, good and bad images alternated.

    Returns (tensors, how many came from defective images).
    """
    bad = [it for it in golden.items if it.defective]
    good = [it for it in golden.items if not it.defective]
    order = [it for pair in zip(bad, good) for it in pair] + bad[len(good):] + good[len(bad):]
    order = order[:limit]
    tensor = InputTensor(input_hw, channels, batch=1)
    out = []
    for _, img in iter_images(order):
        if task == "classify":
            tensor.center_crop(img)
        else:
            tensor.letterbox(img)
        out.append(tensor.view(1).copy())
    return out, sum(1 for it in order if it.defective)


def _head_ignored_scope(graph: Any) -> Any:
    """NNCF ignored scope: the last ``/model.N/`` module's box decoding and DFL, and every Sigmoid."""
    import nncf

    heads = [int(m.group(1)) for n in graph.node if (m := re.match(r"/model\.(\d+)/", n.name))]
    if not heads:
        return nncf.IgnoredScope(types=["Sigmoid"], validate=False)
    h = max(heads)
    return nncf.IgnoredScope(
        patterns=[rf"/model\.{h}/dfl/.*", rf"/model\.{h}/(Add|Sub|Mul|Div)(_\d+)?$"], types=["Sigmoid"], validate=False
    )


def quantize_int8(
    model_path: Path | str,
    out_path: Path | str,
    golden: GoldenSet | Path | str,
    *,
    subset_size: int = DEFAULT_SUBSET,
    fast_bias_correction: bool = True,
) -> QuantizeReport:
    """Write an INT8 (QDQ) copy of the FP32 ONNX ``model_path`` at ``out_path``, calibrated on ``golden``."""
    t0 = time.monotonic()
    src, out = Path(model_path), Path(out_path)
    meta = read_model_meta(src)  # ModelLoadError naming the file when it is not a station model
    if meta.task == "anomaly":
        raise QuantizeError(f"model {src} is an anomaly model: quantise Ultralytics detect/segment/classify exports only")
    if read_lineage(meta.raw).get("precision") == "int8":
        raise QuantizeError(f"model {src} is already INT8 (lineage precision int8): quantise its FP32 parent instead")
    gs = golden if isinstance(golden, GoldenSet) else load_golden(golden)
    if tuple(gs.names) != tuple(meta.names):
        raise QuantizeError(
            f"golden set {gs.root} classes {list(gs.names)} differ from model {src} classes {list(meta.names)}: "
            "calibrate on a golden set of this model's product"
        )
    if subset_size < 1:
        raise QuantizeError(f"subset_size {subset_size}: give at least 1 calibration image (300 recommended)")
    tensors, n_bad = calibration_tensors(gs, meta.imgsz, meta.channels, meta.task, subset_size)
    if n_bad == 0 or n_bad == len(tensors):
        log.warning("golden set %s gave %d defective of %d calibration images: calibrate on good and bad parts", gs.golden_id, n_bad, len(tensors))
    os.environ.setdefault("NNCF_TELEMETRY", "0")  # no network on the line
    import nncf  # lazy: the train extra
    import onnx

    proto = onnx.load(str(src))
    input_name = proto.graph.input[0].name
    dataset = nncf.Dataset(tensors, lambda t: {input_name: t})
    q = nncf.quantize(
        proto, dataset, preset=nncf.QuantizationPreset.MIXED, subset_size=len(tensors),
        fast_bias_correction=fast_bias_correction, ignored_scope=_head_ignored_scope(proto.graph),
    )
    lin = {**read_lineage(meta.raw), "parent_sha": meta.sha256, "precision": "int8",
           "quantization": {"method": "nncf-ptq", "preset": "mixed", "golden_id": gs.golden_id, "n_calibration": len(tensors),
                            "nncf": nncf.__version__}}
    props = {k: v for k, v in meta.raw.items() if not k.startswith(LINEAGE_PREFIX) and k != LINEAGE_KEY}
    props.update({f"{LINEAGE_PREFIX}{k}": _text(v) for k, v in lin.items() if v is not None})
    props[LINEAGE_KEY] = json.dumps(lin, sort_keys=True, default=str)
    del q.metadata_props[:]
    _set_props(q, props)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    onnx.save(q, str(tmp))
    os.replace(tmp, out)
    report = QuantizeReport(out, meta.sha256, gs.golden_id, len(tensors), n_bad, time.monotonic() - t0)
    log.info("quantised %s -> %s: %s", src, out, report.as_dict())
    return report
