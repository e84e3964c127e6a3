"""Output lines of a Basler camera: ``UserOutputN`` drives ``LineM`` (e.g. an ejector on the camera's opto output).

Each station line name (``reject``, ...) maps to a camera line and a user
output (config ``lines``). On every (re)connect the camera line is set to
``LineMode = Output``, ``LineSource = UserOutputN`` (and ``LineInverter``);
:meth:`PylonOutput.set` then writes ``UserOutputSelector`` / ``UserOutputValue``.

Sharing a station camera (``camera_id``): a camera device can be opened only
once, so the output uses the :class:`~station.acquire.pylon.PylonCamera` with
that id. The station passes its cameras at construction
(``OUTPUTS.create(cfg, cameras={id: camera})``); the output registers its
line configuration with the camera (:meth:`PylonCamera.attach_io`) so it is
applied after every camera reconnect, and writes through the camera's shared
device lock, never waiting behind a grab. While the camera is away every
``set`` raises :class:`~station.actuate.base.OutputError` (the scheduler
counts it and raises the alarm; the camera's own alarm says why).

Own device (``serial`` / ``user_name``, no ``camera_id``): the output opens
that camera itself (no grabbing) with the same reconnect state machine as the
cameras (:class:`~station.acquire.lifecycle.Lifecycle`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from pypylon import genicam, pylon

from ..acquire.base import CameraError
from ..acquire.lifecycle import Lifecycle, StatusFn
from ..acquire.pylon import ENUM_LOCK, PylonCamera, describe_device, find_device, get_node, set_feature
from ..config.actuate import PylonOutputConfig
from .base import OutputEdge, OutputError

log = logging.getLogger(__name__)


class _OwnDevice:
    """Lifecycle hooks for a camera opened only for its outputs."""

    def __init__(self, out: PylonOutput):
        self.out = out
        self.cam: Any | None = None
        self.info: Any | None = None

    def connect(self) -> None:
        cfg = self.out.cfg
        info = find_device(cfg.serial, cfg.user_name, "reject.output")
        with ENUM_LOCK:
            cam = pylon.InstantCamera(pylon.TlFactory.GetInstance().CreateDevice(info))
        self.cam, self.info = cam, info
        cam.Open()
        log.info("pylon output: opened %s", describe_device(info))

    def configure(self) -> None:
        assert self.cam is not None
        self.out._apply_lines(self.cam)

    def disconnect(self) -> None:
        cam, self.cam = self.cam, None
        if cam is None:
            return
        self.out._release_lines(cam)
        for step in ("Close", "DestroyDevice"):
            try:
                getattr(cam, step)()
            except Exception as exc:  # noqa: BLE001 - the device may be gone; releasing is best effort
                log.debug("pylon output: %s failed: %s", step, exc)

    def is_removed(self) -> bool:
        cam = self.cam
        return cam is None or bool(cam.IsCameraDeviceRemoved())


class PylonOutput:
    """An :class:`~station.actuate.base.OutputDriver` on a Basler camera's user outputs; see the module docstring."""

    def __init__(
        self,
        cfg: PylonOutputConfig,
        *,
        cameras: Mapping[str, object] | None = None,
        on_status: StatusFn | None = None,
        **_: object,
    ):
        self.cfg = cfg
        self._lock = threading.Lock()  # UserOutputSelector + UserOutputValue is two writes: keep them together
        self._state: dict[str, bool] = {}
        self._edges: list[OutputEdge] = []
        self.errors = 0
        self.last_error = ""
        self.camera: PylonCamera | None = None
        self._own: _OwnDevice | None = None
        self._life: Lifecycle | None = None
        if cfg.camera_id is not None:
            cam = (cameras or {}).get(cfg.camera_id)
            if cam is None:
                known = ", ".join(cameras or {}) or "none passed"
                raise ValueError(
                    f"reject.output.camera_id: {cfg.camera_id!r} is not one of the station's cameras ({known})"
                )
            if not isinstance(cam, PylonCamera):
                raise ValueError(
                    f"reject.output.camera_id: camera {cfg.camera_id!r} is not a pylon camera; its user outputs cannot "
                    "be driven"
                )
            self.camera = cam
        else:
            self._own = _OwnDevice(self)
            self._life = Lifecycle("output:pylon", self._own, cfg.reconnect, on_status)

    # -- line configuration (runs on every (re)connect) ---------------------
    def _apply_lines(self, cam: Any) -> None:
        for name, line in self.cfg.lines.items():
            where = f"reject.output.lines.{name}"
            set_feature(cam, "LineSelector", line.line, f"{where}.line")
            set_feature(cam, "LineMode", "Output", f"{where}.line")
            set_feature(cam, "LineSource", line.user_output, f"{where}.user_output")
            inverter = get_node(cam, "LineInverter")
            if inverter is not None and genicam.IsWritable(inverter):
                set_feature(cam, "LineInverter", line.invert, f"{where}.invert")
            elif line.invert:
                raise CameraError(f"{where}.invert: this camera cannot invert {line.line}")
            set_feature(cam, "UserOutputSelector", line.user_output, f"{where}.user_output")
            set_feature(cam, "UserOutputValue", False, f"{where}.user_output")
        with self._lock:
            self._state = {name: False for name in self.cfg.lines}

    def _release_lines(self, cam: Any) -> None:
        for line in self.cfg.lines.values():
            try:
                cam.UserOutputSelector.SetValue(line.user_output)
                cam.UserOutputValue.SetValue(False)
            except Exception as exc:  # noqa: BLE001 - the device may already be gone
                log.debug("pylon output: could not drive %s low: %s", line.line, exc)

    def bind_alarms(self, report: StatusFn) -> None:
        """Own device: report lost / reconnected through ``report(component, state, message)`` (the station's
        alarms)."""
        if self._life is not None:
            self._life.on_status = report

    # -- OutputDriver -------------------------------------------------------
    def open(self) -> None:
        """Own device: open it (reconnecting in the background if so configured). Shared: hook into the camera."""
        if self.camera is not None:
            self.camera.attach_io(self._apply_lines, self._release_lines)
            return
        assert self._life is not None
        try:
            self._life.open()
        except CameraError as exc:
            raise OutputError(str(exc)) from exc

    def _device(self, timeout_s: float) -> AbstractContextManager[Any]:
        if self.camera is not None:
            return self.camera.device(timeout_s)
        return self._own_device(timeout_s)

    @contextmanager
    def _own_device(self, timeout_s: float) -> Iterator[Any]:
        assert self._life is not None and self._own is not None
        with self._life.use(timeout_s):
            cam = self._own.cam
            if cam is None:
                raise CameraError("pylon output: no device")
            yield cam

    def set(self, line: str, value: bool) -> None:
        """Drive ``line`` (a name under ``lines``) high or low; OutputError when the camera is away or refuses."""
        spec = self.cfg.lines.get(line)
        if spec is None:
            raise OutputError(
                f"pylon output has no line {line!r}; add it under reject.output.lines (known: "
                f"{', '.join(self.cfg.lines)})"
            )
        try:
            with self._device(self.cfg.lock_timeout_ms / 1000) as cam, self._lock:
                cam.UserOutputSelector.SetValue(spec.user_output)
                cam.UserOutputValue.SetValue(bool(value))
                if self.cfg.verify:
                    got = bool(cam.UserOutputValue.GetValue())
                    if got != bool(value):
                        raise OutputError(f"{spec.user_output} reads back {got} after writing {bool(value)}")
                t = time.monotonic_ns()
                if self._state.get(line) != bool(value):
                    self._edges.append(OutputEdge(line, bool(value), t))
                self._state[line] = bool(value)
        except (CameraError, genicam.GenericException, OutputError) as exc:
            self.errors += 1
            self.last_error = str(exc).split(" : ")[0]
            raise OutputError(
                f"pylon output {line} ({spec.line}/{spec.user_output}) = {value}: {self.last_error}"
            ) from None
        self.last_error = ""

    def get(self, line: str) -> bool:
        """Read the line's UserOutputValue back from the camera; OutputError when the camera is away."""
        spec = self.cfg.lines.get(line)
        if spec is None:
            raise OutputError(f"pylon output has no line {line!r} (known: {', '.join(self.cfg.lines)})")
        try:
            with self._device(1.0) as cam, self._lock:
                cam.UserOutputSelector.SetValue(spec.user_output)
                return bool(cam.UserOutputValue.GetValue())
        except (CameraError, genicam.GenericException) as exc:
            raise OutputError(
                f"pylon output {line}: cannot read {spec.user_output}: {str(exc).split(' : ')[0]}"
            ) from None

    def edges(self, line: str | None = None) -> list[OutputEdge]:
        """Every confirmed edge so far (optionally of one line)."""
        with self._lock:
            return [e for e in self._edges if line is None or e.line == line]

    def close(self) -> None:
        """Drive every line low and release an own device (a shared camera releases its lines itself)."""
        for name in self.cfg.lines:
            try:
                self.set(name, False)
            except OutputError as exc:
                log.debug("pylon output: %s", exc)
        if self._life is not None:
            self._life.close()

    def health(self) -> dict[str, object]:
        """Alarm while the device is away, warning after a failed write."""
        if self.camera is not None:
            ch = self.camera.health()
            state, msg = (
                ("ok", f"on camera {self.camera.camera_id}")
                if ch.get("lifecycle") == "streaming"
                else ("alarm", f"camera {self.camera.camera_id}: {ch['message']}")
            )
        else:
            assert self._life is not None
            h = self._life.health()
            state, msg = str(h["state"]), str(h["message"])
        if state == "ok" and self.last_error:
            state, msg = "warning", self.last_error
        return {"state": state, "message": msg, "lines": dict(self._state), "errors": self.errors}
