"""Camera and trigger configuration: one model per driver ``type``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import Field

from .base import StrictModel


class SyntheticCameraConfig(StrictModel):
    """Renders procedural parts with known defects: the embedded default."""

    type: Literal["synthetic"] = Field("synthetic", description="Driver: procedural parts with ground truth.")
    id: str = Field("cam0", description="Camera id, unique on the station; stored with every frame.")
    product: Literal["machined", "pcb"] = Field("machined", description="What the parts look like: a machined flange or a PCB-like board.")
    width: int = Field(1280, ge=64, le=8192, description="Frame width in pixels.")
    height: int = Field(800, ge=64, le=8192, description="Frame height in pixels.")
    defect_rate: float = Field(0.2, ge=0.0, le=1.0, description="Fraction of parts that carry at least one defect.")
    defect_classes: list[str] = Field(
        default_factory=lambda: ["scratch", "spot", "missing"],
        description="Defect classes to draw, from: scratch, spot, missing.",
    )
    jitter_px: int = Field(12, ge=0, le=200, description="Maximum random shift of the part in x and y, in pixels.")
    rotation_deg: float = Field(1.0, ge=0.0, le=45.0, description="Maximum random rotation of the part, in degrees.")
    noise_sigma: float = Field(3.0, ge=0.0, le=50.0, description="Standard deviation of the sensor noise, in grey levels.")
    lighting_variation: float = Field(0.06, ge=0.0, le=0.5, description="Relative brightness variation between parts (0.06 = +/-6 %).")
    seed: int | None = Field(None, description="Random seed; set it for a reproducible line.")


class FolderCameraConfig(StrictModel):
    """Replays the images of a folder in name order."""

    type: Literal["folder"] = Field("folder", description="Driver: replay image files from a folder.")
    id: str = Field("cam0", description="Camera id, unique on the station.")
    path: Path = Field(..., description="Folder of .png/.jpg/.bmp/.tif images.")
    loop: bool = Field(True, description="Start again at the first image after the last one.")
    grayscale: bool = Field(True, description="Load images as Mono8 (True) or BGR (False).")


CameraConfig = Annotated[
    Union[SyntheticCameraConfig, FolderCameraConfig],
    Field(discriminator="type"),
]


class TimerTriggerConfig(StrictModel):
    """A part every 60/parts_per_minute seconds (a simulated photo-eye)."""

    type: Literal["timer"] = Field("timer", description="Trigger: fixed rate from a timer.")
    parts_per_minute: float = Field(120.0, gt=0, le=60000, description="Parts per minute arriving at the camera.")


class SoftwareTriggerConfig(StrictModel):
    """Parts are triggered by an API call (`POST /api/trigger`) or by code."""

    type: Literal["software"] = Field("software", description="Trigger: by API call or by code.")


TriggerConfig = Annotated[
    Union[TimerTriggerConfig, SoftwareTriggerConfig],
    Field(discriminator="type"),
]
