"""Hot swap: replace the running model between two parts, without stopping the line.

:class:`SwappableInspector` is an Inspector that delegates to the current one. ``load_async``
builds and warms the new inspector in a background thread (the line keeps running on the old
model meanwhile), then swaps under the same lock ``inspect()`` holds - a part in progress finishes
on the old model, the next part uses the new one - and closes the old model. A load that fails
(:class:`~station.inspection.base.ModelLoadError` or anything else) leaves the running model
untouched and is reported through ``on_done`` and ``history``.

A model call that never returns holds the lock forever. The watchdog then calls
:meth:`SwappableInspector.abandon_stuck`: the stuck call keeps the old lock, every later call
takes a fresh one, and the stuck instance is never closed (closing a model under a running C
call can crash the process); ``load_async`` may swap in a fresh instance meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..contracts import Detections, Frame
from .base import Inspector

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SwapRecord:
    """One load attempt: what ran before, what was asked, how it ended."""

    t_wall: float
    t_ns: int  # time.monotonic_ns() when the swap happened (or the load failed)
    old_model_id: str
    new_model_id: str | None  # None when the load failed
    ok: bool
    error: str = ""
    load_s: float = 0.0


class SwappableInspector:
    """An Inspector whose model can be replaced while ``inspect()`` keeps being called."""

    def __init__(self, initial: Inspector):
        self._current: Inspector = initial
        self._lock = threading.Lock()  # held by inspect(); the swap takes it too
        self._load_lock = threading.Lock()  # one load at a time, in call order
        self._history: list[SwapRecord] = []
        self._closed = False
        self._stuck: list[Inspector] = []  # instances abandoned in a call that never returned: never closed

    # ------------------------------------------------------------------ Inspector protocol

    @property
    def current(self) -> Inspector:
        """The inspector serving parts now."""
        return self._current

    @property
    def model_id(self) -> str:
        """The current model's id."""
        return self._current.model_id

    @property
    def names(self) -> tuple[str, ...]:
        """The current model's class names."""
        return self._current.names

    @property
    def ready(self) -> bool:
        """The current inspector's readiness."""
        return self._current.ready

    @property
    def history(self) -> tuple[SwapRecord, ...]:
        """Every load attempt so far, oldest first."""
        return tuple(self._history)

    def learn(self, frame: Frame) -> None:
        """Pass the frame to the current inspector."""
        with self._lock:
            self._current.learn(frame)

    def inspect(self, frame: Frame) -> Detections:
        """Inspect with the current model; a swap waits until this part is done."""
        with self._lock:
            return self._current.inspect(frame)

    def warmup(self) -> None:
        """Warm the current inspector."""
        with self._lock:
            self._current.warmup()

    def close(self, timeout_s: float = 5.0) -> None:
        """Close the current inspector (waits up to ``timeout_s`` for a load or a call in progress)."""
        got_load = self._load_lock.acquire(timeout=timeout_s)
        try:
            lock = self._acquire_current(timeout_s)
            self._closed = True
            if lock is None:
                log.warning("inspector %s is stuck in a call: not closed", self._current.model_id)
                return
            try:
                if not self._is_stuck(self._current):
                    self._current.close()
            finally:
                lock.release()
        finally:
            if got_load:
                self._load_lock.release()

    @property
    def stuck(self) -> tuple[Inspector, ...]:
        """Instances abandoned in a call that never returned."""
        return tuple(self._stuck)

    def abandon_stuck(self) -> Inspector:
        """The call in progress never returns and holds the lock: leave it behind.

        Later calls take a fresh lock, on the same instance until a fresh one is swapped in
        (``load_async``); the stuck instance is never closed. Returns it.
        """
        stuck = self._current
        if not self._is_stuck(stuck):
            self._stuck.append(stuck)
        self._lock = threading.Lock()
        log.error(
            "inspector %s abandoned in a call that does not return: later parts take a fresh lock", stuck.model_id
        )
        return stuck

    def _is_stuck(self, inspector: Inspector) -> bool:
        return any(inspector is s for s in self._stuck)

    def _acquire_current(self, timeout_s: float | None = None) -> threading.Lock | None:
        """Acquire the lock in force (it changes when a stuck call is abandoned); None after ``timeout_s``."""
        end = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            lock = self._lock
            if lock.acquire(timeout=0.05):
                if lock is self._lock:
                    return lock
                lock.release()  # abandoned meanwhile: take the new one
                continue
            if end is not None and time.monotonic() >= end:
                return None

    # ------------------------------------------------------------------ swapping

    def load_async(
        self,
        factory: Callable[[], Inspector],
        on_done: Callable[[Exception | None], None] | None = None,
    ) -> threading.Thread:
        """Build + warm ``factory()`` in a background thread, then swap it in between two parts.

        ``on_done(None)`` after a swap, ``on_done(error)`` when the load failed (the running model
        is untouched). Returns the (daemon) thread, so callers may ``join()`` it.
        """
        t = threading.Thread(target=self._load, args=(factory, on_done), name="model-load", daemon=True)
        t.start()
        return t

    def _load(self, factory: Callable[[], Inspector], on_done: Callable[[Exception | None], None] | None) -> None:
        with self._load_lock:
            old_id = self._current.model_id
            t0 = time.monotonic()
            error: Exception | None = None
            new: Inspector | None = None
            try:
                if self._closed:
                    raise RuntimeError("inspector is closed: no more swaps")
                new = factory()
                new.warmup()  # off the line: the first part on the new model is not slow
            except Exception as e:  # any failure must leave the running model alone
                error = e
                if new is not None:
                    _close_quietly(new)
            load_s = time.monotonic() - t0
            if error is not None:
                self._history.append(
                    SwapRecord(time.time(), time.monotonic_ns(), old_id, None, False, str(error), load_s)
                )
                log.error("model load failed, keeping %s: %s", old_id, error)
            else:
                assert new is not None
                lock = self._acquire_current()  # between two parts (the lock in force, not a stuck one)
                assert lock is not None
                try:
                    old = self._current
                    self._current = new
                    rec = SwapRecord(time.time(), time.monotonic_ns(), old.model_id, new.model_id, True, "", load_s)
                    self._history.append(rec)
                finally:
                    lock.release()
                log.info("model swapped: %s -> %s (loaded in %.2f s)", old.model_id, new.model_id, load_s)
                if not self._is_stuck(old):
                    _close_quietly(old)
                del old, new  # the old model's memory goes now, not at the next load
        if on_done is not None:
            try:
                on_done(error)
            except Exception:  # a broken callback must not kill the loader thread silently
                log.exception("model load on_done callback failed")


def _close_quietly(inspector: Inspector) -> None:
    try:
        inspector.close()
    except Exception:  # closing a model must never break the line
        log.exception("closing inspector %s failed", getattr(inspector, "model_id", "?"))
