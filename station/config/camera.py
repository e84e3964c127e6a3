"""Camera and trigger configuration: one model per driver ``type``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from .base import CountUpTo1k, MsUpTo10min, MsUpTo10s, SecondsUpTo1min, Share, SmallPx, StrictModel

Product = Literal["machined", "pcb"]
DefectClass = Literal["scratch", "spot", "missing"]
DEFECT_CLASSES: tuple[DefectClass, ...] = ("scratch", "spot", "missing")
SidePx = Annotated[int | None, Field(ge=1)]
"""A frame side in pixels, at least one; None leaves it to the camera (each field says how)."""


class SyntheticCameraConfig(StrictModel):
    """Renders procedural parts with known defects: the embedded default."""

    type: Literal["synthetic"] = Field("synthetic", description="Driver: procedural parts with ground truth.")
    driver: ClassVar[str] = "station.acquire.synthetic:SyntheticCamera"  # imported when first used (station/drivers.py)
    id: str = Field("cam0", description="Camera id, unique on the station; stored with every frame.")
    product: Product = Field("machined", description="What the parts look like: a machined flange or a PCB-like board.")
    width: int = Field(1280, ge=64, le=8192, description="Frame width in pixels.")
    height: int = Field(800, ge=64, le=8192, description="Frame height in pixels.")
    defect_rate: Share = Field(0.2, description="Fraction of parts that carry at least one defect.")
    defect_classes: list[DefectClass] = Field(
        default_factory=lambda: list(DEFECT_CLASSES),
        min_length=1,
        description="Defect classes to draw, from: scratch (thin line), spot (dent/stain blob), missing (bolt hole / "
        "component absent).",
    )
    jitter_px: SmallPx = Field(12, description="Maximum random shift of the part in x and y, in pixels.")
    rotation_deg: float = Field(1.0, ge=0.0, le=45.0, description="Maximum random rotation of the part, in degrees.")
    noise_sigma: float = Field(
        3.0, ge=0.0, le=50.0, description="Standard deviation of the sensor noise, in grey levels."
    )
    lighting_variation: float = Field(
        0.06, ge=0.0, le=0.5, description="Relative brightness variation between parts (0.06 = +/-6 %)."
    )
    harmless_mark_rate: Share = Field(
        0.0,
        description="Fraction of parts that carry a harmless ink mark (class 'mark', NOT a defect; listed under "
        "meta['marks']).",
    )
    defects_on_features: Share = Field(
        0.0,
        description="Fraction of scratches and spots centred on one of the part's bright fixed features (the "
        "board's pads, silkscreen, vias and holes; the flange has none, so it changes nothing there) instead of "
        "anywhere on its surface: training parts for defects that touch the part's own features. 0 = anywhere "
        "(and the same parts for a given seed as before this setting).",
    )
    seed: int | None = Field(
        None,
        description="Random seed; set it for a reproducible line (part N is then always the same part). None = a new "
        "seed per start.",
    )


class FolderCameraConfig(StrictModel):
    """Replays the images of a folder in name order."""

    type: Literal["folder"] = Field("folder", description="Driver: replay image files from a folder.")
    driver: ClassVar[str] = "station.acquire.folder:FolderCamera"  # imported when first used (station/drivers.py)
    id: str = Field("cam0", description="Camera id, unique on the station.")
    path: Path = Field(
        ..., description="Folder of .png/.jpg/.jpeg/.bmp/.tif/.tiff images, replayed sorted by file name."
    )
    loop: bool = Field(
        True,
        description="Start again at the first image after the last one. When false, every grab after the last image "
        "fails with "
        "'folder exhausted' (those parts are FAILSAFE).",
    )
    grayscale: bool = Field(True, description="Load images as Mono8 (True) or BGR (False).")


class ReconnectConfig(StrictModel):
    """How a camera (or camera-hosted output) that went away is reconnected: exponential backoff, capped."""

    initial_s: SecondsUpTo1min = Field(
        0.5, description="Wait before the first reconnect attempt after the device was lost, in seconds."
    )
    factor: float = Field(2.0, ge=1.0, le=10.0, description="Each failed attempt multiplies the wait by this factor.")
    max_s: float = Field(
        30.0, gt=0, le=3600, description="Longest wait between two reconnect attempts, in seconds (the cap)."
    )
    require_at_start: bool = Field(
        True,
        description="True: the station refuses to start when the device cannot be opened (a wrong serial is caught at "
        "once). "
        "False: start anyway, raise an alarm and keep trying in the background.",
    )
    lost_after_failures: CountUpTo1k = Field(
        3,
        description="Consecutive failed grabs (timeouts, failed buffers) after which the device is treated as lost and "
        "reopened.",
    )

    @model_validator(mode="after")
    def _cap_above_start(self) -> ReconnectConfig:
        if self.max_s < self.initial_s:
            raise ValueError(f"max_s ({self.max_s}) must be at least initial_s ({self.initial_s})")
        return self


PylonPixelFormat = Literal["Mono8", "BGR8", "RGB8", "BayerRG8", "BayerBG8", "BayerGR8", "BayerGB8"]


class PylonCameraConfig(StrictModel):
    """A Basler camera through pypylon (GigE, USB3; the pylon camera emulator in tests)."""

    type: Literal["pylon"] = Field("pylon", description="Driver: Basler pylon camera (pypylon).")
    driver: ClassVar[str] = "station.acquire.pylon:PylonCamera"  # imported when first used (station/drivers.py)
    id: str = Field("cam0", description="Camera id, unique on the station; stored with every frame.")
    serial: str | None = Field(
        None, description="Open the camera with this serial number (e.g. '40012345'; '0815-0000' for the emulator)."
    )
    user_name: str | None = Field(
        None,
        description="Open the camera with this user-defined name (DeviceUserID, set in pylon Viewer); used when "
        "`serial` is not set.",
    )
    trigger_mode: Literal["software", "hardware", "freerun"] = Field(
        "software",
        description="software: the station triggers each frame (TriggerSoftware) when a part arrives; hardware: the "
        "camera input "
        "`trigger_line` exposes each frame (e.g. a photo-eye wired to the camera); freerun: the camera streams at "
        "`frame_rate`. "
        "With hardware/freerun, use trigger `{type: camera, camera_id: <this id>}` so each frame creates its part.",
    )
    trigger_line: str = Field(
        "Line1", description="hardware mode: the camera input line that triggers exposure (TriggerSource)."
    )
    trigger_activation: Literal["RisingEdge", "FallingEdge"] = Field(
        "RisingEdge", description="hardware mode: the edge of `trigger_line` that triggers."
    )
    frame_rate: float | None = Field(
        None,
        gt=0,
        le=10000,
        description="freerun mode: frames per second (AcquisitionFrameRate); None = as fast as the camera goes.",
    )
    exposure_us: float | None = Field(
        None,
        gt=0,
        description="Exposure time in microseconds (ExposureTime; auto exposure is switched off). None = keep the "
        "camera's.",
    )
    gain_db: float | None = Field(
        None, ge=0, description="Gain in dB (Gain; auto gain is switched off). None = keep the camera's."
    )
    width: SidePx = Field(None, description="ROI width in pixels. None = the full sensor width.")
    height: SidePx = Field(None, description="ROI height in pixels. None = the full sensor height.")
    offset_x: int = Field(0, ge=0, description="ROI left edge in pixels (OffsetX).")
    offset_y: int = Field(0, ge=0, description="ROI top edge in pixels (OffsetY).")
    pixel_format: PylonPixelFormat = Field(
        "Mono8",
        description="Camera pixel format: Mono8, BGR8, RGB8 or a Bayer 8-bit pattern (converted to BGR on the host).",
    )
    output: Literal["auto", "mono8", "bgr8"] = Field(
        "auto",
        description="Frame layout given to the inspector: auto = Mono8 stays grey, colour formats become BGR; or force "
        "mono8 / bgr8.",
    )
    user_set: str | None = Field(
        "Default",
        description="Load this camera user set (UserSetSelector/UserSetLoad) before applying the fields above, so the "
        "camera starts "
        "from a known state after every (re)connect; None = keep whatever the camera holds.",
    )
    nodes: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Any other camera feature by its GenICam name, applied last in this order (e.g. {BlackLevel: 4, "
        "ReverseX: true}).",
    )
    emulator_folder: Path | None = Field(
        None,
        description="pylon camera emulator only: stream the images of this folder (ImageFileMode) instead of the test "
        "pattern; "
        "set PYLON_CAMEMU=<n> in the environment to get n emulated cameras.",
    )
    max_buffers: CountUpTo1k = Field(10, description="Host buffers for grabbed frames (MaxNumBuffer).")
    reconnect: ReconnectConfig = Field(
        default_factory=ReconnectConfig, description="Reconnection after the camera is lost."
    )

    @model_validator(mode="after")
    def _one_identity(self) -> PylonCameraConfig:
        if self.serial is not None and self.user_name is not None:
            raise ValueError("set either `serial` or `user_name`, not both (neither = the first camera found)")
        return self


class OpenCvCameraConfig(StrictModel):
    """A USB camera, an RTSP/HTTP stream or a video file through OpenCV's VideoCapture."""

    type: Literal["opencv"] = Field(
        "opencv", description="Driver: OpenCV VideoCapture (USB/V4L2 index, RTSP URL or video file)."
    )
    driver: ClassVar[str] = "station.acquire.opencv_cam:OpenCvCamera"  # imported when first used (station/drivers.py)
    id: str = Field("cam0", description="Camera id, unique on the station; stored with every frame.")
    index: int | None = Field(
        None, ge=0, description="USB / V4L2 camera index (0 = /dev/video0). Set exactly one of index, url, file."
    )
    url: str | None = Field(
        None, description="Stream URL, e.g. rtsp://192.0.2.10:554/stream1. Set exactly one of index, url, file."
    )
    file: Path | None = Field(None, description="Video file (.avi, .mp4, ...). Set exactly one of index, url, file.")
    backend: Literal["any", "v4l2", "ffmpeg", "gstreamer"] = Field(
        "any", description="VideoCapture backend (any = OpenCV's choice)."
    )
    width: SidePx = Field(
        None, description="Requested frame width (USB cameras pick the nearest mode; checked and logged)."
    )
    height: SidePx = Field(None, description="Requested frame height.")
    fps: float | None = Field(
        None,
        gt=0,
        le=1000,
        description="Requested frames per second; for a file in realtime playback, overrides the file's rate.",
    )
    fourcc: str | None = Field(
        None,
        min_length=4,
        max_length=4,
        description="Requested codec of a USB camera, e.g. MJPG (needed for high resolutions over USB2).",
    )
    exposure: float | None = Field(
        None, description="CAP_PROP_EXPOSURE in the driver's own units (V4L2: 100 us steps); None = leave auto."
    )
    grayscale: bool = Field(True, description="Deliver Mono8 (True) or BGR (False) frames.")
    at_end: Literal["loop", "lost"] = Field(
        "loop",
        description="Video file only: at its end start again (loop) or treat the camera as lost and reopen the file "
        "with backoff (lost).",
    )
    playback: Literal["per_grab", "realtime"] = Field(
        "per_grab",
        description="Video file only: per_grab = one file frame per grab (replay a recorded line part by part); "
        "realtime = play at the "
        "file's frame rate like a live stream (grabs take the next frame after the trigger).",
    )
    stream_timeout_ms: MsUpTo10min = Field(
        5000.0,
        description="Streams (url/index): open and read timeout; a stream silent for this long is lost and reopened.",
    )
    buffer_frames: CountUpTo1k = Field(
        4,
        description="Streams: frames kept between the reader thread and the line; older ones are dropped and counted "
        "(overruns).",
    )
    reconnect: ReconnectConfig = Field(
        default_factory=ReconnectConfig, description="Reconnection after the stream stops or the file is gone."
    )

    @model_validator(mode="after")
    def _one_source(self) -> OpenCvCameraConfig:
        given = [k for k in ("index", "url", "file") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"set exactly one of index, url, file (got {', '.join(given) or 'none'})")
        return self

    @property
    def is_file(self) -> bool:
        """True for a video file source."""
        return self.file is not None


