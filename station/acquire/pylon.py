"""Basler cameras through pypylon (and the pylon camera emulator in tests).

Only this module (and :mod:`station.actuate.pylon_output`, which imports it)
imports pypylon, and the registry imports it only when a ``pylon`` camera or
output is configured. The emulator is selected by the environment variable
``PYLON_CAMEMU=<n>`` (n emulated cameras, serials ``0815-0000`` ...), read by
pylon each time devices are enumerated.

Trigger modes (``trigger_mode``):

- ``software``: :meth:`PylonCamera.grab` waits until the camera is ready for a
  trigger, executes ``TriggerSoftware`` and retrieves the frame with a timeout.
  Frames left over from an earlier timed-out grab are discarded first, so a
  late frame can never be given to the next part.
- ``hardware``: the camera exposes on an edge of ``trigger_line``; ``grab``
  retrieves the next frame that arrived (for several cameras wired to the same
  photo-eye), and :meth:`~station.acquire.lifecycle.LifecycleCamera.wait_frame`
  gives the frame to a ``{type: camera}`` trigger that creates the part.
- ``freerun``: the camera streams at ``frame_rate``; as for hardware.

Frames are stamped with the host clock (``time.monotonic_ns``; the emulator's
camera TimeStamp is 0). A failed buffer (``GrabSucceeded()`` false) raises
:class:`~station.acquire.base.CameraError` with pylon's error description. A
removed device is noticed through ``ConfigurationEventHandler.OnCameraDeviceRemoved``
and ``IsCameraDeviceRemoved()``; :class:`~station.acquire.lifecycle.Lifecycle`
then reconnects with backoff and applies the whole configuration again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import numpy as np
from pypylon import genicam, pylon

from ..config.camera import PylonCameraConfig
from ..contracts import Trigger
from .base import CameraError
from .lifecycle import DeviceLost, GrabTimeout, LifecycleCamera, StatusFn

log = logging.getLogger(__name__)

EMULATOR_DEVICE_CLASS = "BaslerCamEmu"
ENUM_LOCK = threading.Lock()  # device enumeration / creation from several reconnect threads

DeviceFn = Callable[[Any], None]
_RETIRED_HANDLERS: list[Any] = []  # event handlers pylon may still call (see PylonCamera.disconnect)


def list_devices() -> list[Any]:
    """Every pylon device visible now (``pylon.DeviceInfo``)."""
    with ENUM_LOCK:
        return list(pylon.TlFactory.GetInstance().EnumerateDevices())


def describe_device(info: Any) -> str:
    """``model serial 'user name'`` of a ``pylon.DeviceInfo``, for messages."""
    name = info.GetUserDefinedName()
    return f"{info.GetModelName()} serial {info.GetSerialNumber()}" + (f" name {name!r}" if name else "")


def find_device(serial: str | None, user_name: str | None, where: str) -> Any:
    """The ``DeviceInfo`` of the camera with ``serial`` / ``user_name`` (or the first one); CameraError listing what is
    there."""
    devices = list_devices()
    if serial is not None:
        match = [d for d in devices if d.GetSerialNumber() == serial]
        wanted = f"serial {serial!r} ({where}.serial)"
    elif user_name is not None:
        match = [d for d in devices if d.GetUserDefinedName() == user_name]
        wanted = f"user name {user_name!r} ({where}.user_name)"
    else:
        match, wanted = devices[:1], "any camera"
    if match:
        return match[0]
    found = (
        "; ".join(describe_device(d) for d in devices)
        or "none (check cabling / power, or set PYLON_CAMEMU=1 for the emulator)"
    )
    raise DeviceLost(f"no pylon camera with {wanted}; cameras found: {found}")


class _RemovalHandler(pylon.ConfigurationEventHandler):  # type: ignore[misc]  # pypylon has no types: its base is Any
    """Forwards pylon's device-removal event (called on a pylon thread) to the lifecycle."""

    def __init__(self, on_removed: Callable[[str], None]):
        super().__init__()
        self._on_removed = on_removed

    def OnCameraDeviceRemoved(self, camera: Any) -> None:  # noqa: N802 - pylon's name
        self._on_removed("device removed (OnCameraDeviceRemoved)")


