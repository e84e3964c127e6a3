"""Trigger sources: what tells the station a part is at the camera."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from ..config import SoftwareTriggerConfig, TimerTriggerConfig, TriggerConfig
from ..drivers import Registry

log = logging.getLogger(__name__)

FireFn = Callable[[str], object]


class TriggerSource(Protocol):
    """Calls ``fire(source_name)`` once per part."""

    def start(self) -> None:
        """Begin producing triggers."""

    def stop(self) -> None:
        """Stop producing triggers."""

    @property
    def threads(self) -> list[threading.Thread]:
        """The threads that call ``fire`` (the station gives them the line's real-time priority)."""
        ...


class TimerTrigger:
    """A part every ``60 / parts_per_minute`` s on an absolute schedule (no drift)."""

    def __init__(self, cfg: TimerTriggerConfig, fire: FireFn, max_parts: int | None = None):
        self.period_ns = int(60e9 / cfg.parts_per_minute)
        self.fire = fire
        self.max_parts = max_parts
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.count = 0
        self.done = threading.Event()

    def start(self) -> None:
        """Start the timer thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="trigger-timer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_t = time.monotonic_ns() + self.period_ns
        while not self._stop.is_set():
            wait = (next_t - time.monotonic_ns()) / 1e9
            if wait > 0 and self._stop.wait(wait):
                break
            self.fire("timer")
            self.count += 1
            if self.max_parts is not None and self.count >= self.max_parts:
                break
            next_t += self.period_ns
            now = time.monotonic_ns()
            if next_t < now:  # fell behind (machine stalled): skip, never burst
                next_t = now + self.period_ns
        self.done.set()

    @property
    def threads(self) -> list[threading.Thread]:
        """The timer thread, once started."""
        return [self._thread] if self._thread is not None else []

    def stop(self) -> None:
        """Stop the timer thread."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)


class SoftwareTrigger:
    """Parts are triggered by calls to ``Station.trigger()`` (API, tests, PLC bit)."""

    def __init__(self, cfg: SoftwareTriggerConfig, fire: FireFn, max_parts: int | None = None):
        self.fire = fire
        self.done = threading.Event()

    def start(self) -> None:
        """Nothing to start."""

    @property
    def threads(self) -> list[threading.Thread]:
        """None: ``fire`` runs in the caller's thread."""
        return []

    def stop(self) -> None:
        """Nothing to stop."""
        self.done.set()


TRIGGERS: Registry[TriggerSource] = Registry.from_union("trigger", TriggerConfig)
