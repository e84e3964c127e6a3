"""The reference inspector on AOI-style imagery: a board that fills the frame, one golden template.

The board is drawn here (tracks and pads with cv2, binarised); test boards are
the same board shifted and slightly rotated, with an open, a short, a spur and
a mouse bite drawn on track edges. No network data.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from station.config import ReferenceInspectorConfig
from station.contracts import Frame
from station.inspection.reference import ReferenceInspector

W, H = 640, 480
SUBSTRATE, COPPER = 40, 210
TRACK_Y = (100, 130, 160, 300, 330)  # horizontal tracks, 8 px wide, 22 px gaps between the first three
POSE = (3.0, -2.0, 0.3)  # dx, dy (px), rotation (degrees) of the inspected boards


def _board() -> np.ndarray:
    img = np.full((H, W), SUBSTRATE, np.uint8)
    for y in TRACK_Y:
        cv2.rectangle(img, (60, y - 4), (580, y + 3), COPPER, -1)
    for x in (120, 240, 360, 480):
        cv2.rectangle(img, (x - 4, 180), (x + 3, 280), COPPER, -1)  # vertical tracks
        cv2.circle(img, (x, 400), 14, COPPER, -1)  # pads
        cv2.circle(img, (x, 400), 5, SUBSTRATE, -1)  # drill holes
    cv2.rectangle(img, (40, 20), (600, 40), COPPER, -1)  # a ground strip along the top
    return img


# each defect: (name, rectangle x0, y0, x1, y1 drawn on the board, grey level)
DEFECTS = (
    ("open", (200, 96, 210, 103), SUBSTRATE),  # a cut through the first track
    ("short", (400, 103, 406, 126), COPPER),  # a bridge between the first two tracks
    ("spur", (300, 134, 305, 145), COPPER),  # a protrusion from the second track's lower edge into the gap
    ("bite", (500, 156, 508, 160), SUBSTRATE),  # a notch into the third track's upper edge (half its width)
)


def _pose(
    img: np.ndarray, pose: tuple[float, float, float] = POSE, binarise: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    dx, dy, deg = pose
    M: np.ndarray = cv2.getRotationMatrix2D((W / 2, H / 2), deg, 1.0)
    M[:, 2] += (dx, dy)
    out = cv2.warpAffine(img, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if binarise:
        out = np.where(out > (SUBSTRATE + COPPER) / 2, COPPER, SUBSTRATE).astype(np.uint8)
    return out, M


def _box_after(M: np.ndarray, r: tuple[int, int, int, int], margin: float = 3.0) -> np.ndarray:
    """The defect's box on the posed board, as a person draws it (a few px of room)."""
    x0, y0, x1, y1 = r
    pts = np.array([[x0, y0, 1], [x1 + 1, y0, 1], [x0, y1 + 1, 1], [x1 + 1, y1 + 1, 1]], np.float64) @ M.T
    return np.array(
        [pts[:, 0].min() - margin, pts[:, 1].min() - margin, pts[:, 0].max() + margin, pts[:, 1].max() + margin]
    )


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _frame(img: np.ndarray, pid: int = 1) -> Frame:
    return Frame(part_id=pid, camera_id="cam0", image=img, t_exposure_ns=0)


@pytest.fixture(scope="module")
def golden() -> np.ndarray:
    return _board()


def _learned(golden: np.ndarray, **cfg: object) -> ReferenceInspector:
    insp = ReferenceInspector(ReferenceInspectorConfig(learn_parts=1, **cfg))  # type: ignore[arg-type]
    insp.learn(_frame(golden, 0))
    assert insp.ready
    return insp


