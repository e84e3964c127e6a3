"""The PLC handshake over Modbus TCP: ready, heartbeat, one result per part, acknowledge, recipe.

Runs in its own thread fed by a bus subscription, on its own connection, so
the PLC can be slow or gone without the line noticing. Per part (register
map: :mod:`station.plc.registers`, docs/plc.md)::

    station: PART_ID, RESULT_CODE, RESULT_COUNTER  (one FC16 write)
    station: RESULT_VALID = 1
    PLC:     RESULT_ACK = 1          (after copying the result)
    station: RESULT_VALID = 0
    PLC:     RESULT_ACK = 0          -> the next result may be written

An acknowledge missing after ``ack_timeout_ms`` raises the ``plc`` alarm and
the station moves on. When the PLC disappears the station raises the alarm,
keeps deciding and queueing, reconnects with backoff and resumes; results
older than ``result_max_age_ms`` by then are dropped (counted): their parts
have passed the ejector and the PLC, which owns the reject in this mode,
has applied its own fail-safe for parts without RESULT_VALID.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

from ..alarms import ReportFn, report_or_log
from ..bus import Subscription
from ..config import PlcConfig
from ..contracts import PartResult
from ..services import ThreadWorker
from . import registers as R
from .link import ModbusLink, ModbusLinkError

log = logging.getLogger(__name__)

_IDLE, _WAIT_ACK, _WAIT_ACK_LOW = "idle", "wait-ack", "wait-ack-low"


class PlcHandshake(ThreadWorker):
    """One thread, one Modbus connection, the whole handshake."""

    component = "plc"

    def __init__(
        self,
        cfg: PlcConfig,
        sub: Subscription,
        *,
        report: ReportFn | None = None,
        ready: Callable[[], bool] = lambda: True,
        alarm_active: Callable[[], bool] = lambda: False,
        on_recipe: Callable[[int], bool] | None = None,
        healthy: Callable[[], bool] = lambda: True,
    ):
        self.cfg = cfg
        self.sub = sub
        self._report = report
        self._ready_fn = ready
        self._alarm_fn = alarm_active
        self._on_recipe = on_recipe
        self._healthy_fn = healthy  # False while the watchdog sees a stuck worker: HEARTBEAT stands still
        self.link = ModbusLink(cfg.modbus, self.component, report)
        self._queue: deque[PartResult] = deque()
        self._state = _IDLE
        self._current: PartResult | None = None
        self._t_state = 0
        self._counter = 0
        self._heartbeat = False
        self._next_heartbeat = 0.0
        self._written: dict[str, object] = {}  # last values written (re-sent after a reconnect)
        self._recipe_seen: int | None = None
        self.active_recipe = 0
        super().__init__("plc-handshake")
        self._was_connected = False
        self._ack_alarm = False
        # statistics
        self.sent = 0
        self.acked = 0
        self.ack_timeouts = 0
        self.stale_dropped = 0
        self.queue_dropped = 0
        self.ack_ms: deque[float] = deque(maxlen=10000)
        self.last_acked_part: int | None = None

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> None:
        """Start the handshake thread."""
        self._start_thread(self._run)

    def stop(self, drain_s: float = 1.0) -> None:
        """Hand over what is queued (up to ``drain_s``), drop STATION_READY, stop, disconnect."""
        self._stop_thread(
            3,
            drain_s=drain_s,
            busy=lambda: (self._queue or self.sub.pending or self._state != _IDLE) and self.link.connected,
        )
        if self.link.connected:
            try:
                self.link.write_coil(self.cfg.coil_base + R.STATION_READY.address, False)
                self.link.write_coil(self.cfg.coil_base + R.RESULT_VALID.address, False)
            except ModbusLinkError as exc:
                log.warning("could not clear STATION_READY on stop: %s", exc)
        self.link.close()

    def set_active_recipe(self, n: int) -> None:
        """The recipe now running (written to ACTIVE_RECIPE on the next cycle)."""
        self.active_recipe = int(n)

    def health(self) -> dict[str, object]:
        """Link state and handshake statistics."""
        return {
            "state": "ok" if self.link.connected else "alarm",
            "message": f"{self.link.address} {'connected' if self.link.connected else 'not connected'}",
            "sent": self.sent,
            "acked": self.acked,
            "ack_timeouts": self.ack_timeouts,
            "stale_dropped": self.stale_dropped,
            "queue_dropped": self.queue_dropped,
            "queued": len(self._queue),
            "active_recipe": self.active_recipe,
        }

    # -- the cycle ----------------------------------------------------------
    def _run(self) -> None:
        period = self.cfg.poll_ms / 1000
        while not self._stop.is_set():
            self._drain_bus()
            if self.link.connect_if_due():
                try:
                    self._cycle()
                except ModbusLinkError as exc:
                    if not exc.transport:
                        self._emit("alarm", str(exc))
                    self._on_lost()
            elif self._was_connected:
                self._on_lost()
            self._stop.wait(period)

    def _drain_bus(self) -> None:
        for ev in self.sub.drain():
            if isinstance(ev, PartResult):
                if len(self._queue) >= self.cfg.queue_size:
                    self._queue.popleft()
                    self.queue_dropped += 1
                self._queue.append(ev)

    def _on_lost(self) -> None:
        """The link dropped: what was in flight is handed over again after the reconnect (if still fresh)."""
        self._was_connected = False
        self._written.clear()
        if self._current is not None and self._state == _WAIT_ACK:
            self._queue.appendleft(self._current)
        self._current = None
        self._state = _IDLE

    def _cycle(self) -> None:
        cb, db, hb, ib = self.cfg.coil_base, self.cfg.discrete_base, self.cfg.holding_base, self.cfg.input_base
        now = time.monotonic()
        if not self._was_connected:
            self._was_connected = True
            self._write_coil_if_changed("valid", cb + R.RESULT_VALID.address, False)
        if now >= self._next_heartbeat and self._healthy_fn():
            # the first edge at once; then every heartbeat_s measured from when the PLC acknowledged the last
            # edge (a write answered late, e.g. a PLC busy at start-up, must not shorten the next gap), across a
            # reconnect too (a short link drop must not put two edges closer than heartbeat_s)
            self.link.write_coil(cb + R.HEARTBEAT.address, not self._heartbeat)
            self._heartbeat = not self._heartbeat
            self._next_heartbeat = time.monotonic() + self.cfg.heartbeat_s
        self._write_coil_if_changed("ready", cb + R.STATION_READY.address, bool(self._ready_fn()))
        self._write_coil_if_changed("alarm", cb + R.STATION_ALARM.address, bool(self._alarm_fn()))
        if self._written.get("recipe") != self.active_recipe:
            self.link.write_register(hb + R.ACTIVE_RECIPE.address, self.active_recipe)
            self._written["recipe"] = self.active_recipe

        ack = self.link.read_bits("discrete", db + R.RESULT_ACK.address, 1)[0]
        self._results(ack)
        if self.cfg.follow_recipe and self._on_recipe is not None:
            requested = self.link.read_registers("input", ib + R.RECIPE_REQUEST.address, 1)[0]
            if requested != self._recipe_seen:
                self._recipe_seen = requested
                if requested:
                    log.info("PLC requests recipe %d", requested)
                    self._on_recipe(requested)

    def _results(self, ack: bool) -> None:
        cb, hb = self.cfg.coil_base, self.cfg.holding_base
        t_ns = time.monotonic_ns()
        if self._state == _WAIT_ACK:
            assert self._current is not None
            if ack:
                self.acked += 1
                self.ack_ms.append((t_ns - self._t_state) / 1e6)
                self.last_acked_part = self._current.trigger.part_id
                if self._ack_alarm:
                    self._ack_alarm = False
                    self._emit("ok", f"PLC acknowledges again (part {self.last_acked_part})")
                self._enter_wait_low(cb, t_ns)
            elif t_ns - self._t_state > self.cfg.ack_timeout_ms * 1e6:
                self.ack_timeouts += 1
                self._ack_alarm = True
                self._emit(
                    "alarm",
                    f"PLC did not acknowledge part {self._current.trigger.part_id} within "
                    f"{self.cfg.ack_timeout_ms:.0f} ms "
                    f"({self.ack_timeouts} timeouts)",
                )
                self._enter_wait_low(cb, t_ns)
            return
        if self._state == _WAIT_ACK_LOW:
            if ack and t_ns - self._t_state <= self.cfg.ack_timeout_ms * 1e6:
                return
            self._state = _IDLE
        if ack:
            return  # the PLC still holds the acknowledge of an earlier result
        stale: list[int] = []
        while self._queue:
            r = self._queue.popleft()
            age_ms = (t_ns - r.trigger.t_trigger_ns) / 1e6
            if age_ms > self.cfg.result_max_age_ms:
                self.stale_dropped += 1
                stale.append(r.trigger.part_id)
                continue
            self._counter = (self._counter + 1) & 0xFFFF
            code = int(R.RESULT_CODE_OF[r.verdict.outcome])
            self.link.write_registers(hb + R.PART_ID.address, [*R.split_u32(r.trigger.part_id), code, self._counter])
            self.link.write_coil(cb + R.RESULT_VALID.address, True)
            self._written["valid"] = True
            self._current = r
            self._state = _WAIT_ACK
            self._t_state = time.monotonic_ns()
            self.sent += 1
            break
        if stale:
            log.warning(
                "%d results (parts %d..%d) older than %.0f ms not handed to the PLC: it applied its own fail-safe to "
                "them",
                len(stale),
                stale[0],
                stale[-1],
                self.cfg.result_max_age_ms,
            )

    def _enter_wait_low(self, cb: int, t_ns: int) -> None:
        self.link.write_coil(cb + R.RESULT_VALID.address, False)
        self._written["valid"] = False
        self._current = None
        self._state = _WAIT_ACK_LOW
        self._t_state = t_ns

    def _write_coil_if_changed(self, key: str, address: int, value: bool) -> None:
        if self._written.get(key) != value:
            self.link.write_coil(address, value)
            self._written[key] = value

    def _emit(self, state: str, message: str) -> None:
        report_or_log(self._report, f"{self.component}:handshake", state, message)
