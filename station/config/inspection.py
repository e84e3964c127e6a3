"""Inspector (model backend) configuration: one model per backend ``type``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator

from .base import CountUpTo1k, CountUpTo10k, OverlapRatio, SmallPx, StrictModel, Threads
from .rules import Confidence

GreyLevel = Annotated[float, Field(ge=0, le=255)]
"""A difference of 8-bit grey levels."""
ThresholdScale = Annotated[float, Field(gt=0.0, le=100.0)]
"""A factor on the model's learned threshold (< 1 stricter, > 1 more lenient)."""

LearnOnlyGood = Annotated[
    bool,
    Field(
        description="When learning from the line, skip frames whose ground truth says defective (synthetic camera "
        "only)."
    ),
]
"""The template and anomaly inspectors' setting of the same name."""

# The shipped default model: models/default/ sits beside station/ both in the repo and when installed.
SHIPPED_MODEL = Path(__file__).resolve().parents[2] / "models" / "default" / "model.onnx"


class ReferenceInspectorConfig(StrictModel):
    """Golden-template comparison learned from good parts: no labels needed."""

    type: Literal["reference"] = Field("reference", description="Backend: golden template / variation model.")
    driver: ClassVar[str] = (
        "station.inspection.reference:ReferenceInspector"  # imported when first used (station/drivers.py)
    )
    learn_from: Path | None = Field(
        None,
        description="Folder of good images to learn from at start (all of its images, same size as the camera frames); "
        "if unset, "
        "learn from the first `learn_parts` parts of the line.",
    )
    learn_parts: CountUpTo10k = Field(
        20, description="Number of parts used to learn the template when no folder is given."
    )
    learn_only_good: LearnOnlyGood = True
    scale: float = Field(
        0.5, gt=0.05, le=1.0, description="Work at this fraction of the frame size (speed vs smallest defect)."
    )
    blur_px: int = Field(
        0,
        ge=0,
        le=31,
        description="Gaussian blur kernel at working scale (odd, 0 = none) applied before comparison; the downscale "
        "already averages noise.",
    )
    sigma_k: float = Field(
        5.0,
        gt=0,
        le=50,
        description="A pixel is abnormal when it differs from the template by more than k x its learned spread.",
    )
    min_abs_diff: GreyLevel = Field(12.0, description="Floor on the abnormal-pixel threshold, in grey levels.")
    min_blob_px: int = Field(12, ge=1, description="Ignore blobs smaller than this, in full-resolution pixels.")
    align: Literal["none", "translation", "euclidean"] = Field(
        "euclidean", description="Register each frame to the template before comparing."
    )
    score_scale: float = Field(
        40.0,
        gt=0,
        description="A blob's score is m / (m + score_scale), where m is its defect mass: the sum over the blob's "
        "pixels of how far "
        "each lies beyond its threshold, as a fraction of that threshold, in full-resolution pixels (a faint or small "
        "blob scores "
        "low, a large or high-contrast one high; 0.5 when m = score_scale). Ranks defects; never saturates.",
    )
    std_floor: GreyLevel = Field(
        2.0,
        description="Floor on the learned per-pixel spread, in grey levels (a pixel never looked steadier than this).",
    )
    edge_tolerance_px: float = Field(
        1.0,
        ge=0,
        le=20,
        description="Residual misalignment tolerated at template edges, in full-resolution pixels (at least one "
        "working pixel when "
        "above 0): a pixel is abnormal only when it lies outside [min - thr, max + thr] of the template over its +- "
        "this "
        "neighbourhood (a dilated/eroded template band), so an edge that moves a little passes while an open, a bite, "
        "a spur or a "
        "short, which leave that band, is found.",
    )
    border_px: SmallPx = Field(
        6,
        description="Ignore this many full-resolution pixels inside the part's outline (the outline itself moves with "
        "jitter). Only "
        "when an outline is found; when that would leave nothing, the un-eroded outline is used.",
    )
    part: Literal["auto", "outline", "full_frame"] = Field(
        "auto",
        description="Where to compare: `outline` = inside the outline of the part found in the template (a part on a "
        "conveyor); "
        "`full_frame` = the whole frame is the part (a fixtured board filling the view, AOI); `auto` = the outline "
        "when the "
        "template shows one part on a plain background, else the whole frame.",
    )
    roi: tuple[int, int, int, int] | None = Field(
        None,
        description="Compare only inside this rectangle [x0, y0, x1, y1] in frame pixels (template coordinates); unset "
        "= everywhere.",
    )
    ignore_mask: Path | None = Field(
        None,
        description="Image file of the frame's size (or aspect): non-zero pixels are never compared (labels, "
        "fiducials, "
        "areas allowed to vary); unset = none.",
    )
    merge_px: SmallPx = Field(
        6, description="Abnormal fragments closer than this, in full-resolution pixels, are one defect (one box)."
    )
    box_margin_px: SmallPx = Field(
        3, description="Grow every box by this many full-resolution pixels on each side (boxes as a person draws them)."
    )
    box_margin_frac: float = Field(
        0.25,
        ge=0,
        le=2,
        description="And by this fraction of the abnormal region's larger side, on each side: a person draws a box "
        "around the "
        "whole defect with some room, larger for a larger defect.",
    )
    lowpass_px: int = Field(
        32,
        ge=0,
        le=1000,
        description="Remove slow deviations (tint, coating, shading) wider than about this many full-resolution pixels "
        "from the "
        "difference to the template; each pixel's difference is clipped at 2 x min_abs_diff first, so real defects are "
        "kept "
        "(0 = off; also off when min_abs_diff is 0).",
    )
    align_scale: float = Field(
        0.125,
        gt=0.02,
        le=1.0,
        description="Estimate the alignment on the frame downscaled to this fraction (small = fast; 0.125 for ~1 MP "
        "frames), "
        "but never to less than 160 px wide.",
    )
    align_patches: int = Field(
        0,
        ge=0,
        le=64,
        description="Refine the alignment at working scale with up to this many textured 64-px patches (phase "
        "correlation per "
        "patch, rigid fit, outliers dropped): sub-pixel registration for fine-pitch AOI at ~0.05 ms a patch (16 for a "
        "board "
        "that fills the frame); 0 = off (the coarse level only, good to a pixel or two).",
    )
    max_blobs: CountUpTo10k = Field(64, description="Report at most this many blobs per frame (the largest first).")
    template_path: Path | None = Field(
        None,
        description="Learned template file (.npz). Loaded at start when it exists (no relearning after a restart); "
        "written when the "
        "template has been learned from the line or from `learn_from`. Delete it to relearn.",
    )

    @field_validator("blur_px")
    @classmethod
    def _odd_blur(cls, v: int) -> int:
        if v and v % 2 == 0:
            raise ValueError(f"blur_px must be 0 or odd (got {v}); use {v - 1} or {v + 1}")
        return v

    @field_validator("roi")
    @classmethod
    def _roi_order(cls, v: tuple[int, int, int, int] | None) -> tuple[int, int, int, int] | None:
        if v is not None and (v[0] < 0 or v[1] < 0 or v[2] <= v[0] or v[3] <= v[1]):
            raise ValueError(f"roi must be [x0, y0, x1, y1] with 0 <= x0 < x1 and 0 <= y0 < y1 (got {list(v)})")
        return v


