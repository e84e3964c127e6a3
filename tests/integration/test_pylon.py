"""Basler cameras on the real pylon camera emulator (PYLON_CAMEMU), in a real Station.

Covers: streaming a folder of images under software trigger, failed buffers
(ForceFailedBuffer), unplugging (FirePnPCallback) with alarm, FAILSAFE parts
during the outage, reconnection with the configuration re-applied and counters
that reconcile; the camera's UserOutput as the reject output; the camera
trigger (free-running camera creates the parts); pixel formats; clear errors.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pypylon", reason="pypylon is in the `plant` extra: pip install -e .[plant]")

from station.acquire.base import CameraError  # noqa: E402
from station.acquire.lifecycle import DeviceState, DeviceUnavailable, GrabTimeout  # noqa: E402
from station.acquire.pylon import PylonCamera  # noqa: E402
from station.actuate.base import OutputError  # noqa: E402
from station.actuate.pylon_output import PylonOutput  # noqa: E402
from station.app import Station  # noqa: E402
from station.config import parse_config  # noqa: E402
from station.config.actuate import PylonOutputConfig, PylonOutputLineConfig  # noqa: E402
from station.config.camera import PylonCameraConfig, ReconnectConfig  # noqa: E402
from station.contracts import Outcome, Trigger  # noqa: E402
from tests.fixtures_floor import Results, running, wait_for  # noqa: E402
from tests.fixtures_pylon import (  # noqa: E402, F401
    FRAME_H,
    FRAME_W,
    emulated_camera,
    pylon_emulator,
    pylon_station_config,
    render_parts,
    run_part,
)

pytestmark = pytest.mark.usefixtures("pylon_emulator")


def _learning(r) -> bool:
    return r.verdict.outcome is Outcome.FAILSAFE and r.verdict.reasons[0].startswith("learning")


def test_folder_stream_failed_buffer_unplug_and_reconnect(tmp_path: Path):
    parts = render_parts(tmp_path / "frames", 6)
    cam_cfg = emulated_camera(
        "cam0",
        "0815-0000",
        tmp_path / "frames",
        exposure_us=12345,
        gain_db=3.0,
        reconnect={"initial_s": 1.5, "max_s": 5},
    )
    station = Station(pylon_station_config(tmp_path, [cam_cfg]))
    results = Results(station)
    station.start()
    cam = station.cameras[0]
    assert isinstance(cam, PylonCamera)
    n_images = len(parts)
    try:
        first = [run_part(station, results) for _ in range(5)]
        # the station got exactly the folder's images, in name order, from the emulated camera
        for i, r in enumerate(first):
            (frame,) = r.frames
            assert frame.camera_id == "cam0" and frame.meta["serial"] == "0815-0000"
            assert np.array_equal(frame.image, parts[i % n_images].image)
            assert frame.meta["exposure_us"] == 12345.0
        assert [_learning(r) for r in first] == [True, True, True, False, False]
        assert all(r.verdict.outcome is Outcome.PASS for r in first[3:]), [r.verdict for r in first[3:]]

        # a failed buffer fails that part only
        with cam.device() as dev:
            dev.ForceFailedBufferCount.SetValue(1)
            dev.ForceFailedBuffer.Execute()
        bad = run_part(station, results)
        assert bad.verdict.outcome is Outcome.FAILSAFE and not bad.frames
        assert "failed buffer" in bad.verdict.reasons[0] and "incompletely grabbed" in bad.verdict.reasons[0]
        after = run_part(station, results)
        assert after.verdict.outcome is Outcome.PASS and len(after.frames) == 1
        dropped_before = station.counters.snapshot().dropped
        assert dropped_before == 1

        # unplug: alarm, parts FAILSAFE at once (not after a timeout) and counted as dropped
        with cam.device() as dev:
            dev.FirePnPCallback.Execute()
        wait_for(lambda: cam.state is not DeviceState.STREAMING, 5, "the removal to be noticed")
        wait_for(
            lambda: any(e.component == "camera:cam0" and e.state == "alarm" for e in station.alarms.active()),
            5,
            "camera alarm",
        )
        outage = [run_part(station, results) for _ in range(2)]
        assert cam.state is not DeviceState.STREAMING, (
            "the outage ended before the test parts: raise reconnect.initial_s"
        )
        for r in outage:
            assert r.verdict.outcome is Outcome.FAILSAFE and not r.frames
            assert "camera cam0" in r.verdict.reasons[0] and "device removed" in r.verdict.reasons[0], r.verdict.reasons
        assert station.counters.snapshot().dropped == dropped_before + 2

        # the background thread reconnects and re-applies the whole configuration: no restart
        assert cam.lifecycle.wait_state(DeviceState.STREAMING, 15)
        with cam.device() as dev:
            assert dev.ExposureTime.GetValue() == pytest.approx(12345.0)
            assert dev.Gain.GetValue() == pytest.approx(3.0, abs=0.05)
            assert (dev.Width.GetValue(), dev.Height.GetValue()) == (FRAME_W, FRAME_H)
            assert dev.ImageFileMode.GetValue() == "On" and dev.TriggerSource.GetValue() == "Software"
        h = cam.health()
        assert h["lost"] == 1 and h["reconnects"] == 1 and h["lifecycle"] == "streaming"
        resumed = [run_part(station, results) for _ in range(3)]
        assert all(r.verdict.outcome is Outcome.PASS and len(r.frames) == 1 for r in resumed), [
            r.verdict for r in resumed
        ]
        # the emulator restarts its folder after a reconnect: first image again
        assert np.array_equal(resumed[0].frames[0].image, parts[0].image)
        wait_for(
            lambda: not any(e.component == "camera:cam0" for e in station.alarms.active()),
            5,
            "the camera alarm to clear",
        )
    finally:
        station.stop()
        results.close()
    snap = station.counters.snapshot()
    total = 5 + 2 + 2 + 3
    assert snap.triggers == total and snap.dropped == 3 and snap.frames == total - 3
    assert station.reconcile() == []
    db = sqlite3.connect(station.cfg.store.db_path)
    assert db.execute("select count(*) from inspections").fetchone()[0] == total
    db.close()


def test_user_output_is_the_reject_output_and_survives_reconnect(tmp_path: Path):
    render_parts(tmp_path / "frames", 8, defective={4, 6})
    cam_cfg = emulated_camera("top", "0815-0001", tmp_path / "frames", reconnect={"initial_s": 0.3})
    cfg = pylon_station_config(
        tmp_path,
        [cam_cfg],
        reject={
            "travel_ms": 250,
            "safety_margin_ms": 100,
            "pulse_ms": 60,
            "realtime_priority": 0,
            "output": {
                "type": "pylon",
                "camera_id": "top",
                "lines": {"reject": {"line": "Line2", "user_output": "UserOutput1"}},
                "verify": True,
            },
        },
    )
    station = Station(cfg)
    out = station.output
    cam = station.cameras[0]
    assert isinstance(cam, PylonCamera)
    results = Results(station)
    seen: list[tuple[int, bool]] = []
    stop_polling = threading.Event()

    def poll() -> None:  # watch the camera's UserOutputValue from outside, as a wire would
        while not stop_polling.is_set():
            with contextlib.suppress(OutputError):  # camera away (unplugged below)
                seen.append((time.monotonic_ns(), out.get("reject")))  # type: ignore[attr-defined]
            time.sleep(0.002)

    station.start()
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        with cam.device() as dev:
            dev.LineSelector.SetValue("Line2")
            assert dev.LineMode.GetValue() == "Output" and dev.LineSource.GetValue() == "UserOutput1"
        got = []
        for _ in range(8):
            r = run_part(station, results)
            got.append(r)
            time.sleep(0.4)  # let this part's pulse end before the next part (pulses must not merge)
        outcomes = [r.verdict.outcome for r in got]
        assert outcomes[:3] == [Outcome.FAILSAFE] * 3  # learning: rejected to be safe
        assert outcomes[3:] == [Outcome.PASS, Outcome.FAIL, Outcome.PASS, Outcome.FAIL, Outcome.PASS], [
            r.verdict.reasons for r in got
        ]
        rejecting = [r.trigger.part_id for r in got if r.verdict.rejects]
        wait_for(lambda: station.scheduler.pending_rejects == 0, 5, "the last pulse")
        assert sorted(f.part_id for f in station.scheduler.fired) == rejecting
        rising = [e for e in out.edges("reject") if e.value]  # type: ignore[attr-defined]
        falling = [e for e in out.edges("reject") if not e.value]  # type: ignore[attr-defined]
        assert len(rising) == len(rejecting) == 5 and len(falling) == 5
        observed_rises = sum(1 for (_, a), (_, b) in zip(seen, seen[1:]) if b and not a)
        assert observed_rises == 5, "the camera's UserOutputValue was seen high once per rejected part"

        # camera unplugged: the output line configuration comes back with the camera
        with cam.device() as dev:
            dev.FirePnPCallback.Execute()
        wait_for(lambda: cam.state is not DeviceState.STREAMING, 5, "the removal")
        with pytest.raises(OutputError, match="top"):
            out.set("reject", True)
        assert cam.lifecycle.wait_state(DeviceState.STREAMING, 10)
        with cam.device() as dev:
            dev.LineSelector.SetValue("Line2")
            assert dev.LineMode.GetValue() == "Output" and dev.LineSource.GetValue() == "UserOutput1"
        out.set("reject", True)
        assert out.get("reject") is True  # type: ignore[attr-defined]
        out.set("reject", False)
        assert out.get("reject") is False  # type: ignore[attr-defined]
    finally:
        stop_polling.set()
        poller.join(2)
        station.stop()
        results.close()
    assert station.reconcile() == []


def test_free_running_camera_creates_the_parts(tmp_path: Path):
    render_parts(tmp_path / "frames", 4)
    cam_cfg = emulated_camera("cam0", "0815-0002", tmp_path / "frames", trigger_mode="freerun", frame_rate=10)
    cfg = pylon_station_config(tmp_path, [cam_cfg], trigger={"type": "camera", "camera_id": "cam0"})
    n = 8
    station = Station(cfg, max_parts=n)
    with running(station) as results:
        results.wait(4)
        cam = station.cameras[0]
        assert isinstance(cam, PylonCamera)
        with cam.device() as dev:  # a frame that arrives broken still means a part was there
            dev.ForceFailedBufferCount.SetValue(1)
            dev.ForceFailedBuffer.Execute()
        wait_for(station.trigger_source_done, 20, f"{n} parts from the camera")
        rs = [results.wait(pid) for pid in range(1, n + 1)]
    assert [r.trigger.source for r in rs] == ["camera:cam0"] * n
    broken = [r for r in rs if not r.frames]
    assert len(broken) == 1 and broken[0].trigger.part_id > 4
    assert broken[0].verdict.outcome is Outcome.FAILSAFE and "failed buffer" in broken[0].verdict.reasons[0]
    good = [r for r in rs if r.frames]
    for r in good:
        (frame,) = r.frames
        assert frame.part_id == r.trigger.part_id and frame.t_exposure_ns == r.trigger.t_trigger_ns
    numbers = [r.frames[0].meta["image_number"] for r in good]
    steps = np.diff(numbers).tolist()
    assert set(steps) <= {1, 2} and steps.count(2) <= 1, (
        numbers
    )  # one part per camera frame; only the broken one missing
    assert sum(r.verdict.outcome is Outcome.PASS for r in rs) == n - 4
    snap = station.counters.snapshot()
    assert snap.triggers == n and snap.dropped == 1 and station.reconcile() == []


def test_hardware_trigger_mode_waits_for_the_line(tmp_path: Path):
    cam_cfg = PylonCameraConfig(
        id="hw", serial="0815-0000", trigger_mode="hardware", trigger_line="Line1", width=320, height=240
    )
    cam = PylonCamera(cam_cfg)
    cam.open()
    try:
        with cam.device() as dev:
            assert (dev.TriggerMode.GetValue(), dev.TriggerSource.GetValue(), dev.TriggerActivation.GetValue()) == (
                "On",
                "Line1",
                "RisingEdge",
            )
        assert cam.self_triggered
        assert cam.wait_frame(0.3) is None  # no edge on Line1: no frame, so no part
        with pytest.raises(GrabTimeout):
            cam.grab(Trigger(1, 1, time.monotonic_ns()), 0.2)
    finally:
        cam.close()
    assert cam.state is DeviceState.CLOSED


@pytest.mark.parametrize(
    ("fmt", "output", "shape"),
    [
        ("Mono8", "auto", (240, 320)),
        ("BGR8", "auto", (240, 320, 3)),
        ("BayerRG8", "auto", (240, 320, 3)),
        ("BayerRG8", "mono8", (240, 320)),
    ],
)
def test_pixel_formats_are_converted(fmt: str, output: str, shape: tuple[int, ...]):
    cam = PylonCamera(PylonCameraConfig(serial="0815-0001", pixel_format=fmt, output=output, width=320, height=240))  # type: ignore[arg-type]
    cam.open()
    try:
        frame = cam.grab(Trigger(1, 1, time.monotonic_ns()), 1.0)
    finally:
        cam.close()
    assert frame.image.shape == shape and frame.image.dtype == np.uint8 and frame.image.flags.writeable
    assert frame.image.std() > 1  # the emulator's test pattern, not a blank buffer
    assert frame.meta["pixel_format"].startswith(fmt)


def test_bad_settings_name_the_field(tmp_path: Path):
    with pytest.raises(CameraError, match=r"serial '9999-0000' \(cameras\[cam0\]\.serial\).*0815-0000"):
        PylonCamera(PylonCameraConfig(serial="9999-0000")).open()
    with pytest.raises(CameraError, match=r"user name 'nobody' \(cameras\[cam0\]\.user_name\)"):
        PylonCamera(PylonCameraConfig(user_name="nobody")).open()
    with pytest.raises(CameraError, match=r"cameras\[cam0\]\.width=99999: camera rejected Width.*allowed 1\.\.4096"):
        PylonCamera(PylonCameraConfig(serial="0815-0000", width=99999)).open()
    with pytest.raises(CameraError, match=r"cameras\[cam0\]\.emulator_folder: .*missing is not a folder"):
        PylonCamera(PylonCameraConfig(serial="0815-0000", emulator_folder=tmp_path / "missing")).open()
    with pytest.raises(CameraError, match=r"cameras\[cam0\]\.nodes\.Nope: this camera has no feature Nope"):
        PylonCamera(PylonCameraConfig(serial="0815-0000", nodes={"Nope": 1})).open()
    with pytest.raises(Exception, match="either `serial` or `user_name`"):
        parse_config({"cameras": [{"type": "pylon", "serial": "1", "user_name": "x"}]})
    with pytest.raises(Exception, match="is not one of the station's cameras"):
        Station(
            pylon_station_config(
                tmp_path,
                [{"type": "pylon", "serial": "0815-0000"}],
                reject={"output": {"type": "pylon", "camera_id": "nope"}},
            )
        )
    with pytest.raises(Exception, match="does not deliver frames on its own"):
        Station(
            pylon_station_config(
                tmp_path, [{"type": "pylon", "serial": "0815-0000"}], trigger={"type": "camera", "camera_id": "cam0"}
            )
        )


def test_camera_missing_at_start_is_retried_in_the_background():
    events: list[tuple[str, str, str]] = []
    cfg = PylonCameraConfig(
        serial="0815-0009", reconnect=ReconnectConfig(initial_s=0.05, max_s=0.2, require_at_start=False)
    )
    cam = PylonCamera(cfg, on_status=lambda *e: events.append(e))
    cam.open()  # does not raise
    try:
        wait_for(lambda: cam.lifecycle.attempts >= 3, 5, "three reconnect attempts")
        with pytest.raises(DeviceUnavailable, match="backoff|connecting"):
            cam.grab(Trigger(1, 1, 0), 0.5)
        assert cam.health()["state"] == "alarm"
    finally:
        cam.close()
    assert cam.lifecycle.delays[:3] == [0.05, 0.1, 0.2] and set(cam.lifecycle.delays[3:]) <= {0.2}
    assert events[0][:2] == ("camera:cam0", "alarm") and "no pylon camera with serial '0815-0009'" in events[0][2]
    assert any("reconnect attempt 2 failed" in e[2] for e in events)


def test_own_device_output_reads_back():
    out = PylonOutput(
        PylonOutputConfig(
            serial="0815-0002",
            lines={
                "reject": PylonOutputLineConfig(line="Line3", user_output="UserOutput2"),
                "ready": PylonOutputLineConfig(line="Line2", user_output="UserOutput1"),
            },
        )
    )
    out.open()
    try:
        out.set("ready", True)
        out.set("reject", True)
        assert out.get("reject") is True and out.get("ready") is True
        out.set("reject", False)
        assert out.get("reject") is False and out.get("ready") is True
        with pytest.raises(Exception, match="no line 'eject'"):
            out.set("eject", True)
        assert out.health()["state"] == "ok"
    finally:
        out.close()
    assert [(e.line, e.value) for e in out.edges()] == [
        ("ready", True),
        ("reject", True),
        ("reject", False),
        ("ready", False),
    ]
