"""Camera calibration from chessboard and ChArUco views rendered through a known camera (tests/calib_views.py)."""

from __future__ import annotations

import numpy as np
import pytest

from calibration.camera import CalibrationRefused, Limits, calibrate_camera
from calibration.undistort import Undistorter
from tests.calib_views import CHARUCO, CHESS, DIST, PLANE_Z, SIZE, K, render, views

TRUE_MM_PER_PX = PLANE_Z / K[0, 0]  # the plane view: the board square to the camera at PLANE_Z


@pytest.mark.parametrize("target", [CHESS, CHARUCO], ids=["chessboard", "charuco"])
def test_known_camera_is_recovered(target) -> None:
    cal = calibrate_camera(views(target), target)
    Kc = np.asarray(cal.camera_matrix)
    assert Kc[0, 0] == pytest.approx(K[0, 0], rel=0.015) and Kc[1, 1] == pytest.approx(K[1, 1], rel=0.015)
    assert Kc[0, 2] == pytest.approx(K[0, 2], abs=6) and Kc[1, 2] == pytest.approx(K[1, 2], abs=6)
    assert cal.dist_coeffs[0] == pytest.approx(DIST[0], abs=0.02)
    assert cal.rms_px < 0.3
    assert cal.mm_per_px == pytest.approx(TRUE_MM_PER_PX, rel=0.01)
    assert cal.image_size == SIZE and cal.plane_view == "v0.png" and cal.id.startswith("cal-")
    assert all(v.used for v in cal.views) and len({v.sha256 for v in cal.views}) == len(cal.views)


def test_undistortion_straightens_the_board() -> None:
    """Through the recovered calibration, the plane view's corner rows become straight lines."""
    cal = calibrate_camera(views(CHESS), CHESS)
    img = render(CHESS, (0, 0, 0, 0, 0, 150))  # close: the board fills the frame, where distortion bends it most
    und = Undistorter(cal.camera_matrix, cal.dist_coeffs, cal.image_size)(img)

    def bow(gray: np.ndarray) -> float:
        pts = CHESS.detect(gray)
        assert pts is not None
        rows = pts.img.reshape(CHESS.rows, CHESS.cols, 2)
        worst = 0.0
        for r in rows:  # distance of each corner from the chord of its row
            a, b = r[0], r[-1]
            n = np.array([a[1] - b[1], b[0] - a[0]]) / np.linalg.norm(b - a)
            worst = max(worst, float(np.abs((r - a) @ n).max()))
        return worst

    assert bow(img) > 3.0 and bow(und) < 0.5
    with pytest.raises(ValueError, match="frame 10x10 but the calibration is for 960x720"):
        Undistorter(cal.camera_matrix, cal.dist_coeffs, cal.image_size)(np.zeros((10, 10), np.uint8))


def test_too_few_views_are_refused_with_the_reason() -> None:
    with pytest.raises(CalibrationRefused, match=r"too few usable views: 3 of 3 \(need 5\)"):
        calibrate_camera(views(CHESS, n=3), CHESS)


def test_blurred_views_are_refused_with_the_reason() -> None:
    with pytest.raises(CalibrationRefused) as e:
        calibrate_camera(views(CHESS, blur=(2, 3, 4)), CHESS)
    assert "too few usable views: 4 of 7" in e.value.reasons[0]
    assert any(r.startswith("view v2.png: blurred (sharpness") for r in e.value.reasons)
    assert [v.used for v in e.value.views] == [True, True, False, False, False, True, True]


def test_poor_coverage_and_high_error_are_refused() -> None:
    centred = [
        (f"c{i}.png", render(CHESS, (a, b, 0, 0, 0, 560)))
        for i, (a, b) in enumerate([(0, 0), (20, 0), (-20, 0), (0, 20), (0, -20)])
    ]
    with pytest.raises(CalibrationRefused, match=r"poor coverage of the frame: corners in \d+% of it \(need 50%\)"):
        calibrate_camera(centred, CHESS)
    with pytest.raises(CalibrationRefused, match=r"reprojection error 0\.\d+ px above the limit 0\.001 px"):
        calibrate_camera(views(CHESS), CHESS, Limits(max_rms_px=0.001))


def test_a_board_that_is_not_there_names_the_view() -> None:
    vs = views(CHESS) + [("empty.png", np.full((SIZE[1], SIZE[0]), 128, np.uint8))]
    cal = calibrate_camera(vs, CHESS)
    assert cal.views[-1].used is False and cal.views[-1].reason == "no chessboard 9x6 found"
