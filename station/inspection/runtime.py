"""Where a model runs: onnxruntime (the fallback, always installed) or OpenVINO (optional, faster on CPU).

Both take the same ONNX file and give the same outputs, in the file's output order. A file from
``models quantize`` also carries its INT8 OpenVINO form (two initializers no node reads, see
:func:`~station.inspection.model_meta.embedded_initializers`): OpenVINO runs that form, onnxruntime
the file's FP32 graph (onnxruntime runs INT8 QDQ slower than FP32 on CPUs without fast int8
kernels for every layer). :class:`~station.inspection.onnx_backend.OnnxInspector` sees only
:class:`ModelRuntime`. ``runtime: auto`` picks OpenVINO when the ``openvino`` package is importable
and only the CPU is asked for (GPU execution providers are onnxruntime's), else onnxruntime.

OpenVINO is compiled with an explicit ``INFERENCE_PRECISION_HINT`` (``f32`` unless configured):
left alone, it silently runs FP32 models in bf16 on CPUs that have AVX-512 BF16 or AMX, which
moves scores. An INT8 form runs its quantised layers in INT8 whatever the hint.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

from ..config.inspection import OnnxInspectorConfig
from .base import ModelLoadError
from .model_meta import OPENVINO_BIN, OPENVINO_XML, embedded_initializers

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
_OPT_LEVEL = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_OV_CORE: Any = None


class ModelRuntime(Protocol):
    """One loaded model in one runtime."""

    name: str  # "onnxruntime" or "openvino"
    inputs: list[tuple[str, list[Any]]]  # (name, shape): ints for fixed dims, str/None for dynamic ones
    outputs: list[tuple[str, list[Any]]]

    @property
    def devices(self) -> list[str]:
        """What runs the model: onnxruntime's providers in order, or ``openvino:CPU:<precision>``."""

    def run(self, tensor: np.ndarray) -> list[np.ndarray]:
        """One inference on an (N, C, H, W) float32 tensor: every output, in the model's order."""


def choose_providers(wanted: list[str], available: list[str] | None = None) -> list[str]:
    """``wanted`` in order, minus the unavailable ones (logged), with CPU always last as the fallback."""
    available = list(ort.get_available_providers() if available is None else available)
    chosen: list[str] = []
    for p in wanted:
        if p in chosen:
            continue
        if p in available:
            chosen.append(p)
        else:
            log.warning(
                "execution provider %s is not available in this onnxruntime (available: %s): skipped",
                p,
                ", ".join(available),
            )
    if CPU in chosen:
        chosen.remove(CPU)
    chosen.append(CPU)
    return chosen


def base_session_options(intra_op_threads: int) -> ort.SessionOptions:
    """The options every station session has: ``intra_op_threads`` (0: one a core), one inter-op thread, quiet logs."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = intra_op_threads or (os.cpu_count() or 1)
    so.inter_op_num_threads = 1
    so.log_severity_level = 3  # onnxruntime's own warnings would flood the station log; errors still show
    return so


def session_options(cfg: OnnxInspectorConfig) -> ort.SessionOptions:
    """Threads, execution mode, spinning and graph optimisation from the config."""
    so = base_session_options(cfg.intra_op_threads)
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = _OPT_LEVEL[cfg.graph_optimization]
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if cfg.allow_spinning else "0")
    return so


def openvino_available() -> bool:
    """True when the ``openvino`` package can be imported."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_runtime(cfg: OnnxInspectorConfig) -> str:
    """``onnxruntime`` or ``openvino`` for this config (``auto``: see the module docstring)."""
    if cfg.runtime != "auto":
        return cfg.runtime
    if any(p != CPU for p in cfg.providers):
        return "onnxruntime"
    return "openvino" if openvino_available() else "onnxruntime"