def test_learning_a_full_frame_board_from_one_image_does_not_warn(
    golden: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        insp = _learned(golden)
        insp.inspect(_frame(_pose(golden)[0]))
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert insp.learned == 1


def test_a_shifted_rotated_good_board_has_no_boxes(golden: np.ndarray) -> None:
    insp = _learned(golden)
    for pose in (POSE, (-2.5, 1.5, -0.25), (1.0, 3.0, 0.0)):
        d = insp.inspect(_frame(_pose(golden, pose)[0]))
        assert len(d) == 0, (pose, d.boxes_xyxy, d.scores)
        assert d.image_score is not None and d.anomaly_map is not None


@pytest.mark.parametrize("name", [n for n, _, _ in DEFECTS])
def test_each_edge_defect_is_found_with_a_fitting_box(golden: np.ndarray, name: str) -> None:
    insp = _learned(golden)
    _, rect, level = next(d for d in DEFECTS if d[0] == name)
    bad = golden.copy()
    cv2.rectangle(bad, rect[:2], rect[2:], level, -1)
    img, M = _pose(bad)
    truth = _box_after(M, rect)
    d = insp.inspect(_frame(img))
    ious = [_iou(truth, d.boxes_xyxy[k]) for k in range(len(d))]
    assert len(d) == 1, (name, d.boxes_xyxy, d.scores)  # one box for the defect, none elsewhere
    assert ious[0] >= 0.33, (name, truth, d.boxes_xyxy)
    assert d.image_score is not None and d.image_score > 1.0


def test_all_defects_on_one_board(golden: np.ndarray) -> None:
    insp = _learned(golden)
    bad = golden.copy()
    for _, rect, level in DEFECTS:
        cv2.rectangle(bad, rect[:2], rect[2:], level, -1)
    img, M = _pose(bad)
    d = insp.inspect(_frame(img))
    truths = [_box_after(M, rect) for _, rect, _ in DEFECTS]
    assert len(d) == len(DEFECTS), d.boxes_xyxy
    for t in truths:
        assert max(_iou(t, b) for b in d.boxes_xyxy) >= 0.33, (t, d.boxes_xyxy)
    # the heat map is the frame at the working scale, hot (>= 128) on each defect
    amap = d.anomaly_map
    assert amap is not None and amap.dtype == np.uint8
    sx, sy = amap.shape[1] / W, amap.shape[0] / H
    assert abs(sx - sy) < 0.01
    for t in truths:
        x0, y0, x1, y1 = (int(t[0] * sx), int(t[1] * sy), int(np.ceil(t[2] * sx)), int(np.ceil(t[3] * sy)))
        assert amap[y0:y1, x0:x1].max() >= 128
    assert float(np.mean(amap >= 128)) < 0.01  # hot only on the defects


def test_a_faint_difference_scores_lower_than_a_gross_one(golden: np.ndarray) -> None:
    """Same place, same size: a faint residue (40 grey levels) scores below solid copper, and a bigger blob above
    both."""
    insp = _learned(golden)
    scores = []
    for rect, level in (
        ((250, 210, 262, 222), SUBSTRATE + 40),
        ((250, 210, 262, 222), COPPER),
        ((250, 210, 290, 250), COPPER),
    ):
        bad = golden.copy()
        cv2.rectangle(bad, rect[:2], rect[2:], level, -1)
        d = insp.inspect(_frame(_pose(bad, binarise=False)[0]))
        assert len(d) == 1, (rect, level, d.boxes_xyxy)
        scores.append(float(d.scores[0]))
    faint, solid, big = scores
    assert faint < solid < big, scores
    assert big < 0.999  # scores rank, they do not saturate


def test_border_px_never_makes_learning_fail() -> None:
    img = np.full((H, W), 30, np.uint8)
    cv2.rectangle(img, (300, 220), (340, 260), 200, -1)  # a small part on a plain background
    insp = ReferenceInspector(ReferenceInspectorConfig(learn_parts=1, border_px=200))
    insp.learn(_frame(img, 0))
    assert insp.ready
    assert len(insp.inspect(_frame(img))) == 0


def test_roi_and_ignore_mask(golden: np.ndarray, tmp_path: Path) -> None:
    bad = golden.copy()
    cv2.rectangle(bad, (200, 96), (210, 103), SUBSTRATE, -1)  # the open (left half)
    cv2.rectangle(bad, (400, 103), (406, 126), COPPER, -1)  # the short (right half)
    img = _pose(bad)[0]
    assert len(_learned(golden).inspect(_frame(img))) == 2
    left = _learned(golden, roi=(0, 0, 320, 480)).inspect(_frame(img))
    assert len(left) == 1 and left.boxes_xyxy[0, 2] < 320
    ign = np.zeros((H, W), np.uint8)
    ign[:, :320] = 255
    path = tmp_path / "ignore.png"
    cv2.imwrite(str(path), ign)
    right = _learned(golden, ignore_mask=path).inspect(_frame(img))
    assert len(right) == 1 and right.boxes_xyxy[0, 0] > 320


def test_align_patches_register_to_a_fraction_of_a_pixel(golden: np.ndarray) -> None:
    from station.inspection.reference_util import Aligner

    def corner_error(aligner: Aligner, pose: tuple[float, float, float]) -> float:
        img, M = _pose(golden, pose, binarise=False)  # frame(M p) = board(p): the warp to find is M
        Wt = aligner.estimate(img)
        corners = np.array([[0, 0, 1], [W - 1, 0, 1], [0, H - 1, 1], [W - 1, H - 1, 1]], np.float64)
        return float(np.abs(corners @ Wt.T - corners @ M.T).max())

    poses = (POSE, (-2.5, 1.5, -0.25), (1.3, -3.7, 0.2))
    coarse = Aligner(golden, "euclidean", (160, 120))
    fine = Aligner(golden, "euclidean", (160, 120), patches=16)
    assert len(fine.patches) >= 3
    e_coarse = [corner_error(coarse, p) for p in poses]
    e_fine = [corner_error(fine, p) for p in poses]
    assert max(e_fine) < 0.3, e_fine
    assert max(e_fine) < max(e_coarse), (e_fine, e_coarse)


def test_full_resolution_with_align_patches_finds_every_defect_and_passes_good_boards(golden: np.ndarray) -> None:
    insp = _learned(golden, scale=1.0, align_patches=16)
    for pose in (POSE, (-2.5, 1.5, -0.25)):
        assert len(insp.inspect(_frame(_pose(golden, pose)[0]))) == 0
    bad = golden.copy()
    for _, rect, level in DEFECTS:
        cv2.rectangle(bad, rect[:2], rect[2:], level, -1)
    img, M = _pose(bad)
    d = insp.inspect(_frame(img))
    assert len(d) == len(DEFECTS), d.boxes_xyxy
    for _, rect, _ in DEFECTS:
        assert max(_iou(_box_after(M, rect), b) for b in d.boxes_xyxy) >= 0.33, (rect, d.boxes_xyxy)
