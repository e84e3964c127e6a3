"""Station counters that must always reconcile (see DESIGN.md)."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field

from .contracts import Outcome


@dataclass
class CounterValues:
    """A snapshot of the counters."""

    triggers: int = 0
    frames: int = 0
    dropped: int = 0
    verdicts: int = 0
    PASS: int = 0
    FAIL: int = 0
    UNCERTAIN: int = 0
    FAILSAFE: int = 0
    rejects_scheduled: int = 0
    rejects_fired: int = 0
    records_written: int = 0
    records_dropped: int = 0
    started_wall: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, float]:
        """Plain dict (for JSON and metrics)."""
        return asdict(self)


class Counters:
    """Thread-safe counters; ``snapshot()`` gives a consistent copy."""

    def __init__(self, initial: CounterValues | None = None):
        self._v = initial or CounterValues()
        self._lock = threading.Lock()

    def add(self, name: str, n: int = 1) -> None:
        """Increment counter ``name`` by ``n``."""
        with self._lock:
            setattr(self._v, name, getattr(self._v, name) + n)

    def verdict(self, outcome: Outcome) -> None:
        """Count one final verdict."""
        with self._lock:
            self._v.verdicts += 1
            setattr(self._v, outcome.value, getattr(self._v, outcome.value) + 1)

    def snapshot(self) -> CounterValues:
        """A copy of all counters taken under the lock."""
        with self._lock:
            return CounterValues(**asdict(self._v))


def reconcile(
    v: CounterValues,
    pending_verdicts: int = 0,
    pending_records: int = 0,
    pending_rejects: int = 0,
    pending_frames: int = 0,
) -> list[str]:
    """Return the broken invariants (empty when everything adds up).

    ``pending_*`` are the parts still in flight when the snapshot was taken
    (being grabbed, waiting for a verdict, a record or a pulse).
    """
    problems = []
    if v.triggers != v.frames + v.dropped + pending_frames:
        problems.append(
            f"triggers {v.triggers} != frames {v.frames} + dropped {v.dropped} + being acquired {pending_frames}"
        )
    if v.verdicts + pending_verdicts != v.triggers:
        problems.append(f"verdicts {v.verdicts} + in flight {pending_verdicts} != triggers {v.triggers}")
    if v.verdicts != v.PASS + v.FAIL + v.UNCERTAIN + v.FAILSAFE:
        problems.append(f"PASS+FAIL+UNCERTAIN+FAILSAFE != verdicts {v.verdicts}")
    if v.rejects_fired + pending_rejects != v.rejects_scheduled:
        problems.append(
            f"rejects fired {v.rejects_fired} + pending {pending_rejects} != scheduled {v.rejects_scheduled}"
        )
    if v.records_written + v.records_dropped + pending_records != v.verdicts:
        problems.append(
            f"records written {v.records_written} + dropped {v.records_dropped} + pending {pending_records} != "
            f"verdicts {v.verdicts}"
        )
    return problems
