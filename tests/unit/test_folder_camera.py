"""The folder camera on real image files written to a temporary folder."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from station.acquire.base import CAMERAS, CameraDriver, CameraError
from station.acquire.folder import FolderCamera
from station.config import FolderCameraConfig
from station.contracts import Trigger


def _trigger(part_id: int) -> Trigger:
    return Trigger(part_id=part_id, seq=part_id, t_trigger_ns=time.monotonic_ns())


def _image(value: int, shape: tuple[int, int] = (48, 64)) -> np.ndarray:
    img = np.full(shape, value, np.uint8)
    cv2.putText(img, str(value), (4, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 255 - value, 2)
    return img


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """Images in several formats, written out of name order, plus files to skip."""
    d = tmp_path / "frames"
    d.mkdir()
    cv2.imwrite(str(d / "c.bmp"), _image(30))
    cv2.imwrite(str(d / "a.png"), _image(10))
    cv2.imwrite(str(d / "B.TIF"), _image(20))
    cv2.imwrite(str(d / "d.jpg"), _image(40))
    (d / "notes.txt").write_text("not an image")
    (d / "sub.png").mkdir()  # a folder with an image name is not an image
    return d


def _open(path: Path, **kw: object) -> FolderCamera:
    cam = FolderCamera(FolderCameraConfig(path=path, **kw))  # type: ignore[arg-type]
    cam.open()
    return cam


def test_replays_images_in_name_order_with_the_file_in_meta(folder: Path) -> None:
    cam = _open(folder, id="replay")
    assert isinstance(cam, CameraDriver)
    assert [p.name for p in cam.files] == ["B.TIF", "a.png", "c.bmp", "d.jpg"]
    frames = [cam.grab(_trigger(i), 1.0) for i in range(4)]
    assert [f.meta["file"] for f in frames] == ["B.TIF", "a.png", "c.bmp", "d.jpg"]
    assert [f.part_id for f in frames] == [0, 1, 2, 3]
    assert all(f.camera_id == "replay" for f in frames)
    assert np.array_equal(frames[1].image, _image(10))  # lossless formats come back exactly
    assert np.array_equal(frames[0].image, _image(20))
    assert abs(float(frames[3].image.mean()) - float(_image(40).mean())) < 3  # jpeg: close
    assert all(f.image.ndim == 2 and f.image.dtype == np.uint8 for f in frames)


def test_loops_back_to_the_first_image(folder: Path) -> None:
    cam = _open(folder, loop=True)
    names = [cam.grab(_trigger(i), 1.0).meta["file"] for i in range(9)]
    assert names == ["B.TIF", "a.png", "c.bmp", "d.jpg"] * 2 + ["B.TIF"]
    assert cam.health()["state"] == "ok"


def test_without_loop_an_exhausted_folder_fails_every_further_grab(folder: Path) -> None:
    cam = _open(folder, loop=False)
    for i in range(4):
        cam.grab(_trigger(i), 1.0)
    for i in range(4, 6):
        with pytest.raises(CameraError, match="folder exhausted"):
            cam.grab(_trigger(i), 1.0)
    assert cam.health()["state"] == "alarm"
    cam.open()  # reopening starts the folder again
    assert cam.grab(_trigger(9), 1.0).meta["file"] == "B.TIF"


def test_corrupt_image_fails_its_part_naming_the_file_and_the_next_grab_continues(folder: Path) -> None:
    (folder / "b2.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    (folder / "b3.jpg").write_bytes(b"")
    cam = _open(folder)
    assert cam.grab(_trigger(0), 1.0).meta["file"] == "B.TIF"
    assert cam.grab(_trigger(1), 1.0).meta["file"] == "a.png"
    with pytest.raises(CameraError, match="b2.png"):
        cam.grab(_trigger(2), 1.0)
    assert cam.health()["state"] == "warning" and "b2.png" in str(cam.health()["message"])
    with pytest.raises(CameraError, match="b3.jpg"):
        cam.grab(_trigger(3), 1.0)
    frame = cam.grab(_trigger(4), 1.0)
    assert frame.meta["file"] == "c.bmp" and frame.part_id == 4
    assert cam.health()["state"] == "ok"


def test_empty_or_missing_folder_is_a_clear_error_at_open(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("no images here")
    with pytest.raises(CameraError, match=r"no images in .*empty"):
        FolderCamera(FolderCameraConfig(path=empty)).open()
    missing = tmp_path / "nope"
    with pytest.raises(CameraError, match=r"nope does not exist"):
        FolderCamera(FolderCameraConfig(path=missing)).open()
    a_file = tmp_path / "x.png"
    cv2.imwrite(str(a_file), _image(1))
    with pytest.raises(CameraError, match="is not a folder"):
        FolderCamera(FolderCameraConfig(path=a_file)).open()
    with pytest.raises(CameraError, match="no images"):
        _ = FolderCamera(FolderCameraConfig(path=empty)).files


def test_colour_mode_gives_bgr_frames(tmp_path: Path) -> None:
    d = tmp_path / "colour"
    d.mkdir()
    bgr = np.zeros((20, 30, 3), np.uint8)
    bgr[:, :, 2] = 200  # red
    cv2.imwrite(str(d / "red.png"), bgr)
    colour = _open(d, grayscale=False).grab(_trigger(0), 1.0)
    assert colour.image.shape == (20, 30, 3) and np.array_equal(colour.image, bgr)
    mono = _open(d, grayscale=True).grab(_trigger(0), 1.0)
    assert mono.image.shape == (20, 30)


def test_grab_before_open_and_registry(folder: Path) -> None:
    cam = CAMERAS.create(FolderCameraConfig(path=folder))
    assert isinstance(cam, FolderCamera)
    with pytest.raises(CameraError, match="before open"):
        cam.grab(_trigger(0), 1.0)
    assert cam.health()["state"] == "warning"
    assert len(cam.files) == 4  # listed without opening, for `station replay`
