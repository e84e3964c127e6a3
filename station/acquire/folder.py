"""The folder camera: replays the images of a folder, one per trigger, in name order.

Files with the extensions in :data:`IMAGE_EXTENSIONS` (any case) are replayed
sorted by file name. At the end of the folder the camera starts again at the
first file when ``loop`` is true; otherwise every further grab raises
:class:`~station.acquire.base.CameraError` ``"folder exhausted"`` (so those
parts are FAILSAFE, never silently lost) and :meth:`FolderCamera.health` turns
to alarm. A file that cannot be decoded raises a ``CameraError`` naming it;
the next grab continues with the next file.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from ..config.camera import FolderCameraConfig
from ..contracts import Frame, Trigger
from .base import CameraError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def list_images(folder: Path) -> list[Path]:
    """The image files of ``folder`` sorted by name; a clear error if there are none."""
    if not folder.exists():
        raise CameraError(f"folder camera: {folder} does not exist (set `path` to a folder of images)")
    if not folder.is_dir():
        raise CameraError(f"folder camera: {folder} is not a folder (set `path` to a folder of images)")
    files = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS), key=lambda p: p.name
    )
    if not files:
        raise CameraError(
            f"folder camera: no images in {folder} (expected files ending in {', '.join(IMAGE_EXTENSIONS)})"
        )
    return files


def read_image(path: Path, grayscale: bool = True) -> np.ndarray:
    """Decode one image file as Mono8 (H, W) or BGR (H, W, 3) uint8; CameraError naming the file if it cannot."""
    try:
        data = np.fromfile(path, dtype=np.uint8)  # also works for non-ASCII paths, unlike cv2.imread
    except OSError as exc:
        raise CameraError(f"cannot read image file {path}: {exc}") from None
    img = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise CameraError(f"cannot decode image file {path}: corrupt or not an image (remove or replace it)")
    if img.dtype != np.uint8:  # 16-bit PNG/TIFF: keep the top 8 bits
        img = np.right_shift(img, 8).astype(np.uint8) if img.dtype == np.uint16 else cv2.convertScaleAbs(img)
    return img


class FolderCamera:
    """A :class:`~station.acquire.base.CameraDriver` that replays image files."""

    def __init__(self, cfg: FolderCameraConfig, **_: object):
        self.cfg = cfg
        self.camera_id = cfg.id
        self._files: list[Path] | None = None
        self._next = 0
        self._lock = threading.Lock()
        self._open = False
        self._exhausted = False
        self._last_error = ""
        self._frames = 0

    @property
    def files(self) -> list[Path]:
        """The images this camera replays, in order (listed at first use; CameraError if none)."""
        if self._files is None:
            self._files = list_images(Path(self.cfg.path))
        return list(self._files)

    def open(self) -> None:
        """List the folder; CameraError naming the path if it is missing or has no images."""
        self._files = list_images(Path(self.cfg.path))
        self._next = 0
        self._exhausted = False
        self._open = True
        log.info("folder camera %s: %d images in %s", self.camera_id, len(self._files), self.cfg.path)

    def _take(self) -> tuple[int, Path]:
        assert self._files is not None
        with self._lock:
            if self._next >= len(self._files):
                if not self.cfg.loop:
                    self._exhausted = True
                    raise CameraError(
                        f"folder exhausted: all {len(self._files)} images of {self.cfg.path} were replayed (set loop: "
                        "true to repeat)"
                    )
                self._next = 0
            i = self._next
            self._next += 1
            return i, self._files[i]

    def grab(self, trigger: Trigger, timeout_s: float) -> Frame:
        """The next image of the folder for ``trigger``'s part."""
        if not self._open:
            raise CameraError(f"camera {self.camera_id}: grab before open()")
        t_exposure = time.monotonic_ns()
        index, path = self._take()
        try:
            img = read_image(path, self.cfg.grayscale)
        except CameraError as exc:
            self._last_error = str(exc)
            raise
        self._last_error = ""
        self._frames += 1
        return Frame(
            part_id=trigger.part_id,
            camera_id=self.camera_id,
            image=img,
            t_exposure_ns=t_exposure,
            meta={"file": path.name, "index": index},
        )

    def close(self) -> None:
        """Nothing to release; safe to call twice."""
        self._open = False

    def health(self) -> dict[str, object]:
        """Alarm when exhausted, warning after an unreadable file or before open."""
        if not self._open:
            return {"state": "warning", "message": "not open"}
        if self._exhausted:
            return {"state": "alarm", "message": f"folder exhausted after {self._frames} frames"}
        if self._last_error:
            return {"state": "warning", "message": self._last_error}
        n = len(self._files or [])
        return {"state": "ok", "message": f"{self._frames} frames replayed, next {self._next % max(n, 1) + 1}/{n}"}
