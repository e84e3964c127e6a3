"""The anomaly backend on a real Station: the line, learning from the line, replay, registry, evaluation, swap,
shadow."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import pytest

from models import registry
from models.dataset import make_golden_set
from models.evaluate import evaluate
from station.app import Station
from station.config import SyntheticCameraConfig, parse_config
from station.store.db import open_db
from tests.fixtures_floor import trigger_parts, wait_for
from tests.model_factory import ANOMALY_CAMERA, anomaly_model, synthetic_good_frames
from tests.replay_cli import replay_results, run_replay
from tests.station_configs import store_section

pytestmark = pytest.mark.slow
CAMERA = {**ANOMALY_CAMERA, "defect_rate": 0.5, "seed": 77}


def config(tmp: Path, inspector: dict[str, Any]) -> Any:
    return parse_config(
        {
            "name": "anomaly-line",
            "cameras": [CAMERA],
            "trigger": {"type": "software"},
            "inspector": {"type": "anomaly", "intra_op_threads": 1, **inspector},
            "reject": {"travel_ms": 3000, "safety_margin_ms": 200, "pulse_ms": 10},
            "store": store_section(tmp, keep_pass_every=1),
            "web": {"enabled": False},
        }
    )


def rows(db_path: Path) -> list[dict[str, Any]]:
    db = open_db(db_path, migrate=False)
    try:
        return [
            dict(r)
            for r in db.query(
                "SELECT part_id, outcome, reasons, model_id, image_score FROM inspections ORDER BY part_id"
            )
        ]
    finally:
        db.close()


@pytest.fixture
def station(tmp_path: Path) -> Iterator[Station]:
    st = Station(config(tmp_path, {"model": str(anomaly_model()), "follow_registry": False}))
    st.start()
    yield st
    st.stop()


def test_the_line_runs_on_the_anomaly_backend(station: Station) -> None:
    trigger_parts(station, 16, timeout_s=30)
    c = station.counters.snapshot()
    assert c.verdicts == 16 and c.FAILSAFE == 0
    wait_for(lambda: station.counters.snapshot().records_written >= 16, 20, "records")
    got = rows(station.cfg.store.db_path)
    assert len(got) == 16 and all(r["image_score"] is not None and r["image_score"] >= 0 for r in got)
    assert {r["model_id"] for r in got} == {station.inspector.model_id}
    assert station.reconcile() == []
    db = open_db(station.cfg.store.db_path, migrate=False)
    try:
        assert db.execute("SELECT COUNT(*) FROM anomaly_maps").fetchone()[0] >= 16  # every kept image has its heat map
    finally:
        db.close()


def test_swap_and_shadow_take_anomaly_models_and_refuse_another_frame_size(station: Station) -> None:
    other = anomaly_model(seed=1)
    wrong_size = anomaly_model(camera={**ANOMALY_CAMERA, "width": 480, "height": 480})
    before = station.inspector.model_id
    done: list[Exception | None] = []
    station.swap_model(wrong_size, done.append)
    wait_for(lambda: done, 60, "the refused load")
    assert "learned on 480x480 frames" in str(done[0]) and station.inspector.model_id == before
    trigger_parts(station, 2, timeout_s=30)
    station.swap_model(other, done.append)
    wait_for(lambda: len(done) == 2, 60, "the swap")
    assert done[1] is None and station.inspector.model_id != before
    runner = station.start_shadow(anomaly_model(), queue_size=16)
    trigger_parts(station, 6, timeout_s=30)
    wait_for(lambda: runner.snapshot()["recorded"] >= 6, 60, "the shadow to judge every part")
    final = station.stop_shadow()
    assert final is not None and final["recorded"] >= 6 and final["errors"] == 0


def test_a_persons_swap_is_audited_and_alarmed_by_the_station(station: Station) -> None:
    import hashlib

    from station.store import audit

    other = anomaly_model(seed=1)
    wrong_size = anomaly_model(camera={**ANOMALY_CAMERA, "width": 480, "height": 480})
    before = station.inspector.model_id
    done: list[Exception | None] = []
    station.swap_model(wrong_size, done.append, user="qa", reason="try the 480 model")
    wait_for(lambda: done, 60, "the refused load")
    assert [
        (e.state, e.message.startswith("model swap to")) for e in station.alarms.active() if e.component == "model"
    ] == [("alarm", True)]
    station.swap_model(other, done.append, user="boss", reason="night shift", sha256="ab" * 32)
    wait_for(lambda: len(done) == 2, 60, "the swap")
    assert done[1] is None and not [
        e for e in station.alarms.active() if e.component == "model"
    ]  # "ok" clears the alarm
    db = open_db(station.cfg.store.db_path, migrate=False)
    try:
        rows = [e for e in audit.history(db, "model") if e.action.startswith("model_swap")]
    finally:
        db.close()
    assert [(r.user, r.action, r.reason) for r in rows] == [
        ("qa", "model_swap_failed", "try the 480 model"),
        ("boss", "model_swap", "night shift"),
    ]
    assert (
        rows[0].object_id == hashlib.sha256(Path(wrong_size).read_bytes()).hexdigest()
        and rows[0].before == before
        and rows[0].after is None
    )
    assert (
        rows[1].object_id == "ab" * 32
        and rows[1].before == before
        and rows[1].after == station.inspector.model_id != before
    )
    with pytest.raises(ValueError, match="user"):
        station.swap_model(other, user=" ")


def test_learns_from_the_line_then_inspects(tmp_path: Path) -> None:
    model = tmp_path / "learned.onnx"
    st = Station(config(tmp_path, {"model": str(model), "learn_parts": 8, "long_side": 128, "follow_registry": False}))
    st.start()
    try:
        # good parts feed learning (8 needed); defective ones are skipped (ground truth)
        trigger_parts(st, 24, timeout_s=30)
        wait_for(lambda: st.inspector.ready, 240, "learning from the line")
        assert model.exists()
        trigger_parts(st, 4, timeout_s=30)
        wait_for(lambda: st.counters.snapshot().records_written >= 28, 20, "records")
    finally:
        st.stop()
    got = rows(tmp_path / "station.db")
    learning = [r for r in got if "learning" in r["reasons"]]
    inspected = [r for r in got if "learning" not in r["reasons"]]
    assert learning and all(r["outcome"] == "FAILSAFE" for r in learning)  # no part passes unjudged
    assert len(inspected) >= 4 and all(r["image_score"] is not None for r in inspected[-4:])


def test_replay_scores_a_folder_from_the_command_line(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    good = synthetic_good_frames(3, first=900)
    for i, img in enumerate(good):
        cv2.imwrite(str(folder / f"good_{i}.png"), img)
    bad = good[0].copy()
    cv2.rectangle(bad, (300, 150), (340, 260), 0, -1)
    cv2.imwrite(str(folder / "bad.png"), bad)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        json.dumps(
            {
                "cameras": [CAMERA],
                "inspector": {"type": "anomaly", "model": str(anomaly_model())},
                "store": {"db_path": str(tmp_path / "s.db"), "images_dir": str(tmp_path / "i")},
            }
        )
    )
    out = tmp_path / "r.jsonl"
    proc = run_replay(folder, out, cfg)
    assert proc.returncode == 0, proc.stderr
    lines = replay_results(out)
    assert set(lines) == {"bad.png", "good_0.png", "good_1.png", "good_2.png"}
    for r in lines.values():
        assert (
            isinstance(r["anomaly_score"], float) and "defects" in r and r["outcome"] in ("PASS", "FAIL", "UNCERTAIN")
        )
    assert lines["bad.png"]["anomaly_score"] > lines["good_0.png"]["anomaly_score"]
    assert lines["bad.png"]["defects"] and all(len(d["box_xyxy"]) == 4 for d in lines["bad.png"]["defects"])


def test_registry_evaluates_promotes_and_the_station_follows(tmp_path: Path) -> None:
    db = open_db(tmp_path / "station.db")
    try:
        rec = registry.register(db, anomaly_model(), store_dir=tmp_path / "models")
        assert rec.task == "anomaly" and rec.names == ("anomaly",)
        golden = make_golden_set(
            tmp_path / "golden",
            12,
            seed=4242,
            camera_cfg=SyntheticCameraConfig.model_validate({**CAMERA, "defect_rate": 0.5}),
        )
        ev = evaluate(rec.path, golden)
        assert ev.n_defective + ev.n_good == 12 and ev.n_defective > 0 and ev.n_good > 0
        assert 0.0 <= ev.escape_rate <= 1.0 and 0.0 <= ev.false_reject_rate <= 1.0
        registry.record_evaluation(db, rec.sha256, ev.summary())
        registry.promote(db, rec.sha256, user="qa", reason="first anomaly model", golden_id=golden.golden_id)
        assert (cur := registry.current(db)) is not None and cur.sha256 == rec.sha256
    finally:
        db.close()
    # a station whose configured file does not exist starts on the promoted model (no learning)
    st = Station(config(tmp_path, {"model": str(tmp_path / "absent.onnx")}))
    try:
        assert st.inspector.ready and st.inspector.model_id.endswith(rec.sha256[:12])
    finally:
        st.stop()
