"""Reject timing by encoder counts, against a real pymodbus server whose count register moves at varying speed."""

from __future__ import annotations

import time

import pytest

from station.actuate.encoder import CounterUnwrapper, EncoderRejectScheduler
from station.actuate.simulated import SimulatedOutput
from station.config import (
    CalibrationConfig,
    EncoderConfig,
    ModbusEndpointConfig,
    RejectConfig,
    RulesConfig,
    SimulatedOutputConfig,
)
from station.contracts import Outcome, PartResult, Trigger, Verdict
from station.counters import Counters
from station.decide import Decider
from tests.fixtures_floor import Belt, BeltProcess, PlcSim, plc, wait_for  # noqa: F401 - plc is a fixture
from tests.reject_checks import check_count_edges, realtime_rerun


def test_unwrapper_32_bit_wraps_and_steps_back():
    u = CounterUnwrapper(32)
    assert u.update(2**32 - 10) == 2**32 - 10
    assert u.update(5) == 2**32 + 5  # wrapped forward by 15
    assert u.update(2) == 2**32 + 2  # a small step back (encoder jitter) stays a step back
    assert u.unwrap(2**32 - 1) == 2**32 - 1  # a count latched just before the wrap
    assert u.unwrap(40) == 2**32 + 40


def test_unwrapper_16_bit_counts_many_turns():
    u = CounterUnwrapper(16)
    total = 0
    raw = 0
    u.update(raw)
    for step in [30000, 30000, 30000, 5000, 30000]:  # each step < half the range
        total += step
        raw = (raw + step) % 65536
        assert u.update(raw) == total


class Harness:
    def __init__(
        self, plc: PlcSim | BeltProcess, travel_counts: int = 6000, travel_ms: float = 150.0, margin_ms: float = 50.0
    ):
        enc = EncoderConfig(
            modbus=ModbusEndpointConfig(port=plc.port, timeout_ms=100, reconnect_min_s=0.05, reconnect_max_s=0.2),
            poll_ms=2.0,
            stale_ms=100,
        )
        self.cfg = RejectConfig(
            mode="encoder",
            travel_ms=travel_ms,
            safety_margin_ms=margin_ms,
            pulse_ms=10,
            travel_counts=travel_counts,
            encoder=enc,
        )
        self.out = SimulatedOutput(SimulatedOutputConfig())
        self.counters = Counters()
        self.final: list[PartResult] = []
        self.alarms: list[tuple[str, str, str]] = []
        self.sched = EncoderRejectScheduler(
            self.cfg,
            self.out,
            Decider(RulesConfig(), CalibrationConfig(), "cfg"),
            self.counters,
            self.final.append,
            report=lambda c, s, m: self.alarms.append((c, s, m)),
        )

    def trigger(self, part_id: int, encoder_count: int | None = None) -> Trigger:
        t = Trigger(part_id, part_id, time.monotonic_ns(), encoder_count)
        self.sched.admit(t)
        return t

    def verdict(self, t: Trigger, outcome: Outcome) -> None:
        v = Verdict(t.part_id, outcome, (), (), "m", "cfg", "cal", {}, t.t_trigger_ns, time.monotonic_ns())
        assert self.sched.submit(PartResult(t, v))

    def rising(self) -> list[int]:
        return [e.t_ns for e in self.out.edges("reject") if e.value]


@realtime_rerun
def test_rejects_fire_at_their_count_while_the_belt_speed_varies(host_stalls):
    belt = BeltProcess()  # PLC + encoder in their own process, like PLC hardware
    h = Harness(belt)
    h.sched.start()
    try:
        wait_for(lambda: h.sched.tracker.count is not None, what="first encoder reading")
        parts: list[tuple[Trigger, Outcome]] = []
        pattern = [Outcome.FAIL, Outcome.PASS, Outcome.FAIL, Outcome.UNCERTAIN, Outcome.PASS, Outcome.FAILSAFE]
        for i in range(18):
            t = h.trigger(i + 1)
            h.verdict(t, pattern[i % len(pattern)])
            parts.append((t, pattern[i % len(pattern)]))
            time.sleep(0.06 + 0.03 * (i % 3))  # irregular part spacing
        wait_for(
            lambda: h.sched.tracker.pending == 0 and h.sched.pending_rejects == 0,
            timeout=10,
            what="all parts past the ejector",
        )
    finally:
        h.sched.stop(drain_s=1.0)
        belt.stop()

    fired = {f.part_id: f for f in h.sched.fired}
    targets = {pid: target for pid, target, _ in h.sched.tracker.fired_log}
    rejecting = [(t, targets[t.part_id]) for t, o in parts if o is not Outcome.PASS]
    assert set(fired) == {t.part_id for t, _ in rejecting}, "exactly the FAIL/UNCERTAIN/FAILSAFE parts are rejected"
    assert any(tgt >= 2**32 for _, tgt in rejecting), "the run crossed the 32-bit wrap-around"
    rising = h.rising()
    assert len(rising) == len(rejecting)  # 10 ms pulses, parts >= 60 ms apart: no merged pulses
    for t, target in rejecting:
        # the count at trigger is what the register held then (interpolated between polls)
        at_trigger = belt.register_at(t.t_trigger_ns)
        assert abs(target - h.sched.tracker.travel_counts - at_trigger) <= 150, (
            f"part {t.part_id}: count at trigger off"
        )
    # within a few polls (2 ms) of the register showing the count
    check_count_edges(
        belt,
        ((f"part {t.part_id}: edge", target, edge) for (t, target), edge in zip(rejecting, rising)),
        3,
        12,
        host_stalls,
    )
    travel_ms = [(belt.crossing_ns(tgt) - t.t_trigger_ns) / 1e6 for t, tgt in rejecting]
    assert max(travel_ms) - min(travel_ms) > 40, f"belt speed did vary: travel times {travel_ms}"
    snap = h.counters.snapshot()
    assert snap.rejects_fired == snap.rejects_scheduled == len(rejecting)


