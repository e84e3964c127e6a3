"""Undistortion of frames with a remap precomputed once per calibration (no per-frame solve)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


class Undistorter:
    """``undistort(image)``: the frame as seen through an ideal lens (same size, same camera matrix).

    The maps are built once (``cv2.initUndistortRectifyMap``); each frame then costs one ``cv2.remap``
    with bilinear interpolation. Float maps (``CV_32FC1``): with this OpenCV build they remap a
    1280x800 Mono8 frame about 3x faster than the fixed-point ``CV_16SC2`` ones
    (bench/bench_undistort.py; docs/camera_setup.md has the figures).
    """

    def __init__(
        self, camera_matrix: Sequence[Sequence[float]], dist_coeffs: Sequence[float], image_size: tuple[int, int]
    ):
        K = np.asarray(camera_matrix, np.float64)
        d = np.asarray(dist_coeffs, np.float64)
        self.size = (int(image_size[0]), int(image_size[1]))
        self.map1, self.map2 = cv2.initUndistortRectifyMap(K, d, None, K, self.size, cv2.CV_32FC1)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """The undistorted frame; a frame of another size is an error naming both sizes."""
        h, w = image.shape[:2]
        if (w, h) != self.size:
            raise ValueError(
                f"frame {w}x{h} but the calibration is for {self.size[0]}x{self.size[1]}: recalibrate this camera"
            )
        return cv2.remap(image, self.map1, self.map2, cv2.INTER_LINEAR)
