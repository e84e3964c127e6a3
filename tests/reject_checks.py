"""Shared checks of reject pulses against what the scheduler fired."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING

import pytest

from station.actuate.scheduler import FiredReject
from tests.host_stalls import HostStallProbe

if TYPE_CHECKING:
    from tests.fixtures_floor import BeltProcess

# Millisecond edge timing asserted on a shared 2-vCPU VM, from a pytest process that also loads
# torch. A late edge is excused only when the host stall probe saw the host itself stalled around
# it (see check_edge_times). A late edge without such a stall fails the attempt; the test then runs
# again, in full, with the same tolerance, at most twice (each rerun and why is shown in the pytest
# summary). Attempts late by more than the host stalled came from the test process's own garbage
# collector (the host_stalls fixture now freezes the heap, as Station.start() does); what may be
# left is GIL priority inversion (docs/architecture.md).
# RT_RERUNS=0 turns the reruns off, to see every late edge while investigating.
realtime_rerun = pytest.mark.flaky(
    reruns=int(os.environ.get("RT_RERUNS", "2")), reruns_delay=2, only_rerun=["AssertionError"]
)


def pulse_groups(fired: Iterable[FiredReject], pulse_ms: float) -> list[list[FiredReject]]:
    """The fired rejects grouped by the pulse they share, in firing order.

    The line is high from a fire until the last release (scheduled + pulse) of the parts
    fired meanwhile: a part fired after that release starts a new pulse, whatever its schedule.
    """
    pulse_ns = int(pulse_ms * 1e6)
    groups: list[list[FiredReject]] = []
    high_until = 0
    for f in sorted(fired, key=lambda f: f.actual_ns):
        if groups and f.actual_ns <= high_until:
            groups[-1].append(f)
        else:
            groups.append([f])
        high_until = max(high_until, f.scheduled_ns + pulse_ns)
    return groups


def expected_rising_edges(fired: Iterable[FiredReject], pulse_ms: float) -> list[int]:
    """Actual times of the rejects that start a new pulse (the first of each of :func:`pulse_groups`)."""
    return [g[0].actual_ns for g in pulse_groups(fired, pulse_ms)]


class HostStallWarning(UserWarning):
    """An edge was late because the host itself stalled (seen by :class:`HostStallProbe`)."""


def check_edge_times(
    edges: Iterable[tuple[str, int, int]],
    early_ms: float,
    late_ms: float,
    host: HostStallProbe | None,
    max_excused: int = 3,
) -> list[str]:
    """Assert each edge ``(what, due_ns, actual_ns)`` came within ``[due - early_ms, due + late_ms]``.

    An edge later than that is excused only when ``host`` saw one CPU stalled, between just
    before it was due and when it came, for at least as long as the excess: the host, not the
    station, was late. Early edges are never excused, nor more than ``max_excused`` late ones.
    The excused edges are warned about (pytest's warnings summary) and returned.
    """
    excused: list[str] = []
    for what, due, actual in edges:
        off_ms = (actual - due) / 1e6
        assert off_ms >= -early_ms, f"{what} {-off_ms:.2f} ms early"
        if off_ms <= late_ms:
            continue
        stalled = host.stalled_ms(due - 1_000_000, actual) if host is not None else 0.0
        assert stalled >= off_ms - late_ms, f"{what} {off_ms:.2f} ms late (the host stalled {stalled:.2f} ms meanwhile)"
        excused.append(f"{what} {off_ms:.2f} ms late: the host stalled {stalled:.2f} ms meanwhile")
    assert len(excused) <= max_excused, f"too many late edges for host stalls to explain: {excused}"
    for e in excused:
        warnings.warn(e, HostStallWarning, stacklevel=2)
    return excused


def check_count_edges(
    belt: BeltProcess,
    edges: Iterable[tuple[str, int, int]],
    early_ms: float,
    late_ms: float,
    host: HostStallProbe | None,
) -> None:
    """Encoder-timed edges ``(what, target count, actual_ns)``.

    Never more than ``early_ms`` before the belt's true count reached the target (the station
    predicts it between polls), and at most ``late_ms`` after the PLC's register showed it (what the
    station could know: the register lags the belt when the PLC process is held up).
    """
    edges = list(edges)
    check_edge_times(
        [(f"{what} vs belt", belt.crossing_ns(c), t) for what, c, t in edges], early_ms, float("inf"), None
    )
    check_edge_times(
        [(f"{what} vs register", belt.register_crossing_ns(c), t) for what, c, t in edges], float("inf"), late_ms, host
    )
