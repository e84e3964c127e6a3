"""The OpenCV camera on real video files written by cv2.VideoWriter (no network streams).

Covers: a recorded line replayed one frame per part through a real Station;
a file that ends (at_end: lost), is deleted and then replaced, reconnected
with backoff without restarting; a file played in real time as a live stream
that stops and reconnects; a stream driving the line as its trigger; errors.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from station.acquire.base import CameraError
from station.acquire.lifecycle import DeviceState, DeviceUnavailable
from station.acquire.opencv_cam import OpenCvCamera
from station.app import Station
from station.config import ConfigError, parse_config
from station.config.camera import OpenCvCameraConfig, ReconnectConfig
from station.contracts import Outcome, Trigger
from tests.fixtures_floor import running, wait_for
from tests.fixtures_pylon import (
    FRAME_H,
    FRAME_W,
    frame_level,
    pylon_station_config,
    render_parts,
    run_part,
    write_video,
)


def write_part_video(path: Path, images: list[np.ndarray], fps: float = 20.0) -> None:
    """A real lossless (FFV1) video of grey part images: the frames read back are the images written."""
    h, w = images[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"FFV1"), fps, (w, h))
    assert writer.isOpened()
    for img in images:
        writer.write(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
    writer.release()


def which(image: np.ndarray, originals: list[np.ndarray]) -> int:
    """Index of the original ``image`` is exactly equal to (-1 if none)."""
    return next((i for i, o in enumerate(originals) if np.array_equal(image, o)), -1)


def opencv_station_config(tmp_path: Path, cam: dict, **overrides):
    return pylon_station_config(tmp_path, [cam], **overrides)


def test_recorded_line_replays_one_frame_per_part(tmp_path: Path):
    parts = render_parts(tmp_path / "frames", 5, defective={4})
    video = tmp_path / "line.avi"
    write_part_video(video, [p.image for p in parts])
    cfg = opencv_station_config(tmp_path, {"type": "opencv", "id": "cam0", "file": str(video), "at_end": "loop"})
    station = Station(cfg)
    with running(station) as results:
        rs = [run_part(station, results) for _ in range(7)]
    originals = [p.image for p in parts]
    for k, r in enumerate(rs):
        (frame,) = r.frames
        assert frame.image.shape == (FRAME_H, FRAME_W) and frame.meta["frame_index"] == k % 5
        assert which(frame.image, originals) == k % 5
    assert rs[5].frames[0].meta["loops"] == 1  # the file started again after its end
    assert [r.verdict.outcome for r in rs[3:]] == [Outcome.PASS, Outcome.FAIL, Outcome.PASS, Outcome.PASS], [
        r.verdict.reasons for r in rs
    ]
    assert station.reconcile() == []


def test_file_that_ends_is_deleted_and_replaced_reconnects_with_backoff(tmp_path: Path):
    video = tmp_path / "cam.avi"
    write_video(video, [30, 90, 150])
    events: list[tuple[str, str, str]] = []
    cfg = OpenCvCameraConfig(file=video, at_end="lost", reconnect=ReconnectConfig(initial_s=0.05, factor=2, max_s=0.2))
    cam = OpenCvCamera(cfg, on_status=lambda *e: events.append(e))
    cam.open()
    try:
        assert [frame_level(cam.grab(Trigger(i, i, 0), 1).image) for i in range(3)] == [30, 90, 150]
        video.unlink()  # the recording is being redone: the open file still reads to its end
        with pytest.raises(CameraError, match="ended after 3 frames"):
            cam.grab(Trigger(4, 4, 0), 1)
        wait_for(lambda: cam.lifecycle.attempts >= 3, 5, "three failed reconnect attempts")
        with pytest.raises(DeviceUnavailable, match="backoff|connecting"):
            cam.grab(Trigger(5, 5, 0), 1)
        assert cam.health()["state"] == "alarm"

        tmp = tmp_path / "cam.tmp.avi"
        write_video(tmp, [200, 210])
        os.replace(tmp, video)  # appears complete, never half-written
        assert cam.lifecycle.wait_state(DeviceState.STREAMING, 5)
        assert [frame_level(cam.grab(Trigger(i, i, 0), 1).image) for i in (6, 7)] == [200, 210]
        h = cam.health()
        assert h["lost"] == 1 and h["reconnects"] == 1 and h["state"] == "ok"
    finally:
        cam.close()
    assert cam.lifecycle.delays[:3] == [0.05, 0.1, 0.2]
    alarms = [e[2] for e in events if e[1] == "alarm"]
    assert "ended after 3 frames" in alarms[0]
    assert any("cameras[cam0].file" in a and "not found" in a for a in alarms[1:])
    assert events[-1][1] == "ok" and "configuration re-applied" in events[-1][2]


def test_stream_that_stops_reconnects_by_itself(tmp_path: Path):
    video = tmp_path / "stream.avi"
    write_video(video, [40, 80, 120, 160], fps=40)
    events: list[tuple[str, str, str]] = []
    cfg = OpenCvCameraConfig(file=video, playback="realtime", at_end="lost", reconnect=ReconnectConfig(initial_s=0.05))
    cam = OpenCvCamera(cfg, on_status=lambda *e: events.append(e))
    cam.open()
    got: list[tuple[int, int]] = []
    try:
        end = time.monotonic() + 10
        while cam.lifecycle.reconnects < 1 or len(got) < 6:
            assert time.monotonic() < end, f"stream did not come back: {got} {events}"
            f = cam.wait_frame(0.5)
            if f is not None:
                got.append((f.meta["seq"], frame_level(f.image)))
    finally:
        cam.close()
    # the reader thread saw the stream stop, the lifecycle reopened it, frames flow again from the start
    assert got[:4] == [(1, 40), (2, 80), (3, 120), (4, 160)]
    assert got[4:6] == [(1, 40), (2, 80)]
    assert [e[1] for e in events] == ["ok", "alarm", "ok"] and "stream stopped" in events[1][2]


def test_stream_drives_the_line_as_camera_trigger(tmp_path: Path):
    parts = render_parts(tmp_path / "frames", 4)
    video = tmp_path / "line.avi"
    write_part_video(video, [p.image for p in parts], fps=15)
    cam = {"type": "opencv", "id": "cam0", "file": str(video), "playback": "realtime", "at_end": "loop"}
    n = 7
    station = Station(
        opencv_station_config(tmp_path, cam, trigger={"type": "camera", "camera_id": "cam0"}), max_parts=n
    )
    with running(station) as results:
        wait_for(station.trigger_source_done, 20, f"{n} parts from the stream")
        rs = [results.wait(pid) for pid in range(1, n + 1)]
    assert all(r.trigger.source == "camera:cam0" for r in rs)
    seqs = [r.frames[0].meta["seq"] for r in rs]
    assert seqs == list(range(1, n + 1)) and rs[0].frames[0].meta["overruns"] == 0
    originals = [p.image for p in parts]
    assert [which(r.frames[0].image, originals) for r in rs] == [k % 4 for k in range(n)]
    assert station.reconcile() == [] and station.counters.snapshot().triggers == n


def test_bad_sources_name_the_field(tmp_path: Path):
    with pytest.raises(ConfigError, match="set exactly one of index, url, file"):
        parse_config({"cameras": [{"type": "opencv", "index": 0, "file": "x.avi"}]})
    with pytest.raises(ConfigError, match="set exactly one of index, url, file"):
        parse_config({"cameras": [{"type": "opencv"}]})
    with pytest.raises(CameraError, match=r"cameras\[cam0\]\.file: .*nope\.avi not found"):
        OpenCvCamera(OpenCvCameraConfig(file=tmp_path / "nope.avi")).open()
    junk = tmp_path / "junk.avi"
    junk.write_text("not a video")
    with pytest.raises(CameraError, match=r"cameras\[cam0\]\.file: (cannot open|no frame could be read)"):
        cam = OpenCvCamera(OpenCvCameraConfig(file=junk))
        try:
            cam.open()
            cam.grab(Trigger(1, 1, 0), 1)
        finally:
            cam.close()
