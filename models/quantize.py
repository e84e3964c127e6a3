"""INT8 post-training quantisation (NNCF) of an Ultralytics ONNX export, calibrated on a golden set.

The calibration images are the golden set's good AND bad images, prepared exactly as the station
prepares a part (:class:`station.inspection.preprocess.InputTensor`: letterbox or center-crop), so the
activation ranges NNCF measures are the ones the line produces.

Two forms (``form``):

- ``openvino`` (default): NNCF's OpenVINO backend quantises the model as OpenVINO reads it, and the
  INT8 OpenVINO IR (xml + weights) is carried INSIDE a copy of the FP32 ONNX file, as two uint8
  initializers no node reads (:func:`station.inspection.model_meta.embedded_initializers`). One file,
  one sha256, one registry entry: OpenVINO runs the INT8 form, onnxruntime (the fallback) the FP32
  graph. Evaluate it with the runtime the line uses.
- ``qdq``: an ONNX graph with QuantizeLinear/DequantizeLinear pairs from NNCF's ONNX backend, for
  onnxruntime. Measured on this AMD EPYC: onnxruntime runs it slower than FP32 (0.8x), and
  OpenVINO 2026.4 computes it WRONG (mAP50 0.03 instead of 0.87 on the default model); the gate
  refuses such a candidate, which is why ``openvino`` is the default.

The detection head's last 1x1 convolutions (box distribution and class logits), its DFL and box
arithmetic, and the Sigmoids stay in floating point: a little more than Ultralytics' own
``format=openvino, int8=True`` export keeps, because quantising the class-logit convolution too
failed the gate on the default model (see :func:`head_fp32_patterns`). The file keeps the source's
metadata (names, imgsz, task, ...) and gets lineage: ``parent_sha`` = the FP32 model's sha256,
``precision`` = int8, the calibration golden set id. It is a candidate like any other:
``models register``, ``models evaluate`` (the production path on a golden set) and ``models
promote`` (refused when its escape rate is worse or its mAP50 more than 1 point below the current
model's).

Needs ``nncf``, ``openvino`` and ``onnx`` (the ``train`` extra); the station never imports this module.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from station import serialize
from station.inspection.model_meta import OPENVINO_BIN, OPENVINO_XML, read_model_meta

from .export import LINEAGE_KEY, LINEAGE_PREFIX, lineage_text, read_lineage, set_props
from .golden import GoldenSet, iter_images, load_golden
from .parity import input_tensors

log = logging.getLogger(__name__)

DEFAULT_SUBSET = 300  # NNCF's default calibration size
FORMS = ("openvino", "qdq")


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
        return {
            "path": str(self.path),
            "parent_sha": self.parent_sha,
            "golden_id": self.golden_id,
            "n_calibration": self.n_calibration,
            "n_defective": self.n_defective,
            "seconds": round(self.seconds, 1),
        }


def calibration_tensors(
    golden: GoldenSet, input_hw: tuple[int, int], channels: int, task: str, limit: int
) -> tuple[list[np.ndarray], int]:
    """Up to ``limit`` (1, C, H, W) float32 inputs from the golden set, good and bad images alternated.

    Returns (tensors, how many came from defective images).
    """
    bad = [it for it in golden.items if it.defective]
    good = [it for it in golden.items if not it.defective]
    order = [it for pair in zip(bad, good) for it in pair] + bad[len(good) :] + good[len(bad) :]
    order = order[:limit]
    out = input_tensors((img for _, img in iter_images(order)), input_hw, channels, task)
    return out, sum(1 for it in order if it.defective)


SCHEME = "detect-head-out-fp32"  # which layers stay in floating point; named in the lineage


def head_fp32_patterns(node_names: list[str]) -> list[str]:
    """Regular expressions of the nodes that stay in floating point (with every Sigmoid, by type).

    The head is the last ``/model.N/`` module. For a detection head (``cv2``/``cv3`` branches):
    the last 1x1 convolution of each branch (box distribution and class logits), the DFL and the
    box arithmetic stay FP32; the branches' 3x3 convolutions, most of the head's cost, run INT8.
    Any other head (classify) stays FP32 entirely. Measured on the default model (OpenVINO, 200
    unseen parts, FP32: escapes 0 %, mAP50 0.989):

    - whole head FP32: escapes 0 %, mAP50 0.981, 17.5 ms a part;
    - this scheme: escapes 0 %, mAP50 0.987, 11.6 ms a part;
    - the class-logit convolution INT8 too (Ultralytics' ``int8=True``): escapes 5.4 %, refused.
    """
    heads = [int(m.group(1)) for n in node_names if (m := re.match(r"/model\.(\d+)/", n))]
    if not heads:
        return []
    h = max(heads)
    if not any(re.match(rf"/model\.{h}/cv[23]\.\d+/", n) for n in node_names):
        return [rf"/model\.{h}/.*"]
    return [
        rf"/model\.{h}/[^/]+$",  # box arithmetic, concatenations, the score Sigmoid
        rf"/model\.{h}/dfl/.*",
        rf"/model\.{h}/cv\d\.\d+/cv\d\.\d+\.2/.*",  # each branch's last 1x1 convolution
    ]


def _head_ignored_scope(node_names: list[str]) -> Any:
    """NNCF ignored scope: :func:`head_fp32_patterns` and every Sigmoid."""
    import nncf

    return nncf.IgnoredScope(patterns=head_fp32_patterns(node_names), types=["Sigmoid"], validate=False)


def _embed_openvino_int8(proto: Any, src: Path, tensors: list[np.ndarray], fast_bias_correction: bool) -> None:
    """Quantise ``src`` with NNCF's OpenVINO backend and add the INT8 IR to ``proto`` as two initializers."""
    import nncf
    import openvino as ov
    from onnx import numpy_helper

    ov_model = ov.convert_model(str(src))
    q = nncf.quantize(
        ov_model,
        nncf.Dataset(tensors),
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(tensors),
        fast_bias_correction=fast_bias_correction,
        ignored_scope=_head_ignored_scope([op.get_friendly_name() for op in ov_model.get_ordered_ops()]),
    )
    with tempfile.TemporaryDirectory(prefix="quantize-") as tmp:
        xml = Path(tmp) / "model.xml"
        ov.save_model(q, str(xml), compress_to_fp16=False)
        blobs = {OPENVINO_XML: xml.read_bytes(), OPENVINO_BIN: xml.with_suffix(".bin").read_bytes()}
    for name, blob in blobs.items():
        proto.graph.initializer.append(numpy_helper.from_array(np.frombuffer(blob, np.uint8), name))


def quantize_int8(
    model_path: Path | str,
    out_path: Path | str,
    golden: GoldenSet | Path | str,
    *,
    subset_size: int = DEFAULT_SUBSET,
    form: str = "openvino",
    fast_bias_correction: bool | None = None,
) -> QuantizeReport:
    """Write the INT8 candidate of the FP32 ONNX ``model_path`` at ``out_path``, calibrated on ``golden`` (see the
    module docstring).

    ``fast_bias_correction`` (default: False for the ``openvino`` form, True for ``qdq``): NNCF's
    fast bias correction instead of the full one. Measured on the 80-epoch default model (200-part
    evaluation golden set, OpenVINO): fast, mAP50 0.973 against FP32 0.986, refused by the gate;
    full, 0.980, passed; the escape rate equal to FP32's either way.
    """
    if fast_bias_correction is None:
        fast_bias_correction = form != "openvino"
    if form not in FORMS:
        raise QuantizeError(f"form {form!r}: give one of {', '.join(FORMS)}")
    t0 = time.monotonic()
    src, out = Path(model_path), Path(out_path)
    meta = read_model_meta(src)  # ModelLoadError naming the file when it is not a station model
    if meta.task == "anomaly":
        raise QuantizeError(
            f"model {src} is an anomaly model: quantise Ultralytics detect/segment/classify exports only"
        )
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
        log.warning(
            "golden set %s gave %d defective of %d calibration images: calibrate on good and bad parts",
            gs.golden_id,
            n_bad,
            len(tensors),
        )
    os.environ.setdefault("NNCF_TELEMETRY", "0")  # no network on the line
    import nncf  # lazy: the train extra
    import onnx

    proto = onnx.load(str(src))
    if form == "openvino":
        _embed_openvino_int8(proto, src, tensors, fast_bias_correction)
        q = proto
    else:
        input_name = proto.graph.input[0].name
        q = nncf.quantize(
            proto,
            nncf.Dataset(tensors, lambda t: {input_name: t}),
            preset=nncf.QuantizationPreset.MIXED,
            subset_size=len(tensors),
            fast_bias_correction=fast_bias_correction,
            ignored_scope=_head_ignored_scope([n.name for n in proto.graph.node]),
        )
    lin = {
        **read_lineage(meta.raw),
        "parent_sha": meta.sha256,
        "precision": "int8",
        "quantization": {
            "method": "nncf-ptq",
            "form": form,
            "preset": "mixed",
            "scheme": SCHEME,
            "bias_correction": "fast" if fast_bias_correction else "full",
            "golden_id": gs.golden_id,
            "n_calibration": len(tensors),
            "nncf": nncf.__version__,
        },
    }
    props = {k: v for k, v in meta.raw.items() if not k.startswith(LINEAGE_PREFIX) and k != LINEAGE_KEY}
    props.update({f"{LINEAGE_PREFIX}{k}": lineage_text(v) for k, v in lin.items() if v is not None})
    props[LINEAGE_KEY] = serialize.dumps(lin, canonical=True)
    del q.metadata_props[:]
    set_props(q, props)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    onnx.save(q, str(tmp))
    os.replace(tmp, out)
    report = QuantizeReport(out, meta.sha256, gs.golden_id, len(tensors), n_bad, time.monotonic() - t0)
    log.info("quantised %s -> %s: %s", src, out, report.as_dict())
    return report
