"""The reconnect state machine shared by every real camera driver (pylon, opencv).

A driver implements a few small hooks (:class:`DeviceHooks`: ``connect``,
``configure``, ``disconnect``, ``is_removed`` and, for cameras, ``grab_raw``);
:class:`Lifecycle` does the rest, the same way for every device:

::

    closed --open()--> connecting --ok--> streaming --removed / lost_after_failures--> lost
                            |                 ^                                         |
                            | fail            | ok (whole configuration re-applied)     v
                            v                 |                                      backoff
                         backoff --wait--> connecting <----------------------------------+

- While the device is away, :meth:`LifecycleCamera.grab` raises
  :class:`DeviceUnavailable` (a :class:`~station.acquire.base.CameraError`) at
  once: the part becomes FAILSAFE and is counted as dropped by the pipeline,
  never silently lost, and no acquisition thread blocks.
- Reconnection runs in a background thread with exponential backoff
  (``initial_s * factor**n``, capped at ``max_s``), so the station never restarts.
- After every successful connect the *whole* configuration is applied again
  (cameras forget their settings when they are unplugged or power-cycled).
- State changes are reported through ``on_status(component, state, message)``
  (the station wires it to ``station.alarms.report``): ``alarm`` when lost or
  while reconnect attempts fail, ``ok`` when streaming again.

The device itself is guarded by a shared/exclusive lock: grabs and output
writes use it shared (they never wait for each other), connect/configure/
disconnect take it exclusively, so a device is never torn down under a grab.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Any, Protocol

import numpy as np

from ..config.camera import ReconnectConfig
from ..contracts import Frame, Trigger
from .base import CameraError

log = logging.getLogger(__name__)

StatusFn = Callable[[str, str, str], None]


class DeviceState(StrEnum):
    """Where a device is in its life."""

    CLOSED = "closed"
    CONNECTING = "connecting"
    STREAMING = "streaming"
    LOST = "lost"
    BACKOFF = "backoff"


class DeviceLost(CameraError):
    """Raised by a hook when the device is gone (unplugged, stream ended): triggers reconnection."""


class DeviceUnavailable(CameraError):
    """The device is not streaming (lost, reconnecting or closed): the part is FAILSAFE at once."""


class DeviceHooks(Protocol):
    """What a driver implements; the :class:`Lifecycle` calls these, never concurrently with each other."""

    def connect(self) -> None:
        """Find and open the device; raise (any exception) when it cannot be opened."""

    def configure(self) -> None:
        """Apply the whole configuration and start acquisition; called after every connect."""

    def disconnect(self) -> None:
        """Release the device; must not raise and must work on a half-open or removed device."""

    def is_removed(self) -> bool:
        """True when the device is known to be gone (cheap; called after a failed grab)."""


def backoff_delays(cfg: ReconnectConfig) -> Iterator[float]:
    """The waits before reconnect attempts 1, 2, 3, ...: ``initial_s * factor**n`` capped at ``max_s``."""
    delay = cfg.initial_s
    while True:
        yield min(delay, cfg.max_s)
        delay = min(delay * cfg.factor, cfg.max_s)


class _SharedLock:
    """Many shared holders (grabs, output writes) or one exclusive holder (connect/disconnect); writers go first."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting_writers = 0

    def acquire_shared(self, timeout_s: float) -> bool:
        with self._cond:
            return (
                self._cond.wait_for(lambda: not self._exclusive and not self._waiting_writers, timeout=timeout_s)
                and self._inc()
            )

    def _inc(self) -> bool:
        self._shared += 1
        return True

    def release_shared(self) -> None:
        with self._cond:
            self._shared -= 1
            if not self._shared:
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            try:
                self._cond.wait_for(lambda: not self._exclusive and not self._shared)
            finally:
                self._waiting_writers -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class Lifecycle:
    """Connect, watch, lose and reconnect one device through its :class:`DeviceHooks`."""

    def __init__(self, component: str, hooks: DeviceHooks, cfg: ReconnectConfig, on_status: StatusFn | None = None):
        self.component = component
        self.hooks = hooks
        self.cfg = cfg
        self.on_status = on_status
        self._state = DeviceState.CLOSED
        self._cond = threading.Condition()  # guards the fields below; notified on every state change
        self._lock = _SharedLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reason = "not open"
        self.lost_count = 0
        self.reconnects = 0
        self.attempts = 0  # failed attempts since the device was lost
        self.next_attempt_ns: int | None = None
        self.delays: list[float] = []  # every backoff wait taken, for health and tests
        self.consecutive_failures = 0
        self.configured = 0  # how many times the whole configuration was applied

    # -- state --------------------------------------------------------------
    @property
    def state(self) -> DeviceState:
        """The current state."""
        return self._state

    def _set_state(self, state: DeviceState, reason: str | None = None) -> None:
        with self._cond:
            self._state = state
            if reason is not None:
                self.reason = reason
            self._cond.notify_all()

    def wait_state(self, state: DeviceState, timeout_s: float) -> bool:
        """Block until the device is in ``state`` (True) or ``timeout_s`` passed (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._state is state, timeout=timeout_s)

    def _status(self, state: str, message: str) -> None:
        (log.info if state == "ok" else log.warning)("%s: %s", self.component, message)
        if self.on_status is not None:
            try:
                self.on_status(self.component, state, message)
            except Exception:  # noqa: BLE001 - an alarm sink bug must not stop reconnection
                log.exception("on_status callback failed for %s", self.component)

    # -- control ------------------------------------------------------------
    def open(self) -> None:
        """Connect and configure once; on failure raise, or keep trying in the background (``require_at_start:
        false``)."""
        if self._state is not DeviceState.CLOSED:
            return
        self._stop.clear()
        try:
            self._connect_once()
        except Exception as exc:  # noqa: BLE001 - any driver failure to open is reported the same way
            msg = _describe(exc)
            if self.cfg.require_at_start:
                self._set_state(DeviceState.CLOSED, msg)
                raise CameraError(f"{self.component}: cannot open: {msg}") from exc
            self.lost_count += 1
            self._status("alarm", f"cannot open: {msg}; retrying in the background")
            self._set_state(DeviceState.BACKOFF, msg)
            self._start_reconnect()
            return
        self._status("ok", "streaming")

    def close(self) -> None:
        """Stop reconnecting and release the device; safe to call twice."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=10)
        self._thread = None
        with self._lock.exclusive():
            self.hooks.disconnect()
        self._set_state(DeviceState.CLOSED, "closed")

    def lost(self, reason: str) -> None:
        """The device is gone: alarm and reconnect in the background. Safe from any thread, including driver
        callbacks."""
        with self._cond:
            if self._state is not DeviceState.STREAMING or self._stop.is_set():
                return
            self._state = DeviceState.LOST
            self.reason = reason
            self.lost_count += 1
            self.attempts = 0
            self._cond.notify_all()
        self._status("alarm", f"lost: {reason}; reconnecting")
        self._start_reconnect()

    def _start_reconnect(self) -> None:
        with self._cond:
            if self._thread is not None and self._thread.is_alive() and self._thread is not threading.current_thread():
                return
            self._thread = threading.Thread(
                target=self._reconnect_loop, name=f"reconnect-{self.component}", daemon=True
            )
            self._thread.start()

    # -- use ----------------------------------------------------------------
    @contextmanager
    def use(self, timeout_s: float) -> Iterator[None]:
        """Hold the device shared while it streams; DeviceUnavailable at once when it does not."""
        if self._state is not DeviceState.STREAMING:
            raise DeviceUnavailable(self.unavailable_message())
        if not self._lock.acquire_shared(timeout_s):
            raise DeviceUnavailable(f"{self.component} busy: being reconfigured")
        try:
            if self._state is not DeviceState.STREAMING:  # lost while we waited
                raise DeviceUnavailable(self.unavailable_message())
            yield
        finally:
            self._lock.release_shared()

    def unavailable_message(self) -> str:
        """Why the device cannot be used now, for FAILSAFE reasons and errors."""
        st = self._state
        if st is DeviceState.CLOSED:
            return f"{self.component} not open"
        msg = f"{self.component} {st.value}: {self.reason}"
        if self.next_attempt_ns is not None and st is DeviceState.BACKOFF:
            wait = max(0.0, (self.next_attempt_ns - time.monotonic_ns()) / 1e9)
            msg += f" (reconnect attempt {self.attempts + 1} in {wait:.1f} s)"
        elif st in (DeviceState.LOST, DeviceState.CONNECTING):
            msg += " (reconnecting)"
        return msg

    def grab_failed(self, exc: CameraError) -> None:
        """Account for a failed grab: a removed device, or too many failures in a row, means lost."""
        if isinstance(exc, DeviceUnavailable):
            return
        self.consecutive_failures += 1
        removed = isinstance(exc, DeviceLost)
        if not removed:
            try:
                removed = self.hooks.is_removed()
            except Exception as probe:  # noqa: BLE001 - a failing probe means we cannot trust the device
                log.warning("%s: removal probe failed: %s", self.component, probe)
                removed = True
        if removed:
            self.lost(str(exc))
        elif self.consecutive_failures >= self.cfg.lost_after_failures:
            self.lost(f"{self.consecutive_failures} failed grabs in a row, last: {exc}")

    def grab_ok(self) -> None:
        """A good frame: the failure streak is over."""
        self.consecutive_failures = 0

    # -- reconnection -------------------------------------------------------
    def _connect_once(self) -> None:
        self._set_state(DeviceState.CONNECTING)
        with self._lock.exclusive():
            try:
                self.hooks.connect()
                self.hooks.configure()
            except BaseException:
                self.hooks.disconnect()
                raise
            self.configured += 1
            self.consecutive_failures = 0
            self._set_state(DeviceState.STREAMING, "streaming")

    def _reconnect_loop(self) -> None:
        with self._lock.exclusive():
            self.hooks.disconnect()
        delays = backoff_delays(self.cfg)
        while not self._stop.is_set():
            delay = next(delays)
            self.delays.append(delay)
            self.next_attempt_ns = time.monotonic_ns() + int(delay * 1e9)
            self._set_state(DeviceState.BACKOFF)
            if self._stop.wait(delay):
                break
            try:
                self._connect_once()
            except Exception as exc:  # noqa: BLE001 - every failure is another backoff round
                self.attempts += 1
                msg = _describe(exc)
                self._set_state(DeviceState.BACKOFF, msg)
                self._status("alarm", f"reconnect attempt {self.attempts} failed: {msg}")
                continue
            self.next_attempt_ns = None
            self.reconnects += 1
            self._status("ok", f"reconnected after {self.attempts + 1} attempt(s); configuration re-applied")
            self.attempts = 0
            return
        self.next_attempt_ns = None

    # -- health -------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """``state`` ok/warning/alarm for the status page, plus the lifecycle facts."""
        st = self._state
        level = {DeviceState.STREAMING: "ok", DeviceState.CLOSED: "warning"}.get(st, "alarm")
        return {
            "state": level,
            "message": "streaming" if st is DeviceState.STREAMING else self.unavailable_message(),
            "lifecycle": st.value,
            "lost": self.lost_count,
            "reconnects": self.reconnects,
            "failed_attempts": self.attempts,
            "consecutive_failures": self.consecutive_failures,
        }


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__