class TilingConfig(StrictModel):
    """Split large frames into overlapping tiles at the model's input size."""

    enabled: bool = Field(False, description="Run the model on overlapping tiles and merge the detections.")
    overlap: float = Field(
        0.2, ge=0.0, lt=0.9, description="Overlap between neighbouring tiles, as a fraction of the tile size."
    )
    include_full_frame: bool = Field(
        False, description="Also run one downscaled pass over the whole frame (for large defects)."
    )
    min_frame_ratio: float = Field(
        1.5,
        ge=1.0,
        le=100.0,
        description="Tile only frames at least this many times the model input size in width or height; smaller frames "
        "get one letterboxed pass.",
    )
    max_batch: int = Field(
        8,
        ge=1,
        le=256,
        description="Tiles per onnxruntime run when the model has a dynamic batch dimension (memory: 4.9 MB per tile "
        "at 640x640); static-batch models run one tile at a time.",
    )
    merge_ios: OverlapRatio = Field(
        0.5,
        description="Pieces of one defect cut by a tile border are merged when their overlap exceeds this fraction of "
        "the smaller box.",
    )


class TemplateCheckConfig(StrictModel):
    """A second look after the model: the golden template's differences that a verifier does not call harmless are
    added to the model's detections (station/inspection/template_check.py)."""

    reference: ReferenceInspectorConfig = Field(
        ...,
        description="The golden template, learned from good parts: set `template_path` to a learned template file "
        "(`models build-default --check-only` writes one) or `learn_from` to a folder of good images; it must be "
        "ready when the model loads. Its `score_scale` sets how a difference's size and contrast become a score "
        "that the rules judge.",
    )
    verifier: Path | None = Field(
        None,
        description="Classify ONNX model that judges a crop around each difference (trained on crops labelled "
        "defect / harmless, models/template_check.py); unset = every difference counts.",
    )
    harmless_classes: list[str] = Field(
        default_factory=lambda: ["harmless"],
        min_length=1,
        description="The verifier's classes that mean harmless (an ink mark, a label): such differences are dropped.",
    )
    harmless_conf: Confidence = Field(
        0.8,
        description="Drop a difference only when the verifier gives its harmless classes at least this probability "
        "(an escape costs more than a false reject: drop only what it is sure of).",
    )
    crop_context: float = Field(
        2.0, ge=1.0, le=8.0, description="The verifier's crop is this many times the difference's larger side."
    )
    crop_min_px: int = Field(48, ge=8, le=1024, description="And at least this many frame pixels wide.")


