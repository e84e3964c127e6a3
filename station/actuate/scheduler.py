"""The reject scheduler: owns every part from trigger to ejector.

Every triggered part is admitted here first, with its decision deadline
(``t_trigger + travel - safety margin``). The scheduler thread keeps one
heap of timed events:

* ``DEADLINE`` — no verdict yet: the part becomes FAILSAFE and is rejected.
  This is what makes the station fail safe: a lost frame, a hung inspector or
  a crashed worker all end here without anyone having to notice.
* ``FIRE`` / ``RELEASE`` — the two edges of a reject pulse at
  ``t_trigger + travel`` and ``+ pulse_ms``. The pulse is two heap events,
  never a sleep, so overlapping parts are timed independently.

The thread waits on a condition variable until shortly before the next
event and spins the last few hundred microseconds, so edges land within a
fraction of a millisecond of their schedule even while inference loads both
cores (``sys.setswitchinterval`` is lowered by the station for that).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..config import RejectConfig
from ..contracts import Outcome, PartResult, RejectCommand, Trigger
from ..counters import Counters
from ..decide import Decider
from ..rt import set_realtime
from .base import OutputDriver

log = logging.getLogger(__name__)

_DEADLINE, _FIRE, _RELEASE = 0, 1, 2
_SPIN_NS = 400_000  # wake this early and spin: condition waits are only ~0.1-1 ms precise


@dataclass(frozen=True, slots=True)
class FiredReject:
    """A reject pulse that was driven: for timing statistics and tests."""

    part_id: int
    scheduled_ns: int
    actual_ns: int

    @property
    def error_ms(self) -> float:
        """How late (positive) or early the edge was."""
        return (self.actual_ns - self.scheduled_ns) / 1e6


@dataclass(slots=True)
class _InFlight:
    trigger: Trigger
    deadline_ns: int


class RejectScheduler:
    """Deadlines, fail-safe verdicts and reject pulses for every part."""

    def __init__(
        self,
        cfg: RejectConfig,
        output: OutputDriver,
        decider: Decider,
        counters: Counters,
        on_final: Callable[[PartResult], None],
        *,
        reject_uncertain: bool = True,
        model_id: Callable[[], str] = lambda: "none",
    ):
        self.cfg = cfg
        self.output = output
        self.decider = decider
        self.counters = counters
        self.on_final = on_final
        self.reject_uncertain = reject_uncertain
        self._model_id = model_id
        self._heap: list[tuple[int, int, int, int]] = []  # (t_ns, seq, kind, part_id)
        self._seq = itertools.count()
        self._inflight: dict[int, _InFlight] = {}
        self._fire_at: dict[int, int] = {}
        self._line_high = 0
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.fired: deque[FiredReject] = deque(maxlen=100_000)
        self.late_verdicts = 0
        self.output_errors = 0

    # -- public API ---------------------------------------------------------
    def start(self) -> None:
        """Start the scheduler thread."""
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="reject-scheduler", daemon=True)
        self._thread.start()

    def stop(self, drain_s: float = 0.0) -> None:
        """Stop; with ``drain_s`` first wait that long for pending parts and pulses."""
        end = time.monotonic() + drain_s
        while True:
            # Poll without the lock: a normal-priority caller holding it could be preempted and make
            # the real-time thread wait for it (priority inversion) while the last pulses fire.
            while self._heap and time.monotonic() < end:
                time.sleep(0.02)
            with self._cond:
                # The heap looks empty for a moment while the thread fires the last reject (its
                # release is pushed after the output write): only under the lock is it really empty.
                if self._heap and time.monotonic() < end:
                    continue
                self._stop = True
                self._cond.notify_all()
                break
        if self._thread:
            self._thread.join(timeout=5)
        try:
            self.output.set(self.cfg.line, False)
        except Exception as exc:  # noqa: BLE001 - shutting down; nothing else to do but log
            log.warning("could not release reject line on stop: %s", exc)

    @property
    def died(self) -> bool:
        """True when the scheduler thread was started and is no longer running."""
        return self._thread is not None and not self._thread.is_alive()

    def admit(self, trigger: Trigger) -> None:
        """A new part: start its deadline clock. Call before anything else can fail."""
        deadline = trigger.t_trigger_ns + int(self.cfg.deadline_ms * 1e6)
        with self._cond:
            self._inflight[trigger.part_id] = _InFlight(trigger, deadline)
            self._push(deadline, _DEADLINE, trigger.part_id)

    def submit(self, result: PartResult) -> bool:
        """A verdict for an admitted part. Returns False if it came too late.

        A late verdict is not acted upon: the part was already made FAILSAFE
        at its deadline and the reject is scheduled.
        """
        with self._cond:
            entry = self._inflight.pop(result.trigger.part_id, None)
            if entry is None:
                self.late_verdicts += 1
                log.warning(
                    "verdict for part %d came after its deadline: ignored (%s)",
                    result.trigger.part_id,
                    result.verdict.outcome,
                )
                return False
            result = self._schedule_reject(result)
        self._finalize(result)
        return True

    def command_for(self, trigger: Trigger) -> RejectCommand:
        """The reject command a part would get (for PLC hand-off and logs)."""
        return RejectCommand(
            part_id=trigger.part_id,
            pulse_ms=self.cfg.pulse_ms,
            line=self.cfg.line,
            fire_at_ns=trigger.t_trigger_ns + int(self.cfg.travel_ms * 1e6),
        )

    @property
    def in_flight(self) -> int:
        """Parts admitted without a verdict yet (lock-free read, see :meth:`pending_rejects`)."""
        return len(self._inflight)

    @property
    def pending_rejects(self) -> int:
        """Rejects scheduled that have not fired yet.

        Read without the lock (one ``len`` is atomic under the GIL): pollers such as metrics and
        reconciliation run at normal priority and must never hold the lock the real-time thread
        needs to fire.
        """
        return len(self._fire_at)

    # -- internals ----------------------------------------------------------
    def _push(self, t_ns: int, kind: int, part_id: int) -> None:
        heapq.heappush(self._heap, (t_ns, next(self._seq), kind, part_id))
        self._cond.notify()

    def _rejects(self, outcome: Outcome) -> bool:
        return outcome in (Outcome.FAIL, Outcome.FAILSAFE) or (outcome is Outcome.UNCERTAIN and self.reject_uncertain)

    def _schedule_reject(self, result: PartResult) -> PartResult:
        """Called with the lock held: queue the pulse if the verdict rejects."""
        if not self._rejects(result.verdict.outcome):
            return result
        fire_at = self.command_for(result.trigger).fire_at_ns
        assert fire_at is not None
        self._fire_at[result.trigger.part_id] = fire_at
        self._push(fire_at, _FIRE, result.trigger.part_id)
        self.counters.add("rejects_scheduled")
        return PartResult(result.trigger, result.verdict, result.frames, result.detections, fire_at)

    def _finalize(self, result: PartResult) -> None:
        self.counters.verdict(result.verdict.outcome)
        try:
            self.on_final(result)
        except Exception:  # noqa: BLE001 - a consumer bug must never stop the ejector
            log.exception("on_final failed for part %d", result.trigger.part_id)

    def _run(self) -> None:
        set_realtime(self.cfg.realtime_priority, "reject scheduler")
        while True:
            with self._cond:
                while not self._stop:
                    if self._heap:
                        wait_ns = self._heap[0][0] - time.monotonic_ns()
                        if wait_ns <= _SPIN_NS:
                            break
                        self._cond.wait((wait_ns - _SPIN_NS) / 1e9)
                    else:
                        self._cond.wait(0.5)
                if self._stop:
                    return
                t_ns, _, kind, part_id = self._heap[0]
            while time.monotonic_ns() < t_ns:  # spin the last few hundred µs
                pass
            with self._cond:
                if not self._heap or self._heap[0][0] != t_ns or self._heap[0][3] != part_id:
                    continue  # an earlier event was pushed meanwhile
                heapq.heappop(self._heap)
                final = self._on_event(kind, part_id, t_ns)
            if final is not None:
                self._finalize(final)

    def _on_event(self, kind: int, part_id: int, t_ns: int) -> PartResult | None:
        """Handle one due event with the lock held; return a FAILSAFE result to finalize."""
        if kind == _DEADLINE:
            entry = self._inflight.pop(part_id, None)
            if entry is None:
                return None  # verdict arrived in time
            verdict = self.decider.failsafe(entry.trigger, "deadline missed: no verdict in time", self._model_id())
            return self._schedule_reject(PartResult(entry.trigger, verdict))
        if kind == _FIRE:
            self._fire_at.pop(part_id, None)
            if self._line_high == 0:
                self._set(True)
            self._line_high += 1
            self.fired.append(FiredReject(part_id, t_ns, time.monotonic_ns()))
            self.counters.add("rejects_fired")
            self._push(t_ns + int(self.cfg.pulse_ms * 1e6), _RELEASE, part_id)
        elif kind == _RELEASE:
            self._line_high -= 1
            if self._line_high == 0:
                self._set(False)
        return None

    def _set(self, value: bool) -> None:
        try:
            self.output.set(self.cfg.line, value)
        except Exception as exc:  # noqa: BLE001 - output drivers raise their own errors; keep timing the rest
            self.output_errors += 1
            log.error("reject output %s=%s failed: %s", self.cfg.line, value, exc)
