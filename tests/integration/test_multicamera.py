"""Several cameras view one part (top and bottom, two pylon emulator devices): one verdict per part.

A defect seen by only one of the cameras fails the part; the verdict's
defects name the camera that saw them; a failure of one camera fails the part
(FAILSAFE) even though the other camera delivered.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pypylon", reason="pypylon is in the `plant` extra: pip install -e .[plant]")

from station.acquire.pylon import PylonCamera  # noqa: E402
from station.app import Station  # noqa: E402
from station.contracts import Outcome  # noqa: E402
from tests.fixtures_floor import running  # noqa: E402
from tests.fixtures_pylon import emulated_camera, pylon_emulator, pylon_station_config, render_parts, run_part  # noqa: E402, F401

pytestmark = pytest.mark.usefixtures("pylon_emulator")


def test_defect_seen_by_one_camera_fails_the_part(tmp_path: Path):
    # parts 1-3 teach the reference (both views); part 5 has a defect underneath only, part 7 on top only
    top = render_parts(tmp_path / "top", 8, defective={6}, seed=5)
    bottom = render_parts(tmp_path / "bottom", 8, defective={4}, seed=6)
    assert top[6].truth and bottom[4].truth and not top[4].truth and not bottom[6].truth
    cfg = pylon_station_config(
        tmp_path,
        [
            emulated_camera("top", "0815-0000", tmp_path / "top"),
            emulated_camera("bottom", "0815-0001", tmp_path / "bottom"),
        ],
        inspector={"type": "reference", "learn_parts": 6},  # 3 parts x 2 views
    )
    station = Station(cfg)
    with running(station) as results:
        rs = [run_part(station, results) for _ in range(8)]
        bottom_cam = station.cameras[1]
        assert isinstance(bottom_cam, PylonCamera)
        with bottom_cam.device() as dev:  # one camera fails on the next part: the whole part is FAILSAFE
            dev.ForceFailedBufferCount.SetValue(1)
            dev.ForceFailedBuffer.Execute()
        broken = run_part(station, results)

    for i, r in enumerate(rs):
        assert [f.camera_id for f in r.frames] == ["top", "bottom"]
        assert np.array_equal(r.frames[0].image, top[i].image) and np.array_equal(r.frames[1].image, bottom[i].image)
    outcomes = [r.verdict.outcome for r in rs]
    assert outcomes[:3] == [Outcome.FAILSAFE] * 3  # learning
    assert outcomes[3:] == [Outcome.PASS, Outcome.FAIL, Outcome.PASS, Outcome.FAIL, Outcome.PASS], [
        r.verdict.reasons for r in rs
    ]

    under, over = rs[4].verdict, rs[6].verdict
    assert {d.camera_id for d in under.defects if d.action == "reject"} == {"bottom"}
    assert {d.camera_id for d in over.defects if d.action == "reject"} == {"top"}
    # the rejecting defects lie on the drawn defects of the camera that saw them
    for verdict, truth in ((under, bottom[4].truth), (over, top[6].truth)):
        for d in (d for d in verdict.defects if d.action == "reject"):
            x1, y1, x2, y2 = d.box_xyxy
            assert any(
                x1 < t.box_xyxy[2] and t.box_xyxy[0] < x2 and y1 < t.box_xyxy[3] and t.box_xyxy[1] < y2 for t in truth
            ), (d, truth)

    assert broken.verdict.outcome is Outcome.FAILSAFE and "camera bottom" in broken.verdict.reasons[0]
    snap = station.counters.snapshot()
    assert snap.triggers == 9 and snap.dropped == 1 and snap.FAIL == 2
    assert station.reconcile() == []
