"""The whole station in-process on the synthetic line: counters, rejects, faults."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import cv2

from station.app import Station
from station.contracts import Detections, Frame, Outcome, PartResult
from station.inspection.base import INSPECTORS, InspectorError
from tests.fixtures_floor import Results, running
from tests.host_stalls import HostStallProbe
from tests.reject_checks import check_edge_times, expected_rising_edges, realtime_rerun


def run_until(station: Station, n_parts: int, timeout_s: float = 60.0) -> None:
    """Wait (test pacing only) until ``n_parts`` triggers were decided and the line drained."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        snap = station.counters.snapshot()
        if station.trigger_source_done() and snap.verdicts >= n_parts:
            return
        time.sleep(0.05)
    raise AssertionError(f"line did not finish {n_parts} parts in {timeout_s}s: {station.counters.snapshot()}")


def run_station(station: Station, n_parts: int, timeout_s: float = 60.0) -> list[PartResult]:
    """Start, run ``n_parts`` parts, stop; return their final results."""
    with running(station) as col:
        run_until(station, n_parts, timeout_s)
    return col.items


def assert_rejects_match(
    station: Station, results: list[PartResult], host: HostStallProbe, tolerance_ms: float = 5.0
) -> None:
    """Every rejecting verdict has one pulse at trigger + travel (± tolerance, unless the host stalled); PASS parts
    none."""
    fired = {f.part_id: f for f in station.scheduler.fired}
    rejecting = {
        r.trigger.part_id for r in results if r.verdict.outcome in (Outcome.FAIL, Outcome.FAILSAFE, Outcome.UNCERTAIN)
    }
    assert set(fired) == rejecting
    travel_ns = int(station.cfg.reject.travel_ms * 1e6)
    by_id = {r.trigger.part_id: r for r in results}
    rising = sorted(e.t_ns for e in station.output.edges("reject") if e.value)  # type: ignore[attr-defined]
    for pid, f in fired.items():
        assert f.scheduled_ns == by_id[pid].trigger.t_trigger_ns + travel_ns
    check_edge_times(
        ((f"part {pid} fired", f.scheduled_ns, f.actual_ns) for pid, f in fired.items()),
        tolerance_ms,
        tolerance_ms,
        host,
    )
    # Pulses of parts closer together than the pulse width merge into one (the line stays high
    # until the last release): every rising edge is a fired reject, and the fired rejects
    # that do not start a new pulse fall inside the previous one.
    expected_rises = expected_rising_edges(fired.values(), station.cfg.reject.pulse_ms)
    assert len(rising) == len(expected_rises)
    check_edge_times((("rising edge", expect, t) for t, expect in zip(rising, expected_rises)), 1.0, 1.0, host)


@realtime_rerun
def test_synthetic_line_reconciles_and_rejects_on_time(make_config, host_stalls):
    n = 300
    cfg = make_config(trigger={"type": "timer", "parts_per_minute": 1800})
    station = Station(cfg, max_parts=n)
    results = run_station(station, n)
    snap = station.counters.snapshot()
    assert snap.triggers == n
    assert station.reconcile() == []
    assert snap.records_written == n and snap.records_dropped == 0
    assert len(results) == n and sorted(r.trigger.part_id for r in results) == list(range(1, n + 1))
    learning = [r for r in results if r.verdict.reasons and r.verdict.reasons[0].startswith("learning")]
    # the reference learns from the first good parts (defective ones are skipped) and says so
    assert len(learning) >= 10 and sorted(r.trigger.part_id for r in learning) == list(range(1, len(learning) + 1))
    assert snap.PASS > 100 and snap.FAIL > 30, snap  # the line really inspects
    assert_rejects_match(station, results, host_stalls)

    db = sqlite3.connect(cfg.store.db_path)
    assert db.execute("select count(*) from inspections").fetchone()[0] == n
    assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
    counts = dict(db.execute("select outcome, count(*) from inspections group by outcome").fetchall())
    assert counts.get("FAIL", 0) == snap.FAIL and counts.get("PASS", 0) == snap.PASS


