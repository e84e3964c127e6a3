"""Shadow mode on a real Station: the synthetic line, two real Ultralytics ONNX models, a real SQLite database.

Production runs a 1-epoch tiny detector (it passes every part of this line); the shadow runs the
40-epoch tiny detector exported at 320 px, which finds "squares" among the PCB components of some
parts - so the two disagree on real parts, measured here, not arranged. Both models come from
tests/model_factory.py (trained once, cached).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import labeling
from station.acquire.synthetic import iter_parts
from station.app import Station
from station.config import SyntheticCameraConfig, parse_config
from station.contracts import Frame, Trigger
from station.decide import Decider
from station.pipeline import inspect_part
from station.shadow import ShadowError, build_shadow_inspector, disagreements, summary
from station.store.db import open_db
from tests.fixtures_floor import trigger_parts, wait_for
from tests.model_factory import detecting_model, tiny_model
from tests.station_configs import store_section

N_PARTS = 36
CAMERA = {
    "type": "synthetic",
    "id": "cam0",
    "product": "pcb",
    "width": 640,
    "height": 400,
    "defect_rate": 0.4,
    "harmless_mark_rate": 0.2,
    "seed": 31,
}


@pytest.fixture(scope="module")
def weak() -> Path:
    """Production model: 1 epoch, 64 px: fast, passes every part of this line."""
    return tiny_model("detect")


@pytest.fixture(scope="module")
def strong() -> Path:
    """Shadow model: 40 epochs, exported at 320 px (about 5x slower per part than the production one)."""
    return detecting_model(export_imgsz=320)


@pytest.fixture(scope="module")
def slow() -> Path:
    """A shadow model too slow for the line's pace: the same weights exported at 640 px."""
    return detecting_model(export_imgsz=640)


def config(tmp: Path, model: Path) -> Any:
    return parse_config(
        {
            "name": "shadow-line",
            "cameras": [CAMERA],
            "trigger": {"type": "software"},
            "inspector": {"type": "onnx", "model": str(model), "keepalive_s": 0, "intra_op_threads": 1},
            "reject": {"travel_ms": 3000, "safety_margin_ms": 200, "pulse_ms": 10},
            "store": store_section(tmp, keep_pass_every=1),
            "web": {"enabled": False},
        }
    )


def outcomes(db_path: Path) -> dict[int, tuple[str, str]]:
    db = open_db(db_path, migrate=False)
    try:
        return {
            int(p): (str(o), str(m))
            for p, o, m in db.execute("SELECT part_id, outcome, model_id FROM inspections ORDER BY part_id")
        }
    finally:
        db.close()


def recorded_all(st: Station) -> bool:
    c = st.counters.snapshot()
    return c.records_written + c.records_dropped >= c.verdicts


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory, weak: Path) -> dict[int, tuple[str, str]]:
    """The production verdicts of the parts with no shadow running."""
    tmp = tmp_path_factory.mktemp("baseline")
    st = Station(config(tmp, weak))
    st.start()
    try:
        trigger_parts(st, N_PARTS)
        wait_for(lambda: recorded_all(st), 20, "records")
    finally:
        st.stop()
    out = outcomes(tmp / "station.db")
    assert len(out) == N_PARTS and {o for o, _ in out.values()} == {"PASS"}
    return out


@pytest.fixture
def station(tmp_path: Path, weak: Path) -> Iterator[Station]:
    st = Station(config(tmp_path, weak))
    st.start()
    yield st
    st.stop()


