"""A real Station against a real Modbus TCP server (pymodbus) playing the PLC, on loopback.

The test reads the PLC's memory as a PLC program would: reject pulses on the REJECT coil,
the handshake (PART_ID / RESULT_CODE / RESULT_VALID / RESULT_ACK), the heartbeat, STATION_READY,
RECIPE_REQUEST -> model switch, reject verification, and the PLC going away and coming back.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import pytest

from station.actuate.encoder import EncoderRejectScheduler
from station.actuate.verify import VerifiedOutput
from station.app import Station
from station.contracts import Outcome
from station.plc import registers as R
from tests.fixtures_floor import PlcProgram, PlcSim, Results, plc, running, wait_for, wait_parts  # noqa: F401 - plc is a fixture
from tests.reject_checks import check_count_edges, check_edge_times, pulse_groups, realtime_rerun

CODE = {Outcome.PASS: 1, Outcome.FAIL: 2, Outcome.UNCERTAIN: 3, Outcome.FAILSAFE: 4}
FAST = {"timeout_ms": 100, "reconnect_min_s": 0.1, "reconnect_max_s": 0.4}


def coil_reject(plc: PlcSim, **more: Any) -> dict[str, Any]:
    """The ``reject`` section of a station that pulses the PLC's REJECT coil itself (300 ms travel, 20 ms pulse)."""
    return {
        "travel_ms": 300,
        "safety_margin_ms": 100,
        "pulse_ms": 20,
        "output": {"type": "modbus", "port": plc.port, **FAST},
        **more,
    }


class CoilSampler:
    """Samples one coil from the PLC datastore every ~1 ms (what a PLC scan would see)."""

    def __init__(self, plc: PlcSim, address: int):
        self.samples: list[tuple[int, bool]] = []
        self._plc, self._addr = plc, address
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(0.001):
            if self._plc.running:
                self.samples.append((time.monotonic_ns(), self._plc.bit("coil", self._addr)))

    def pulses(self) -> int:
        self._stop.set()
        self._t.join(2)
        return sum(1 for (_, a), (_, b) in zip(self.samples, self.samples[1:]) if b and not a)


@realtime_rerun
def test_every_rejecting_part_pulses_the_plc_coil_on_time(make_config, plc, host_stalls):
    cfg = make_config(
        reject=coil_reject(plc),
        trigger={"type": "timer", "parts_per_minute": 1200},
    )
    station = Station(cfg, max_parts=30)
    results = Results(station)
    sampler = CoilSampler(plc, R.REJECT.address)
    station.start()
    try:
        wait_parts(station, 30)
    finally:
        station.stop()
        results.close()
    n_pulses_seen = sampler.pulses()

    rejecting = sorted(r.trigger.part_id for r in results.items if r.verdict.outcome is not Outcome.PASS)
    assert len(results.items) == 30 and rejecting and len(rejecting) < 30
    fired = sorted(station.scheduler.fired, key=lambda f: f.scheduled_ns)
    assert sorted(f.part_id for f in fired) == rejecting
    assert station.scheduler.output_errors == 0, "every coil write was answered in time"
    writes = plc.coil_writes(R.REJECT.address)
    rises = [w.t_ns for w in writes if w.values == (1,)]
    falls = [w.t_ns for w in writes if w.values == (0,)]
    # Pulses of parts closer than pulse_ms (trigger jitter under load) merge into one: the coil stays on.
    groups = pulse_groups(fired, cfg.reject.pulse_ms)
    assert len(rises) == len(groups), "one FC5 write of 1 per reject pulse"
    sets, releases = [], []
    for g, rise in zip(groups, rises):
        sets.append((f"part {g[0].part_id}: coil set", g[0].scheduled_ns, rise))
        # the coil drops again pulse_ms after the group's last part was scheduled
        fall = next(t for t in falls if t > rise)
        releases.append(
            (f"part {g[-1].part_id}: coil release", g[-1].scheduled_ns + int(cfg.reject.pulse_ms * 1e6), fall)
        )
    check_edge_times(sets, 0, 15, host_stalls)
    check_edge_times(releases, 0, 15, host_stalls)
    assert n_pulses_seen == len(groups), "a PLC scanning its memory sees every pulse"
    assert plc.bit("coil", R.REJECT.address) is False
    assert station.reconcile() == []


