"""Shared checks of reject pulses against what the scheduler fired."""

from __future__ import annotations

from typing import Iterable

import pytest

from station.actuate.scheduler import FiredReject

# Millisecond edge timing asserted on a shared 2-vCPU VM, from a pytest process that also loads
# torch: a stall of the whole VM or process (hypervisor steal, a C library holding the GIL) can
# make one edge late although the station did nothing wrong. Such a test runs again once, in full,
# with the same tolerance; the rerun is shown in the pytest summary. A late edge in both runs fails.
realtime_rerun = pytest.mark.flaky(reruns=1, reruns_delay=2, only_rerun=["AssertionError"])


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
