"""Inspector (model backend) configuration: one model per backend ``type``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import Field

from .base import StrictModel


class ReferenceInspectorConfig(StrictModel):
    """Golden-template comparison learned from good parts: no labels needed."""

    type: Literal["reference"] = Field("reference", description="Backend: golden template / variation model.")
    learn_from: Path | None = Field(
        None, description="Folder of good images to learn from at start; if unset, learn from the first `learn_parts` parts."
    )
    learn_parts: int = Field(20, ge=1, le=10000, description="Number of parts used to learn the template when no folder is given.")
    learn_only_good: bool = Field(
        True,
        description="When learning from the line, skip frames whose ground truth says defective (synthetic camera only).",
    )
    scale: float = Field(0.5, gt=0.05, le=1.0, description="Work at this fraction of the frame size (speed vs smallest defect).")
    blur_px: int = Field(3, ge=0, le=31, description="Gaussian blur kernel (odd, 0 = none) applied before comparison.")
    sigma_k: float = Field(5.0, gt=0, le=50, description="A pixel is abnormal when it differs from the template by more than k x its learned spread.")
    min_abs_diff: float = Field(18.0, ge=0, le=255, description="Floor on the abnormal-pixel threshold, in grey levels.")
    min_blob_px: int = Field(12, ge=1, description="Ignore blobs smaller than this, in full-resolution pixels.")
    align: Literal["none", "translation", "euclidean"] = Field(
        "euclidean", description="Register each frame to the template before comparing."
    )
    score_scale: float = Field(
        4.0, gt=0, description="A blob's score is 1 - exp(-mean_excess / score_scale): a soft confidence in 0..1."
    )


class TilingConfig(StrictModel):
    """Split large frames into overlapping tiles at the model's input size."""

    enabled: bool = Field(False, description="Run the model on overlapping tiles and merge the detections.")
    overlap: float = Field(0.2, ge=0.0, lt=0.9, description="Overlap between neighbouring tiles, as a fraction of the tile size.")
    include_full_frame: bool = Field(False, description="Also run one downscaled pass over the whole frame (for large defects).")


class OnnxInspectorConfig(StrictModel):
    """An Ultralytics model exported to ONNX, run by onnxruntime."""

    type: Literal["onnx"] = Field("onnx", description="Backend: Ultralytics ONNX export through onnxruntime.")
    model: Path = Field(Path("models/default/model.onnx"), description="Path of the .onnx file (metadata gives names, imgsz, task).")
    providers: list[str] = Field(
        default_factory=lambda: ["CPUExecutionProvider"],
        description="Execution providers in order of preference, e.g. [TensorrtExecutionProvider, CUDAExecutionProvider, CPUExecutionProvider]; unavailable ones are skipped with a log line, CPU is always the fallback.",
    )
    intra_op_threads: int = Field(0, ge=0, le=256, description="onnxruntime intra-op threads (0 = one per core).")
    allow_spinning: bool = Field(True, description="Let onnxruntime threads spin between runs (lower latency, more CPU).")
    graph_optimization: Literal["disable", "basic", "extended", "all"] = Field("all", description="onnxruntime graph optimisation level.")
    conf: float = Field(0.1, ge=0.0, le=1.0, description="Drop candidates below this score before NMS (rules apply the real thresholds).")
    iou: float = Field(0.5, gt=0.0, le=1.0, description="IoU threshold of the per-class NMS.")
    max_det: int = Field(300, ge=1, le=10000, description="Keep at most this many detections per frame.")
    tiling: TilingConfig = Field(default_factory=TilingConfig, description="Tiling for frames much larger than the model input.")
    keepalive_s: float = Field(
        5.0, ge=0.0, description="Run a dummy inference after this many idle seconds so the next part is not slow (0 = off)."
    )


InspectorConfig = Annotated[
    Union[ReferenceInspectorConfig, OnnxInspectorConfig],
    Field(discriminator="type"),
]
