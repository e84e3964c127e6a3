"""The watchdog on a real station (synthetic camera): a hung inspector, a dead worker, a stuck grab,
systemd notifications over a real unix datagram socket, and the give-up path."""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from station.app import Station
from station.contracts import Detections, Frame, Outcome, PartResult, StatusEvent, Trigger
from tests.fixtures_floor import wait_for

from .conftest import station_config

# a test that fails must not hang the suite on an Event nobody sets
_MAX_HANG_S = 30.0


class HangingInspector:
    """Passes every part; while ``hang`` is set, ``inspect()`` blocks on ``release`` (a model call that never
    returns)."""

    model_id = "hanging-test"
    names = ("scratch",)
    ready = True

    def __init__(self) -> None:
        self.hang = threading.Event()
        self.release = threading.Event()
        self.entered: queue.Queue[tuple[int, float]] = queue.Queue()  # (part id, monotonic) of each hung call
        self.inspected_by: dict[int, str] = {}  # part id -> thread name that returned a result
        self.closed = 0
        self.die_once = False

    def learn(self, frame: Frame) -> None:
        pass

    def inspect(self, frame: Frame) -> Detections:
        if self.die_once:
            self.die_once = False
            raise SystemExit("worker thread killed on purpose")  # not an Exception: ends the thread
        if self.hang.is_set():
            self.entered.put((frame.part_id, time.monotonic()))
            self.release.wait(_MAX_HANG_S)
        self.inspected_by[frame.part_id] = threading.current_thread().name
        return Detections.empty(self.names, self.model_id)

    def warmup(self) -> None:
        pass

    def close(self) -> None:
        self.closed += 1


class Collector:
    """Every verdict and status event the station publishes, in order."""

    def __init__(self, station: Station):
        self.sub = station.bus.subscribe("test", maxsize=1_000_000)
        self.results: dict[int, PartResult] = {}
        self.events: list[tuple[float, StatusEvent]] = []

    def drain(self) -> None:
        for ev in self.sub.drain():
            if isinstance(ev, PartResult):
                assert ev.trigger.part_id not in self.results, f"two verdicts for part {ev.trigger.part_id}"
                self.results[ev.trigger.part_id] = ev
            elif isinstance(ev, StatusEvent):
                self.events.append((time.monotonic(), ev))

    def wait_event(self, component: str, state: str, timeout: float) -> float:
        """Monotonic time the event was seen (polled every 5 ms); fails after ``timeout``."""
        end = time.monotonic() + timeout
        seen = len(self.events)
        while time.monotonic() < end:
            self.drain()
            for t, ev in self.events[seen:]:
                if ev.component == component and ev.state == state:
                    return t
            seen = len(self.events)
            time.sleep(0.005)
        raise AssertionError(
            f"no {component} {state} within {timeout} s; events: "
            f"{[(e.component, e.state, e.message) for _, e in self.events]}"
        )


def _config(tmp_path: Path, **watchdog: Any):
    # 20 parts/s, deadline 300 ms: the stuck part's deadline passes long before the watchdog (1.5 s) acts
    return station_config(
        tmp_path, inspector={"type": "reference"}, watchdog={"stall_s": 1.5, "period_s": 0.05, **watchdog}, pipeline={}
    )


@contextlib.contextmanager
def _running(
    cfg: Any, insp: HangingInspector, first_parts: int, *, cameras: list[Any] | None = None
) -> Iterator[tuple[Station, Collector]]:
    """The station started with ``insp``, entered once ``first_parts`` parts are inspected; on leaving, every hung
    call (the inspector's, the cameras') is released and the station stopped."""
    st = Station(cfg, inspector=insp, cameras=cameras)
    col = Collector(st)
    st.start()
    try:
        wait_for(lambda: len(insp.inspected_by) >= first_parts, 10, f"{first_parts} parts inspected")
        yield st, col
    finally:
        insp.release.set()
        for cam in cameras or ():
            cam.release.set()
        st.stop()