def test_plc_handshake_hands_every_result_over_in_order(make_config, plc):
    cfg = make_config(
        reject={"mode": "plc", "travel_ms": 400, "safety_margin_ms": 100, "pulse_ms": 20},
        plc={"modbus": {"port": plc.port, **FAST}, "poll_ms": 5, "heartbeat_s": 1.0},
        trigger={"type": "timer", "parts_per_minute": 600},
    )
    station = Station(cfg, max_parts=25)
    with PlcProgram(plc) as program, running(station) as results:
        wait_for(lambda: plc.bit("coil", R.STATION_READY.address), 5, "STATION_READY")
        wait_parts(station, 25)
        wait_for(lambda: len(program.handed) >= 25, 5, "all results handed over")
        time.sleep(0.6)  # one more heartbeat edge

    verdicts = [(r.trigger.part_id, CODE[r.verdict.outcome]) for r in results.items]
    assert [(h.part_id, h.code) for h in program.handed] == verdicts, "every verdict once, in order, with its code"
    assert [h.counter for h in program.handed] == list(range(1, 26))
    hs = station.floor.handshake
    assert hs.acked == 25 and hs.ack_timeouts == 0 and hs.stale_dropped == 0
    assert station.scheduler.fired == type(station.scheduler.fired)(), "the PLC times the reject in plc mode"
    beats = plc.coil_writes(R.HEARTBEAT.address)
    assert len(beats) >= 3
    assert all(a.values != b.values for a, b in zip(beats, beats[1:])), "the heartbeat toggles"
    gaps = [(b.t_ns - a.t_ns) / 1e9 for a, b in zip(beats, beats[1:])]
    # every second: never faster, and late by at most half a period (a loaded 2-core CI machine once held the link
    # thread 0.35 s; a PLC watchdog on the heartbeat trips after 2-3 periods)
    assert all(0.85 <= g <= 1.5 for g in gaps), f"heartbeat every second: {gaps}"
    assert 0.9 <= statistics.median(gaps) <= 1.15, f"heartbeat every second: {gaps}"
    assert plc.bit("coil", R.STATION_READY.address) is False, "STATION_READY drops on stop"
    assert plc.bit("coil", R.RESULT_VALID.address) is False


def test_plc_away_alarm_then_recovery_and_the_line_keeps_deciding(make_config, plc):
    cfg = make_config(
        reject={"mode": "plc", "travel_ms": 300, "safety_margin_ms": 100, "pulse_ms": 20},
        plc={"modbus": {"port": plc.port, **FAST}, "poll_ms": 5, "ack_timeout_ms": 300, "result_max_age_ms": 400},
        trigger={"type": "timer", "parts_per_minute": 600},
    )
    station = Station(cfg, max_parts=40)
    with PlcProgram(plc) as program, running(station) as results:
        wait_for(lambda: len(program.handed) >= 5, 10, "first results handed over")
        plc.stop()
        wait_for(
            lambda: any(e.component == "plc" and e.state == "alarm" for e in station.alarms.active()), 5, "plc alarm"
        )
        v0 = station.counters.snapshot().verdicts
        time.sleep(1.0)
        assert station.counters.snapshot().verdicts >= v0 + 7, "the line keeps deciding while the PLC is away"
        n_before = len(program.handed)
        plc.start()  # same port, memory cleared
        wait_for(lambda: not any(e.component == "plc" for e in station.alarms.active()), 5, "plc alarm cleared")
        wait_for(lambda: len(program.handed) > n_before + 3, 5, "handshake resumed")
        wait_parts(station, 40)
        wait_for(
            lambda: not station.floor.handshake._queue and station.floor.handshake._state == "idle",
            5,
            "handshake drained",
        )

    handed = [h.part_id for h in program.handed]
    hs = station.floor.handshake
    all_ids = [r.trigger.part_id for r in results.items]
    assert len(all_ids) == 40
    assert handed == sorted(set(handed)), "no result handed twice, order kept"
    assert hs.stale_dropped > 0, "results decided during the outage were too old to hand over"
    assert set(handed) | set(range(min(all_ids), max(all_ids) + 1)) == set(all_ids)
    assert len(handed) + hs.stale_dropped >= 40 - 1, (
        "every result is handed over or counted as stale (one may be in flight at the cut)"
    )
    assert station.floor.handshake.link.reconnects >= 1
    assert any(s.component == "plc" and s.state == "ok" for s in results.status)


