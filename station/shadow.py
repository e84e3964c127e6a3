"""Shadow mode: a candidate model judges live parts beside the production model, without acting.

:class:`ShadowRunner` is a bus subscriber: the line publishes every final
:class:`~station.contracts.PartResult` (with its frames) and goes on; the runner takes it from its own
bounded queue, in its own thread (at a lower CPU priority), runs the candidate through the same
code the line runs (:func:`station.pipeline.inspect_part` with the production
:class:`~station.decide.Decider`, so the same rules), and writes one ``shadow_results`` row per
part (production outcome, shadow outcome, shadow model id/sha, its defects as JSON, time).

It is never in the hot path: when it cannot keep up, its queue fills and the bus drops parts for
it (counted: ``dropped``), the line is not slowed. Nothing it decides reaches the ejector, the PLC
or the ``inspections`` table. Its verdicts are evidence for a promotion decision, and the review
queue (``labeling.queue``) ranks the parts where the two disagree near the top.

Reconciliation while running or after :meth:`ShadowRunner.stop`::

    parts_published = received + dropped + (in the queue: ``pending`` while running, ``abandoned`` after stop)
    received = recorded + skipped (no frames) + errors (+ judged but not yet written while running)
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from station import serialize

from .bus import Bus, Subscription
from .contracts import Outcome, PartResult
from .decide import Decider
from .inspection.base import Inspector
from .inspection.model_meta import read_model_meta
from .pipeline import inspect_part
from .store import shadow_results
from .store.db import open_db
from .store.shadow_results import disagreements as disagreements  # the readers, kept importable from here
from .store.shadow_results import summary as summary

log = logging.getLogger(__name__)

EJECTING = (Outcome.FAIL.value, Outcome.FAILSAFE.value)


class ShadowError(RuntimeError):
    """Shadow mode cannot start or stop as asked; the message says why."""


@dataclass
class ShadowStats:
    """Counters of one shadow run (written by the runner thread only)."""

    model_id: str
    model_sha: str
    started_wall: float
    received: int = 0  # part results taken from the queue
    recorded: int = 0  # rows written to shadow_results
    skipped: int = 0  # parts without frames (dropped frame on the line): nothing to judge
    errors: int = 0  # parts lost to an unexpected error (logged)
    differs: int = 0  # recorded parts whose outcome differs from production
    eject_differs: int = 0  # ... whose eject decision differs
    inspect_ms_total: float = 0.0
    stopped_wall: float | None = None
    last_error: str = ""
    pending: int = 0  # judged, waiting to be written
    abandoned: int = 0  # still queued when shadow mode stopped
    extra: dict[str, Any] = field(default_factory=dict)


def build_shadow_inspector(model_path: Path, base: Any = None) -> Inspector:
    """The candidate's inspector (onnx or anomaly, by the file's task): the line's settings, one thread, no keep-alive,
    no spinning.

    One thread so it cannot take both cores from the line; raises the backend's ModelLoadError for
    a file that is not a usable model.
    """
    from .inspection.loader import inspector_for_file

    return inspector_for_file(model_path, base, onnx_overrides={"keepalive_s": 0.0, "allow_spinning": False}, threads=1)


class ShadowRunner:
    """Runs a candidate inspector on every published part and records its verdicts (see the module docstring)."""

    def __init__(
        self,
        bus: Bus,
        db_path: Path | str,
        inspector: Inspector,
        decider: Callable[[], Decider],
        *,
        model_sha: str,
        reject_uncertain: bool = True,
        queue_size: int = 16,
        batch_size: int = 32,
        flush_s: float = 0.5,
        nice: int = 10,
    ):
        if queue_size < 1 or batch_size < 1:
            raise ShadowError(f"queue_size and batch_size must be >= 1 (got {queue_size}, {batch_size})")
        self.bus = bus
        self.db_path = Path(db_path)
        self.inspector = inspector
        self._decider = decider
        self.reject_uncertain = reject_uncertain
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.flush_s = flush_s
        self.nice = nice
        self.stats = ShadowStats(inspector.model_id, model_sha, time.time())
        self._sub: Subscription | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    # ------------------------------------------------------------------ control

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def start(self) -> ShadowRunner:
        """Subscribe to the bus and start the worker thread (the model is warmed up first, off the line)."""
        if self._thread is not None:
            raise ShadowError("this shadow runner was already started")
        self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
        self._thread.start()
        self._ready.wait(60)
        if self._startup_error is not None:
            raise ShadowError(
                f"shadow model {self.stats.model_id} could not start: {self._startup_error}"
            ) from self._startup_error
        log.info("shadow mode: %s judges every part beside the line (queue %d)", self.stats.model_id, self.queue_size)
        return self

    def stop(self, timeout: float = 10.0) -> dict[str, Any]:
        """Unsubscribe, finish the part in hand, write what is judged, close the model; returns the final counters."""
        self._stop.set()
        sub = self._sub
        if sub is not None:
            self.bus.unsubscribe(sub)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("shadow thread did not stop within %.0f s", timeout)
        if self.stats.stopped_wall is None:
            self.stats.stopped_wall = time.time()
        if sub is not None:  # parts still queued when shadow mode stopped: never judged, counted
            self.stats.abandoned += sum(isinstance(ev, PartResult) for ev in sub.drain())
        return self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        """The counters now (JSON-ready), with the bus-side drops."""
        s = self.stats
        sub = self._sub
        judged = s.recorded + s.pending
        return {
            "model_id": s.model_id,
            "model_sha": s.model_sha,
            "running": self.running,
            "started_wall": s.started_wall,
            "stopped_wall": s.stopped_wall,
            "received": s.received,
            "recorded": s.recorded,
            "pending": s.pending + (sub.pending if sub is not None else 0),
            "dropped": sub.dropped_of(PartResult) if sub is not None else 0,
            "skipped": s.skipped,
            "abandoned": s.abandoned,
            "errors": s.errors,
            "differs": s.differs,
            "eject_differs": s.eject_differs,
            "queue_size": self.queue_size,
            "mean_inspect_ms": round(s.inspect_ms_total / judged, 2) if judged else None,
            "last_error": s.last_error,
        }

    # ------------------------------------------------------------------ worker

    def _ejects(self, outcome: str) -> bool:
        return outcome in EJECTING or (self.reject_uncertain and outcome == Outcome.UNCERTAIN.value)

    def _lower_priority(self) -> None:
        if not self.nice:
            return
        try:  # Linux: the nice value of this thread only (the line's threads keep theirs)
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + self.nice))
        except (OSError, AttributeError) as e:
            log.info("shadow: could not lower the thread priority (%s)", e)

    def _run(self) -> None:
        db: sqlite_utils.Database | None = None
        try:
            self._lower_priority()
            self.inspector.warmup()
            db = open_db(self.db_path, synchronous="NORMAL", migrate=False)
            self._sub = self.bus.subscribe("shadow", maxsize=self.queue_size)
        except Exception as e:  # noqa: BLE001 - reported to start(), which raises it to the caller
            self._startup_error = e
            self._ready.set()
            _close_quietly(self.inspector)
            if db is not None:
                db.close()
            return
        self._ready.set()
        batch: list[tuple[Any, ...]] = []
        last_flush = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    ev = self._sub.get(timeout=self.flush_s)
                except queue.Empty:
                    ev = None
                if isinstance(ev, PartResult):
                    self.stats.received += 1
                    row = self._judge(ev)
                    if row is not None:
                        batch.append(row)
                        self.stats.pending = len(batch)
                if batch and (len(batch) >= self.batch_size or time.monotonic() - last_flush >= self.flush_s):
                    self._flush(db, batch)
                    batch = []
                    last_flush = time.monotonic()
        finally:
            if batch:
                self._flush(db, batch)
            db.close()
            _close_quietly(self.inspector)
            self.stats.stopped_wall = time.time()

    def _judge(self, result: PartResult) -> tuple[Any, ...] | None:
        if not result.frames:
            self.stats.skipped += 1
            return None
        try:
            t0 = time.monotonic()
            shadow = inspect_part(self.inspector, self._decider(), result.trigger, result.frames)
            ms = (time.monotonic() - t0) * 1000
        except Exception as e:  # noqa: BLE001 - one bad part must not end shadow mode
            log.exception("shadow: part %d", result.trigger.part_id)
            self.stats.errors += 1
            self.stats.last_error = f"part {result.trigger.part_id}: {type(e).__name__}: {e}"
            return None
        prod, sh = str(result.verdict.outcome), str(shadow.verdict.outcome)
        differs = prod != sh
        eject_differs = self._ejects(prod) != self._ejects(sh)
        self.stats.differs += differs
        self.stats.eject_differs += eject_differs
        self.stats.inspect_ms_total += ms
        defects = [
            {
                "class_name": d.class_name,
                "confidence": round(d.confidence, 4),
                "box": [round(v, 1) for v in d.box_xyxy],
                "camera_id": d.camera_id,
                "action": d.action,
                "rule": d.rule,
            }
            for d in shadow.verdict.defects
        ]
        return (
            result.trigger.part_id,
            time.time(),
            prod,
            result.verdict.model_id,
            sh,
            shadow.verdict.model_id,
            self.stats.model_sha,
            serialize.dumps(list(shadow.verdict.reasons)),
            serialize.dumps(defects),
            int(differs),
            int(eject_differs),
            round(ms, 3),
        )

    def _flush(self, db: sqlite_utils.Database, rows: list[tuple[Any, ...]]) -> None:
        try:
            shadow_results.append_rows(db, rows)
            self.stats.recorded += len(rows)
        except Exception as e:  # noqa: BLE001 - a locked/full database loses these shadow rows, never the line's
            log.exception("shadow: writing %d rows failed", len(rows))
            self.stats.errors += len(rows)
            self.stats.last_error = f"database: {type(e).__name__}: {e}"
        self.stats.pending = 0


def _close_quietly(inspector: Inspector) -> None:
    try:
        inspector.close()
    except Exception:  # noqa: BLE001 - closing the shadow model must never disturb the line
        log.exception("closing shadow model %s failed", getattr(inspector, "model_id", "?"))


def start_for_station(station: Any, model_path: Path, *, queue_size: int = 16, nice: int = 10) -> ShadowRunner:
    """A started :class:`ShadowRunner` for ``station`` (its bus, database, onnx settings and Decider)."""
    path = Path(model_path)
    meta = read_model_meta(path)  # raises ModelLoadError naming the file
    base = station.cfg.inspector if station.cfg.inspector.type in ("onnx", "anomaly") else None
    inspector = build_shadow_inspector(path, base)
    runner = ShadowRunner(
        station.bus,
        station.cfg.store.db_path,
        inspector,
        lambda: station.decider,
        model_sha=meta.sha256,
        reject_uncertain=station.cfg.rules.uncertain_action == "reject",
        queue_size=queue_size,
        nice=nice,
    )
    return runner.start()