def test_shadow_records_disagreements_and_leaves_verdicts_alone(
    station: Station, strong: Path, baseline: dict[int, tuple[str, str]]
) -> None:
    runner = station.start_shadow(strong, queue_size=N_PARTS + 4)
    assert station.shadow is runner and runner.running
    with pytest.raises(ShadowError, match="already runs"):
        station.start_shadow(strong)
    trigger_parts(station, N_PARTS)
    wait_for(lambda: runner.snapshot()["recorded"] >= N_PARTS, 60, "the shadow to judge every part")
    final = station.stop_shadow()
    assert station.shadow is None and final is not None and not final["running"]
    assert (
        final["received"],
        final["recorded"],
        final["dropped"],
        final["skipped"],
        final["errors"],
        final["abandoned"],
    ) == (N_PARTS, N_PARTS, 0, 0, 0, 0)
    wait_for(lambda: recorded_all(station), 20, "records")

    # production verdicts are exactly those of the run without a shadow
    got = outcomes(station.cfg.store.db_path)
    assert got == baseline

    db = open_db(station.cfg.store.db_path, migrate=False)
    try:
        rows = {
            int(r[0]): r[1:]
            for r in db.execute(
                "SELECT part_id, production_outcome, outcome, model_id, model_sha, differs, eject_differs FROM "
                "shadow_results ORDER BY part_id"
            )
        }
        assert sorted(rows) == sorted(baseline)
        shadow_outcomes = {p: r[1] for p, r in rows.items()}
        differing = sorted(p for p, r in rows.items() if r[1] != r[0])
        # measured, not arranged: the 40-epoch model flags some PCB parts the 1-epoch model passes
        assert differing, f"no disagreement on {N_PARTS} parts: {shadow_outcomes}"
        assert all(rows[p][0] == baseline[p][0] for p in rows)  # production outcome as the line decided it
        assert {r[2] for r in rows.values()} == {runner.stats.model_id} and {r[3] for r in rows.values()} == {
            final["model_sha"]
        }
        assert final["differs"] == len(differing)
        dis = disagreements(db, model_sha=final["model_sha"], limit=1000)
        assert sorted(d["part_id"] for d in dis) == differing
        for d in dis:
            assert (
                d["production_outcome"] == "PASS"
                and d["shadow_outcome"] in ("FAIL", "UNCERTAIN")
                and d["eject_differs"]
            )
            assert d["defects"] and d["image_ids"], d  # every image is kept on this line (keep_pass_every 1)
        s = summary(db, final["model_sha"])
        assert s["n"] == N_PARTS and s["differs"] == len(differing)
        # the review queue ranks the disagreements (it reads shadow_results(part_id, outcome))
        # (a ground-truth escape outranks it: then the reason given is the escape)
        queue = labeling.review_queue(db, limit=200)
        assert set(differing) <= {q.part_id for q in queue if q.tier == "disagreement"}
        by_shadow = {q.part_id for q in queue if "shadow" in q.why}
        assert by_shadow and by_shadow <= set(differing)
    finally:
        db.close()

    # each recorded shadow verdict is what the candidate gives offline on the same part
    cam = SyntheticCameraConfig.model_validate({k: v for k, v in CAMERA.items() if k != "type"})
    insp = build_shadow_inspector(strong)
    decider = Decider(station.cfg.rules, station.decider.calibration, "offline")
    try:
        for pid in sorted(set(differing[:4]) | {min(rows), max(rows)}):
            _, part = next(iter_parts(cam, pid, 1))
            trig = Trigger(pid, pid, time.monotonic_ns(), source="offline")
            res = inspect_part(insp, decider, trig, [Frame(pid, "cam0", part.image, trig.t_trigger_ns)])
            assert str(res.verdict.outcome) == shadow_outcomes[pid], pid
    finally:
        insp.close()


def test_slow_shadow_drops_parts_not_the_line(
    station: Station, slow: Path, baseline: dict[int, tuple[str, str]]
) -> None:
    runner = station.start_shadow(slow, queue_size=1)
    trigger_parts(station, N_PARTS)
    snap = runner.snapshot()
    final = station.stop_shadow()
    assert final is not None
    # the shadow could not keep up: parts were dropped for it (counted), none for the line
    assert final["dropped"] > 0, final
    assert final["received"] + final["dropped"] + final["abandoned"] == N_PARTS, final
    assert final["recorded"] + final["skipped"] + final["errors"] == final["received"], final
    assert snap["received"] + snap["dropped"] <= N_PARTS and final["abandoned"] <= 1  # queue_size 1
    c = station.counters.snapshot()
    assert (c.verdicts, c.dropped, c.FAILSAFE) == (N_PARTS, 0, 0)
    wait_for(lambda: recorded_all(station), 20, "records")
    assert outcomes(station.cfg.store.db_path) == baseline
    db = open_db(station.cfg.store.db_path, migrate=False)
    try:
        assert db.execute("SELECT COUNT(*) FROM shadow_results").fetchone()[0] == final["recorded"]
    finally:
        db.close()


def test_shadow_refuses_a_file_that_is_not_a_model(station: Station, tmp_path: Path) -> None:
    bad = tmp_path / "not-a-model.onnx"
    bad.write_bytes(b"this is not onnx")
    with pytest.raises(Exception, match="not-a-model.onnx"):
        station.start_shadow(bad)
    assert station.shadow is None
    trigger_parts(station, 2)  # the line is untouched
    assert station.counters.snapshot().PASS == 2
