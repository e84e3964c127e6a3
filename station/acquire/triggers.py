"""Trigger sources: what tells the station a part is at the camera."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from ..config import SoftwareTriggerConfig, TimerTriggerConfig, TriggerConfig
from ..drivers import Registry
from ..services import ThreadWorker

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


class ThreadedTrigger(ThreadWorker):
    """What the trigger sources that run one thread share: the thread, its stop flag, the part count.

    A subclass implements ``_run`` (loop until ``_stop`` is set or ``_counted()`` says the run is
    complete); ``done`` is set when the thread ends or the source is stopped.
    """

    def __init__(self, thread_name: str, max_parts: int | None):
        super().__init__(thread_name)
        self.max_parts = max_parts
        self.count = 0
        self.done = threading.Event()

    def start(self) -> None:
        """Start the thread."""
        self.done.clear()
        self._start_thread(self._run_until_done)

    def _run_until_done(self) -> None:
        self._run()
        self.done.set()

    def _run(self) -> None:
        raise NotImplementedError

    def _counted(self) -> bool:
        """Count one part; True when that was the last of a bounded run (``max_parts``)."""
        self.count += 1
        return self.max_parts is not None and self.count >= self.max_parts

    @property
    def threads(self) -> list[threading.Thread]:
        """The thread that calls ``fire``, once started."""
        return [self._thread] if self._thread is not None else []

    def stop(self) -> None:
        """Stop the thread (a part being waited for, if any, is not created)."""
        self._stop_thread(5)
        self.done.set()


class TimerTrigger(ThreadedTrigger):
    """A part every ``60 / parts_per_minute`` s on an absolute schedule (no drift)."""

    def __init__(self, cfg: TimerTriggerConfig, fire: FireFn, max_parts: int | None = None):
        super().__init__("trigger-timer", max_parts)
        self.period_ns = int(60e9 / cfg.parts_per_minute)
        self.fire = fire

    def _run(self) -> None:
        next_t = time.monotonic_ns() + self.period_ns
        while not self._stop.is_set():
            wait = (next_t - time.monotonic_ns()) / 1e9
            if wait > 0 and self._stop.wait(wait):
                break
            self.fire("timer")
            if self._counted():
                break
            next_t += self.period_ns
            now = time.monotonic_ns()
            if next_t < now:  # fell behind (machine stalled): skip, never burst
                next_t = now + self.period_ns


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
