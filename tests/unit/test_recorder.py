"""The recorder thread against real SQLite files: rows, images, stalls, drops, SIGKILL."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import sqlite_utils

from station.bus import Bus
from station.contracts import Detections, Frame, Outcome, PartResult, StatusEvent
from station.counters import Counters, reconcile
from station.store import queries
from station.store.db import StoreError, open_db
from station.store.images import ImageStore
from station.store.recorder import Recorder

REPO = Path(__file__).resolve().parents[2]
CYCLE = (Outcome.PASS, Outcome.PASS, Outcome.FAIL, Outcome.PASS, Outcome.UNCERTAIN, Outcome.FAILSAFE)


def _publish(bus: Bus, counters: Counters, results: list[PartResult]) -> None:
    """What the pipeline does for each part: count the verdict, then publish."""
    for r in results:
        counters.add("triggers")
        counters.add("frames")
        counters.verdict(r.verdict.outcome)
        bus.publish(r)


def new_recorder(
    db_path: Path, images: ImageStore, *, queue: int = 1000, **kw: Any
) -> tuple[Bus, Counters, list[StatusEvent], Recorder]:
    """A recorder (not started) on a bus of its own, subscribed with a queue of ``queue`` events; with its counters
    and the list that gathers the status events it sends."""
    bus, counters = Bus(), Counters()
    statuses: list[StatusEvent] = []
    sub = bus.subscribe("recorder", maxsize=queue)
    return bus, counters, statuses, Recorder(db_path, images, counters, sub, on_status=statuses.append, **kw)


def _recorder(tmp_store, **kw: Any) -> tuple[Bus, Counters, list[StatusEvent], Recorder]:
    return new_recorder(tmp_store.db_path, tmp_store.images, **kw)


def _inspection(db: sqlite_utils.Database, part_id: int) -> dict[str, Any]:
    row = queries.get_inspection(db, part_id)
    assert row is not None, f"part {part_id} is not stored"
    return row


def _read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, f"{path}: not a readable image"
    return img


def _count(db_path: Path, sql: str = "SELECT COUNT(*) FROM inspections") -> int:
    with sqlite3.connect(db_path) as c:
        return c.execute(sql).fetchone()[0]


def test_rows_match_what_was_published(tmp_store, make_result) -> None:
    bus, counters, _, rec = _recorder(tmp_store, batch_size=16, station="line-3")
    rec.start()
    results = []
    for pid in range(1, 41):
        truth = ("dataclass", "dict", None)[pid % 3]
        cams = ("top", "side") if pid % 4 == 0 else ("top",)
        results.append(make_result(pid, CYCLE[pid % len(CYCLE)], cameras=cams, truth=truth))
    _publish(bus, counters, results)
    assert rec.stop(timeout=10)

    db = tmp_store.db
    assert queries.outcome_counts(db) == {o.value: sum(r.verdict.outcome is o for r in results) for o in Outcome}
    for r in results:
        v, t = r.verdict, r.trigger
        row = queries.get_inspection(db, t.part_id)
        assert row is not None
        assert (
            row["seq"],
            row["outcome"],
            row["model_id"],
            row["config_hash"],
            row["calibration_id"],
            row["source"],
            row["station"],
        ) == (t.seq, v.outcome.value, "model-abc", "cfg123", "nominal", "timer", "line-3")
        assert row["reasons"] == list(v.reasons)
        assert row["timings"] == dict(v.timings_ms)
        assert row["deadline_slack_ms"] == 41.0
        assert row["t_trigger_wall"] == pytest.approx(t.t_trigger_wall)
        assert row["t_decided_wall"] == pytest.approx(t.t_trigger_wall + 0.009)
        assert row["defect_count"] == len(v.defects)
        assert row["max_score"] == (pytest.approx(max(d.confidence for d in v.defects)) if v.defects else None)
        expected_defects = [
            (
                d.camera_id,
                d.class_name,
                pytest.approx(d.confidence),
                *d.box_xyxy,
                pytest.approx(d.area_mm2),
                d.action,
                d.rule,
            )
            for d in v.defects
        ]
        got_defects = [
            (
                d["camera_id"],
                d["class_name"],
                d["confidence"],
                d["x1"],
                d["y1"],
                d["x2"],
                d["y2"],
                d["area_mm2"],
                d["action"],
                d["rule"],
            )
            for d in row["defects"]
        ]
        assert got_defects == expected_defects
        truths = {f.camera_id: f.meta["truth"] for f in r.frames if "truth" in f.meta}
        if truths:
            expected_truth = {
                cam: [
                    dataclasses.asdict(x)
                    if dataclasses.is_dataclass(x) and not isinstance(x, type)
                    else {**x, "area_px": float(x["area_px"])}
                    for x in tr
                ]
                for cam, tr in truths.items()
            }
            assert row["ground_truth"] == json.loads(json.dumps(expected_truth))
        else:
            assert row["ground_truth"] is None
        reason = tmp_store.images.should_keep(v.outcome, t.part_id)
        if reason is None:
            assert row["images"] == []
            continue
        assert [(i["camera_id"], i["kept_reason"], i["width"], i["height"], i["format"]) for i in row["images"]] == [
            (f.camera_id, reason, f.image.shape[1], f.image.shape[0], "png") for f in r.frames
        ]
        for i, f in zip(row["images"], r.frames):
            path = tmp_store.images.open_path(i["sha256"], i["format"])
            assert hashlib.sha256(path.read_bytes()).hexdigest() == i["sha256"]
            assert path.stat().st_size == i["bytes"]
            assert np.array_equal(_read(path), f.image)

    assert rec.records_written == 40 and rec.pending == 0 and rec.records_dropped == 0
    snap = counters.snapshot()
    assert snap.records_written == 40
    stored = queries.load_counters(db)
    assert stored is not None and stored["records_written"] == 40 and stored["verdicts"] == 40
    assert queries.last_part_id(db) == 40
    assert reconcile(snap, pending_records=rec.pending) == []


def test_status_events_become_alarm_rows(tmp_store, make_result) -> None:
    bus, counters, _, rec = _recorder(tmp_store)
    rec.start()
    bus.publish(StatusEvent("camera:top", "alarm", "camera lost", 1000.0))
    bus.publish(StatusEvent("plc", "warning", "slow reply", 1001.0))
    bus.publish(StatusEvent("plc", "ok", "back", 1002.0))  # not an alarm
    bus.publish(StatusEvent("recorder", "alarm", "echo of our own alarm", 1003.0))  # written by the recorder itself
    bus.publish(object())  # type: ignore[arg-type]  # unknown events are ignored
    _publish(bus, counters, [make_result(1)])
    assert rec.stop()
    rows = queries.recent_alarms(tmp_store.db)
    assert [(a["component"], a["state"], a["message"], a["t_wall"]) for a in rows] == [
        ("plc", "warning", "slow reply", 1001.0),
        ("camera:top", "alarm", "camera lost", 1000.0),
    ]
    assert rec.pending == 0 and rec.records_written == 1


def test_stalled_database_does_not_block_publish_and_catches_up(tmp_store, make_result, wait_until) -> None:
    bus, counters, statuses, rec = _recorder(tmp_store, queue=300, batch_size=8, busy_timeout_ms=100, max_backoff_s=0.2)
    rec.start()
    _publish(bus, counters, [make_result(1)])
    wait_until(lambda: rec.records_written == 1, what="first row")

    blocker = sqlite3.connect(tmp_store.db_path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        results = [make_result(pid, CYCLE[pid % len(CYCLE)]) for pid in range(2, 202)]
        publisher = threading.Thread(target=_publish, args=(bus, counters, results))
        publisher.start()
        publisher.join(timeout=10)
        assert not publisher.is_alive(), "bus.publish blocked behind a stalled database"
        wait_until(lambda: rec.stalled, what="the recorder to notice the stall")
        assert rec.pending == 200
        assert rec.subscription.dropped == 0
        assert _count(tmp_store.db_path) == 1  # readers still work during the stall (WAL)
        assert [(s.component, s.state) for s in statuses] == [("recorder", "alarm")]
        assert reconcile(counters.snapshot(), pending_records=rec.pending) == []
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()

    wait_until(lambda: rec.pending == 0, what="the recorder to catch up")
    assert rec.stop()
    assert not rec.stalled
    assert [(s.component, s.state) for s in statuses] == [("recorder", "alarm"), ("recorder", "ok")]
    ids = {r[0] for r in sqlite3.connect(tmp_store.db_path).execute("SELECT part_id FROM inspections")}
    assert ids == set(range(1, 202))
    alarms = queries.recent_alarms(tmp_store.db)
    assert [(a["component"], a["state"]) for a in alarms] == [("recorder", "alarm")]
    assert "locked" in alarms[0]["message"]
    snap = counters.snapshot()
    assert snap.records_written == 201 and snap.records_dropped == 0
    assert reconcile(snap, pending_records=rec.pending) == []


def test_beyond_queue_capacity_drops_are_counted_exactly(tmp_store, make_result, wait_until) -> None:
    bus, counters, _, rec = _recorder(tmp_store, queue=10, batch_size=4, busy_timeout_ms=100, max_backoff_s=0.2)
    rec.start()
    blocker = sqlite3.connect(tmp_store.db_path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        _publish(bus, counters, [make_result(pid, CYCLE[pid % len(CYCLE)]) for pid in range(1, 61)])
        wait_until(lambda: rec.stalled, what="stall")
        held = rec.pending
        assert 10 <= held <= 14  # a full queue plus at most one batch in hand
        assert rec.subscription.dropped == 60 - held
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert rec.stop(timeout=10)
    written = _count(tmp_store.db_path)
    assert written == held
    assert written + rec.records_dropped == 60
    assert rec.records_written == written
    snap = counters.snapshot()
    assert (snap.records_written, snap.records_dropped) == (written, 60 - written)
    assert reconcile(snap, pending_records=rec.pending) == []
    stored = queries.load_counters(tmp_store.db)
    assert stored is not None and (stored["records_written"], stored["records_dropped"]) == (written, 60 - written)
    ids = sorted(r[0] for r in sqlite3.connect(tmp_store.db_path).execute("SELECT part_id FROM inspections"))
    assert len(ids) == written and set(ids) <= set(range(1, 61))


def test_invalid_records_are_refused_counted_and_do_not_stop_the_recorder(tmp_store, make_result, wait_until) -> None:
    bus, counters, _, rec = _recorder(tmp_store, batch_size=8)
    rec.start()
    good = make_result(5, Outcome.FAIL)
    bad_action = make_result(6, Outcome.FAIL, n_defects=1)
    bad_defect = dataclasses.replace(bad_action.verdict.defects[0], action="explode")
    bad_action = dataclasses.replace(bad_action, verdict=dataclasses.replace(bad_action.verdict, defects=(bad_defect,)))
    _publish(bus, counters, [good, make_result(5, Outcome.PASS), bad_action, make_result(7, Outcome.FAIL)])
    wait_until(lambda: rec.pending == 0, what="the batch")
    assert rec.running
    assert rec.records_written == 2 and rec.records_rejected == 2 and rec.records_dropped == 2
    _publish(bus, counters, [make_result(8)])
    assert rec.stop()
    assert sorted(r[0] for r in sqlite3.connect(tmp_store.db_path).execute("SELECT part_id FROM inspections")) == [
        5,
        7,
        8,
    ]
    assert _inspection(tmp_store.db, 5)["outcome"] == "FAIL"  # the first one stays
    # nothing of the refused part 6 was half-written
    assert _count(tmp_store.db_path, "SELECT COUNT(*) FROM defects WHERE part_id = 6") == 0
    assert _count(tmp_store.db_path, "SELECT COUNT(*) FROM images WHERE part_id = 6") == 0
    assert reconcile(counters.snapshot(), pending_records=rec.pending) == []


def test_an_image_that_cannot_be_encoded_loses_only_the_image(tmp_store, make_result) -> None:
    bus, counters, statuses, rec = _recorder(tmp_store)
    rec.start()
    r = make_result(3, Outcome.FAIL)
    bad = dataclasses.replace(r, frames=(Frame(3, "cam0", np.zeros((2, 2, 2, 2), np.uint8), 0),))
    odd = dataclasses.replace(r, frames=(Frame(4, "cam0", np.zeros((8, 8), np.float64), 0),))
    odd = dataclasses.replace(
        odd, trigger=dataclasses.replace(r.trigger, part_id=4), verdict=dataclasses.replace(r.verdict, part_id=4)
    )
    _publish(bus, counters, [bad, odd, make_result(5, Outcome.FAIL)])
    assert rec.stop()
    rows = {p: _inspection(tmp_store.db, p) for p in (3, 4, 5)}
    assert all(rows.values())
    assert rows[3]["images"] == [] and len(rows[4]["images"]) == 1 and len(rows[5]["images"]) == 1
    assert [(s.component, s.state) for s in statuses] == [("recorder:images", "warning"), ("recorder:images", "ok")]
    assert "2-D or 3-D" in statuses[0].message
    assert rec.records_written == 3 and rec.records_dropped == 0


def _with_maps(r: PartResult, maps: list[np.ndarray | None], scores: list[float | None]) -> PartResult:
    """``r`` with one anomaly-backend Detections per frame: the given heat maps and image scores."""
    dets = []
    for m, sc in zip(maps, scores):
        d = Detections.empty(("anomaly",), "anomaly-test")
        dets.append(dataclasses.replace(d, anomaly_map=m, image_score=sc))
    return dataclasses.replace(r, detections=tuple(dets))


def _hot_map(h: int, w: int, y: int, x: int, value: int = 250) -> np.ndarray:
    """A (h, w) heat map, normal (10) everywhere but one hot pixel at (y, x)."""
    m = np.full((h, w), 10, np.uint8)
    m[y, x] = value
    return m


def test_heat_maps_and_image_scores_are_recorded_with_the_kept_images(tmp_store, make_result) -> None:
    bus, counters, _, rec = _recorder(tmp_store)
    rec.start()
    big = _hot_map(600, 1000, 301, 777)  # larger than 256 px: stored downscaled, the hot pixel kept
    small = _hot_map(48, 64, 5, 9, 140)
    two_cams = _with_maps(make_result(1, Outcome.FAIL, cameras=("top", "side")), [big, small], [2.5, 0.7])
    one_map = _with_maps(make_result(2, Outcome.UNCERTAIN, cameras=("top", "side")), [None, small], [None, 1.25])
    no_map = make_result(3, Outcome.FAIL)  # a supervised model: no map, no score
    not_kept = _with_maps(
        make_result(4, Outcome.PASS), [big], [0.2]
    )  # PASS 4 is not sampled (1 in 5): no image, no map
    _publish(bus, counters, [two_cams, one_map, no_map, not_kept])
    assert rec.stop()

    db = tmp_store.db
    scores = dict(db.execute("SELECT part_id, image_score FROM inspections").fetchall())
    assert scores == {1: pytest.approx(2.5), 2: pytest.approx(1.25), 3: None, 4: pytest.approx(0.2)}
    rows = db.execute(
        "SELECT m.part_id, m.camera_id, m.sha256, m.width, m.height, m.bytes, m.image_score, i.camera_id FROM "
        "anomaly_maps m "
        "JOIN images i ON i.id = m.image_id ORDER BY m.id"
    ).fetchall()
    assert [(r[0], r[1], r[7]) for r in rows] == [(1, "top", "top"), (1, "side", "side"), (2, "side", "side")]
    assert [r[6] for r in rows] == [pytest.approx(2.5), pytest.approx(0.7), pytest.approx(1.25)]
    assert (rows[0][3], rows[0][4]) == (250, 150)  # long side 256 at most, aspect ratio kept (1000/4, 600/4)
    assert (rows[1][3], rows[1][4]) == (64, 48)  # small maps stay as they are
    assert rows[1][2] == rows[2][2]  # the same map content is one file
    for _, _, sha, w, h, nbytes, _, _ in rows:
        path = tmp_store.images.open_map_path(sha)
        data = path.read_bytes()
        assert len(data) == nbytes and hashlib.sha256(data).hexdigest() == sha
        assert path.parent.parent.parent == tmp_store.images_dir / "maps"
        back = _read(path)
        assert back.dtype == np.uint8 and back.shape == (h, w)
    top = _read(tmp_store.images.open_map_path(rows[0][2]))
    assert top.max() == 250 and tuple(np.argwhere(top == 250)[0]) == (
        301 // 4,
        777 // 4,
    )  # the hot spot survives, in place
    assert (top == 10).mean() > 0.99
    side = _read(tmp_store.images.open_map_path(rows[1][2]))
    assert np.array_equal(side, small)
    assert rec.records_written == 4 and rec.records_dropped == 0


def test_a_bad_heat_map_loses_only_the_map(tmp_store, make_result) -> None:
    bus, counters, _, rec = _recorder(tmp_store)
    rec.start()
    wrong_dtype = _with_maps(make_result(1, Outcome.FAIL), [np.zeros((8, 8), np.float32)], [3.0])
    wrong_shape = _with_maps(make_result(2, Outcome.FAIL), [np.zeros((8, 8, 3), np.uint8)], [None])
    _publish(
        bus,
        counters,
        [wrong_dtype, wrong_shape, _with_maps(make_result(3, Outcome.FAIL), [_hot_map(8, 8, 1, 1)], [1.0])],
    )
    assert rec.stop()
    db = tmp_store.db
    assert [len(_inspection(db, p)["images"]) for p in (1, 2, 3)] == [1, 1, 1]
    assert [r[0] for r in db.execute("SELECT part_id FROM anomaly_maps")] == [3]
    assert db.execute("SELECT image_score FROM inspections WHERE part_id = 1").fetchone()[0] == pytest.approx(3.0)
    assert rec.records_written == 3 and rec.records_dropped == 0


def test_stop_flushes_everything_queued(tmp_store, make_result) -> None:
    bus, counters, _, rec = _recorder(tmp_store, batch_size=32)
    _publish(bus, counters, [make_result(pid, CYCLE[pid % len(CYCLE)]) for pid in range(1, 151)])
    rec.start()
    assert rec.stop(timeout=20)
    assert _count(tmp_store.db_path) == 150 and rec.pending == 0


def test_stop_gives_up_on_a_database_that_stays_locked(tmp_store, make_result, wait_until) -> None:
    bus, counters, _, rec = _recorder(tmp_store, busy_timeout_ms=50, max_backoff_s=0.1)
    rec.start()
    blocker = sqlite3.connect(tmp_store.db_path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        _publish(bus, counters, [make_result(pid) for pid in range(1, 6)])
        wait_until(lambda: rec.stalled, what="stall")
        assert rec.stop(timeout=0.5) is False
        assert not rec.running
        # not lost silently, and not "pending" in a stopped recorder either: counted as dropped
        assert rec.pending == 0 and rec.records_dropped == 5
        assert counters.snapshot().records_dropped == 5
        assert rec.stop_report is not None and (rec.stop_report["dropped"], rec.stop_report["lost_at_stop"]) == (5, 5)
        assert reconcile(counters.snapshot(), pending_records=rec.pending) == []
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


def test_start_reports_an_unusable_database(tmp_path: Path) -> None:
    (tmp_path / "a_folder.db").mkdir()
    rec = Recorder(tmp_path / "a_folder.db", ImageStore(tmp_path / "img"), Counters(), Bus().subscribe("r"))
    with pytest.raises(StoreError, match="a_folder.db"):
        rec.start()
    with pytest.raises(ValueError, match="database file"):
        Recorder(":memory:", ImageStore(tmp_path / "img"), Counters(), Bus().subscribe("r"))


_CHILD = r"""
import sys, time
from pathlib import Path
import numpy as np
from station.bus import Bus
from station.counters import Counters
from station.store.images import ImageStore
from station.store.recorder import Recorder
from station.contracts import Defect, Frame, Outcome, PartResult, Trigger, Verdict

