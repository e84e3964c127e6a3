"""One place that decides which backend runs a model file: its own metadata says (``task``).

Registry paths (hot swap, shadow mode, golden-set evaluation) only have a file; an Ultralytics
export runs in :class:`~station.inspection.onnx_backend.OnnxInspector`, an anomaly model (``task:
anomaly``) in :class:`~station.inspection.anomaly.AnomalyInspector`, each with the line's settings
for that backend when the line runs it, else the defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config.inspection import AnomalyInspectorConfig, OnnxInspectorConfig
from .base import Inspector, ModelLoadError
from .model_meta import read_model_meta


def inspector_for_file(
    path: Path | str,
    line_cfg: Any = None,
    *,
    onnx_overrides: dict[str, Any] | None = None,
    threads: int | None = None,
    expect_frame_size: tuple[int, int] | None = None,
) -> Inspector:
    """The inspector for the model file at ``path`` (ModelLoadError naming the file and the fix).

    ``line_cfg`` is the line's inspector config (its settings are kept for the same backend);
    ``onnx_overrides`` change OnnxInspectorConfig fields (evaluation ``conf``, no keep-alive);
    ``threads`` caps onnxruntime's threads (shadow mode); ``expect_frame_size`` (W, H) refuses an
    anomaly model learned on frames of another size.
    """
    path = Path(path)
    meta = read_model_meta(path)
    if meta.task == "anomaly":
        from .anomaly import AnomalyInspector

        base = line_cfg if isinstance(line_cfg, AnomalyInspectorConfig) else AnomalyInspectorConfig()
        update: dict[str, Any] = {"model": path, "learn_from": None}
        if threads is not None:
            update["intra_op_threads"] = threads
        insp = AnomalyInspector(base.model_copy(update=update))
        if expect_frame_size is not None and insp.frame_size != tuple(expect_frame_size):
            fw, fh = insp.frame_size or (0, 0)
            raise ModelLoadError(
                f"model {path} was learned on {fw}x{fh} frames but this camera gives "
                f"{expect_frame_size[0]}x{expect_frame_size[1]}: "
                "learn the anomaly model from this camera's images"
            )
        return insp
    from .onnx_backend import OnnxInspector

    obase = line_cfg if isinstance(line_cfg, OnnxInspectorConfig) else OnnxInspectorConfig()
    oupdate: dict[str, Any] = {"model": path, **(onnx_overrides or {})}
    if threads is not None:
        oupdate["intra_op_threads"] = threads
    return OnnxInspector(obase.model_copy(update=oupdate))