def _rejected_ids(station: Station) -> set[int]:
    return {f.part_id for f in station.scheduler.fired}


def test_hung_inspector_parts_failsafe_alarm_restart(tmp_path: Path):
    insp = HangingInspector()
    with _running(_config(tmp_path), insp, 10) as (st, col):
        assert st.healthy
        t_arm = time.monotonic()
        insp.hang.set()
        stuck_part, t_stuck = insp.entered.get(timeout=2)
        insp.hang.clear()  # only this call hangs: the fresh worker must inspect normally
        t_alarm = col.wait_event("watchdog", "alarm", timeout=3)
        assert t_alarm - t_stuck < 2.0, f"stuck worker detected after {t_alarm - t_stuck:.2f} s"
        assert not st.healthy  # no heartbeat / WATCHDOG=1 while it lasts
        t_ok = col.wait_event("watchdog", "ok", timeout=3)
        assert st.healthy
        t_after = time.monotonic()
        wait_for(
            lambda: any(pid for pid, name in insp.inspected_by.items() if name == "inference#2"),
            3,
            "a part inspected by the fresh worker",
        )
        time.sleep(1.0)  # more parts through the new worker
        insp.release.set()  # the stuck call returns now: its result must be ignored
        wait_for(lambda: st.pipeline.late_abandoned == 1, 3, "the abandoned worker's late result")
        time.sleep(0.6)
    col.drain()
    res = col.results
    # the stuck part: FAILSAFE at its deadline (the scheduler's, not a second mechanism), and rejected
    assert res[stuck_part].verdict.outcome is Outcome.FAILSAFE
    assert "deadline" in " ".join(res[stuck_part].verdict.reasons)
    assert stuck_part in _rejected_ids(st)
    assert stuck_part not in insp.inspected_by or insp.inspected_by[stuck_part] == "inference"  # late, and ignored
    # every part triggered while the worker was stuck is FAILSAFE and rejected
    during = [pid for pid, r in res.items() if t_stuck < r.trigger.t_trigger_ns / 1e9 < t_alarm - 0.35]
    assert len(during) >= 10
    for pid in during:
        assert res[pid].verdict.outcome is Outcome.FAILSAFE, (pid, res[pid].verdict.reasons)
        assert pid in _rejected_ids(st)
    # parts after the restart are inspected normally by the fresh worker
    after = [pid for pid, r in res.items() if r.trigger.t_trigger_ns / 1e9 > t_after]
    assert len(after) >= 10
    assert all(res[pid].verdict.outcome is not Outcome.FAILSAFE for pid in after), [
        res[p].verdict.reasons for p in after
    ]
    assert all(insp.inspected_by.get(pid) == "inference#2" for pid in after)
    assert len(st.watchdog.restarts) == 1 and st.watchdog.restarts[0].stall.part_id == stuck_part
    assert st.failure is None
    assert st.scheduler.late_verdicts == 0  # the abandoned worker's result never reached the scheduler
    assert st.reconcile() == []
    assert t_arm < t_stuck < t_alarm < t_ok


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the SystemExit on purpose
def test_dead_worker_thread_is_restarted(tmp_path: Path):
    insp = HangingInspector()
    with _running(_config(tmp_path), insp, 5) as (st, col):
        insp.die_once = True
        t_alarm = col.wait_event("watchdog", "alarm", timeout=2)
        col.wait_event("watchdog", "ok", timeout=3)
        t_after = time.monotonic()
        time.sleep(0.8)
    col.drain()
    assert st.watchdog is not None and "died" in st.watchdog.restarts[0].stall.describe()
    after = [r for r in col.results.values() if r.trigger.t_trigger_ns / 1e9 > t_after]
    assert len(after) >= 8 and all(r.verdict.outcome is not Outcome.FAILSAFE for r in after)
    assert t_alarm > 0 and st.reconcile() == []


