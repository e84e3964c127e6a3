"""The camera driver contract and its registry."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..config.camera import CameraConfig
from ..contracts import Frame, Trigger
from ..drivers import Registry


class CameraError(RuntimeError):
    """A grab failed (timeout, failed buffer, device gone). The part is FAILSAFE."""


@runtime_checkable
class CameraDriver(Protocol):
    """A camera that delivers one frame per trigger.

    ``grab`` is called by the camera's acquisition thread once per trigger
    (software / timer trigger) and must return within ``timeout_s`` or raise
    :class:`CameraError`. Drivers stamp frames with the host clock.
    """

    camera_id: str

    def open(self) -> None:
        """Connect and apply the whole configuration."""

    def grab(self, trigger: Trigger, timeout_s: float) -> Frame:
        """Acquire the frame of ``trigger``'s part."""

    def close(self) -> None:
        """Release the device; safe to call twice."""

    def health(self) -> dict[str, object]:
        """State for the status page: at least ``{"state": "ok"|"warning"|"alarm", "message": str}``."""


CAMERAS: Registry[CameraDriver] = Registry.from_union("camera", CameraConfig)
