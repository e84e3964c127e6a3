"""The camera trigger: a camera's own frames create the parts.

For a hardware-triggered camera (photo-eye wired to the camera input) or a
free-running one, the frame arrival *is* the trigger. This source runs one
thread that waits for the next frame of camera ``camera_id`` and hands it to
the line (``on_frame``), which registers the part with that frame and asks
the other cameras for theirs.

A frame that arrives broken (failed buffer) still means a part was there: it
is handed on as ``(camera_id, None, reason)`` and the part is FAILSAFE. While
the camera is away no frames arrive, so no parts can be created; the camera's
lifecycle raises the alarm.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

from ..config.camera import CameraTriggerConfig
from ..contracts import Frame
from .base import CameraError
from .triggers import ThreadedTrigger

log = logging.getLogger(__name__)

OnFrame = Callable[[str, "Frame | None", str], object]


@runtime_checkable
class FrameSource(Protocol):
    """A camera whose frames arrive on their own (see :class:`~station.acquire.lifecycle.LifecycleCamera`)."""

    camera_id: str
    self_triggered: bool

    def wait_frame(self, timeout_s: float) -> Frame | None:
        """The next frame (part_id 0), None on timeout; CameraError for a broken frame."""


class CameraTrigger(ThreadedTrigger):
    """A :class:`~station.acquire.triggers.TriggerSource` fed by a camera's frame arrivals."""

    def __init__(
        self,
        cfg: CameraTriggerConfig,
        fire: Callable[[str], object] | None = None,
        max_parts: int | None = None,
        *,
        cameras: Mapping[str, object] | None = None,
        on_frame: OnFrame | None = None,
    ):
        if cameras is None or on_frame is None:
            raise ValueError(
                "trigger type 'camera' needs the station's cameras and line (build it through station.app.Station)"
            )
        cam = cameras.get(cfg.camera_id)
        if cam is None:
            raise ValueError(
                f"trigger.camera_id: {cfg.camera_id!r} is not one of the cameras ({', '.join(cameras)}); use one of "
                "their ids"
            )
        if not isinstance(cam, FrameSource) or not cam.self_triggered:
            raise ValueError(
                f"trigger.camera_id: camera {cfg.camera_id!r} does not deliver frames on its own; use a pylon camera "
                "with "
                "trigger_mode hardware or freerun, or an opencv stream / realtime file (or trigger type software/timer)"
            )
        super().__init__(f"trigger-camera-{cfg.camera_id}", max_parts)
        self.cfg = cfg
        self.camera: FrameSource = cam
        self.on_frame = on_frame
        self.failed = 0

    def _run(self) -> None:
        cam_id = self.camera.camera_id
        poll_s = self.cfg.poll_ms / 1000
        while not self._stop.is_set():
            try:
                frame = self.camera.wait_frame(poll_s)
            except CameraError as exc:  # a broken frame: a part was there, it is FAILSAFE
                self.failed += 1
                trig = self.on_frame(cam_id, None, str(exc))
            else:
                if frame is None:
                    continue
                trig = self.on_frame(cam_id, frame, "")
            if trig is None:
                continue  # line paused: the frame was discarded, no part
            if self._counted():
                break