def get_node(cam: Any, name: str) -> Any | None:
    """The GenICam node ``name`` of an open camera, None if the camera has no such feature."""
    node = cam.GetNodeMap().GetNode(name)
    return node if node is not None and node.IsValid() else None


def set_feature(cam: Any, name: str, value: Any, field: str) -> Any:
    """Write one GenICam feature and return the value read back; CameraError naming the config field otherwise."""
    node = get_node(cam, name)
    if node is None:
        raise CameraError(f"{field}: this camera has no feature {name}")
    if not genicam.IsWritable(node):
        raise CameraError(f"{field}: camera feature {name} is not writable now")
    try:
        if isinstance(value, str) and hasattr(node, "GetSymbolics"):
            symbols = tuple(node.GetSymbolics())
            if value not in symbols:
                raise CameraError(f"{field}: {name} cannot be {value!r}; this camera offers {', '.join(symbols)}")
        node.SetValue(value)
        return node.GetValue() if genicam.IsReadable(node) else value
    except genicam.GenericException as exc:
        detail = str(exc).split(" : ")[0]
        if hasattr(node, "GetMin") and hasattr(node, "GetInc") and not isinstance(value, (str, bool)):
            with suppress(genicam.GenericException):
                detail += f" (allowed {node.GetMin()}..{node.GetMax()}, step {node.GetInc()})"
        raise CameraError(f"{field}={value!r}: camera rejected {name}: {detail}") from None


def _set_first(cam: Any, names: tuple[str, ...], value: Any, field: str) -> Any:
    """Set the first of ``names`` the camera has (SFNC 2 name first, then the GigE SFNC 1 alias)."""
    for name in names:
        if get_node(cam, name) is not None:
            return set_feature(cam, name, value, field)
    raise CameraError(f"{field}: this camera has none of the features {', '.join(names)}")


def _try_set(cam: Any, name: str, value: Any) -> None:
    node = get_node(cam, name)
    if node is not None and genicam.IsWritable(node):
        try:
            node.SetValue(value)
        except genicam.GenericException as exc:
            log.debug("optional feature %s=%r refused: %s", name, value, exc)