class OnnxInspectorConfig(StrictModel):
    """An Ultralytics model exported to ONNX, run by onnxruntime."""

    type: Literal["onnx"] = Field("onnx", description="Backend: Ultralytics ONNX export through onnxruntime.")
    driver: ClassVar[str] = (
        "station.inspection.onnx_backend:OnnxInspector"  # imported when first used (station/drivers.py)
    )
    model: Path = Field(
        default_factory=lambda: SHIPPED_MODEL,
        description="Path of the .onnx file (metadata gives names, imgsz, task); default: the model shipped in "
        "models/default/.",
    )
    follow_registry: bool = Field(
        True,
        description="At start, run the model promoted in the station's model registry (if any) instead of `model`, so "
        "a promotion survives a restart.",
    )
    providers: list[str] = Field(
        default_factory=lambda: ["CPUExecutionProvider"],
        description="Execution providers in order of preference, e.g. [TensorrtExecutionProvider, "
        "CUDAExecutionProvider, CPUExecutionProvider]; unavailable ones are skipped with a log line, CPU "
        "is always the fallback.",
    )
    runtime: Literal["auto", "onnxruntime", "openvino"] = Field(
        "auto",
        description="What runs the model: `openvino` (the optional openvino package: fastest on x86 CPUs, and the only "
        "one that runs "
        "an INT8 model from `models quantize` fast), `onnxruntime` (always installed; needed for GPU execution "
        "providers), or "
        "`auto` = openvino when it is installed and only the CPU is asked for in `providers`, else onnxruntime.",
    )
    precision: Literal["f32", "bf16", "f16"] = Field(
        "f32",
        description="OpenVINO inference precision of the layers a model keeps in floating point, set explicitly: left "
        "alone, OpenVINO "
        "silently runs bf16 on CPUs with AVX-512 BF16/AMX, which moves scores. Use bf16 only after evaluating that "
        "model with it; "
        "an INT8 model's quantised layers run in INT8 whatever this says. onnxruntime always runs the file's own "
        "precision.",
    )
    intra_op_threads: Threads = Field(0, description="Inference threads of onnxruntime or OpenVINO (0 = one per core).")
    allow_spinning: bool = Field(
        True, description="Let onnxruntime threads spin between runs (lower latency, more CPU)."
    )
    graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="onnxruntime graph optimisation level."
    )
    conf: Confidence = Field(
        0.1, description="Drop candidates below this score before NMS (rules apply the real thresholds)."
    )
    iou: OverlapRatio = Field(0.5, description="IoU threshold of the per-class NMS.")
    max_det: CountUpTo10k = Field(300, description="Keep at most this many detections per frame.")
    tiling: TilingConfig = Field(
        default_factory=TilingConfig, description="Tiling for frames much larger than the model input."
    )
    keepalive_s: float = Field(
        5.0,
        ge=0.0,
        description="Run a dummy inference after this many idle seconds so the next part is not slow (0 = off).",
    )
    template_check: TemplateCheckConfig | None = Field(
        None,
        description="After a detect model, also compare the part with its golden template and add the differences "
        "the model missed (unset = the model alone).",
    )


