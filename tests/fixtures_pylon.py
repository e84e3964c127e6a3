"""Helpers for the tests on the real pylon camera emulator and on real video files.

pylon reads ``PYLON_CAMEMU`` each time it enumerates devices (checked: it is
not frozen at import), so the :func:`pylon_emulator` fixture only has to set
it before a test opens a camera; the whole ``tests/`` folder can run in one
process whatever imported pypylon first.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from station.acquire.render import RenderedPart, part_rng, render_part
from station.config import StationConfig, SyntheticCameraConfig, parse_config
from station.contracts import PartResult
from tests.fixtures_floor import Results
from tests.station_configs import store_section

EMULATED_CAMERAS = 3  # serials 0815-0000, 0815-0001, 0815-0002
FRAME_W, FRAME_H = 640, 400


@pytest.fixture
def pylon_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``EMULATED_CAMERAS`` pylon emulator devices for this test."""
    monkeypatch.setenv("PYLON_CAMEMU", str(EMULATED_CAMERAS))
    yield


def render_parts(folder: Path, n: int, *, defective: set[int] = frozenset(), seed: int = 5) -> list[RenderedPart]:  # type: ignore[assignment]
    """Write ``n`` synthetic machined parts as ``f000.png ...`` (Mono8, FRAME_W x FRAME_H) into ``folder``.

    Every part has a planned defect; it is drawn only for the indexes in
    ``defective`` (0-based), so the other frames are clean. Returns the parts
    (``truth`` of a clean frame is emptied).
    """
    folder.mkdir(parents=True, exist_ok=True)
    sc = SyntheticCameraConfig(width=FRAME_W, height=FRAME_H, defect_rate=1.0, seed=seed, jitter_px=6, rotation_deg=0.5)
    parts = []
    for i in range(n):
        draw = i in defective
        p = render_part(part_rng(seed, i + 1), sc, draw_defects=draw)
        if not draw:
            p = RenderedPart(p.image, p.product, (), (), p.pose, p.gain)
        ok = cv2.imwrite(str(folder / f"f{i:03d}.png"), p.image)
        assert ok
        parts.append(p)
    return parts


def emulated_camera(cam_id: str, serial: str, folder: Path, **extra: Any) -> dict[str, Any]:
    """The config of a pylon emulator device ``serial`` streaming the images of ``folder`` (FRAME_W x FRAME_H);
    ``extra``: more of its fields."""
    return {
        "type": "pylon",
        "id": cam_id,
        "serial": serial,
        "emulator_folder": str(folder),
        "width": FRAME_W,
        "height": FRAME_H,
        **extra,
    }


def pylon_station_config(tmp_path: Path, cameras: list[dict[str, Any]], **overrides: Any) -> StationConfig:
    """A station on pylon cameras, software trigger, reference inspector learning from 3 parts, web off, store in
    tmp_path."""
    data: dict[str, Any] = {
        "cameras": cameras,
        "trigger": {"type": "software"},
        "inspector": {"type": "reference", "learn_parts": 3},
        "reject": {"travel_ms": 400, "safety_margin_ms": 100, "pulse_ms": 20},
        "pipeline": {"grab_timeout_ms": 1000},
        "store": store_section(tmp_path, keep_pass_every=1),
        "web": {"enabled": False},
    }
    data.update(overrides)
    return parse_config(data)


def run_part(station: Any, results: Results, timeout_s: float = 10.0) -> PartResult:
    """Trigger one part by software and wait for its final result (gathered by ``results``)."""
    trig = station.trigger()
    assert trig is not None, "station refused the trigger (paused or not running)"
    return results.wait(trig.part_id, timeout_s)


def write_video(path: Path, levels: list[int], size: tuple[int, int] = (160, 120), fps: float = 20.0) -> None:
    """A real MJPG .avi whose frame ``i`` is a flat grey ``levels[i]`` with its index drawn on it."""
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened(), f"cannot write {path}"
    for i, level in enumerate(levels):
        img = np.full((h, w, 3), level, np.uint8)
        cv2.putText(img, str(i), (w // 3, h // 2), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255 - level,) * 3, 2)
        writer.write(img)
    writer.release()


def frame_level(image: np.ndarray) -> int:
    """The flat grey level of a frame written by :func:`write_video` (its corner, away from the digits), to the nearest
    10.

    Levels are multiples of 10; MJPG moves flat areas by a grey level or two.
    """
    return int(round(float(np.median(image[:10, :10])) / 10.0)) * 10
