"""What one grab costs through the camera drivers, next to the folder camera as the reference.

Same images (synthetic machined parts, Mono8) through:

- ``folder``  (reference): read + decode one PNG per grab;
- ``pylon``   emulator, software trigger: WaitForFrameTriggerReady + TriggerSoftware + RetrieveResult
  (the emulator decodes the same PNG folder, so the difference is pylon's trigger/transport path);
- ``opencv``  lossless FFV1 video, one frame per grab (the decode of a video frame instead of a PNG);
- the lifecycle's own overhead: ``pylon`` grab through PylonCamera vs the bare pypylon calls.

Prints ms per grab and the ratio to the reference, in one run.

Usage: python bench/bench_cameras.py [--grabs 200] [--width 1280] [--height 800]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2

os.environ.setdefault("PYLON_CAMEMU", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from station.acquire.folder import FolderCamera  # noqa: E402
from station.acquire.opencv_cam import OpenCvCamera  # noqa: E402
from station.acquire.render import part_rng, render_part  # noqa: E402
from station.config import FolderCameraConfig, SyntheticCameraConfig  # noqa: E402
from station.config.camera import OpenCvCameraConfig, PylonCameraConfig  # noqa: E402
from station.contracts import Trigger  # noqa: E402


def per_grab_ms(grab: Callable[[int], object], n: int) -> float:
    """Mean ms per grab over n grabs, after 5 warm-up grabs."""
    for i in range(5):
        grab(i)
    t0 = time.perf_counter()
    for i in range(n):
        grab(i)
    return (time.perf_counter() - t0) / n * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grabs", type=int, default=200)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=800)
    ap.add_argument("--images", type=int, default=10)
    args = ap.parse_args()
    from pypylon import pylon  # only once PYLON_CAMEMU is set

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "frames"
        folder.mkdir()
        sc = SyntheticCameraConfig(width=args.width, height=args.height, seed=1)
        video = Path(tmp) / "line.avi"
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"FFV1"), 20, (args.width, args.height))
        for i in range(args.images):
            img = render_part(part_rng(1, i + 1), sc).image
            cv2.imwrite(str(folder / f"f{i:03d}.png"), img)
            writer.write(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
        writer.release()

        def trig(i: int) -> Trigger:
            return Trigger(i + 1, i + 1, time.monotonic_ns())

        folder_cam = FolderCamera(FolderCameraConfig(path=folder))
        folder_cam.open()
        ref = per_grab_ms(lambda i: folder_cam.grab(trig(i), 2.0), args.grabs)
        folder_cam.close()

        from station.acquire.pylon import PylonCamera

        cam = PylonCamera(PylonCameraConfig(emulator_folder=folder, width=args.width, height=args.height))
        cam.open()
        py_ms = per_grab_ms(lambda i: cam.grab(trig(i), 2.0), args.grabs)
        with cam.device() as dev:  # the same three pylon calls without the driver around them

            def bare(i: int) -> None:
                dev.WaitForFrameTriggerReady(2000, pylon.TimeoutHandling_ThrowException)
                dev.ExecuteSoftwareTrigger()
                r = dev.RetrieveResult(2000, pylon.TimeoutHandling_ThrowException)
                r.GetArray()
                r.Release()

            bare_ms = per_grab_ms(bare, args.grabs)
        cam.close()

        cv_cam = OpenCvCamera(OpenCvCameraConfig(file=video))
        cv_cam.open()
        cv_ms = per_grab_ms(lambda i: cv_cam.grab(trig(i), 2.0), args.grabs)
        cv_cam.close()

    print(f"{args.width}x{args.height} Mono8, {args.grabs} grabs each")
    print(f"{'driver':<34}{'ms/grab':>10}{'ratio':>10}")
    print(f"{'folder (reference: PNG decode)':<34}{ref:>10.2f}{1.0:>10.2f}")
    print(f"{'pylon emulator, software trigger':<34}{py_ms:>10.2f}{py_ms / ref:>10.2f}")
    print(f"{'opencv FFV1 file, per grab':<34}{cv_ms:>10.2f}{cv_ms / ref:>10.2f}")
    print(f"{'bare pypylon calls (ref for pylon)':<34}{bare_ms:>10.2f}{'':>10}")
    print(f"{'PylonCamera / bare pypylon':<34}{'':>10}{py_ms / bare_ms:>10.2f}")


if __name__ == "__main__":
    main()
