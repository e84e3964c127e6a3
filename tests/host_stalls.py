"""A probe of the host's own scheduling stalls, to tell them apart from the station's lateness.

Edge-timing tests run on a shared VM: when the hypervisor does not run a vCPU for a few
milliseconds, every thread on it is late, the station's reject thread included, and no code can
help it. :class:`HostStallProbe` starts one tiny process per CPU, pinned to it, at a real-time
priority above every station thread, that wakes every millisecond and records each time it woke
late. Being above the station's priorities and in its own process (own GIL), the probe is not
delayed by anything the station does: what it records is the host's own stall. A test may then
excuse an edge that was late by no more than the host stalled around it, and must fail otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

_PROBE = r"""
import os, select, sys, time
cpu, prio, tick, min_late = (int(a) for a in sys.argv[1:5])
os.sched_setaffinity(0, {cpu})
try:
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(prio))
    rt = 1
except OSError:
    rt = 0
print(rt, flush=True)
stalls = []
while True:
    t0 = time.monotonic_ns()
    ready, _, _ = select.select([sys.stdin], [], [], tick / 1e9)
    t1 = time.monotonic_ns()
    if t1 - t0 - tick > min_late:
        stalls.append(f"{t0 + tick} {t1}")
    if ready:
        line = sys.stdin.readline()
        if not line:
            break
        print("\n".join(stalls + ["end"]), flush=True)
        stalls.clear()
"""


@dataclass(frozen=True, slots=True)
class Stall:
    """The probe on ``cpu`` should have run at ``start_ns`` and ran at ``end_ns`` (system monotonic clock)."""

    cpu: int
    start_ns: int
    end_ns: int


class HostStallProbe:
    """One real-time probe process per CPU of this process, recording when the host could not run it on time."""

    def __init__(self, priority: int = 50, tick_ms: float = 1.0, min_late_ms: float = 0.3):
        self._procs: dict[int, subprocess.Popen[str]] = {}
        self._stalls: list[Stall] = []
        self.realtime = True
        args = [str(priority), str(int(tick_ms * 1e6)), str(int(min_late_ms * 1e6))]
        for cpu in sorted(os.sched_getaffinity(0)):
            p = subprocess.Popen(
                [sys.executable, "-c", _PROBE, str(cpu), *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            self._procs[cpu] = p
        for p in self._procs.values():
            assert p.stdout is not None
            self.realtime &= p.stdout.readline().strip() == "1"

    @property
    def pids(self) -> dict[int, int]:
        """The probe process of each CPU."""
        return {cpu: p.pid for cpu, p in self._procs.items()}

    def stalls(self) -> list[Stall]:
        """Every stall seen since the start."""
        for cpu, p in self._procs.items():
            if p.poll() is not None:
                continue
            assert p.stdin is not None and p.stdout is not None
            p.stdin.write("dump\n")
            p.stdin.flush()
            for line in iter(p.stdout.readline, "end\n"):
                a, b = line.split()
                self._stalls.append(Stall(cpu, int(a), int(b)))
        return list(self._stalls)

    def stalled_ms(self, start_ns: int, end_ns: int) -> float:
        """How long, within ``[start_ns, end_ns]``, at least one CPU was stalled, in ms.

        Any CPU counts: a thread waits as well for the GIL held by a thread on a stalled CPU.
        """
        total, reach = 0, start_ns
        for a, b in sorted((max(s.start_ns, start_ns), min(s.end_ns, end_ns)) for s in self.stalls()):
            a = max(a, reach)
            if b > a:
                total += b - a
                reach = b
        return total / 1e6

    def close(self) -> None:
        """Stop the probes."""
        for p in self._procs.values():
            if p.poll() is None:
                assert p.stdin is not None
                p.stdin.close()
        for p in self._procs.values():
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def __enter__(self) -> HostStallProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