class StuckCamera:
    """The synthetic camera, whose grab blocks while ``hang`` is set."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.camera_id = inner.camera_id
        self.hang = threading.Event()
        self.release = threading.Event()
        self.stuck_part: int | None = None

    def grab(self, trig: Trigger, timeout_s: float) -> Frame:
        if self.hang.is_set():
            self.hang.clear()
            self.stuck_part = trig.part_id
            self.release.wait(_MAX_HANG_S)
        return self.inner.grab(trig, timeout_s)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_stuck_camera_grab_is_restarted(tmp_path: Path):
    from station.acquire.base import CAMERAS

    cfg = _config(tmp_path)
    cam = StuckCamera(CAMERAS.create(cfg.cameras[0], on_status=lambda *a: None))
    insp = HangingInspector()
    with _running(cfg, insp, 5, cameras=[cam]) as (st, col):
        t0 = time.monotonic()
        cam.hang.set()
        t_alarm = col.wait_event("watchdog", "alarm", timeout=3)
        assert t_alarm - t0 < 2.1
        col.wait_event("watchdog", "ok", timeout=3)
        t_after = time.monotonic()
        time.sleep(0.8)
        cam.release.set()
        time.sleep(0.2)
    col.drain()
    assert cam.stuck_part is not None
    assert col.results[cam.stuck_part].verdict.outcome is Outcome.FAILSAFE
    assert cam.stuck_part in _rejected_ids(st)
    after = [r for r in col.results.values() if r.trigger.t_trigger_ns / 1e9 > t_after]
    assert len(after) >= 8 and all(r.verdict.outcome is not Outcome.FAILSAFE for r in after)
    assert st.reconcile() == []  # the stuck grab's part is counted as dropped, not left "being acquired"


@pytest.fixture
def notify_socket(monkeypatch):
    """A unix datagram socket bound by the test as systemd's $NOTIFY_SOCKET; yields a list of (t, message)."""
    d = tempfile.mkdtemp(prefix="sdn", dir="/tmp")  # AF_UNIX paths are short: not under tmp_path
    path = os.path.join(d, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.05)
    got: list[tuple[float, str]] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                data = sock.recv(4096)
            except TimeoutError:
                continue
            got.append((time.monotonic(), data.decode()))

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")  # WatchdogSec=2: keep-alives at most every 1 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    yield got
    stop.set()
    t.join(1)
    sock.close()
    shutil.rmtree(d, ignore_errors=True)


def _watchdog_times(got: list[tuple[float, str]]) -> list[float]:
    return [t for t, m in got if "WATCHDOG=1" in m.split("\n")]


def test_sd_notify_ready_watchdog_and_silence_while_stuck(tmp_path: Path, notify_socket):
    got = notify_socket
    insp = HangingInspector()
    st = Station(_config(tmp_path, notify_s=0.1, max_restarts=100), inspector=insp)
    assert st.watchdog is not None and st.watchdog.notify_s == pytest.approx(0.1)
    col = Collector(st)
    st.start()
    try:
        wait_for(lambda: any(m.startswith("READY=1") for _, m in got), 2, "READY=1")
        wait_for(lambda: len(_watchdog_times(got)) >= 5, 3, "WATCHDOG=1 keep-alives")
        insp.hang.set()  # every call hangs now: each fresh worker sticks too, no recovery
        _, t_stuck = insp.entered.get(timeout=2)
        col.wait_event("watchdog", "alarm", timeout=3)
        t_silent = time.monotonic()
        time.sleep(3.0)
        silent = [t for t in _watchdog_times(got) if t > t_silent]
        assert silent == [], f"{len(silent)} WATCHDOG=1 sent while a worker was stuck"
        assert len(st.watchdog.restarts) >= 2  # the fresh workers stuck as well and were replaced again
        insp.hang.clear()
        insp.release.set()
        col.wait_event("watchdog", "ok", timeout=3)
        t_back = time.monotonic()
        wait_for(
            lambda: len([t for t in _watchdog_times(got) if t > t_back]) >= 3, 2, "WATCHDOG=1 again after recovery"
        )
    finally:
        insp.hang.clear()
        insp.release.set()
        st.stop()
    assert any(m == "STOPPING=1" for _, m in got)
    before = [t for t in _watchdog_times(got) if t < t_stuck]
    gaps = [b - a for a, b in zip(before, before[1:])]
    assert gaps and max(gaps) < 0.5, gaps
    # the last keep-alive before the silence came less than stall_s + period before the alarm
    assert st.failure is None


