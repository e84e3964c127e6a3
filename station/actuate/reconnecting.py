"""The shared shape of network output drivers (Modbus, OPC UA): fail fast, reconnect behind, restore.

``set`` runs on the reject scheduler thread, so it makes exactly one request
with the driver's short timeout and never connects inline: while the peer is
away it raises :class:`OutputError` at once. A small background thread
reconnects with backoff and then writes every line back to the state last
asked for, so a falling edge lost during an outage cannot leave an ejector
output stuck on.
"""

from __future__ import annotations

import logging
import threading

from ..alarms import ReportFn, report_or_log
from ..plc.link import Backoff
from .base import OutputError

log = logging.getLogger(__name__)


class ReconnectingOutput:
    """Base class: subclasses implement ``_connect``, ``_write_line``, ``_disconnect`` and ``peer``."""

    component = "output"
    reconnect_check_s = 0.05

    def __init__(self, backoff: Backoff, report: ReportFn | None = None):
        self.report = report
        self._backoff = backoff
        self._desired: dict[str, bool] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = False
        self.writes = 0
        self.errors = 0

    # -- subclass hooks -----------------------------------------------------
    @property
    def peer(self) -> str:
        """Where the outputs live (for messages)."""
        raise NotImplementedError

    def _connect(self) -> None:
        """Open the connection; raise on failure."""
        raise NotImplementedError

    def _write_line(self, line: str, value: bool) -> None:
        """One write; raise OutputError (bad mapping) or anything else (connection trouble)."""
        raise NotImplementedError

    def _disconnect(self) -> None:
        """Close the connection; must not raise."""
        raise NotImplementedError

    # -- OutputDriver -------------------------------------------------------
    def bind_alarms(self, report: ReportFn) -> None:
        """Report connection changes to the station's alarm board."""
        self.report = report

    def open(self) -> None:
        """Connect (a peer that is not there yet is an alarm, not an error) and start reconnecting."""
        self._try_connect()
        self._stop.clear()
        self._thread = threading.Thread(target=self._reconnect_loop, name=f"{self.component}-reconnect", daemon=True)
        self._thread.start()

    def set(self, line: str, value: bool) -> None:
        """Write the line now; raises OutputError when the peer is unreachable or refuses."""
        with self._lock:
            self._desired[line] = bool(value)
            self._write(line, bool(value))

    def close(self) -> None:
        """Drive every line low (best effort), stop reconnecting, disconnect."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        with self._lock:
            for line in list(self._desired):
                self._desired[line] = False
                try:
                    self._write(line, False)
                except OutputError as exc:
                    log.warning("%s: could not release %s on close: %s", self.component, line, exc)
            self._disconnect()
            self.connected = False

    def health(self) -> dict[str, object]:
        """ok while connected; alarm otherwise."""
        if self.connected:
            return {"state": "ok", "message": f"{self.peer}: {self.writes} writes, {self.errors} errors"}
        return {"state": "alarm", "message": f"{self.peer}: not connected ({self.errors} failed writes)"}

    # -- internals ----------------------------------------------------------
    def _write(self, line: str, value: bool) -> None:
        """With the lock held."""
        if not self.connected:
            self.errors += 1
            raise OutputError(f"{self.component}: {line}={value} not written: {self.peer} not connected")
        try:
            self._write_line(line, value)
        except OutputError:
            self.errors += 1
            raise
        except Exception as exc:  # noqa: BLE001 - any transport failure means: connection lost, reconnect behind
            self.errors += 1
            self.connected = False
            self._disconnect()
            wait = self._backoff.failed()
            self._emit(
                "alarm",
                f"lost {self.peer} writing {line}={value}: {type(exc).__name__}: {exc}; reconnecting in {wait:.1f} s",
            )
            raise OutputError(f"{self.component}: {line}={value} failed: {type(exc).__name__}: {exc}") from None
        self.writes += 1

    def _try_connect(self) -> bool:
        if not self._backoff.due():
            return False
        try:
            self._connect()
        except Exception as exc:  # noqa: BLE001 - any failure to connect is retried with backoff
            self._disconnect()
            wait = self._backoff.failed()
            self._emit("alarm", f"cannot connect to {self.peer}: {type(exc).__name__}: {exc}; retrying in {wait:.1f} s")
            return False
        self._backoff.succeeded()
        with self._lock:
            self.connected = True
            for line, value in self._desired.items():
                try:
                    self._write(line, value)
                except OutputError as exc:
                    log.warning("%s: could not restore %s=%s after reconnect: %s", self.component, line, value, exc)
                    break
        if self.connected:
            self._emit("ok", f"connected to {self.peer}")
        return self.connected

    def _reconnect_loop(self) -> None:
        while not self._stop.wait(self.reconnect_check_s):
            if not self.connected:
                self._try_connect()

    def _emit(self, state: str, message: str) -> None:
        report_or_log(self.report, self.component, state, message)
