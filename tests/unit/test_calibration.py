"""Chessboard calibration on rendered boards of known scale."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from calibration.chessboard import CalibrationError, calibrate, load


def board(square_px: int, pattern=(9, 6), angle=0.0, size=(1000, 800)) -> np.ndarray:
    cols, rows = pattern[0] + 1, pattern[1] + 1
    img = np.full((rows * square_px + 2 * square_px, cols * square_px + 2 * square_px), 255, np.uint8)
    for r in range(rows):
        for c in range(cols):
            if (r + c) % 2 == 0:
                y, x = (r + 1) * square_px, (c + 1) * square_px
                img[y : y + square_px, x : x + square_px] = 0
    canvas = np.full((size[1], size[0]), 200, np.uint8)
    h, w = img.shape
    canvas[50 : 50 + h, 60 : 60 + w] = img
    M = cv2.getRotationMatrix2D((size[0] / 2, size[1] / 2), angle, 1.0)
    return cv2.warpAffine(canvas, M, size, borderValue=200)


def test_scale_from_one_view(tmp_path):
    res = calibrate([board(40)], (9, 6), square_mm=5.0)
    assert res.mm_per_px == pytest.approx(5.0 / 40, rel=0.01)
    assert res.camera_matrix is None and res.images_used == 1
    res.save(tmp_path / "cal.json")
    assert load(tmp_path / "cal.json") == res


def test_intrinsics_from_several_views():
    res = calibrate([board(40), board(40, angle=8), board(40, angle=-12)], (9, 6), square_mm=5.0)
    assert res.camera_matrix is not None and res.reprojection_error_px is not None
    assert res.id.startswith("cal-")


def test_no_board_is_a_clear_error():
    with pytest.raises(CalibrationError, match="no 9x6 chessboard"):
        calibrate([np.zeros((100, 100), np.uint8)], (9, 6), 5.0)