class OrtRuntime:
    """onnxruntime ``InferenceSession`` with the configured providers (CPU always last)."""

    name = "onnxruntime"

    def __init__(self, data: bytes, label: str, cfg: OnnxInspectorConfig):
        try:
            self.session = ort.InferenceSession(
                data, sess_options=session_options(cfg), providers=choose_providers(list(cfg.providers))
            )
        except Exception as e:  # onnxruntime raises its own pybind exception types
            raise ModelLoadError(f"model {label}: onnxruntime cannot load it: {e}") from e
        self.inputs = [(i.name, list(i.shape)) for i in self.session.get_inputs()]
        self.outputs = [(o.name, list(o.shape)) for o in self.session.get_outputs()]
        self._in = self.inputs[0][0]
        self._out = [o[0] for o in self.outputs]

    @property
    def devices(self) -> list[str]:
        """onnxruntime's execution providers actually used, in order."""
        return list(self.session.get_providers())

    def run(self, tensor: np.ndarray) -> list[np.ndarray]:
        """One ``session.run``."""
        outs: list[np.ndarray] = self.session.run(self._out, {self._in: tensor})
        return outs


def _ov_core() -> Any:
    global _OV_CORE
    if _OV_CORE is None:
        import openvino as ov

        _OV_CORE = ov.Core()
    return _OV_CORE


def _ov_shape(port: Any) -> list[Any]:
    return [d.get_length() if d.is_static else None for d in port.get_partial_shape()]


class OpenVinoRuntime:
    """An OpenVINO compiled model on the CPU: latency hint, one stream, explicit inference precision."""

    name = "openvino"

    def __init__(self, data: bytes, label: str, cfg: OnnxInspectorConfig):
        try:
            import openvino as ov
        except ImportError:
            raise ModelLoadError(
                f"model {label}: inspector.runtime is 'openvino' but the openvino package is not installed: "
                "`pip install 'station[openvino]'`, or set inspector.runtime to 'onnxruntime' (or 'auto')"
            ) from None
        core = _ov_core()
        props = {
            "INFERENCE_PRECISION_HINT": cfg.precision,
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "INFERENCE_NUM_THREADS": cfg.intra_op_threads or (os.cpu_count() or 1),
        }
        ir = embedded_initializers(data, (OPENVINO_XML, OPENVINO_BIN))
        self.form = "int8 ir" if len(ir) == 2 else "onnx"
        try:
            if self.form == "int8 ir":  # the INT8 form `models quantize` put in the file
                model = core.read_model(
                    ir[OPENVINO_XML].decode("utf-8"), ov.Tensor(np.frombuffer(ir[OPENVINO_BIN], np.uint8))
                )
            else:
                model = core.read_model(data, ov.Tensor(np.empty(0, np.uint8)))
            self.compiled = core.compile_model(model, "CPU", props)
        except RuntimeError as e:  # OpenVINO reports parse and compile errors as RuntimeError
            raise ModelLoadError(
                f"model {label}: OpenVINO cannot load it: {e}; set inspector.runtime to 'onnxruntime'"
            ) from e
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.precision = hint.to_string() if hasattr(hint, "to_string") else str(hint)
        self.inputs = [(p.get_any_name(), _ov_shape(p)) for p in model.inputs]
        self.outputs = [(p.get_any_name(), _ov_shape(p)) for p in model.outputs]
        self._ports = list(self.compiled.outputs)
        self._request = self.compiled.create_infer_request()

    @property
    def devices(self) -> list[str]:
        """``openvino:CPU:<precision>``, plus ``:int8`` when it runs the file's INT8 form."""
        return [f"openvino:CPU:{self.precision}" + (":int8" if self.form == "int8 ir" else "")]

    def run(self, tensor: np.ndarray) -> list[np.ndarray]:
        """One synchronous inference (the outputs are copies: safe to keep across runs)."""
        res = self._request.infer({0: tensor}, share_inputs=True, share_outputs=False)
        return [res[p] for p in self._ports]


def open_runtime(data: bytes, label: str, cfg: OnnxInspectorConfig) -> ModelRuntime:
    """Load the ONNX bytes ``data`` (of file ``label``) in the runtime the config resolves to."""
    kind = resolve_runtime(cfg)
    if kind == "openvino":
        return OpenVinoRuntime(data, label, cfg)
    return OrtRuntime(data, label, cfg)