class AnomalyRegion(StrictModel):
    """A rectangle of the frame with its own anomaly threshold (a critical face strict, a cosmetic one lenient)."""

    name: str = Field("region", description="Name shown in logs and reasons.")
    x1: float = Field(..., description="Left edge in frame pixels.")
    y1: float = Field(..., description="Top edge in frame pixels.")
    x2: float = Field(..., description="Right edge in frame pixels.")
    y2: float = Field(..., description="Bottom edge in frame pixels.")
    threshold_scale: ThresholdScale = Field(
        ..., description="Multiply the model's threshold by this inside the rectangle (< 1 stricter, > 1 more lenient)."
    )


class AnomalyInspectorConfig(StrictModel):
    """Anomaly detection learned from good parts only: a heat map per part, its blobs become defects."""

    type: Literal["anomaly"] = Field(
        "anomaly", description="Backend: anomaly model (ONNX) learned from good images, no labels."
    )
    driver: ClassVar[str] = (
        "station.inspection.anomaly:AnomalyInspector"  # imported when first used (station/drivers.py)
    )
    model: Path = Field(
        Path("data/anomaly.onnx"),
        description="The learned anomaly model (.onnx, written by `python -m models.anomaly` or by learning at start). "
        "Loaded "
        "when it exists; otherwise learned from `learn_from` or from the line's first `learn_parts` good parts and "
        "written here.",
    )
    follow_registry: bool = Field(
        True,
        description="At start, run the model promoted in the station's model registry (if it is an anomaly model) "
        "instead of `model`.",
    )
    learn_from: Path | None = Field(
        None,
        description="Folder of good images (one camera view, one size, at least 8; 50-200 recommended) to learn from "
        "when `model` does not exist.",
    )
    learn_parts: int = Field(
        100,
        ge=8,
        le=2000,
        description="With no model and no `learn_from`: learn from this many good parts of the line (they are FAILSAFE "
        "meanwhile).",
    )
    learn_only_good: LearnOnlyGood = True
    long_side: int = Field(
        256,
        ge=64,
        le=2048,
        description="Working size of the frame's long side when learning (the model keeps it): larger finds smaller "
        "defects, slower.",
    )
    target_frr: float = Field(
        0.01,
        gt=0.0,
        lt=0.5,
        description="When learning: the threshold is set so that this share of the good images would score above it "
        "(each scored against the others).",
    )
    features: Literal["filters", "pretrained"] = Field(
        "pretrained",
        description="When learning: `pretrained` (features of an ImageNet-pretrained CNN shipped with the station, "
        "EfficientNet-Lite0: best on real textured surfaces such as solar cells, and the faster of the two) or "
        "`filters` (a fixed filter bank: no weights file needed). See docs/no_labels.md.",
    )
    threshold_scale: ThresholdScale = Field(
        1.0,
        description="Multiply the model's learned threshold by this (< 1 catches fainter anomalies and rejects more "
        "good parts).",
    )
    blob_level: float = Field(
        0.6,
        gt=0.0,
        le=10.0,
        description="Report blobs of the heat map above this fraction of the threshold, so the rules' uncertain band "
        "sees "
        "near misses (a blob's score is 1 - 0.5^peak: 0.5 at the threshold, 0.34 at 0.6 of it, 0.75 at twice it).",
    )
    min_blob_px: int = Field(
        0, ge=0, description="Ignore blobs smaller than this, in frame pixels (rules' min_area_mm2 applies as well)."
    )
    max_blobs: CountUpTo1k = Field(32, description="Report at most this many blobs per frame (the strongest first).")
    regions: list[AnomalyRegion] = Field(
        default_factory=list, description="Rectangles with their own threshold (later entries win where they overlap)."
    )
    providers: list[str] = Field(
        default_factory=lambda: ["CPUExecutionProvider"],
        description="onnxruntime execution providers in order of preference; CPU is always the fallback.",
    )
    intra_op_threads: Threads = Field(
        1,
        description="onnxruntime intra-op threads (0 = one per core). One is fastest for the default working size: "
        "the graph is many small operations (bench/bench_anomaly.py: 13.6 ms with 1 thread, "
        "26.7 ms with 2 on 2 cores).",
    )


InspectorConfig = Annotated[
    ReferenceInspectorConfig | OnnxInspectorConfig | AnomalyInspectorConfig,
    Field(discriminator="type"),
]
