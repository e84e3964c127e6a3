"""The station's configuration tree: pydantic v2 models loaded from one YAML file.

Every section forbids unknown keys and documents every field, so
``station check-config FILE`` can name the field and the fix, and
``station config-schema`` prints the whole reference.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

from station import serialize

from .actuate import (
    GpiodOutputConfig,
    ModbusOutputConfig,
    OpcUaOutputConfig,
    OutputConfig,
    RejectConfig,
    SimulatedOutputConfig,
)
from .base import CountUpTo1k, SecondsUpTo1day, SecondsUpTo1min, Share, StrictModel, repeated
from .camera import (
    CameraConfig,
    FolderCameraConfig,
    SoftwareTriggerConfig,
    SyntheticCameraConfig,
    TimerTriggerConfig,
    TriggerConfig,
)
from .floor import (
    EncoderConfig,
    ModbusEndpointConfig,
    MqttConfig,
    OpcUaServerConfig,
    PlcConfig,
    PublishConfig,
    RejectVerifyConfig,
)
from .health import HealthConfig
from .inspection import (
    AnomalyInspectorConfig,
    AnomalyRegion,
    InspectorConfig,
    OnnxInspectorConfig,
    ReferenceInspectorConfig,
    TilingConfig,
)
from .plant import PlantLinkConfig
from .rules import ClassRule, IgnoreZone, RulesConfig, default_model_rules
from .store import StoreConfig
from .web import WebConfig

__all__ = [
    "AnomalyInspectorConfig",
    "AnomalyRegion",
    "CalibrationConfig",
    "CalibrationLimits",
    "CameraConfig",
    "ClassRule",
    "ConfigError",
    "FolderCameraConfig",
    "IgnoreZone",
    "InspectorConfig",
    "OnnxInspectorConfig",
    "OutputConfig",
    "PipelineConfig",
    "ReferenceInspectorConfig",
    "RejectConfig",
    "RulesConfig",
    "SimulatedOutputConfig",
    "SoftwareTriggerConfig",
    "StationConfig",
    "StoreConfig",
    "StrictModel",
    "SyntheticCameraConfig",
    "TilingConfig",
    "TimerTriggerConfig",
    "TriggerConfig",
    "WatchdogConfig",
    "WebConfig",
    "config_hash",
    "default_model_rules",
    "load_config",
    "parse_config",
]
__all__ += [
    "HealthConfig",
    "PlantLinkConfig",
    "GpiodOutputConfig",
    "ModbusOutputConfig",
    "OpcUaOutputConfig",
    "EncoderConfig",
    "ModbusEndpointConfig",
    "MqttConfig",
    "OpcUaServerConfig",
    "PlcConfig",
    "PublishConfig",
    "RejectVerifyConfig",
]


class CalibrationLimits(StrictModel):
    """When a camera calibration (`python -m calibration calibrate`, the admin page) is refused."""

    min_views: int = Field(5, ge=3, le=200, description="Fewer usable board views than this: refused (add views).")
    min_coverage: Share = Field(
        0.5, description="Share of the frame (4x4 cells) the board corners must reach over all views."
    )
    max_rms_px: float = Field(1.0, gt=0, description="Reprojection error (px, RMS) above this: refused.")
    min_sharpness: float = Field(
        100.0, ge=0, description="A view whose board has a lower variance of the Laplacian is blurred and not used."
    )


class CalibrationConfig(StrictModel):
    """Pixel-to-millimetre scale, referenced by every verdict.

    A camera with a calibration in force in the database (versioned per camera, from the CLI or the
    admin page) uses that one's mm per pixel and id; these values apply to the others.
    """

    id: str = Field("nominal", description="Calibration id stored with every verdict (from `calibration` runs).")
    mm_per_px: float = Field(0.1, gt=0, description="Millimetres per pixel on the part plane (used for min_area_mm2).")
    file: Path | None = Field(
        None, description="A calibration JSON written by `python -m calibration`; overrides id and mm_per_px."
    )
    undistort: bool = Field(
        False,
        description="Undistort every frame of a camera with a calibration in force (a precomputed remap) before "
        "inspection.",
    )
    limits: CalibrationLimits = Field(
        default_factory=CalibrationLimits, description="When a new calibration is refused."
    )


class PipelineConfig(StrictModel):
    """Queues between the threads of the hot path."""

    frame_queue: CountUpTo1k = Field(
        4, description="Frames waiting for the inspector; when full the newest part is FAILSAFE (drop-new)."
    )
    grab_timeout_ms: float = Field(
        500.0, gt=0, description="A camera that returns no frame within this time fails the part (FAILSAFE)."
    )
    realtime_priority: int = Field(
        0,
        ge=0,
        le=98,
        description="SCHED_FIFO priority for the acquisition and inference threads (0 = normal). Set it (e.g. 1, below "
        "reject.realtime_priority) on a dedicated station PC to keep reject edges on time when the CPU "
        "is saturated; needs CAP_SYS_NICE.",
    )
    malloc_arenas: int = Field(
        1,
        ge=0,
        le=64,
        description="glibc malloc arenas for the station process (mallopt M_ARENA_MAX). Frames are allocated in one "
        "thread and freed in others; with an arena per thread the heaps fragment and RSS crept 3-14 % "
        "over 100 model hot swaps (bench/bench_faults.py hot_swaps); one arena keeps it flat (+0.2 %). 0 "
        "= glibc's default (8 per core).",
    )


class WatchdogConfig(StrictModel):
    """Stuck and dead hot-path workers, and the systemd watchdog (station/watchdog.py)."""

    enabled: bool = Field(
        True, description="Watch the inference worker and the camera threads; restart a stuck or dead one."
    )
    stall_s: float = Field(
        1.5,
        gt=0.05,
        le=60,
        description="A worker busy with one part longer than this is stuck (a camera grab: at least twice "
        "pipeline.grab_timeout_ms). "
        "Detected within stall_s + period_s; keep it above the slowest normal inspection.",
    )
    period_s: float = Field(0.1, gt=0, le=5, description="How often the health check runs.")
    max_restarts: int = Field(
        3,
        ge=0,
        le=1000,
        description="Restarts allowed within restart_window_s; one more and the station stops (exit code 1) for "
        "systemd to restart it.",
    )
    restart_window_s: SecondsUpTo1day = Field(60.0, description="The window max_restarts counts over.")
    recover_s: SecondsUpTo1min = Field(
        0.5,
        description="A restarted worker that finished a part, or waited this long for work without sticking, has "
        "recovered (the alarm clears).",
    )
    notify_s: SecondsUpTo1min = Field(
        1.0,
        description="Send WATCHDOG=1 to systemd this often (at least twice per WatchdogSec) while every worker is "
        "healthy.",
    )


def _default_cameras() -> list[CameraConfig]:
    return [SyntheticCameraConfig()]


class StationConfig(StrictModel):
    """The whole station."""

    name: str = Field("station-1", description="Station name shown on screens and in published messages.")
    cameras: list[CameraConfig] = Field(
        default_factory=_default_cameras,
        description="Cameras that view each part; with several, their frames are combined into one verdict.",
    )
    trigger: TriggerConfig = Field(
        default_factory=TimerTriggerConfig, description="What starts the inspection of a part."
    )
    inspector: InspectorConfig = Field(
        default_factory=OnnxInspectorConfig,
        description="The defect model backend; default: the shipped ONNX model on the CPU (`type: reference` needs no "
        "model).",
    )
    rules: RulesConfig = Field(
        default_factory=default_model_rules,
        description="How detections become a verdict; default: the shipped default model's per-class bands "
        "(`default_model_rules`), other classes at 0.5 / 0.3.",
    )
    calibration: CalibrationConfig = Field(
        default_factory=CalibrationConfig, description="Pixel scale of the part plane."
    )
    reject: RejectConfig = Field(default_factory=RejectConfig, description="Reject timing and output.")
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig, description="Hot-path queues.")
    watchdog: WatchdogConfig = Field(
        default_factory=WatchdogConfig,
        description="Stuck or dead workers: restart, or stop for systemd; systemd notifications.",
    )
    store: StoreConfig = Field(default_factory=StoreConfig, description="SQLite and image storage.")
    web: WebConfig = Field(default_factory=WebConfig, description="Operator screen and review UI.")
    publish: PublishConfig = Field(
        default_factory=PublishConfig, description="MQTT and OPC UA publishing of results and status."
    )
    health: HealthConfig = Field(
        default_factory=HealthConfig,
        description="Image health (sharpness, brightness, clipping, position) and model drift alarms on every part "
        "(docs/health.md).",
    )
    plc: PlcConfig | None = Field(
        None, description="Modbus TCP handshake with the line PLC (ready, heartbeat, results, recipe); off when absent."
    )
    plant: PlantLinkConfig | None = Field(
        None,
        description="Uplink of results and images to the plant tier (docs/plant.md); off when absent: the station runs "
        "on its own.",
    )
    recipes: dict[int, Path] = Field(
        default_factory=dict,
        description="Recipe (product) number -> ONNX model file; selected by the PLC (RECIPE_REQUEST) or OPC UA "
        "(SelectRecipe). Needs inspector.type onnx.",
    )

    @model_validator(mode="after")
    def _plc_mode_needs_plc(self) -> StationConfig:
        if self.reject.mode == "plc" and self.plc is None:
            raise ValueError("reject.mode: plc needs a `plc:` section (the PLC endpoint that receives the results)")
        return self

    @model_validator(mode="after")
    def _camera_ids_unique(self) -> StationConfig:
        dup = repeated([c.id for c in self.cameras])
        if dup:
            raise ValueError(f"camera ids must be unique; repeated: {', '.join(dup)} (give each camera its own `id`)")
        if not self.cameras:
            raise ValueError("at least one camera is needed (add an entry under `cameras`)")
        return self


class ConfigError(ValueError):
    """A config file that does not validate; ``errors`` are (field path, message) pairs."""

    def __init__(self, source: str, errors: list[tuple[str, str]]):
        self.source = source
        self.errors = errors
        lines = [f"{source}: {len(errors)} error(s)"] + [f"  {path}: {msg}" for path, msg in errors]
        super().__init__("\n".join(lines))


def _hint(err: ErrorDetails) -> str:
    kind = err["type"]
    msg = err["msg"]
    if kind == "extra_forbidden":
        return "unknown key; remove it or check its spelling (`station config-schema` lists every field)"
    if kind == "missing":
        return "required field is missing; add it"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        return f"unknown type {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return "missing `type`; say which driver to use"
    return f"{msg} (got {err.get('input')!r})" if "input" in err and not isinstance(err["input"], dict) else msg


def parse_config(data: dict[str, Any] | None, source: str = "<config>") -> StationConfig:
    """Validate a config mapping; raise ConfigError naming each bad field."""
    try:
        return StationConfig.model_validate(data or {})
    except ValidationError as exc:
        errors = [(".".join(str(p) for p in e["loc"]) or "<root>", _hint(e)) for e in exc.errors()]
        raise ConfigError(source, errors) from None


def load_config(path: str | Path | None) -> StationConfig:
    """Load and validate a YAML config file; ``None`` gives the embedded default."""
    if path is None:
        return StationConfig()
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ConfigError(str(p), [("<file>", "file not found")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(p), [("<yaml>", f"not valid YAML: {exc}")]) from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(str(p), [("<root>", "the top level must be a mapping of sections (name:, cameras:, ...)")])
    return parse_config(data, str(p))


def config_hash(cfg: StationConfig) -> str:
    """Short stable hash of the effective config, stored with every verdict."""
    # the watchdog and the plant link do not change a verdict: leaving it out keeps the hash of existing configs;
    # nor do the calibration limits (they only refuse new calibrations); undistort counts when on;
    # image health only changes verdicts with uncertain_on_drift, and only then is it hashed
    exclude: dict[str, Any] = {"watchdog": True, "plant": True, "calibration": {"limits"}}
    if not cfg.health.uncertain_on_drift:
        exclude["health"] = True
    data = cfg.model_dump(mode="json", exclude=exclude)
    if not data["calibration"]["undistort"]:
        del data["calibration"]["undistort"]
    blob = serialize.dumps(data, canonical=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