CameraConfig = Annotated[
    SyntheticCameraConfig | FolderCameraConfig | PylonCameraConfig | OpenCvCameraConfig,
    Field(discriminator="type"),
]


class TimerTriggerConfig(StrictModel):
    """A part every 60/parts_per_minute seconds (a simulated photo-eye)."""

    type: Literal["timer"] = Field("timer", description="Trigger: fixed rate from a timer.")
    driver: ClassVar[str] = "station.acquire.triggers:TimerTrigger"  # imported when first used (station/drivers.py)
    parts_per_minute: float = Field(120.0, gt=0, le=60000, description="Parts per minute arriving at the camera.")


class SoftwareTriggerConfig(StrictModel):
    """Parts are triggered by an API call (`POST /api/trigger`) or by code."""

    type: Literal["software"] = Field("software", description="Trigger: by API call or by code.")
    driver: ClassVar[str] = "station.acquire.triggers:SoftwareTrigger"  # imported when first used (station/drivers.py)


class CameraTriggerConfig(StrictModel):
    """A camera's own frames create the parts (hardware-triggered or free-running camera)."""

    type: Literal["camera"] = Field("camera", description="Trigger: every frame of camera `camera_id` is one part.")
    driver: ClassVar[str] = (
        "station.acquire.camera_trigger:CameraTrigger"  # imported when first used (station/drivers.py)
    )
    camera_id: str = Field(
        "cam0",
        description="The camera whose frame arrival creates each part: a pylon camera with trigger_mode hardware or "
        "freerun, "
        "or an opencv stream / realtime file. The other cameras are then asked for their frame of that part.",
    )
    poll_ms: MsUpTo10s = Field(
        200.0, description="How long one wait for the next frame lasts before checking for stop."
    )


TriggerConfig = Annotated[
    TimerTriggerConfig | SoftwareTriggerConfig | CameraTriggerConfig,
    Field(discriminator="type"),
]