def test_recipe_request_switches_the_model(make_config, plc):
    from tests.model_factory import detecting_model, tiny_model

    model_a, model_b = tiny_model("detect"), detecting_model()
    cfg = make_config(
        inspector={"type": "onnx", "model": str(model_a), "keepalive_s": 0},
        recipes={1: str(model_a), 2: str(model_b)},
        reject={"mode": "plc", "travel_ms": 600, "safety_margin_ms": 100, "pulse_ms": 20},
        plc={"modbus": {"port": plc.port, **FAST}, "poll_ms": 5},
        trigger={"type": "timer", "parts_per_minute": 300},
    )
    station = Station(cfg)
    with PlcProgram(plc) as program, running(station) as results:
        id_a = station.inspector.model_id
        wait_for(lambda: len(program.handed) >= 2, 10, "parts on recipe A")
        plc.set("input", R.RECIPE_REQUEST.address, [2])
        wait_for(lambda: station.inspector.model_id != id_a, 15, "model switch")
        wait_for(lambda: plc.read("holding", R.ACTIVE_RECIPE.address)[0] == 2, 5, "ACTIVE_RECIPE = 2")
        id_b = station.inspector.model_id
        n = len(results.items)
        wait_for(lambda: len(results.items) >= n + 3, 10, "parts on recipe B")
        plc.set("input", R.RECIPE_REQUEST.address, [7])  # not configured
        wait_for(
            lambda: any(e.component == "recipe" and e.state == "alarm" for e in station.alarms.active()),
            5,
            "unknown recipe alarm",
        )
        time.sleep(0.3)
        assert station.inspector.model_id == id_b, "an unknown recipe keeps the running model"
        assert plc.read("holding", R.ACTIVE_RECIPE.address)[0] == 2
    ids = [r.verdict.model_id for r in results.items]
    assert ids[0] == id_a and ids[-1] == id_b and id_a != id_b
    switch = ids.index(id_b)
    assert all(i == id_a for i in ids[:switch]) and all(i == id_b for i in ids[switch:]), (
        "one clean switch between two parts"
    )