def test_part_at_the_ejector_without_verdict_is_rejected_once(plc):
    belt = Belt(plc, v0=20000, a=0.0)
    h = Harness(plc, travel_counts=1000, travel_ms=300.0, margin_ms=100.0)  # belt much faster than travel_ms says
    h.sched.start()
    try:
        wait_for(lambda: h.sched.tracker.count is not None, what="first encoder reading")
        t1 = h.trigger(1)
        h.trigger(2)
        wait_for(lambda: h.sched.tracker.pending == 0, timeout=5, what="parts past the ejector")
        h.verdict(t1, Outcome.PASS)  # too late to save it: the part was already rejected (fail safe)
        wait_for(lambda: len(h.final) == 2, timeout=5, what="deadline of part 2")
    finally:
        h.sched.stop(drain_s=0.5)
        belt.stop()
    assert sorted(f.part_id for f in h.sched.fired) == [1, 2]
    assert h.sched.tracker.early_arrivals == 2
    by_id = {r.trigger.part_id: r.verdict.outcome for r in h.final}
    assert by_id == {1: Outcome.PASS, 2: Outcome.FAILSAFE}
    snap = h.counters.snapshot()
    assert snap.rejects_fired == snap.rejects_scheduled == 2, (
        "an early reject is counted once, not again at the verdict"
    )


def test_encoder_lost_then_back_pending_rejects_follow_the_count(plc):
    belt = Belt(plc, v0=10000, a=0.0)
    h = Harness(plc, travel_counts=4000, travel_ms=200.0, margin_ms=50.0)
    h.sched.start()
    try:
        wait_for(lambda: h.sched.tracker.count is not None, what="first encoder reading")
        t = h.trigger(1)
        wait_for(lambda: h.sched.tracker.target_of(1) is not None, what="count at trigger")
        target = h.sched.tracker.target_of(1)
        h.verdict(t, Outcome.FAIL)
        plc.stop()  # the PLC (and its count) disappears before the part reaches the ejector
        wait_for(lambda: any(c == "encoder" and s == "alarm" for c, s, _ in h.alarms), timeout=5, what="encoder alarm")
        assert h.rising() == [], "no count, no reject"
        time.sleep(0.5)  # the belt keeps moving while the PLC is away: the part passes its count
        plc.start()
        wait_for(lambda: len(h.rising()) == 1, timeout=5, what="the pending reject after the encoder came back")
        assert any(c == "encoder" and s == "ok" for c, s, _ in h.alarms)
    finally:
        h.sched.stop(drain_s=0.5)
        belt.stop()
    assert target is not None
    assert h.sched.tracker.count is not None and h.sched.tracker.count >= target


@pytest.mark.parametrize("word_order", ["big", "little"])
def test_explicit_trigger_count_is_unwrapped(plc, word_order):
    regs = [0xFFFF, 0xFF00] if word_order == "big" else [0xFF00, 0xFFFF]
    plc.set("holding", 10, regs)
    enc = EncoderConfig(modbus=ModbusEndpointConfig(port=plc.port), table="holding", address=10, word_order=word_order)
    cfg = RejectConfig(mode="encoder", travel_ms=200, safety_margin_ms=50, pulse_ms=10, travel_counts=500, encoder=enc)
    sched = EncoderRejectScheduler(
        cfg,
        SimulatedOutput(SimulatedOutputConfig()),
        Decider(RulesConfig(), CalibrationConfig(), "c"),
        Counters(),
        lambda r: None,
    )
    sched.start()
    try:
        assert sched.tracker.count == 0xFFFFFF00
        sched.admit(Trigger(1, 1, time.monotonic_ns(), encoder_count=0x10))  # latched by the PLC just after the wrap
        assert sched.tracker.target_of(1) == 2**32 + 0x10 + 500
        assert sched.command_for(Trigger(1, 1, 0)).fire_at_count == 2**32 + 0x10 + 500
    finally:
        sched.stop()