class LifecycleCamera:
    """Base of camera drivers with a device that can go away: grab/wait_frame/health over :class:`Lifecycle`.

    Subclasses set ``camera_id`` and implement the :class:`DeviceHooks` plus
    :meth:`grab_raw`. ``grab`` raises :class:`DeviceUnavailable` at once while
    the device is away; failed buffers and timeouts raise ``CameraError`` and
    count towards ``lost_after_failures``.
    """

    camera_id: str
    #: True when frames arrive on their own (hardware trigger / free run / live stream): the camera can drive the line.
    self_triggered: bool = False

    def __init__(self, camera_id: str, reconnect: ReconnectConfig, on_status: StatusFn | None = None):
        self.camera_id = camera_id
        self.lifecycle = Lifecycle(f"camera:{camera_id}", self, reconnect, on_status)
        self.frames = 0
        self.failed = 0
        self.last_error = ""

    # hooks, implemented by drivers
    def connect(self) -> None:  # pragma: no cover - abstract
        """Open the device."""
        raise NotImplementedError

    def configure(self) -> None:  # pragma: no cover - abstract
        """Apply the whole configuration and start acquisition."""
        raise NotImplementedError

    def disconnect(self) -> None:  # pragma: no cover - abstract
        """Release the device; never raises."""
        raise NotImplementedError

    def is_removed(self) -> bool:
        """True when the device is known to be gone."""
        return False

    def grab_raw(
        self, trigger: Trigger | None, timeout_s: float
    ) -> tuple[np.ndarray, int, dict[str, Any]]:  # pragma: no cover
        """One image: ``(image, t_exposure_ns, meta)``; ``trigger`` None = the next frame that arrives on its own.

        Raise ``CameraError`` for a bad frame or a timeout, ``DeviceLost`` when the device is gone.
        """
        raise NotImplementedError

    # CameraDriver
    @property
    def state(self) -> DeviceState:
        """Lifecycle state of the device."""
        return self.lifecycle.state

    def open(self) -> None:
        """Connect and apply the whole configuration (see :meth:`Lifecycle.open`)."""
        self.lifecycle.open()

    def close(self) -> None:
        """Stop reconnecting and release the device; safe to call twice."""
        self.lifecycle.close()

    def grab(self, trigger: Trigger, timeout_s: float) -> Frame:
        """The frame of ``trigger``'s part; ``CameraError`` (FAILSAFE) on any failure, at once while the device is
        away."""
        image, t_exp, meta = self._grab(trigger, timeout_s)
        return Frame(part_id=trigger.part_id, camera_id=self.camera_id, image=image, t_exposure_ns=t_exp, meta=meta)

    def wait_frame(self, timeout_s: float) -> Frame | None:
        """The next frame that arrives on its own (part_id 0), None if none within ``timeout_s``.

        While the device is away this waits for it to stream again (up to
        ``timeout_s``) and returns None: no frame, no part. A frame that
        arrived broken raises ``CameraError`` (a part was there: it is FAILSAFE).
        """
        if self.lifecycle.state is not DeviceState.STREAMING:
            self.lifecycle.wait_state(DeviceState.STREAMING, timeout_s)
            return None
        try:
            image, t_exp, meta = self._grab(None, timeout_s)
        except DeviceUnavailable:
            return None
        except CameraError as exc:
            if self.lifecycle.state is not DeviceState.STREAMING or _is_timeout(exc):
                return None
            raise
        return Frame(part_id=0, camera_id=self.camera_id, image=image, t_exposure_ns=t_exp, meta=meta)

    def _grab(self, trigger: Trigger | None, timeout_s: float) -> tuple[np.ndarray, int, dict[str, Any]]:
        life = self.lifecycle
        try:
            with life.use(timeout_s):
                out = self.grab_raw(trigger, timeout_s)
        except CameraError as exc:
            self.failed += 1
            self.last_error = str(exc)
            if not (trigger is None and _is_timeout(exc)):  # no frame in free run is not a failure
                life.grab_failed(exc)
            raise
        life.grab_ok()
        self.frames += 1
        self.last_error = ""
        return out

    def health(self) -> dict[str, Any]:
        """Lifecycle health plus frame counters and the last grab error."""
        h = self.lifecycle.health()
        h.update(frames=self.frames, failed_frames=self.failed, last_error=self.last_error)
        if h["state"] == "ok" and self.last_error:
            h["state"], h["message"] = "warning", self.last_error
        return h


class GrabTimeout(CameraError):
    """No frame arrived within the grab timeout (the device may still be fine)."""


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, GrabTimeout)