class FaultyInspector:
    """Wraps the real inspector; raises or stalls on chosen parts (fault injection)."""

    def __init__(self, inner, raise_on: set[int], slow_on: set[int], slow_s: float):
        self.inner, self.raise_on, self.slow_on, self.slow_s = inner, raise_on, slow_on, slow_s
        self.model_id, self.names = inner.model_id, inner.names

    @property
    def ready(self) -> bool:
        return self.inner.ready

    def learn(self, frame: Frame) -> None:
        self.inner.learn(frame)
        self.model_id = self.inner.model_id

    def inspect(self, frame: Frame) -> Detections:
        if frame.part_id in self.raise_on:
            raise InspectorError(f"injected failure on part {frame.part_id}")
        if frame.part_id in self.slow_on:
            time.sleep(self.slow_s)  # a hung model, simulated
        return self.inner.inspect(frame)

    def warmup(self) -> None:
        self.inner.warmup()

    def close(self) -> None:
        self.inner.close()


@realtime_rerun
def test_inspector_errors_and_deadline_misses_are_failsafe(make_config, host_stalls):
    n = 60
    # deadline 500 ms: the failing parts' own verdicts come in time even through a VM stall; part 40 hangs longer
    cfg = make_config(
        trigger={"type": "timer", "parts_per_minute": 600},
        reject={"travel_ms": 600, "safety_margin_ms": 100, "pulse_ms": 20},
    )
    inner = INSPECTORS.create(cfg.inspector)
    faulty = FaultyInspector(inner, raise_on={20, 30}, slow_on={40}, slow_s=0.8)
    station = Station(cfg, max_parts=n, inspector=faulty)
    results = run_station(station, n)
    by_id = {r.trigger.part_id: r for r in results}
    for pid in (20, 30):
        assert by_id[pid].verdict.outcome is Outcome.FAILSAFE
        assert "inspector error" in by_id[pid].verdict.reasons[0]
    assert by_id[40].verdict.outcome is Outcome.FAILSAFE and "deadline" in by_id[40].verdict.reasons[0]
    assert station.scheduler.late_verdicts >= 1
    assert station.reconcile() == []
    assert_rejects_match(station, results, host_stalls)


def test_grab_failure_is_failsafe_and_line_continues(make_config, tmp_path: Path):
    from station.acquire.synthetic import SyntheticCamera
    from station.config import SyntheticCameraConfig

    folder = tmp_path / "replay"
    folder.mkdir()
    cam_cfg = SyntheticCameraConfig(width=640, height=400, defect_rate=0.0, seed=3)
    cam = SyntheticCamera(cam_cfg)
    cam.open()
    from station.contracts import Trigger

    for i in range(1, 16):
        img = cam.grab(Trigger(i, i, time.monotonic_ns()), 1.0).image
        cv2.imwrite(str(folder / f"{i:03d}.png"), img)
    (folder / "008.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # a corrupt file from the camera share
    cam.close()
    cfg = make_config(
        cameras=[{"type": "folder", "id": "cam0", "path": str(folder), "loop": False}],
        inspector={"type": "reference", "learn_parts": 5},
        trigger={"type": "timer", "parts_per_minute": 600},
    )
    station = Station(cfg, max_parts=15)
    results = run_station(station, 15)
    by_id = {r.trigger.part_id: r for r in results}
    assert by_id[8].verdict.outcome is Outcome.FAILSAFE and "008.png" in by_id[8].verdict.reasons[0]
    assert all(by_id[i].verdict.outcome is Outcome.PASS for i in range(9, 16))
    snap = station.counters.snapshot()
    assert snap.dropped == 1 and snap.frames == 14
    assert station.reconcile() == []


@realtime_rerun
def test_stalled_database_does_not_stop_the_line(make_config, host_stalls):
    n = 120
    cfg = make_config(trigger={"type": "timer", "parts_per_minute": 1800})
    station = Station(cfg, max_parts=n)
    col = Results(station)
    blocker = sqlite3.connect(cfg.store.db_path, timeout=0.1)
    station.start()
    try:
        time.sleep(0.5)
        blocker.execute("BEGIN EXCLUSIVE")  # a real stall: the writer cannot commit
        written_at_stall = station.counters.snapshot().records_written
        time.sleep(2.0)
        during = station.counters.snapshot()
        assert during.verdicts > written_at_stall + 30, "the line must keep deciding while the DB is stalled"
        assert during.records_written == written_at_stall
        assert during.rejects_fired > 0
        blocker.rollback()
        run_until(station, n)
    finally:
        blocker.close()
        station.stop()
        results = col.close()
    snap = station.counters.snapshot()
    assert snap.records_written == n and station.reconcile() == []
    assert_rejects_match(station, results, host_stalls)
