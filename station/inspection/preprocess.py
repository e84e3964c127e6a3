"""Frame -> model input tensor, without allocating per part.

:class:`InputTensor` owns one preallocated float32 NCHW tensor (allocated once per input size and
batch) and one preallocated uint8 resize buffer per resized size. A frame is resized with
``cv2.resize`` straight into that buffer, then scaled to 0..1 and converted to float in one
``np.multiply(..., out=tensor_slice)`` per channel. Grey (Mono8) frames are never expanded to
three channels: the scaled grey plane is copied to the other two channel planes of the tensor.
BGR frames are written as RGB (what Ultralytics models expect).

The letterbox matches Ultralytics' ``LetterBox(auto=False, center=True)`` exactly (same rounding,
same pad value 114, INTER_LINEAR), so detections agree with ``YOLO(...).predict``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

log = logging.getLogger(__name__)

PAD_VALUE = 114
_SCALE = np.float32(1.0 / 255.0)


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How a frame was placed in the model input: undo it with :func:`boxes_to_frame`.

    ``gain_x``/``gain_y`` are resized/original sizes; ``pad_x``/``pad_y`` the left/top padding in
    input pixels; ``new_w``/``new_h`` the resized content size; ``src_w``/``src_h`` the frame size.
    ``off_x``/``off_y`` offset the result (a tile's origin in the full frame).
    """

    gain_x: float
    gain_y: float
    pad_x: int
    pad_y: int
    new_w: int
    new_h: int
    src_w: int
    src_h: int
    off_x: int = 0
    off_y: int = 0

    @property
    def scale(self) -> float:
        """The (isotropic) resize factor of the letterbox."""
        return min(self.gain_x, self.gain_y)


def letterbox_params(src_hw: tuple[int, int], dst_hw: tuple[int, int], scaleup: bool = True) -> Letterbox:
    """Ultralytics' LetterBox geometry for a ``src_hw`` frame into a ``dst_hw`` input."""
    h, w = src_hw
    r = min(dst_hw[0] / h, dst_hw[1] / w)
    if not scaleup:
        r = min(r, 1.0)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = (dst_hw[1] - new_w) / 2, (dst_hw[0] - new_h) / 2
    return Letterbox(
        gain_x=new_w / w,
        gain_y=new_h / h,
        pad_x=round(dw - 0.1),
        pad_y=round(dh - 0.1),
        new_w=new_w,
        new_h=new_h,
        src_w=w,
        src_h=h,
    )


def center_crop_params(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """Source window (x, y, w, h) that Ultralytics' classify transform (shortest-edge resize, center crop) keeps."""
    h, w = src_hw
    if dst_hw[0] != dst_hw[1]:
        return 0, 0, w, h  # non-square classify input: Ultralytics resizes to the exact size
    side = min(h, w)
    return (w - side) // 2, (h - side) // 2, side, side


def check_image(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as (H, W) or (H, W, 3) uint8, or raise ValueError naming the problem."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"frame image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"frame image must be uint8 (Mono8 or BGR8), got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"frame image must be (H, W) Mono8 or (H, W, 3) BGR, got shape {image.shape}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"frame image is too small: {image.shape}")
    return image


def to_gray(image: np.ndarray, who: str) -> np.ndarray:
    """Mono8 view of a Mono8, (H, W, 1) or BGR frame; InspectorError naming ``who`` for any other shape."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    from .base import InspectorError

    raise InspectorError(f"{who}: unsupported image shape {image.shape} (expected Mono8 or BGR)")


class InputTensor:
    """A preallocated (batch, C, H, W) float32 model input and the buffers to fill it.

    Not thread-safe: the inspector holds its lock while filling and running.
    """

    def __init__(self, input_hw: tuple[int, int], channels: int = 3, batch: int = 1, pad_value: int = PAD_VALUE):
        self.input_hw = (int(input_hw[0]), int(input_hw[1]))
        self.channels = int(channels)
        self.batch = int(batch)
        self.pad = np.float32(pad_value / 255.0)
        self.tensor = np.empty((self.batch, self.channels, *self.input_hw), np.float32)
        self.tensor.fill(self.pad)
        self._slot_geom: list[tuple[int, int, int, int] | None] = [None] * self.batch
        self._buffers: dict[tuple[int, ...], np.ndarray] = {}  # uint8 work buffers by (shape..., -1-tag)

    def _buffer(self, shape: tuple[int, ...], tag: int = 0) -> np.ndarray:
        key = (*shape, -1 - tag)
        buf = self._buffers.get(key)
        if buf is None:
            if len(self._buffers) > 32:  # frame sizes keep changing: do not grow without bound
                self._buffers.clear()
            buf = self._buffers[key] = np.empty(shape, np.uint8)
        return buf

    def letterbox(self, image: np.ndarray, slot: int = 0) -> Letterbox:
        """Letterbox ``image`` (Mono8 or BGR, uint8) into batch slot ``slot``; returns the geometry."""
        lb = letterbox_params(image.shape[:2], self.input_hw)
        self.place(image, slot, lb.pad_x, lb.pad_y, lb.new_w, lb.new_h)
        return lb

    def center_crop(self, image: np.ndarray, slot: int = 0) -> Letterbox:
        """Classify input: Ultralytics' shortest-edge resize + center crop, written into ``slot``."""
        x, y, w, h = center_crop_params(image.shape[:2], self.input_hw)
        th, tw = self.input_hw
        interp = cv2.INTER_AREA if (w > tw or h > th) else cv2.INTER_LINEAR  # ~ PIL's antialiased bilinear
        self.place(image[y : y + h, x : x + w], slot, 0, 0, tw, th, interp)
        return Letterbox(tw / w, th / h, 0, 0, tw, th, w, h, x, y)

    def place(
        self,
        image: np.ndarray,
        slot: int,
        left: int,
        top: int,
        new_w: int,
        new_h: int,
        interpolation: int = cv2.INTER_LINEAR,
    ) -> None:
        """Resize ``image`` to (new_h, new_w) and write it at (top, left) of slot ``slot``, scaled to 0..1."""
        th, tw = self.input_hw
        geom = (left, top, new_w, new_h)
        t = self.tensor[slot]
        if self._slot_geom[slot] != geom:
            # Padding only changes with the geometry: refill it then, not every part.
            if (left, top, new_w, new_h) != (0, 0, tw, th):
                t.fill(self.pad)
            self._slot_geom[slot] = geom
        grey = image.ndim == 2
        if self.channels == 1 and not grey:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY, dst=self._buffer(image.shape[:2]))
            grey = True
        if image.shape[0] != new_h or image.shape[1] != new_w:
            shape = (new_h, new_w) if grey else (new_h, new_w, 3)
            image = cv2.resize(image, (new_w, new_h), dst=self._buffer(shape), interpolation=interpolation)
        region = (slice(top, top + new_h), slice(left, left + new_w))
        if grey:
            first = t[0][region]
            np.multiply(image, _SCALE, out=first)
            for c in range(1, self.channels):
                t[c][region] = first  # grey replicated plane by plane: no 3-channel copy of the frame
        else:
            # De-interleave with cv2.split (contiguous planes) then scale each plane: ~2x faster
            # than scaling the strided channel views directly. BGR -> RGB by plane order.
            h, w = image.shape[:2]
            planes = cv2.split(image, [self._buffer((h, w), tag=1 + c) for c in range(3)])
            for c in range(3):
                np.multiply(planes[2 - c], _SCALE, out=t[c][region])

    def view(self, n: int) -> np.ndarray:
        """The first ``n`` slots as a contiguous (n, C, H, W) array (no copy)."""
        return self.tensor[:n]
