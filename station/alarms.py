"""Active alarms by component, published on the bus when they change."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .contracts import StatusEvent

log = logging.getLogger(__name__)

ReportFn = Callable[[str, str, str], None]
"""(component, state, message): :meth:`AlarmBoard.report`, as the services that raise alarms are given it."""


def report_or_log(report: ReportFn | None, component: str, state: str, message: str) -> None:
    """Set ``component``'s state through ``report``; without an alarm board (tools, tests) log a non-ok state."""
    if report is not None:
        report(component, state, message)
    elif state != "ok":
        log.warning("%s: %s", component, message)


class AlarmBoard:
    """The latest state of every component; ``raise_``/``clear`` publish changes."""

    def __init__(self, publish: Callable[[StatusEvent], None]):
        self._publish = publish
        self._state: dict[str, StatusEvent] = {}
        self._lock = threading.Lock()

    def report(self, component: str, state: str, message: str) -> None:
        """Set a component's state ("ok", "warning", "alarm"); publishes only changes."""
        ev = StatusEvent(component, state, message, time.time())
        with self._lock:
            old = self._state.get(component)
            if old is not None and old.state == state and old.message == message:
                return
            if old is None and state == "ok":
                self._state[component] = ev
                return
            self._state[component] = ev
        (log.warning if state in ("warning", "alarm") else log.info)("%s: %s %s", component, state, message)
        self._publish(ev)

    def active(self) -> list[StatusEvent]:
        """Components not ok, most recent first."""
        with self._lock:
            return sorted((e for e in self._state.values() if e.state in ("warning", "alarm")), key=lambda e: -e.t_wall)

    def all(self) -> list[StatusEvent]:
        """Every component's last state."""
        with self._lock:
            return list(self._state.values())
