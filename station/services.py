"""The station's one service lifecycle: started in order, stopped in reverse.

Every long-lived part of a station (the recorder, the output, the plant-floor protocols, the plant
uplink, the reject scheduler, the inspector, the cameras, the line's workers, the trigger, the
watchdog) is one :class:`Service` in one list. :meth:`Services.start` starts them in the order
given; if one fails, the ones already started are stopped in reverse and the error is raised, so a
station that cannot start leaves no thread or device behind. :meth:`Services.stop` stops what was
started, in reverse: the trigger first (no new parts), the consumers last (nothing is lost).

:class:`ThreadWorker` is the one daemon thread and stop flag of a service that runs a loop (the
watchdog, the publishers, the PLC handshake, the encoder tracker, the plant uplink, the triggers).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Service:
    """One thing to start and stop."""

    name: str
    start: Callable[[], object]
    stop: Callable[[], object]


class Services:
    """An ordered list of services with one start and one stop."""

    def __init__(self) -> None:
        self._all: list[Service] = []
        self._started: list[Service] = []

    def add(self, name: str, start: Callable[[], object], stop: Callable[[], object]) -> None:
        """Append a service: it starts after, and stops before, those added earlier."""
        if any(s.name == name for s in self._all):
            raise ValueError(f"service {name!r} added twice")
        self._all.append(Service(name, start, stop))

    @property
    def names(self) -> list[str]:
        """The services in start order."""
        return [s.name for s in self._all]

    @property
    def running(self) -> list[str]:
        """The services started and not stopped, in start order."""
        return [s.name for s in self._started]

    def start(self) -> None:
        """Start every service in order; on a failure stop those started, in reverse, and re-raise."""
        for svc in self._all:
            try:
                svc.start()
            except BaseException:
                log.error("service %s failed to start: stopping the %d started before it", svc.name, len(self._started))
                self.stop()
                raise
            self._started.append(svc)

    def stop(self) -> None:
        """Stop the started services in reverse order; one that raises is logged and the rest still stop."""
        while self._started:
            svc = self._started.pop()
            try:
                svc.stop()
            except Exception:
                log.exception("service %s failed to stop cleanly", svc.name)


class ThreadWorker:
    """The one daemon thread of a background worker and its stop flag ``_stop``.

    A worker class calls ``super().__init__(thread_name)``, starts with :meth:`_start_thread` and
    stops with :meth:`_stop_thread`; its loop runs until ``_stop`` is set.
    """

    def __init__(self, thread_name: str) -> None:
        self._thread_name = thread_name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _start_thread(self, target: Callable[[], object]) -> None:
        """Clear the stop flag and run ``target`` on a new daemon thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=target, name=self._thread_name, daemon=True)
        self._thread.start()

    def _stop_thread(self, join_s: float, *, drain_s: float = 0.0, busy: Callable[[], object] | None = None) -> None:
        """Wait up to ``drain_s`` while ``busy()`` is true (shutdown only: let pending work go out), then set the
        stop flag and wait up to ``join_s`` for the thread (unless called from that thread)."""
        if busy is not None:
            end = time.monotonic() + drain_s
            while time.monotonic() < end and busy():
                time.sleep(0.01)
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=join_s)