class PylonCamera(LifecycleCamera):
    """A :class:`~station.acquire.base.CameraDriver` for Basler cameras; see the module docstring."""

    def __init__(self, cfg: PylonCameraConfig, *, on_status: StatusFn | None = None, **_: object):
        super().__init__(cfg.id, cfg.reconnect, on_status)
        self.cfg = cfg
        self.self_triggered = cfg.trigger_mode != "software"
        self._where = f"cameras[{cfg.id}]"
        self._cam: Any | None = None
        self._handler: _RemovalHandler | None = None
        self._converter: Any | None = None
        self._target_pixel_type: int | None = None
        self._io: list[tuple[DeviceFn, DeviceFn]] = []
        self.device_info: dict[str, str] = {}
        self.applied: dict[str, Any] = {}
        self.stale_discarded = 0

    # -- things that share the device ---------------------------------------
    def attach_io(self, apply: DeviceFn, release: DeviceFn) -> None:
        """Register extra configuration (e.g. output lines) run after every (re)connect and before disconnect.

        ``apply(instant_camera)`` runs as the last step of :meth:`configure`
        (and at once if the camera already streams); ``release`` before the
        device is closed.
        """
        self._io.append((apply, release))
        if self._cam is not None and self.lifecycle.state.value == "streaming":
            with self.device(1.0) as cam:
                apply(cam)

    @contextmanager
    def device(self, timeout_s: float = 0.1) -> Iterator[Any]:
        """The open ``pylon.InstantCamera`` held shared (it is not torn down meanwhile); DeviceUnavailable when away."""
        with self.lifecycle.use(timeout_s):
            cam = self._cam
            if cam is None:
                raise CameraError(f"camera {self.camera_id}: no device")
            yield cam

    # -- lifecycle hooks ----------------------------------------------------
    def connect(self) -> None:
        """Find the camera (serial, user name or first), register the removal handler and open it."""
        info = find_device(self.cfg.serial, self.cfg.user_name, self._where)
        if self.cfg.emulator_folder is not None and info.GetDeviceClass() != EMULATOR_DEVICE_CLASS:
            raise CameraError(
                f"{self._where}.emulator_folder is for the pylon emulator only; {describe_device(info)} is a real "
                "camera (remove the field)"
            )
        with ENUM_LOCK:
            cam = pylon.InstantCamera(pylon.TlFactory.GetInstance().CreateDevice(info))
        self._cam = cam
        # Replace the default configuration (it would reset the trigger on open): ours is applied in configure().
        self._handler = _RemovalHandler(self.lifecycle.lost)
        cam.RegisterConfiguration(self._handler, pylon.RegistrationMode_ReplaceAll, pylon.Cleanup_None)
        cam.Open()
        self.device_info = {
            "model": info.GetModelName(),
            "serial": info.GetSerialNumber(),
            "user_name": info.GetUserDefinedName(),
            "device_class": info.GetDeviceClass(),
        }
        log.info("camera %s: opened %s", self.camera_id, describe_device(info))

    def configure(self) -> None:
        """Apply the whole configuration (user set, emulator folder, format, ROI, exposure, gain, trigger, nodes, I/O)
        and start grabbing."""
        cam = self._cam
        assert cam is not None
        cfg, w = self.cfg, self._where
        applied: dict[str, Any] = {}
        if cam.IsGrabbing():
            cam.StopGrabbing()
        if cfg.user_set is not None:
            set_feature(cam, "UserSetSelector", cfg.user_set, f"{w}.user_set")
            cam.UserSetLoad.Execute()
        if cfg.emulator_folder is not None:
            folder = cfg.emulator_folder
            if not folder.is_dir():
                raise CameraError(f"{w}.emulator_folder: {folder} is not a folder of images")
            set_feature(cam, "TestImageSelector", "Off", f"{w}.emulator_folder")
            set_feature(cam, "ImageFileMode", "On", f"{w}.emulator_folder")
            applied["ImageFilename"] = set_feature(cam, "ImageFilename", str(folder.resolve()), f"{w}.emulator_folder")
        applied["PixelFormat"] = self._set_pixel_format(cam)
        self._set_roi(cam, applied)
        if cfg.exposure_us is not None:
            _try_set(cam, "ExposureAuto", "Off")
            applied["ExposureTime"] = _set_first(
                cam, ("ExposureTime", "ExposureTimeAbs"), float(cfg.exposure_us), f"{w}.exposure_us"
            )
        if cfg.gain_db is not None:
            _try_set(cam, "GainAuto", "Off")
            applied["Gain"] = _set_first(cam, ("Gain", "GainAbs"), float(cfg.gain_db), f"{w}.gain_db")
        self._set_trigger(cam, applied)
        for name, value in cfg.nodes.items():
            applied[name] = set_feature(cam, name, value, f"{w}.nodes.{name}")
        for apply, _release in self._io:
            apply(cam)
        cam.MaxNumBuffer.SetValue(cfg.max_buffers)
        cam.StartGrabbing(pylon.GrabStrategy_OneByOne)
        self.applied = applied
        log.info("camera %s configured: %s", self.camera_id, applied)

    def _set_pixel_format(self, cam: Any) -> str:
        want = self.cfg.pixel_format
        node = get_node(cam, "PixelFormat")
        offered = tuple(node.GetSymbolics()) if node is not None else ()
        # SFNC names first (BGR8); older GigE cameras and the emulator call them BGR8Packed
        name = next((n for n in (want, f"{want}Packed") if n in offered), None)
        if name is None:
            raise CameraError(
                f"{self._where}.pixel_format: {want} is not offered by this camera ({', '.join(offered)})"
            )
        value = set_feature(cam, "PixelFormat", name, f"{self._where}.pixel_format")
        out = self.cfg.output
        if out == "auto":
            out = "mono8" if want == "Mono8" else "bgr8"
        self._target_pixel_type = pylon.PixelType_Mono8 if out == "mono8" else pylon.PixelType_BGR8packed
        conv = pylon.ImageFormatConverter()
        conv.OutputPixelFormat = self._target_pixel_type
        self._converter = conv
        return str(value)

    def _set_roi(self, cam: Any, applied: dict[str, Any]) -> None:
        cfg, w = self.cfg, self._where
        # offsets to 0 first, so any width/height up to the sensor size is accepted
        for name in ("OffsetX", "OffsetY"):
            _try_set(cam, name, 0)
        width = cfg.width if cfg.width is not None else cam.Width.GetMax()
        height = cfg.height if cfg.height is not None else cam.Height.GetMax()
        applied["Width"] = set_feature(cam, "Width", int(width), f"{w}.width")
        applied["Height"] = set_feature(cam, "Height", int(height), f"{w}.height")
        if cfg.offset_x:
            applied["OffsetX"] = set_feature(cam, "OffsetX", cfg.offset_x, f"{w}.offset_x")
        if cfg.offset_y:
            applied["OffsetY"] = set_feature(cam, "OffsetY", cfg.offset_y, f"{w}.offset_y")

    def _set_trigger(self, cam: Any, applied: dict[str, Any]) -> None:
        cfg, w = self.cfg, self._where
        mode = cfg.trigger_mode
        # continuous acquisition: the emulator (and some cameras) default to SingleFrame
        set_feature(cam, "AcquisitionMode", "Continuous", f"{w}.trigger_mode")
        set_feature(cam, "TriggerSelector", "FrameStart", f"{w}.trigger_mode")
        if mode == "freerun":
            applied["TriggerMode"] = set_feature(cam, "TriggerMode", "Off", f"{w}.trigger_mode")
            if cfg.frame_rate is not None:
                _try_set(cam, "AcquisitionFrameRateEnable", True)
                applied["AcquisitionFrameRate"] = _set_first(
                    cam, ("AcquisitionFrameRate", "AcquisitionFrameRateAbs"), float(cfg.frame_rate), f"{w}.frame_rate"
                )
            return
        applied["TriggerMode"] = set_feature(cam, "TriggerMode", "On", f"{w}.trigger_mode")
        if mode == "software":
            applied["TriggerSource"] = set_feature(cam, "TriggerSource", "Software", f"{w}.trigger_mode")
        else:
            applied["TriggerSource"] = set_feature(cam, "TriggerSource", cfg.trigger_line, f"{w}.trigger_line")
            applied["TriggerActivation"] = set_feature(
                cam, "TriggerActivation", cfg.trigger_activation, f"{w}.trigger_activation"
            )

    def disconnect(self) -> None:
        """Release outputs, stop grabbing, close and destroy the device; never raises (the device may be gone)."""
        cam, self._cam = self._cam, None
        if cam is None:
            return
        for _apply, release in self._io:
            try:
                release(cam)
            except Exception as exc:  # noqa: BLE001 - the device may be gone; releasing is best effort
                log.debug("camera %s: releasing I/O failed: %s", self.camera_id, exc)
        for step in ("StopGrabbing", "Close", "DestroyDevice"):
            try:
                getattr(cam, step)()
            except Exception as exc:  # noqa: BLE001 - a removed device raises on every call; we only release
                log.debug("camera %s: %s failed: %s", self.camera_id, step, exc)
        handler, self._handler = self._handler, None
        if handler is not None:
            # pylon calls its handlers until the InstantCamera object dies (which may be later, if someone still
            # holds it): deregister, and keep the Python object alive if that fails, or pylon would call freed memory.
            try:
                cam.DeregisterConfiguration(handler)
            except Exception as exc:  # noqa: BLE001 - see above
                log.debug("camera %s: DeregisterConfiguration failed: %s", self.camera_id, exc)
                _RETIRED_HANDLERS.append(handler)

    def is_removed(self) -> bool:
        """pylon's own knowledge of the device being gone."""
        cam = self._cam
        return cam is None or bool(cam.IsCameraDeviceRemoved())

    # -- grabbing -----------------------------------------------------------
    def grab_raw(self, trigger: Trigger | None, timeout_s: float) -> tuple[np.ndarray, int, dict[str, Any]]:
        """One frame: software-trigger it (software mode with a trigger) or take the next one that arrives."""
        cam = self._cam
        if cam is None:
            raise DeviceLost(f"camera {self.camera_id}: no device")
        ms = max(1, int(timeout_s * 1000))
        try:
            if self.cfg.trigger_mode == "software" and trigger is not None:
                self._discard_stale(cam)
                if not cam.WaitForFrameTriggerReady(ms, pylon.TimeoutHandling_Return):
                    raise GrabTimeout(f"camera {self.camera_id} not ready for a trigger within {ms} ms")
                t_exposure = time.monotonic_ns()
                cam.ExecuteSoftwareTrigger()
                res = cam.RetrieveResult(ms, pylon.TimeoutHandling_Return)
                t_arrival = time.monotonic_ns()
            else:
                res = cam.RetrieveResult(ms, pylon.TimeoutHandling_Return)
                t_exposure = t_arrival = time.monotonic_ns()
        except genicam.GenericException as exc:
            if self.is_removed():
                raise DeviceLost(f"camera {self.camera_id}: device removed: {str(exc).split(' : ')[0]}") from None
            raise CameraError(f"camera {self.camera_id}: {str(exc).split(' : ')[0]}") from None
        if not res.IsValid():
            if self.is_removed():
                raise DeviceLost(f"camera {self.camera_id}: device removed")
            raise GrabTimeout(f"camera {self.camera_id}: no frame within {ms} ms")
        try:
            if not res.GrabSucceeded():
                raise CameraError(
                    f"camera {self.camera_id}: failed buffer: {res.GetErrorDescription()} (error "
                    f"0x{res.GetErrorCode():08x})"
                )
            image = self._to_array(res)
            meta = {
                "serial": self.device_info.get("serial", ""),
                "block_id": int(res.BlockID) if hasattr(res, "BlockID") else -1,
                "image_number": int(res.ImageNumber),
                "skipped": int(res.GetNumberOfSkippedImages()),
                "pixel_format": self.applied.get("PixelFormat", ""),
                "exposure_us": self.applied.get("ExposureTime"),
                "gain_db": self.applied.get("Gain"),
                "t_arrival_ns": t_arrival,
            }
        finally:
            res.Release()
        return image, t_exposure, meta

    def _discard_stale(self, cam: Any) -> None:
        """Drop frames that arrived after an earlier grab gave up, so they are not taken for this part."""
        while True:
            res = cam.RetrieveResult(0, pylon.TimeoutHandling_Return)
            if not res.IsValid():
                return
            res.Release()
            self.stale_discarded += 1
            log.warning("camera %s: discarded a late frame of an earlier part", self.camera_id)

    def _to_array(self, res: Any) -> np.ndarray:
        arr: np.ndarray
        if res.GetPixelType() == self._target_pixel_type:
            arr = res.GetArray()  # a copy: the buffer goes back to pylon at once
        else:
            assert self._converter is not None
            arr = self._converter.Convert(res).GetArray()
        return arr if arr.flags.writeable else arr.copy()  # pypylon wraps an immutable bytes copy

    def health(self) -> dict[str, Any]:
        """Lifecycle health plus the device and the settings applied at the last (re)connect."""
        h = super().health()
        h.update(
            device=dict(self.device_info),
            applied=dict(self.applied),
            trigger_mode=self.cfg.trigger_mode,
            stale_discarded=self.stale_discarded,
        )
        return h
