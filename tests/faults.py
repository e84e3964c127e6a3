"""Fault injection on a running station: one function per fault, shared by
``tests/integration/test_faults.py`` (which asserts on the rows) and ``bench/bench_faults.py``
(which prints them as a table).

Each function builds a real :class:`~station.app.Station` in ``tmp`` (synthetic line unless the
fault needs another peer: the pylon emulator, a pymodbus PLC, mosquitto, an anomaly model), runs it
on its timer trigger, injects the fault while the line runs, removes it, waits for the alarm to
clear, stops, and returns a :class:`FaultResult`:

* ``parts``: verdicts of the run; ``during``: parts triggered while the fault lasted;
* ``failsafe``: FAILSAFE verdicts (learning parts of the reference inspector excepted);
  ``failsafe_unrejected``: FAILSAFE parts without a fired reject (must be 0);
* ``no_verdict``: triggers without a verdict (must be 0);
* ``lost``: verdicts missing from the database after stop (spill file replayed as at the next
  start), committed rows that vanished, and for MQTT results the broker never delivered;
* ``alarm``: the components that raised an alarm (or warning) during the fault; ``cleared``:
  none of them is still active once the fault is gone;
* ``recovery_s``: from the fault's removal (or, for a one-shot fault, its injection) until the
  alarm cleared and a part was inspected again (not FAILSAFE).

The existing peers and fault tools are reused, not copied: :mod:`tests.fixtures_floor`,
:mod:`tests.fixtures_pylon`, the tmpfs helpers of ``tests/unit/test_store_faults.py``, the hanging
and faulty inspectors of ``test_watchdog.py`` / ``test_line.py``, the SIGKILL config of ``test_crash.py``.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from station.app import Station
from station.contracts import Detections, Frame, Outcome
from station.inspection.base import INSPECTORS, InspectorError
from tests.fixtures_floor import Mosquitto, MqttCollector, PlcSim, Results, wait_for
from tests.integration.conftest import station_config
from tests.station_configs import store_section

RATE_PPM = 600  # 10 parts/s: enough parts in every phase, light on a 2-core machine
RSS_LIMIT = 0.05  # hot swaps: RSS growth allowed after warm-up
QUIET_ALARMS = {"station", "line"}  # state changes of the station itself, not a fault


@dataclass
class FaultResult:
    """One row of the fault table (see the module docstring)."""

    fault: str
    parts: int = 0
    during: int = 0
    failsafe: int = 0
    failsafe_unrejected: int = 0
    no_verdict: int = 0
    lost: int = 0
    alarm: tuple[str, ...] = ()
    cleared: bool = False
    recovery_s: float = float("nan")
    reconcile: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    expect_alarm: bool = True
    rss_growth: float = float("nan")  # hot swaps: RSS growth after warm-up (limit 5 %)

    @property
    def problems(self) -> list[str]:
        """What breaks the contract (empty: the fault was survived)."""
        p = []
        if self.parts == 0:
            p.append("no parts")
        if self.no_verdict:
            p.append(f"{self.no_verdict} parts without a verdict")
        if self.failsafe_unrejected:
            p.append(f"{self.failsafe_unrejected} FAILSAFE parts not rejected")
        if self.lost:
            p.append(f"{self.lost} lost")
        if self.expect_alarm and not self.alarm:
            p.append("no alarm")
        if self.expect_alarm and not self.cleared:
            p.append(f"alarm did not clear: {self.alarm}")
        if self.reconcile:
            p.append(f"counters: {self.reconcile}")
        if self.rss_growth == self.rss_growth and self.rss_growth >= RSS_LIMIT:
            p.append(f"RSS {self.rss_growth * 100:+.1f} % (limit {RSS_LIMIT * 100:.0f} %)")
        return p

    def row(self) -> list[str]:
        alarm = ",".join(self.alarm) if self.alarm else "-"
        return [
            self.fault,
            str(self.parts),
            str(self.during),
            str(self.failsafe),
            str(self.lost),
            f"{self.recovery_s:.2f}" if self.recovery_s == self.recovery_s else "-",
            f"{alarm} {'cleared' if self.cleared else 'ACTIVE'}" if self.alarm else "-",
            "ok" if not self.problems else "; ".join(self.problems),
        ]


HEADER = ["fault", "parts", "during fault", "FAILSAFE", "lost", "recovery s", "alarm", "result"]


def table(rows: list[FaultResult]) -> str:
    """A markdown table of the rows."""
    cells = [HEADER] + [r.row() for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]
    fmt = lambda c: "| " + " | ".join(x.ljust(w) for x, w in zip(c, widths)) + " |"  # noqa: E731
    return "\n".join([fmt(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [fmt(c) for c in cells[1:]])


def _learning(r: Any) -> bool:
    return bool(r.verdict.reasons) and r.verdict.reasons[0].startswith("learning")


def _db_ids(db_path: Path) -> set[int]:
    if not Path(db_path).exists():
        return set()
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)) as c:
        try:
            return {r[0] for r in c.execute("SELECT part_id FROM inspections")}
        except sqlite3.OperationalError:
            return set()


class LineRun:
    """A started station with its results gathered, and the fault's timeline.

    ``inject()`` / ``remove()`` stamp the fault; ``recover()`` waits for the raised alarms to clear
    and for a part inspected after the removal; ``finish()`` stops and fills the FaultResult.
    """

    def __init__(self, fault: str, station: Station, *, expect_alarm: bool = True, keep_images: bool = True):
        self.station = station
        self.res = FaultResult(fault, expect_alarm=expect_alarm)
        self.results = Results(station, keep_images=keep_images)
        self.t_inject_ns = self.t_remove_ns = 0
        self.t_remove_wall = 0.0
        self.committed_before: set[int] = set()
        self._status_seen = 0
        self.t_window_end_ns = 0  # end of "during the fault" when not the removal (a one-shot fault: its recovery)
        self.t_recovered_ns = 0
        self._stopped = False
        station.start()

    def parts(self, n: int, timeout: float = 30.0) -> None:
        """Wait until ``n`` more verdicts were published."""
        target = len(self.results.items) + n
        wait_for(lambda: len(self.results.items) >= target, timeout, f"{n} more verdicts", step=0.02)

    def inject(self) -> None:
        wait_for(lambda: self.station.counters.snapshot().records_written > 0, 10, "first committed rows", step=0.02)
        self.committed_before = _db_ids(self.station.cfg.store.db_path)
        self.t_inject_ns = time.monotonic_ns()
        self._status_seen = len(self.results.status)

    def remove(self) -> None:
        self.t_remove_ns = time.monotonic_ns()
        self.t_remove_wall = time.time()

    def alarms_raised(self) -> set[str]:
        return {
            e.component
            for e in self.results.status[self._status_seen :]
            if e.state in ("alarm", "warning") and e.component not in QUIET_ALARMS
        }

    def wait_alarm(self, timeout: float = 10.0, prefix: str = "") -> None:
        wait_for(
            lambda: any(c.startswith(prefix) for c in self.alarms_raised()), timeout, f"an alarm {prefix}", step=0.01
        )

    def recover(self, timeout: float = 20.0) -> None:
        """Wait for the raised alarms to clear and for a part inspected (not FAILSAFE) after the removal."""
        if not self.t_remove_ns:
            self.remove()
        raised = self.alarms_raised()
        active = lambda: {e.component for e in self.station.alarms.active()} & raised  # noqa: E731
        with contextlib.suppress(BaseException):
            wait_for(lambda: not active(), timeout, f"alarms {sorted(raised)} to clear", step=0.01)
        t_clear = (
            max(
                (
                    e.t_wall
                    for e in self.results.status[self._status_seen :]
                    if e.component in raised and e.state == "ok"
                ),
                default=self.t_remove_wall,
            )
            if raised and not active()
            else float("nan")
        )

        def good() -> list[Any]:
            return [
                r
                for r in list(self.results.items)
                if r.trigger.t_trigger_ns >= self.t_remove_ns and r.verdict.outcome is not Outcome.FAILSAFE
            ]

        with contextlib.suppress(BaseException):
            wait_for(lambda: bool(good()), timeout, "a part inspected after the fault", step=0.01)
        firsts = good()
        t_good = (min(r.trigger.t_trigger_ns for r in firsts) - self.t_remove_ns) / 1e9 if firsts else float("nan")
        self.res.alarm = tuple(sorted(raised))
        self.res.cleared = bool(raised) and not active()
        self.res.recovery_s = max(t_clear - self.t_remove_wall if raised else 0.0, t_good)
        if self.res.recovery_s == self.res.recovery_s:
            self.t_recovered_ns = self.t_remove_ns + int(self.res.recovery_s * 1e9)

    def finish(self, *, spill_replay: bool = True) -> FaultResult:
        st, res = self.station, self.res
        if not self._stopped:
            st.stop()
            self._stopped = True
        self.results.close()
        snap = st.counters.snapshot()
        by_id = self.results.by_id
        res.parts = len(by_id)
        res.no_verdict = max(0, snap.triggers - len(by_id))
        fired = {f.part_id for f in st.scheduler.fired}
        fs = [r for r in by_id.values() if r.verdict.outcome is Outcome.FAILSAFE]
        res.failsafe = sum(1 for r in fs if not _learning(r))
        res.failsafe_unrejected = sum(1 for r in fs if r.trigger.part_id not in fired)
        end = self.t_window_end_ns or self.t_remove_ns or time.monotonic_ns()
        res.during = sum(1 for r in by_id.values() if self.t_inject_ns <= r.trigger.t_trigger_ns < end)
        db_path = st.cfg.store.db_path
        spill = st.cfg.store.spill_path
        if spill_replay and spill is not None and Path(spill).exists():  # what the next start does first
            from station.store.db import open_db
            from station.store.recorder import replay_at_start

            db = open_db(db_path)
            try:
                replay_at_start(db, Path(spill), st.images)
            finally:
                db.close()
        ids = _db_ids(db_path)
        res.lost += len(set(by_id) - ids) + len(self.committed_before - ids)
        res.reconcile = st.reconcile()
        return res


@contextlib.contextmanager
def _tmpdir(tmp: Path | None) -> Iterator[Path]:
    if tmp is not None:
        tmp.mkdir(parents=True, exist_ok=True)
        yield tmp
        return
    with tempfile.TemporaryDirectory(prefix="fault-") as d:
        yield Path(d)


def _cfg(tmp: Path, **overrides: Any) -> Any:
    return station_config(tmp, **{"trigger": {"type": "timer", "parts_per_minute": RATE_PPM}, **overrides})


# --------------------------------------------------------------------------- the faults


def camera_unplug(tmp: Path | None = None) -> FaultResult:
    """The Basler camera (pylon emulator) is unplugged and comes back by itself (reconnect)."""
    from tests.fixtures_pylon import emulated_camera, pylon_station_config, render_parts

    old = os.environ.get("PYLON_CAMEMU")
    os.environ["PYLON_CAMEMU"] = "1"
    try:
        with _tmpdir(tmp) as d:
            render_parts(d / "frames", 6)
            cam = emulated_camera("cam0", "0815-0000", d / "frames", reconnect={"initial_s": 1.0, "max_s": 2})
            st = Station(
                pylon_station_config(
                    d, [cam], trigger={"type": "timer", "parts_per_minute": RATE_PPM}, pipeline={"grab_timeout_ms": 300}
                )
            )
            run = LineRun("camera unplug + return (pylon)", st)
            try:
                run.parts(10)
                run.inject()
                from station.acquire.lifecycle import DeviceState
                from station.acquire.pylon import PylonCamera

                pylon_cam = st.cameras[0]
                assert isinstance(pylon_cam, PylonCamera)
                with pylon_cam.device() as dev:
                    dev.FirePnPCallback.Execute()
                run.wait_alarm(5, "camera:")
                pylon_cam.lifecycle.wait_state(DeviceState.STREAMING, 15)  # it comes back on its own
                run.remove()
                run.recover()
                run.parts(10)
            finally:
                res = run.finish()
            return res
    finally:
        if old is None:
            os.environ.pop("PYLON_CAMEMU", None)
        else:
            os.environ["PYLON_CAMEMU"] = old


def plc_gone(tmp: Path | None = None) -> FaultResult:
    """The PLC (pymodbus server, reject coil output) goes away for 2 s and comes back on the same port."""
    plc = PlcSim().start()
    try:
        with _tmpdir(tmp) as d:
            fast = {"timeout_ms": 100, "reconnect_min_s": 0.1, "reconnect_max_s": 0.4}
            st = Station(
                _cfg(
                    d,
                    reject={
                        "travel_ms": 400,
                        "safety_margin_ms": 100,
                        "pulse_ms": 20,
                        "output": {"type": "modbus", "port": plc.port, **fast},
                    },
                )
            )
            run = LineRun("PLC gone + back (modbus)", st)
            try:
                run.parts(10)
                run.inject()
                plc.stop()
                run.wait_alarm(5)
                time.sleep(1.5)
                plc.start()  # same port, memory cleared
                run.remove()
                run.recover()
                run.parts(10)
                if not plc.coil_writes(0):
                    run.res.notes.append("no reject pulse reached the PLC after its return")
            finally:
                res = run.finish()
            return res
    finally:
        plc.stop()


def broker_gone(tmp: Path | None = None) -> FaultResult:
    """The MQTT broker (mosquitto, persistent) stops for 2 s; every result still reaches a persistent subscriber."""
    with _tmpdir(tmp) as d:
        broker = Mosquitto(d, persistence=True).start()
        col = MqttCollector(broker.port, "station/faults/result", client_id="fault-collector", persistent=True)
        try:
            mqtt = {
                "mqtt": {
                    "port": broker.port,
                    "outbox_path": str(d / "outbox.db"),
                    "reconnect_min_s": 0.2,
                    "reconnect_max_s": 0.5,
                }
            }
            st = Station(_cfg(d, name="faults", publish=mqtt))
            run = LineRun("broker gone + back (mosquitto)", st)
            try:
                run.parts(10)
                run.inject()
                broker.stop()
                run.wait_alarm(5, "mqtt")
                time.sleep(1.5)
                broker.start()
                run.remove()
                run.recover()
                run.parts(10)
            finally:
                res = run.finish()
            decided = set(run.results.by_id)
            got = lambda: {json.loads(p)["part_id"] for p, _ in col.of("/result")}  # noqa: E731
            with contextlib.suppress(BaseException):
                wait_for(lambda: decided <= got(), 15, "every result at the subscriber", step=0.05)
            missing = decided - got()
            if missing:
                res.lost += len(missing)
                res.notes.append(f"{len(missing)} results never reached the subscriber")
            return res
        finally:
            col.close()
            broker.stop()


def inspector_hang(tmp: Path | None = None) -> FaultResult:
    """One model call never returns: the watchdog abandons the worker and starts a fresh one."""
    from tests.integration.test_watchdog import HangingInspector

    insp = HangingInspector()
    with _tmpdir(tmp) as d:
        st = Station(
            _cfg(d, inspector={"type": "reference"}, watchdog={"stall_s": 1.5, "period_s": 0.05}), inspector=insp
        )
        run = LineRun("inspector hang (watchdog)", st)
        try:
            run.parts(10)
            run.inject()
            insp.hang.set()
            insp.entered.get(timeout=5)
            insp.hang.clear()  # only that call hangs
            run.remove()  # one-shot: recovery counts from the hang
            run.t_remove_ns, run.t_remove_wall = (
                run.t_inject_ns,
                time.time() - (time.monotonic_ns() - run.t_inject_ns) / 1e9,
            )
            run.wait_alarm(5, "watchdog")
            run.recover()
            run.t_window_end_ns = run.t_recovered_ns  # the fault lasts until the fresh worker runs
            run.parts(10)
        finally:
            insp.release.set()
            res = run.finish()
        return res


class _FailingInspector:
    """The real inspector, raising InspectorError on every part while ``failing`` is set."""

    def __init__(self, inner: Any):
        from tests.integration.test_line import FaultyInspector

        self.failing = threading.Event()
        outer = self

        class Toggle(FaultyInspector):
            def inspect(self, frame: Frame) -> Detections:
                if outer.failing.is_set():
                    raise InspectorError(f"injected failure on part {frame.part_id}")
                return super().inspect(frame)

        self.inspector = Toggle(inner, raise_on=set(), slow_on=set(), slow_s=0.0)


def inspector_exception(tmp: Path | None = None) -> FaultResult:
    """The inspector raises on every part for 1.5 s."""
    with _tmpdir(tmp) as d:
        cfg = _cfg(d)
        fail = _FailingInspector(INSPECTORS.create(cfg.inspector))
        st = Station(cfg, inspector=fail.inspector)
        run = LineRun("inspector exception", st)
        try:
            run.parts(20)  # past learning
            run.inject()
            fail.failing.set()
            with contextlib.suppress(BaseException):
                run.wait_alarm(3)
            time.sleep(1.5)
            fail.failing.clear()
            run.remove()
            run.recover(10)
            run.parts(10)
        finally:
            fail.failing.clear()
            res = run.finish()
        return res


def disk_full(tmp: Path | None = None) -> FaultResult:
    """Another program fills the data disk (an 8 MB tmpfs) for 2 s; records go to a spill file on another disk."""
    from tests.unit.test_store_faults import _fill, _mount, _umount

    with _tmpdir(tmp) as d:
        disk = d / "disk"
        disk.mkdir()
        try:
            _mount("-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk))
        except OSError as exc:
            res = FaultResult("disk full (tmpfs)")
            res.notes.append(f"skipped: cannot mount a tmpfs here: {exc}")
            return res
        try:
            store = store_section(disk, keep_pass_every=1, min_free_mb=1.0, spill_path=str(d / "spill" / "spill.jsonl"))
            st = Station(_cfg(d, store=store))
            run = LineRun("disk full (tmpfs)", st)
            filler: Path | None = None
            try:
                run.parts(10)
                run.inject()
                filler = _fill(disk)
                run.wait_alarm(10, "recorder")
                time.sleep(1.5)
                filler.unlink()
                filler = None
                run.remove()
                run.recover()
                run.parts(10)
            finally:
                if filler is not None:
                    filler.unlink()
                res = run.finish()
            return res
        finally:
            _umount(disk)


def database_locked(tmp: Path | None = None) -> FaultResult:
    """Another process holds an exclusive lock on the database for 3 s."""
    with _tmpdir(tmp) as d:
        cfg = _cfg(d)
        st = Station(cfg)
        run = LineRun("database locked", st)
        blocker = sqlite3.connect(cfg.store.db_path, timeout=0.1)
        try:
            run.parts(10)
            run.inject()
            blocker.execute("BEGIN EXCLUSIVE")
            run.wait_alarm(10, "recorder")
            time.sleep(1.0)
            blocker.rollback()
            run.remove()
            run.recover()
            run.parts(10)
        finally:
            with contextlib.suppress(sqlite3.Error):
                blocker.rollback()
            blocker.close()
            res = run.finish()
        return res


def sigkill_restart(tmp: Path | None = None) -> FaultResult:
    """``station run`` is SIGKILLed mid-line and started again (as systemd's Restart=on-failure does)."""
    from tests.integration.test_crash import committed_ids, write_config

    res = FaultResult("SIGKILL + restart", expect_alarm=False)
    with _tmpdir(tmp) as d:
        cfg_path = write_config(d)
        db_path = d / "station.db"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "station", "run", "-c", str(cfg_path), "--no-web"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            seen: set[int] = set()
            end = time.monotonic() + 60
            while time.monotonic() < end and len(seen) < 60:
                time.sleep(0.1)
                with contextlib.suppress(sqlite3.Error):
                    seen = committed_ids(db_path) if db_path.exists() else set()
            seen = committed_ids(db_path)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        t_kill = time.monotonic()
        after = _db_ids(db_path)
        res.lost = len(seen - after)
        with contextlib.closing(sqlite3.connect(db_path)) as c:
            if c.execute("pragma integrity_check").fetchone()[0] != "ok":
                res.notes.append("integrity_check failed")
        n = 20
        restart = subprocess.Popen(
            cmd + ["--parts", str(n)], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        try:
            end = time.monotonic() + 60
            t_first = float("nan")
            while time.monotonic() < end and restart.poll() is None:
                if max(_db_ids(db_path), default=0) > max(after, default=0):
                    t_first = time.monotonic()
                    break
                time.sleep(0.02)
            out, _ = restart.communicate(timeout=120)
        finally:
            if restart.poll() is None:
                restart.kill()
        if t_first != t_first and restart.returncode == 0:
            t_first = time.monotonic()
        res.recovery_s = t_first - t_kill
        summary = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        c = summary.get("counters", {})
        ids = sorted(_db_ids(db_path))
        res.parts = len(ids)
        res.during = 0  # parts in flight at the kill were never decided; after the restart ids continue
        with contextlib.closing(
            sqlite3.connect(db_path)
        ) as con:  # the reference re-learns after the restart: not a fault
            res.failsafe = con.execute(
                "SELECT COUNT(*) FROM inspections WHERE outcome = 'FAILSAFE' AND reasons NOT LIKE '%learning%'"
            ).fetchone()[0]
        if int(c.get("verdicts", 0)) != int(c.get("FAILSAFE", 0)) + int(c.get("PASS", 0)) + int(c.get("FAIL", 0)) + int(
            c.get("UNCERTAIN", 0)
        ):
            res.reconcile.append(f"restart counters do not add up: {c}")
        res.no_verdict = 0 if ids[-n:] == list(range(max(after) + 1, max(after) + n + 1)) else n
        res.lost += len(after - set(ids))
        res.reconcile = [p for p in summary.get("reconcile", ["no summary"]) if "in flight" not in p]
        if restart.returncode != 0:
            res.notes.append(f"restart exited {restart.returncode}")
            res.reconcile.append(f"restart exited {restart.returncode}")
    return res


def _anomaly_station(d: Path, model: Path) -> Station:
    from tests.model_factory import ANOMALY_CAMERA

    return Station(
        _cfg(
            d,
            cameras=[{**ANOMALY_CAMERA, "defect_rate": 0.3, "seed": 77}],
            inspector={"type": "anomaly", "model": str(model), "follow_registry": False, "intra_op_threads": 1},
            trigger={"type": "timer", "parts_per_minute": 300},
            reject={"travel_ms": 2000, "safety_margin_ms": 200, "pulse_ms": 10},
        )
    )


def _swap(st: Station, path: Path, timeout: float = 60.0) -> Exception | None:
    """Hot-swap to ``path`` and report the outcome on the alarm board, as the models page does."""
    done: list[Exception | None] = []

    def on_done(error: Exception | None) -> None:
        if error is None:
            st.alarms.report("model", "ok", f"model {st.inspector.model_id} loaded")
        else:
            st.alarms.report("model", "alarm", f"model swap to {path.name} failed: {error}")
        done.append(error)

    st.swap_model(path, on_done)
    wait_for(lambda: bool(done), timeout, f"the swap to {path.name}", step=0.005)
    return done[0]


def corrupt_model(tmp: Path | None = None) -> FaultResult:
    """A truncated ONNX file is pushed to the line: refused, the running model keeps inspecting; a good push clears
    it."""
    from tests.model_factory import anomaly_model

    good, other = anomaly_model(), anomaly_model(seed=1)
    with _tmpdir(tmp) as d:
        corrupt = d / "corrupt.onnx"
        corrupt.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        st = _anomaly_station(d, good)
        run = LineRun("corrupt model pushed", st)
        try:
            run.parts(5)
            run.inject()
            before = st.inspector.model_id
            err = _swap(st, corrupt)
            if err is None or st.inspector.model_id != before:
                run.res.notes.append("the corrupt model was swapped in")
                run.res.lost += 1
            run.wait_alarm(5, "model")
            run.parts(5)
            run.remove()
            if _swap(st, other) is not None:
                run.res.notes.append("the good model was refused")
            run.recover()
            run.parts(5)
        finally:
            res = run.finish()
        return res


def _rss_kb() -> int:
    """Resident set size after a full collection, with the heap's free pages handed back (glibc ``malloc_trim``):
    what is still held, not what the allocator keeps cached from the last model load."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def hot_swaps(tmp: Path | None = None, n: int = 100, warmup: int = 10) -> FaultResult:
    """``n`` hot swaps between two anomaly models while the line runs; RSS at the end within 5 % of RSS after
    ``warmup`` swaps."""
    from tests.model_factory import anomaly_model

    models = [anomaly_model(), anomaly_model(seed=1)]
    with _tmpdir(tmp) as d:
        st = _anomaly_station(d, models[0])
        # the collector keeps verdicts without pixels: RSS is then the station's, not this test's
        run = LineRun(f"{n} model hot swaps", st, expect_alarm=False, keep_images=False)
        rss: list[int] = []
        try:
            run.parts(5)
            run.inject()
            for i in range(n):
                if _swap(st, models[(i + 1) % 2]) is not None:
                    run.res.notes.append(f"swap {i + 1} failed")
                if i + 1 >= warmup:
                    rss.append(_rss_kb())
            run.remove()
            run.recover()
            run.parts(5)
        finally:
            res = run.finish()
        # RSS moves by a model's size and the frames in flight with the swap cycle: compare the median
        # of the first third of the samples after warm-up (one per swap) with the median of the last third
        k = len(rss) // 3
        first, last = (statistics.median(rss[:k]), statistics.median(rss[-k:])) if k >= 5 else (0, 0)
        growth = (last - first) / first if first else float("nan")
        res.rss_mib = [round(r / 1024) for r in rss]  # type: ignore[attr-defined]
        res.notes.append(
            f"RSS median {first / 1024:.0f} MiB (swaps {warmup + 1}-{warmup + k}) -> {last / 1024:.0f} MiB "
            f"(swaps {n - k + 1}-{n}): {growth * 100:+.1f} %"
            if first
            else "no RSS"
        )
        res.rss_growth = growth if first else float("inf")
        return res


FAULTS: dict[str, Callable[..., FaultResult]] = {
    "camera_unplug": camera_unplug,
    "plc_gone": plc_gone,
    "broker_gone": broker_gone,
    "inspector_hang": inspector_hang,
    "inspector_exception": inspector_exception,
    "disk_full": disk_full,
    "database_locked": database_locked,
    "sigkill_restart": sigkill_restart,
    "corrupt_model": corrupt_model,
    "hot_swaps": hot_swaps,
}
