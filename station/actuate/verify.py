"""Reject verification: a sensor after the ejector confirms each rejected part left the line.

:class:`VerifiedOutput` wraps the real output driver. Every rising edge of
the reject line opens a window (``verify.window_ms``); a rising edge of the
confirmation bit (a Modbus discrete input or coil, polled every
``verify.poll_ms`` on its own connection) closes the open window whose age
is closest to ``verify.delay_ms`` (the usual ejector-to-sensor time), so a
missing confirmation is blamed on the right pulse even when pulses follow
each other faster than the window. A
window that expires raises the ``reject-verify`` alarm and counts as
``rejects_unconfirmed``; the next confirmed reject clears the alarm.

The sensor must hold its bit for at least two polls (10 ms by default);
a PLC should stretch a shorter sensor pulse.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from ..alarms import ReportFn, report_or_log
from ..config import RejectVerifyConfig
from ..plc.link import ModbusLink, ModbusLinkError
from ..services import ThreadWorker
from .base import OutputDriver

log = logging.getLogger(__name__)


class VerifiedOutput(ThreadWorker):
    """An OutputDriver that also checks every reject pulse against a confirmation sensor."""

    component = "reject-verify"

    def __init__(self, inner: OutputDriver, cfg: RejectVerifyConfig, line: str, report: ReportFn | None = None):
        self.inner = inner
        self.cfg = cfg
        self.line = line
        self._report = report
        self._link = ModbusLink(cfg.modbus, self.component, report)
        self._open: deque[int] = deque()  # rising-edge times of pulses waiting for confirmation
        self._open_lock = threading.Lock()
        self._high = False
        self._sensor_prev: bool | None = None
        super().__init__("reject-verify")
        self.confirmed = 0
        self.unconfirmed = 0
        self.confirm_delays_ms: deque[float] = deque(maxlen=10000)

    def __getattr__(self, name: str) -> Any:
        # Everything else (edges(), offsets, ...) is the wrapped driver's.
        return getattr(self.inner, name)

    # -- OutputDriver -------------------------------------------------------
    def open(self) -> None:
        """Open the wrapped output and start watching the sensor."""
        self.inner.open()
        self._link.connect_if_due()
        self._start_thread(self._run)

    def set(self, line: str, value: bool) -> None:
        """Drive the wrapped output; a rising edge of the reject line opens a confirmation window."""
        self.inner.set(line, value)
        if line == self.line:
            if value and not self._high:
                with self._open_lock:
                    self._open.append(time.monotonic_ns())
            self._high = bool(value)

    def close(self) -> None:
        """Stop watching (open windows are judged first, up to window_ms) and close the wrapped output."""
        self._stop_thread(  # let the last pulses be confirmed first
            2,
            drain_s=self.cfg.window_ms / 1000 + 0.1,
            busy=lambda: self._open and self._thread is not None and self._thread.is_alive(),
        )
        self._link.close()
        self.inner.close()

    def health(self) -> dict[str, object]:
        """The wrapped output's health, worsened by unconfirmed rejects."""
        h = dict(self.inner.health())
        h["rejects_confirmed"] = self.confirmed
        h["rejects_unconfirmed"] = self.unconfirmed
        if self.unconfirmed and h.get("state") == "ok":
            h["state"] = "warning"
        return h

    @property
    def pending(self) -> int:
        """Pulses waiting for confirmation."""
        return len(self._open)

    # -- sensor thread ------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.cfg.poll_ms / 1000):
            self._poll()

    def _poll(self) -> None:
        now = time.monotonic_ns()
        level: bool | None = None
        if self._link.connect_if_due():
            try:
                level = self._link.read_bits(self.cfg.table, self.cfg.address, 1)[0]
            except ModbusLinkError as exc:
                log.debug("reject-verify read failed: %s", exc)
        if level is not None:
            rising = level and self._sensor_prev is False
            self._sensor_prev = level
            if rising:
                self._confirm(now)
        window_ns = int(self.cfg.window_ms * 1e6)
        expired = 0
        with self._open_lock:
            while self._open and now - self._open[0] > window_ns:
                self._open.popleft()
                expired += 1
        if expired:
            self.unconfirmed += expired
            why = "sensor unreadable" if level is None else "no sensor edge"
            self._emit(
                "alarm",
                f"reject not confirmed within {self.cfg.window_ms:.0f} ms ({why}); {self.unconfirmed} unconfirmed so "
                "far",
            )

    def _confirm(self, now: int) -> None:
        """A sensor edge: it confirms the open pulse whose age is closest to ``delay_ms`` (within the window)."""
        window_ns, delay_ns = self.cfg.window_ms * 1e6, self.cfg.delay_ms * 1e6
        with self._open_lock:
            candidates = [(abs((now - t) - delay_ns), i) for i, t in enumerate(self._open) if 0 <= now - t <= window_ns]
            if candidates:
                _, i = min(candidates)
                t_pulse = self._open[i]
                del self._open[i]
        if not candidates:
            log.info("reject-verify: sensor edge with no reject pulse waiting (a part fell off the line?)")
            return
        self.confirmed += 1
        self.confirm_delays_ms.append((now - t_pulse) / 1e6)
        self._emit("ok", "last reject confirmed by the sensor")

    def _emit(self, state: str, message: str) -> None:
        report_or_log(self._report, self.component, state, message)