root = Path(sys.argv[1])
bus = Bus()
sub = bus.subscribe("recorder", maxsize=100000)
counters = Counters()

def committed(ids):
    sys.stdout.write(" ".join(map(str, ids)) + "\n")
    sys.stdout.flush()

rec = Recorder(root / "s.db", ImageStore(root / "img", "png", 3, 100.0), counters, sub, batch_size=16,
on_commit=committed)
rec.start()
rng = np.random.default_rng(0)
cycle = [Outcome.PASS, Outcome.FAIL, Outcome.PASS, Outcome.UNCERTAIN]
pid = 0
while True:
    pid += 1
    o = cycle[pid % 4]
    d = () if o is Outcome.PASS else (Defect("dent", 0.9, (1.0, 2.0, 3.0, 4.0), 0.5, "cam0", "reject", "r"),)
    img = rng.integers(0, 256, (24, 32), dtype=np.uint8)
    t = Trigger(pid, pid, time.monotonic_ns(), t_trigger_wall=time.time())
    v = Verdict(pid, o, (), d, "m", "c", "cal", {"total": 1.0})
    counters.verdict(o)
    bus.publish(PartResult(t, v, (Frame(pid, "cam0", img, 0),)))
    while sub.pending > 200:
        time.sleep(0.001)
"""


def test_sigkill_loses_no_committed_row(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    committed: list[int] = []
    try:
        assert child.stdout is not None
        deadline = time.monotonic() + 60
        while len(committed) < 400:
            line = child.stdout.readline()
            if not line:
                pytest.fail(f"child exited early: {child.stderr.read() if child.stderr else ''}")
            committed += [int(x) for x in line.split()]
            assert time.monotonic() < deadline, "child too slow"
        os.kill(child.pid, signal.SIGKILL)  # mid-stream: the child is still publishing and writing
        rest, _ = child.communicate(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    for line in rest.splitlines(keepends=True):
        if line.endswith("\n"):  # a line cut by the kill was not a full report
            committed += [int(x) for x in line.split()]

    db_path = tmp_path / "s.db"
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    ids = {r[0] for r in conn.execute("SELECT part_id FROM inspections")}
    missing = set(committed) - ids
    assert not missing, f"{len(missing)} committed rows lost, e.g. {sorted(missing)[:5]}"
    n = len(ids)
    assert ids == set(range(1, n + 1))  # batches are all-or-nothing, in order
    stored = json.loads(conn.execute("SELECT counters FROM counters WHERE key = 'station'").fetchone()[0])
    assert stored["records_written"] == n
    assert conn.execute("SELECT last_part_id FROM counters").fetchone()[0] >= max(ids)
    assert (
        conn.execute("SELECT COUNT(*) FROM defects WHERE part_id NOT IN (SELECT part_id FROM inspections)").fetchone()[
            0
        ]
        == 0
    )
    # every image row points at a complete file: files are written before their rows commit
    store = ImageStore(tmp_path / "img")
    rows = conn.execute("SELECT sha256, format, bytes FROM images").fetchall()
    assert rows
    for sha, fmt, nbytes in rows:
        data = store.open_path(sha, fmt).read_bytes()
        assert len(data) == nbytes and hashlib.sha256(data).hexdigest() == sha
    conn.close()
    db = open_db(db_path)  # reopens (WAL recovered) and continues numbering after the last part
    assert queries.last_part_id(db) >= max(ids)
    db.close()
