"""The host stall probe and the edge-timing check that may excuse only what the host stalled."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.host_stalls import HostStallProbe
from tests.reject_checks import HostStallWarning, check_edge_times

MS = 1_000_000


def test_edges_outside_the_window_fail_without_a_host_stall():
    check_edge_times([("on time", 100 * MS, 103 * MS), ("a bit early", 100 * MS, 98 * MS)], 5, 5, None)
    with pytest.raises(AssertionError, match="late"):
        check_edge_times([("late", 100 * MS, 106 * MS)], 5, 5, None)
    with pytest.raises(AssertionError, match="early"):
        check_edge_times([("early", 100 * MS, 94 * MS)], 5, 5, None)


def test_a_stalled_probe_excuses_only_as_much_lateness_as_it_stalled():
    with HostStallProbe() as probe:
        cpu, pid = next(iter(probe.pids.items()))
        time.sleep(0.05)  # test pacing: the probe runs
        t_stop = time.monotonic_ns()
        os.kill(pid, signal.SIGSTOP)  # what a vCPU the hypervisor does not run looks like to the probe
        time.sleep(0.04)
        os.kill(pid, signal.SIGCONT)
        t_cont = time.monotonic_ns()
        time.sleep(0.05)
        stalled = [s for s in probe.stalls() if s.cpu == cpu and s.end_ns - s.start_ns > 30 * MS]
        assert len(stalled) == 1 and t_stop < stalled[0].end_ns <= t_cont + 20 * MS
        seen_ms = probe.stalled_ms(t_stop - MS, t_cont + 20 * MS)
        assert 30 <= seen_ms <= 70
        with pytest.warns(HostStallWarning, match="the host stalled"):
            excused = check_edge_times([("edge", t_stop, t_stop + int((seen_ms + 4) * MS))], 5, 5, probe)
        assert len(excused) == 1
        with pytest.raises(AssertionError, match="late .the host stalled"):
            check_edge_times([("edge", t_stop, t_stop + int((seen_ms + 6) * MS))], 5, 5, probe)
        # a stall elsewhere in time excuses nothing
        with pytest.raises(AssertionError, match="late"):
            check_edge_times([("edge", t_cont + 200 * MS, t_cont + 240 * MS)], 5, 5, probe)