def test_give_up_stops_station_with_reason(tmp_path: Path, notify_socket):
    got = notify_socket
    insp = HangingInspector()
    reasons: list[str] = []
    with _running(_config(tmp_path, max_restarts=1), insp, 5) as (st, col):
        st.on_failure(reasons.append)  # before the hang that makes it give up
        insp.hang.set()  # the fresh worker sticks as well
        assert st.failed.wait(8), "the station did not stop itself"
    assert reasons == [st.failure]
    assert st.failure is not None and "giving up" in st.failure and "inference stuck" in st.failure
    assert not st._started
    assert st.watchdog is not None and len(st.watchdog.restarts) == 1
    col.drain()
    assert any(e.component == "watchdog" and e.state == "alarm" and "giving up" in e.message for _, e in col.events)
    assert any(m.startswith("STATUS=") and "giving up" in m for _, m in got)
    assert any(m == "STOPPING=1" for _, m in got)
    assert st.reconcile() == []


def test_station_run_exits_nonzero_when_watchdog_gives_up(tmp_path: Path, monkeypatch, capsys):
    import station.app as app_mod
    from station.cli import main

    insp = HangingInspector()
    insp.hang.set()  # from the first part
    monkeypatch.setattr(app_mod, "build_inspector", lambda cfg, db=None: insp)
    cfg = _config(tmp_path, max_restarts=0).model_dump(mode="json")
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(cfg))
    t0 = time.monotonic()
    try:
        rc = main(["run", "-c", str(path), "--no-web"])
    finally:
        insp.release.set()
    assert rc == 1
    assert time.monotonic() - t0 < 20
    assert "station stopped itself" in capsys.readouterr().err


class _FakeLink:
    """Records coil writes; the PLC always acknowledges nothing."""

    connected = True
    address = "fake"

    def __init__(self) -> None:
        self.coils: list[tuple[int, bool]] = []

    def write_coil(self, address: int, value: bool) -> None:
        self.coils.append((address, value))

    def write_register(self, address: int, value: int) -> None:
        pass

    def write_registers(self, address: int, values: list[int]) -> None:
        pass

    def read_bits(self, table: str, address: int, n: int) -> list[bool]:
        return [False] * n

    def read_registers(self, table: str, address: int, n: int) -> list[int]:
        return [0] * n


def test_plc_heartbeat_stands_still_while_unhealthy():
    from station.bus import Bus
    from station.config import PlcConfig
    from station.plc import registers as R
    from station.plc.handshake import PlcHandshake

    healthy = [True]
    hs = PlcHandshake(
        PlcConfig(heartbeat_s=0.01, follow_recipe=False), Bus().subscribe("plc"), healthy=lambda: healthy[0]
    )
    link = _FakeLink()
    hs.link = link  # type: ignore[assignment]

    def beats(n: int) -> list[bool]:
        link.coils.clear()
        for _ in range(n):
            hs._cycle()
            time.sleep(0.012)
        return [v for a, v in link.coils if a == R.HEARTBEAT.address]

    assert len(beats(5)) >= 4
    healthy[0] = False
    assert beats(5) == []
    healthy[0] = True
    assert len(beats(5)) >= 4
