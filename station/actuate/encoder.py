"""Reject timing by belt encoder counts, for belts whose speed varies.

A shift register (FIFO) of the parts between camera and ejector: each part
records the encoder count at its trigger; its reject fires when the belt
has moved ``travel_counts`` further. :class:`EncoderTracker` polls the count
in its own thread (one dedicated Modbus connection), unwraps the 16/32-bit
counter, and fires through the scheduler's own pulse machinery, so pulse
width, overlapping pulses, timing statistics and counters stay in one place.

To land between two polls, the tracker predicts the crossing from the belt
speed over the last 20 ms and hands the scheduler an exact time when it
falls before the next poll; the scheduler's heap then times the edge. Only
readings whose request was quick enough to be well timed are used.

Decision deadlines stay time-based (``travel_ms`` = the shortest travel
time, at top belt speed). A part that reaches the ejector before it has a
verdict (belt faster than configured) is rejected: fail safe.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..alarms import ReportFn, report_or_log
from ..config import EncoderConfig, RejectConfig
from ..contracts import PartResult, RejectCommand, Trigger
from ..plc.link import ModbusLink, ModbusLinkError
from ..plc.registers import join_u32
from ..rt import set_realtime
from ..services import ThreadWorker
from .scheduler import _FIRE, RejectScheduler

log = logging.getLogger(__name__)


class CounterUnwrapper:
    """Turns a wrapping ``bits``-wide counter into an unbounded count (steps of < half the range)."""

    def __init__(self, bits: int):
        self.modulo = 1 << bits
        self.half = self.modulo >> 1
        self.last_raw: int | None = None
        self.value = 0

    def delta(self, raw: int, ref_raw: int) -> int:
        """Signed distance from ``ref_raw`` to ``raw`` modulo the counter range."""
        d = (raw - ref_raw) % self.modulo
        return d - self.modulo if d >= self.half else d

    def update(self, raw: int) -> int:
        """Feed one reading; returns the unwrapped count."""
        raw %= self.modulo
        if self.last_raw is None:
            self.value = raw
        else:
            self.value += self.delta(raw, self.last_raw)
        self.last_raw = raw
        return self.value

    def unwrap(self, raw: int) -> int:
        """An external raw count (e.g. latched by the PLC at trigger) in the unwrapped scale."""
        if self.last_raw is None:
            return raw % self.modulo
        return self.value + self.delta(raw % self.modulo, self.last_raw)


class CountSource(Protocol):
    """Where raw counts come from."""

    def read(self) -> int:
        """One raw reading; raises on failure."""

    def close(self) -> None:
        """Release the connection."""


class ModbusCountSource:
    """The count in one or two registers of a Modbus server (PLC or counter module)."""

    def __init__(self, cfg: EncoderConfig, report: ReportFn | None = None):
        self.cfg = cfg
        self.link = ModbusLink(cfg.modbus, "encoder", report)

    def read(self) -> int:
        """Raw count; raises ModbusLinkError when the link is down (it reconnects with backoff)."""
        if not self.link.connect_if_due():
            raise ModbusLinkError(f"encoder: {self.link.address} not connected", transport=True)
        n = 2 if self.cfg.bits == 32 else 1
        regs = self.link.read_registers(self.cfg.table, self.cfg.address, n)
        return join_u32(regs, self.cfg.word_order) if n == 2 else regs[0]

    def close(self) -> None:
        """Close the connection."""
        self.link.close()


@dataclass(slots=True)
class _Slot:
    part_id: int
    t_trigger_ns: int
    target: int | None = None  # None until a reading after the trigger lets us interpolate its count
    reject: bool | None = None  # None = no verdict yet


FireFn = Callable[[int, int, bool], None]  # (part_id, t_ns, decided)


class EncoderTracker(ThreadWorker):
    """The shift register between camera and ejector, clocked by the encoder."""

    def __init__(
        self,
        cfg: EncoderConfig,
        travel_counts: int,
        fire: FireFn,
        source: CountSource,
        report: ReportFn | None = None,
        realtime_priority: int = 0,
    ):
        self.cfg = cfg
        self.realtime_priority = realtime_priority
        self.travel_counts = travel_counts
        self._fire = fire
        self._source = source
        self._report = report
        self._unwrap = CounterUnwrapper(cfg.bits)
        self._samples: deque[tuple[int, int]] = deque(maxlen=256)  # (t_ns, unwrapped count) of well-timed readings
        self._latest: int | None = None
        self._fifo: deque[_Slot] = deque()
        self._slots: dict[int, _Slot] = {}
        self._lock = threading.Lock()
        super().__init__("encoder-tracker")
        self._poll_ns = int(cfg.poll_ms * 1e6)
        # a reading whose request took longer than this has an uncertain time: no prediction from it
        self._sharp_ns = max(500_000, self._poll_ns // 4)
        # belt speed for predictions is measured over at least this long: robust to a count register
        # that the PLC updates in steps once per scan, and to a stalled poll
        self._speed_window_ns = max(20_000_000, 10 * self._poll_ns)
        self._last_ok_ns = 0
        self._stale = False
        self.reads = 0
        self.read_errors = 0
        self.early_arrivals = 0
        self.fired_log: deque[tuple[int, int, int]] = deque(maxlen=10000)  # (part_id, target count, fire time ns)

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> None:
        """Start polling."""
        self._last_ok_ns = time.monotonic_ns()
        self._poll_once()  # a first count before the first trigger, when the encoder is there
        self._start_thread(self._run)

    def stop(self) -> None:
        """Stop polling and disconnect."""
        self._stop_thread(2)
        self._source.close()

    # -- the shift register -------------------------------------------------
    def add(self, trigger: Trigger) -> bool:
        """A part at the camera: into the shift register. False when the encoder was never read (not tracked).

        The count at trigger is the one latched with the trigger (``Trigger.encoder_count``) or, when
        there is none, interpolated between the readings just before and just after the trigger
        time (resolved at the next poll, never extrapolated).
        """
        with self._lock:
            if self._unwrap.last_raw is None:
                return False
            slot = _Slot(trigger.part_id, trigger.t_trigger_ns)
            if trigger.encoder_count is not None:
                slot.target = self._unwrap.unwrap(trigger.encoder_count) + self.travel_counts
            self._fifo.append(slot)
            self._slots[slot.part_id] = slot
            return True

    def decide(self, part_id: int, reject: bool) -> bool:
        """Record the verdict of a tracked part; False when the part is not (or no longer) in the register."""
        with self._lock:
            slot = self._slots.get(part_id)
            if slot is None:
                return False
            slot.reject = reject
            return True

    def target_of(self, part_id: int) -> int | None:
        """Target count of a tracked part."""
        with self._lock:
            slot = self._slots.get(part_id)
            return None if slot is None else slot.target

    @property
    def pending(self) -> int:
        """Parts between camera and ejector."""
        with self._lock:
            return len(self._fifo)

    @property
    def count(self) -> int | None:
        """Latest unwrapped count."""
        with self._lock:
            return self._latest

    # -- internals ----------------------------------------------------------
    def _count_at(self, t_ns: int) -> int | None:
        """Count at ``t_ns`` interpolated between the readings around it; None while none is later. Lock held."""
        s = self._samples
        if not s or s[-1][0] < t_ns:
            return None
        if t_ns <= s[0][0]:
            return s[0][1]  # older than the history (a part stuck behind a long outage)
        i = bisect.bisect_left([x[0] for x in s], t_ns)
        (t0, c0), (t1, c1) = s[i - 1], s[i]
        if t1 == t0:
            return c1
        return int(round(c0 + (c1 - c0) * (t_ns - t0) / (t1 - t0)))

    def _run(self) -> None:
        set_realtime(self.realtime_priority, "encoder tracker")
        next_t = time.monotonic_ns()
        while not self._stop.is_set():
            next_t += self._poll_ns
            self._poll_once()
            wait_ns = next_t - time.monotonic_ns()
            if wait_ns < 0:
                next_t = time.monotonic_ns()  # a slow read: do not burst to catch up
            elif self._stop.wait(wait_ns / 1e9):
                return

    def _poll_once(self) -> None:
        t_a = time.monotonic_ns()
        try:
            raw = self._source.read()
        except Exception as exc:  # noqa: BLE001 - any failed read: pending parts wait for the count
            self.read_errors += 1
            if not self._stale and time.monotonic_ns() - self._last_ok_ns > self.cfg.stale_ms * 1e6:
                self._stale = True
                self._emit(
                    "alarm",
                    f"no encoder count for {self.cfg.stale_ms:.0f} ms ({exc}); {self.pending} rejects wait for it",
                )
            return
        t_b = time.monotonic_ns()
        t = (t_a + t_b) // 2  # the register was read somewhere in between
        sharp = t_b - t_a <= self._sharp_ns
        self.reads += 1
        self._last_ok_ns = t_b
        if self._stale:
            self._stale = False
            self._emit("ok", "encoder count readable again")
        fires: list[tuple[int, int, bool]] = []
        with self._lock:
            count = self._unwrap.update(raw)
            self._latest = count
            prev = self._samples[-1] if self._samples else None
            speed = self._speed(t, count) if sharp else None
            if sharp or not self._samples or t - self._samples[-1][0] > 5 * self._poll_ns:
                # well-timed readings make the timeline used for trigger counts and speed (a slow one
                # only when nothing better came for a while: a degraded timeline beats none)
                self._samples.append((t, count))
            for slot in self._fifo:
                if slot.target is None:
                    at = self._count_at(slot.t_trigger_ns)
                    if at is None:
                        break  # later parts were triggered later still
                    slot.target = at + self.travel_counts
            while self._fifo and self._fifo[0].target is not None:
                slot = self._fifo[0]
                assert slot.target is not None
                t_fire = self._due(slot.target, prev, t, count, speed)
                if t_fire is None:
                    break
                self._fifo.popleft()
                del self._slots[slot.part_id]
                if slot.reject is None:
                    self.early_arrivals += 1
                    fires.append((slot.part_id, t_fire, False))
                elif slot.reject:
                    fires.append((slot.part_id, t_fire, True))
                if slot.reject is not False:
                    self.fired_log.append((slot.part_id, slot.target, t_fire))
        for part_id, t_fire, decided in fires:
            if not decided:
                log.warning(
                    "part %d reached the ejector before its verdict: rejected (belt faster than travel_ms allows)",
                    part_id,
                )
            self._fire(part_id, t_fire, decided)

    def _speed(self, t: int, count: int) -> float | None:
        """Counts per ns over the last speed window (None when the history is too short or the belt stands). Lock
        held."""
        old = None
        for ts, c in reversed(self._samples):
            if t - ts >= self._speed_window_ns:
                old = (ts, c)
                break
        if old is None or count <= old[1]:
            return None
        return (count - old[1]) / (t - old[0])

    def _due(self, target: int, prev: tuple[int, int] | None, t: int, count: int, speed: float | None) -> int | None:
        """When the count reaches ``target``: the crossing time if it is past, or predicted before the next poll, else
        None."""
        if count >= target:
            if prev is None or count == prev[1] or prev[1] >= target:
                return t
            t0, c0 = prev
            return t0 + int((target - c0) * (t - t0) / (count - c0))  # crossed between the polls (for statistics)
        if speed is not None:
            t_pred = t + int((target - count) / speed)
            if t_pred <= t + self._poll_ns:
                return t_pred  # before the next poll: let the scheduler time it exactly
        return None

    def _emit(self, state: str, message: str) -> None:
        report_or_log(self._report, "encoder", state, message)


class EncoderRejectScheduler(RejectScheduler):
    """The reject scheduler with pulses clocked by the encoder instead of the clock."""

    def __init__(
        self,
        cfg: RejectConfig,
        *args: object,
        report: ReportFn | None = None,
        source: CountSource | None = None,
        **kwargs: object,
    ):
        super().__init__(cfg, *args, **kwargs)  # type: ignore[arg-type]
        assert cfg.encoder is not None and cfg.travel_counts is not None, (
            "RejectConfig validation guarantees these in encoder mode"
        )
        self.tracker = EncoderTracker(
            cfg.encoder,
            cfg.travel_counts,
            self._fire_by_count,
            source or ModbusCountSource(cfg.encoder, report),
            report,
            realtime_priority=cfg.realtime_priority,
        )
        self._fired_early: set[int] = set()
        self.time_fallbacks = 0

    def start(self) -> None:
        """Start the encoder tracker, then the scheduler thread."""
        self.tracker.start()
        super().start()

    def stop(self, drain_s: float = 0.0) -> None:
        """Wait up to ``drain_s`` for parts still on the belt, then stop."""
        end = time.monotonic() + drain_s
        while self.tracker.pending and time.monotonic() < end:
            time.sleep(0.01)  # shutdown only: parts still travelling to the ejector
        super().stop(max(0.0, end - time.monotonic()))
        self.tracker.stop()

    def admit(self, trigger: Trigger) -> None:
        """Start the part's deadline clock and put it in the shift register."""
        super().admit(trigger)
        if not self.tracker.add(trigger):
            log.warning("part %d: no encoder count yet; its reject (if any) falls back to travel_ms", trigger.part_id)

    def command_for(self, trigger: Trigger) -> RejectCommand:
        """The reject at the part's target count."""
        target = self.tracker.target_of(trigger.part_id)
        if target is None:
            return super().command_for(trigger)
        return RejectCommand(
            part_id=trigger.part_id, pulse_ms=self.cfg.pulse_ms, line=self.cfg.line, fire_at_count=target
        )

    def _schedule_reject(self, result: PartResult) -> PartResult:
        """Called with the lock held: mark the part in the shift register (the tracker fires it)."""
        part_id = result.trigger.part_id
        rejects = self._rejects(result.verdict.outcome)
        if self.tracker.decide(part_id, rejects):
            if rejects:
                self._fire_at[part_id] = -1  # pending until the count comes
                self.counters.add("rejects_scheduled")
            return result
        if part_id in self._fired_early:
            self._fired_early.discard(part_id)
            if not rejects:
                log.warning(
                    "part %d (%s) was already rejected: it reached the ejector before its verdict",
                    part_id,
                    result.verdict.outcome,
                )
            return result
        self.time_fallbacks += 1
        return super()._schedule_reject(result)

    def _fire_by_count(self, part_id: int, t_ns: int, decided: bool) -> None:
        """From the tracker thread: queue the FIRE edge (its RELEASE follows pulse_ms later)."""
        with self._cond:
            if not decided:
                self._fired_early.add(part_id)
                self.counters.add("rejects_scheduled")
            self._fire_at[part_id] = t_ns
            self._push(t_ns, _FIRE, part_id)
