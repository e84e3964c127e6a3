"""The reject scheduler: deadlines make FAILSAFE, pulses land on time."""

from __future__ import annotations

import threading
import time

import pytest

from station.actuate.scheduler import RejectScheduler
from station.actuate.simulated import SimulatedOutput
from station.config import CalibrationConfig, RejectConfig, RulesConfig, SimulatedOutputConfig
from station.contracts import Outcome, PartResult, Trigger, Verdict
from station.counters import Counters, reconcile
from station.decide import Decider
from tests.reject_checks import check_edge_times, realtime_rerun


class Harness:
    def __init__(self, travel_ms=120.0, margin_ms=40.0, pulse_ms=20.0, reject_uncertain=True, out=None):
        self.cfg = RejectConfig(travel_ms=travel_ms, safety_margin_ms=margin_ms, pulse_ms=pulse_ms)
        self.out = out or SimulatedOutput(SimulatedOutputConfig())
        self.decider = Decider(RulesConfig(), CalibrationConfig(), "cfg")
        self.counters = Counters()
        self.final: list[PartResult] = []
        self.done = threading.Condition()
        self.sched = RejectScheduler(
            self.cfg, self.out, self.decider, self.counters, self._on_final, reject_uncertain=reject_uncertain
        )
        self.sched.start()

    def _on_final(self, r: PartResult) -> None:
        with self.done:
            self.final.append(r)
            self.done.notify_all()

    def trigger(self, part_id: int) -> Trigger:
        t = Trigger(part_id, part_id, time.monotonic_ns())
        self.sched.admit(t)
        return t

    def verdict(self, t: Trigger, outcome: Outcome) -> bool:
        v = Verdict(t.part_id, outcome, (), (), "m", "cfg", "cal", {}, t.t_trigger_ns, time.monotonic_ns())
        return self.sched.submit(PartResult(t, v))

    def finish(self) -> None:
        self.sched.stop(drain_s=2.0)

    def by_part(self) -> dict[int, PartResult]:
        return {r.trigger.part_id: r for r in self.final}


def rising_edges(out: SimulatedOutput) -> list[int]:
    return [e.t_ns for e in out.edges("reject") if e.value]


@realtime_rerun
def test_fail_fires_at_travel_time_and_pass_does_not(host_stalls):
    h = Harness()
    t1, t2 = h.trigger(1), h.trigger(2)
    assert h.verdict(t1, Outcome.FAIL)
    assert h.verdict(t2, Outcome.PASS)
    h.finish()
    edges = rising_edges(h.out)
    assert len(edges) == 1
    falls = [e.t_ns for e in h.out.edges("reject") if not e.value]
    check_edge_times(
        [("rise", t1.t_trigger_ns + 120_000_000, edges[0]), ("fall", edges[0] + 20_000_000, falls[0])],
        5,
        5,
        host_stalls,
    )
    assert h.counters.snapshot().rejects_fired == 1


def test_no_verdict_by_deadline_is_failsafe_and_rejected():
    h = Harness()
    t = h.trigger(1)
    with h.done:
        assert h.done.wait_for(lambda: h.final, timeout=2)
    r = h.final[0]
    assert r.verdict.outcome is Outcome.FAILSAFE and "deadline" in r.verdict.reasons[0]
    decided_after_ms = (r.verdict.t_decided_ns - t.t_trigger_ns) / 1e6
    assert decided_after_ms >= 80.0  # travel 120 - margin 40
    assert not h.verdict(t, Outcome.PASS), "a late verdict must not be accepted"
    h.finish()
    assert h.sched.late_verdicts == 1
    assert len(rising_edges(h.out)) == 1


@pytest.mark.parametrize("reject_uncertain,expected", [(True, 1), (False, 0)])
def test_uncertain_action(reject_uncertain, expected):
    h = Harness(reject_uncertain=reject_uncertain)
    h.verdict(h.trigger(1), Outcome.UNCERTAIN)
    h.finish()
    assert len(rising_edges(h.out)) == expected


@realtime_rerun
def test_overlapping_pulses_keep_line_high_until_last_release(host_stalls):
    h = Harness(travel_ms=100, margin_ms=50, pulse_ms=60)
    t1 = h.trigger(1)
    time.sleep(0.02)  # test pacing only: the second part arrives 20 ms later
    t2 = h.trigger(2)
    h.verdict(t1, Outcome.FAIL)
    h.verdict(t2, Outcome.FAIL)
    h.finish()
    edges = h.out.edges("reject")
    assert [e.value for e in edges] == [True, False]  # one merged pulse
    check_edge_times([("release", t2.t_trigger_ns + 160_000_000, edges[1].t_ns)], 5, 5, host_stalls)
    assert h.counters.snapshot().rejects_fired == 2


@realtime_rerun
def test_many_parts_reconcile(host_stalls):
    h = Harness(travel_ms=60, margin_ms=20, pulse_ms=5)
    outcomes = [Outcome.PASS, Outcome.FAIL, Outcome.UNCERTAIN, None] * 25
    for i, o in enumerate(outcomes, start=1):
        t = h.trigger(i)
        h.counters.add("triggers")
        h.counters.add("frames")
        if o is not None:
            h.verdict(t, o)
        time.sleep(0.003)  # test pacing: 330 parts/s
    h.finish()
    snap = h.counters.snapshot()
    snap.records_written = snap.verdicts  # no recorder in this test
    assert reconcile(snap, pending_verdicts=h.sched.in_flight, pending_rejects=h.sched.pending_rejects) == []
    assert snap.FAILSAFE == 25 and snap.PASS == 25 and snap.FAIL == 25 and snap.UNCERTAIN == 25
    assert snap.rejects_fired == 75
    check_edge_times(((f"part {f.part_id}", f.scheduled_ns, f.actual_ns) for f in h.sched.fired), 5, 5, host_stalls)


class SlowOutput(SimulatedOutput):
    """An output whose every write takes 30 ms, like a slow PLC link (the edge lands when it returns)."""

    def set(self, line: str, value: bool) -> None:
        time.sleep(0.03)  # the write's round trip, simulated
        super().set(line, value)


def test_stop_right_after_the_last_fire_still_holds_its_whole_pulse():
    """While the last reject's slow write runs, the scheduler's heap is briefly empty: stop must not take that as
    drained."""
    for _ in range(5):  # the window is 30 ms of each run; five runs leave a broken drain no chance
        h = Harness(travel_ms=120, margin_ms=40, pulse_ms=100, out=SlowOutput(SimulatedOutputConfig()))
        t = h.trigger(1)
        h.verdict(t, Outcome.FAIL)
        time.sleep(0.125)  # test pacing: stop while the fire's write is in progress
        h.finish()
        edges = h.out.edges("reject")
        assert [e.value for e in edges] == [True, False]
        held_ms = (edges[1].t_ns - edges[0].t_ns) / 1e6
        assert held_ms >= 95, f"the pulse was cut to {held_ms:.1f} ms by stop()"