def test_unconfirmed_reject_raises_an_alarm(make_config, plc):
    """The PLC confirms every reject through REJECT_CONFIRM except one: that one is an alarm and a count."""
    cfg = make_config(
        reject=coil_reject(
            plc, verify={"modbus": {"port": plc.port, **FAST}, "delay_ms": 40, "window_ms": 250, "poll_ms": 3}
        ),
        trigger={"type": "timer", "parts_per_minute": 600},
    )
    station = Station(cfg, max_parts=20)
    results = Results(station)
    rises: list[int] = []

    def light_barrier(w) -> None:  # PLC logic: the part drops past a light barrier 40 ms after the ejector fires
        if w.fc == 5 and w.address == R.REJECT.address and w.values == (1,):
            rises.append(w.t_ns)
            if len(rises) != 3:  # the third rejected part is not seen by the sensor
                plc.set_later(0.040, "discrete", R.REJECT_CONFIRM.address, [True])
                plc.set_later(0.090, "discrete", R.REJECT_CONFIRM.address, [False])  # on for 50 ms

    plc.on_write.append(light_barrier)
    output = station.output
    assert isinstance(output, VerifiedOutput)
    station.start()
    try:
        wait_parts(station, 20)
        wait_for(lambda: output.pending == 0, 3, "verification windows closed")
    finally:
        station.stop()
        results.close()
    fired = len(station.scheduler.fired)
    assert fired >= 4 and len(rises) == fired
    assert output.unconfirmed == 1
    assert output.confirmed == fired - 1
    assert station.health()["components"]["output"]["rejects_unconfirmed"] == 1
    events = [(e.state, e.message) for e in results.status if e.component == "reject-verify"]
    assert [st for st, _ in events if st == "alarm"] == ["alarm"], f"one alarm for the unconfirmed reject: {events}"
    assert "not confirmed within 250 ms" in next(m for st, m in events if st == "alarm")
    assert events[-1][0] == "ok", "a later confirmed reject clears it"


@pytest.mark.parametrize("bad", [{"coils": {"reject": 60000}}])
def test_refused_address_is_an_output_error_not_a_disconnect(plc, bad):
    from station.actuate.base import OutputError
    from station.actuate.modbus_output import ModbusOutput
    from station.config import ModbusOutputConfig

    out = ModbusOutput(ModbusOutputConfig(port=plc.port, **bad))
    out.open()
    try:
        with pytest.raises(OutputError, match="refused"):
            out.set("reject", True)
        assert out.connected, "an exception response keeps the connection"
        with pytest.raises(OutputError, match="not mapped"):
            out.set("horn", True)
    finally:
        out.close()


@realtime_rerun
def test_station_in_encoder_mode_rejects_at_the_count(make_config, host_stalls):
    """A whole station with reject timing by encoder: the belt speed varies 3:1 during the run."""
    from tests.fixtures_floor import BeltProcess

    belt = BeltProcess(v0=20000, a=0.5, period_s=1.0)  # 10 000 .. 30 000 counts/s; PLC in its own process
    cfg = make_config(
        reject={
            "mode": "encoder",
            "travel_counts": 9000,
            "travel_ms": 300,
            "safety_margin_ms": 100,
            "pulse_ms": 15,
            "encoder": {"modbus": {"port": belt.port, **FAST}, "poll_ms": 2},
        },
        trigger={"type": "timer", "parts_per_minute": 600},
    )
    station = Station(cfg, max_parts=25)
    scheduler = station.scheduler
    assert isinstance(scheduler, EncoderRejectScheduler)
    results = Results(station)
    station.start()
    try:
        wait_parts(station, 25)
        wait_for(lambda: scheduler.tracker.pending == 0 and scheduler.pending_rejects == 0, 5, "belt emptied")
    finally:
        station.stop()
        results.close()
        belt.stop()
    rejecting = {r.trigger.part_id: r for r in results.items if r.verdict.outcome is not Outcome.PASS}
    fired = {f.part_id: f for f in station.scheduler.fired}
    assert set(fired) == set(rejecting) and scheduler.time_fallbacks == 0
    targets = {pid: target for pid, target, _ in scheduler.tracker.fired_log}
    travel = []
    for pid in fired:
        trig = rejecting[pid].trigger
        target = targets[pid]
        assert abs(target - 9000 - belt.register_at(trig.t_trigger_ns)) <= 200, f"part {pid}: count at trigger off"
        travel.append((belt.register_crossing_ns(target) - trig.t_trigger_ns) / 1e6)
    check_count_edges(
        belt, ((f"part {pid}: reject", targets[pid], f.actual_ns) for pid, f in fired.items()), 4, 15, host_stalls
    )
    assert max(travel) - min(travel) > 60, f"travel time followed the belt speed: {sorted(travel)}"
    assert station.reconcile() == []
