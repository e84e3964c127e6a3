"""The shared camera reconnect state machine (station.acquire.lifecycle).

The device here is a minimal driver of the hook protocol whose "cable" the
test plugs and unplugs (``present``); the same state machine runs on the real
pylon emulator and on real video files in tests/integration.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from station.acquire.base import CameraError
from station.acquire.lifecycle import (
    DeviceLost,
    DeviceState,
    DeviceUnavailable,
    GrabTimeout,
    LifecycleCamera,
    backoff_delays,
)
from station.config.camera import ReconnectConfig
from station.contracts import Trigger


class CableDevice(LifecycleCamera):
    """Frames are counters; ``present`` is the cable; ``fail_next`` scripts bad frames; every hook call is logged."""

    def __init__(self, reconnect: dict[str, Any] | None = None, events: list | None = None):
        cfg = ReconnectConfig(**({"initial_s": 0.02, "max_s": 0.08} | (reconnect or {})))
        self.log: list[str] = []
        super().__init__("dev", cfg, on_status=(lambda *e: events.append(e)) if events is not None else None)
        self.present = True
        self.open_ = False
        self.setting = 0  # the "configuration" the device forgets on unplug
        self.fail_next: list[Exception] = []
        self.configure_fails = 0
        self.gate: threading.Event | None = None
        self.n = 0

    def connect(self) -> None:
        self.log.append("connect")
        if not self.present:
            raise OSError("no such device")
        self.open_ = True

    def configure(self) -> None:
        self.log.append("configure")
        if self.configure_fails:
            self.configure_fails -= 1
            raise CameraError("exposure refused")
        self.setting = 42

    def disconnect(self) -> None:
        self.log.append("disconnect")
        self.open_ = False
        self.setting = 0

    def is_removed(self) -> bool:
        return not self.present

    def unplug(self) -> None:
        self.present = False
        self.setting = 0

    def grab_raw(self, trigger: Trigger | None, timeout_s: float) -> tuple[np.ndarray, int, dict[str, Any]]:
        self.log.append("grab")
        if self.gate is not None:
            self.gate.wait(5)
            self.log.append("grab-done")
        if not self.present or not self.open_:
            raise CameraError("transfer error")
        if self.fail_next:
            raise self.fail_next.pop(0)
        self.n += 1
        return np.full((4, 4), self.n, np.uint8), time.monotonic_ns(), {"setting": self.setting}


def trig(i: int = 1) -> Trigger:
    return Trigger(i, i, time.monotonic_ns())


def test_backoff_is_exponential_and_capped():
    delays = backoff_delays(ReconnectConfig(initial_s=0.5, factor=2, max_s=3))
    assert [next(delays) for _ in range(6)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    with pytest.raises(ValueError, match="max_s"):
        ReconnectConfig(initial_s=5, max_s=1)


def test_unplug_alarm_failsafe_backoff_reconnect_reconfigure():
    events: list[tuple[str, str, str]] = []
    dev = CableDevice(events=events)
    dev.open()
    assert dev.state is DeviceState.STREAMING and dev.grab(trig(), 1).meta["setting"] == 42

    dev.unplug()
    with pytest.raises(CameraError, match="transfer error"):
        dev.grab(trig(), 1)  # the failed grab probes is_removed(): lost at once
    assert dev.state in (DeviceState.LOST, DeviceState.BACKOFF, DeviceState.CONNECTING)
    grabs = dev.log.count("grab")
    with pytest.raises(DeviceUnavailable, match="dev"):
        dev.grab(trig(), 1)
    assert dev.log.count("grab") == grabs  # while away the device is not touched: the part fails at once

    time.sleep(0.3)  # several backoff rounds with the cable out
    assert dev.state is DeviceState.BACKOFF and dev.lifecycle.attempts >= 3
    assert dev.lifecycle.delays[:4] == [0.02, 0.04, 0.08, 0.08]
    dev.present = True
    assert dev.lifecycle.wait_state(DeviceState.STREAMING, 2)
    assert dev.grab(trig(), 1).meta["setting"] == 42  # configuration applied again after the reconnect
    dev.close()

    assert [e[1] for e in events[:2]] == ["ok", "alarm"] and "lost: transfer error" in events[1][2]
    assert any(e[1] == "alarm" and "reconnect attempt 3 failed: no such device" in e[2] for e in events)
    assert (
        events[-1][1] == "ok" and "reconnected after" in events[-1][2] and "configuration re-applied" in events[-1][2]
    )
    assert dev.lifecycle.configured == 2 and dev.lifecycle.lost_count == 1 and dev.lifecycle.reconnects == 1
    assert dev.state is DeviceState.CLOSED and dev.log[-1] == "disconnect"


def test_repeated_bad_frames_count_as_lost_but_a_good_frame_resets():
    events: list = []
    dev = CableDevice(reconnect={"lost_after_failures": 3, "initial_s": 0.01}, events=events)
    dev.open()
    dev.fail_next = [GrabTimeout("no frame"), CameraError("failed buffer")]
    for _ in range(2):
        with pytest.raises(CameraError):
            dev.grab(trig(), 1)
    dev.grab(trig(), 1)
    assert dev.lifecycle.consecutive_failures == 0 and dev.state is DeviceState.STREAMING
    dev.fail_next = [CameraError("failed buffer")] * 3
    for _ in range(3):
        with pytest.raises(CameraError, match="failed buffer"):
            dev.grab(trig(), 1)
    assert dev.state is not DeviceState.STREAMING  # three in a row: reopened
    assert dev.lifecycle.wait_state(DeviceState.STREAMING, 2)
    assert dev.lifecycle.reconnects == 1
    assert [e[2] for e in events if e[1] == "alarm"] == [
        "lost: 3 failed grabs in a row, last: failed buffer; reconnecting"
    ]
    dev.close()


def test_open_failure_raises_or_retries_in_background():
    dev = CableDevice()
    dev.present = False
    with pytest.raises(CameraError, match="camera:dev: cannot open: no such device"):
        dev.open()
    assert dev.state is DeviceState.CLOSED

    events: list = []
    dev = CableDevice(reconnect={"require_at_start": False}, events=events)
    dev.present = False
    dev.open()
    assert dev.state is DeviceState.BACKOFF and events[0][1] == "alarm"
    dev.present = True
    assert dev.lifecycle.wait_state(DeviceState.STREAMING, 2)
    dev.close()


def test_configuration_failure_on_reconnect_keeps_backing_off():
    dev = CableDevice()
    dev.open()
    dev.configure_fails = 2
    dev.lifecycle.lost("test unplug")
    assert dev.lifecycle.wait_state(DeviceState.STREAMING, 2)
    assert dev.log.count("configure") == 4  # first open, two refused, one good
    assert dev.lifecycle.delays[:3] == [0.02, 0.04, 0.08]
    dev.close()


def test_close_during_backoff_stops_reconnecting():
    dev = CableDevice(reconnect={"initial_s": 30, "max_s": 30})
    dev.open()
    dev.lifecycle.lost("test unplug")
    assert dev.lifecycle.wait_state(DeviceState.BACKOFF, 2)
    thread = dev.lifecycle._thread
    dev.close()
    assert thread is not None and not thread.is_alive() and dev.state is DeviceState.CLOSED
    assert "connect" not in dev.log[1:]


def test_device_is_not_released_under_a_running_grab():
    dev = CableDevice()
    dev.open()
    dev.gate = threading.Event()
    grabber = threading.Thread(target=lambda: dev.grab(trig(), 5))
    grabber.start()
    while "grab" not in dev.log:
        time.sleep(0.001)
    dev.lifecycle.lost("removed during the grab")  # e.g. pylon's removal callback on its own thread
    time.sleep(0.05)
    assert "disconnect" not in dev.log  # the reconnect thread waits for the grab
    dev.gate.set()
    grabber.join(2)
    assert dev.lifecycle.wait_state(DeviceState.STREAMING, 2)
    assert dev.log.index("grab-done") < dev.log.index("disconnect")
    dev.close()


def test_wait_frame_returns_none_while_away_and_raises_for_a_broken_frame():
    dev = CableDevice(reconnect={"initial_s": 30, "max_s": 30})
    dev.open()
    f = dev.wait_frame(0.1)
    assert f is not None and f.part_id == 0
    dev.fail_next = [GrabTimeout("no frame")]
    assert dev.wait_frame(0.1) is None  # nothing arrived: no part, not a failure
    assert dev.lifecycle.consecutive_failures == 0
    dev.fail_next = [CameraError("failed buffer")]
    with pytest.raises(CameraError, match="failed buffer"):
        dev.wait_frame(0.1)  # a frame arrived broken: a part was there
    dev.fail_next = [DeviceLost("gone")]
    assert dev.wait_frame(0.1) is None  # the device went away while waiting: no frame, no part
    assert dev.state in (DeviceState.LOST, DeviceState.BACKOFF)
    assert dev.wait_frame(0.05) is None and dev.lifecycle.wait_state(DeviceState.BACKOFF, 1)
    assert dev.health()["state"] == "alarm" and "attempt 1 in" in dev.health()["message"]
    dev.close()


def test_malloc_arena_limit_applies_on_glibc() -> None:
    """The station limits glibc's malloc arenas (RSS stays flat over hot swaps); 0 leaves glibc's default."""
    import platform

    from station.rt import limit_malloc_arenas

    assert limit_malloc_arenas(0) is False
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert limit_malloc_arenas(1) is True
