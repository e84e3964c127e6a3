"""The one SQLite writer: drains the bus into the database, a batch per transaction.

The recorder owns a thread and its own connection (opened in that thread).
Each loop takes up to ``batch_size`` events from its bus subscription,
encodes and stores the kept images (outside any transaction: encoding is the
slow part), then writes the whole batch in ONE transaction: the inspections,
their defects and images, alarms, and the ``counters`` row with
``records_written`` already counting this batch. Only after COMMIT does the
in-memory ``counters.records_written`` move, so the database and the counters
agree at every commit.

When the database cannot be written (locked by another process, disk full,
read-only file system, database file or folder deleted) the thread does not
die: it logs, reports an alarm through ``on_status``, keeps the batch it holds
(at most ``batch_size`` records) and retries with exponential backoff.
Meanwhile the records wait in its bounded queue (``store.queue_size``; memory).
With a spill file (``spill_path``, :mod:`station.store.spill`), once that queue
is half full the held batch is appended to the file (fsynced) and the next one
taken, so nothing is dropped while the disk of the spill file has room; the
file is replayed into the database as soon as a write succeeds again. Without
one, the queue fills and the bus drops (and counts) what does not fit:
``bus.publish`` never blocks. Before each write the recorder checks that its
database file is still the one it opened (a deleted or replaced file would
otherwise take writes that nobody can read); if it is gone, writes fail until
the file (or its folder) is back, then the recorder reopens it.

At stop, what cannot be written within the stop timeout (the held batch and
everything still queued, rows only: no image is encoded at stop) is appended
to the spill file, replayed by :func:`replay_spill` at the next start, or,
when there is no spill file or it cannot be written either, counted as
dropped. Nothing is left "pending" in a stopped recorder except spilled
records, and the stop log line says how many were written, spilled and
dropped. Reconciliation, at every moment and after stop::

    written + records_dropped + pending == PartResults published to this subscription

where ``pending`` is queued + held + spilled-and-not-yet-replayed (:attr:`spilled`)
and ``records_dropped`` is ``subscription.dropped`` plus any record refused
as invalid (duplicate part id, CHECK constraint) plus those lost at stop. Caveat: the bus counts drops
of *every* event, so a StatusEvent dropped by a full queue is counted as a
dropped record too. The recorder mirrors ``records_dropped`` into
``counters.records_dropped`` (nobody else should increment it).

Free space: after each commit (and after a failed write) the recorder runs the
image store's disk budget and free-space watermark
(:meth:`ImageStore.enforce_free_space`): images are deleted before SQLite, on
the same disk by default, runs short. ``<component>:disk`` is an alarm while
free space stays below the floor, "ok" when it is back.

A record that the database refuses (IntegrityError) is dropped, logged and
counted rather than retried forever: retrying cannot fix bad data.

Heat maps: for each kept image whose frame's ``Detections`` carry an ``anomaly_map``, the map
is stored too (:meth:`ImageStore.save_map`, a small grayscale PNG) and gets an
``anomaly_maps`` row tied to the image row, so it is deleted with the image. The part's
``image_score`` (the highest over its frames) goes into ``inspections.image_score``. A map
that cannot be stored is logged and skipped; the part is recorded anyway.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..bus import Subscription
from ..contracts import Outcome, PartResult, StatusEvent
from ..counters import Counters
from ..serialize import dumps
from .db import StoreError, is_memory, open_db, write_transaction
from .heatmaps import frame_score
from .images import ImageStore, StoredImage
from .part_rows import PartRows, ReplayResult, insert_part, part_rows, replay_at_start, replay_spill, to_spill
from .spill import SpillFile

log = logging.getLogger(__name__)

__all__ = ["Recorder", "ReplayResult", "replay_at_start", "replay_spill"]  # replay_*: also importable from here

_INSERT_ALARM = "INSERT INTO alarms (t_wall, component, state, message) VALUES (?, ?, ?, ?)"
_UPSERT_COUNTERS = """
INSERT INTO counters (key, counters, last_part_id, updated_at) VALUES ('station', ?, ?, ?)
ON CONFLICT (key) DO UPDATE SET counters = excluded.counters,
    last_part_id = MAX(counters.last_part_id, excluded.last_part_id), updated_at = excluded.updated_at
"""


class Recorder:
    """Writes PartResults and alarms from a bus subscription to SQLite, in batches."""

    def __init__(
        self,
        db_path: Path | str,
        images: ImageStore,
        counters: Counters,
        subscription: Subscription,
        batch_size: int = 64,
        *,
        on_status: Callable[[StatusEvent], None] | None = None,
        on_commit: Callable[[list[int]], None] | None = None,
        station: str = "",
        component: str = "recorder",
        busy_timeout_ms: int = 1000,
        max_batch_s: float = 0.5,
        max_backoff_s: float = 5.0,
        poll_s: float = 0.2,
        spill_path: Path | str | None = None,
        synchronous: str = "FULL",
        free_check_s: float = 0.5,
    ):
        """``on_status`` gets the recorder's own alarms: component ``component`` "alarm" when
        database writes fail and "ok" when they resume (these are also written to the alarms
        table directly, since the database may be down when they happen), and
        ``<component>:images`` "warning"/"ok" when image files cannot be saved; ``on_commit`` gets the part ids of each
        committed batch. Both run on the
        recorder thread and must not block. ``max_batch_s`` caps how long a batch is gathered
        before it is written; ``busy_timeout_ms`` is how long one write waits for a lock.
        ``spill_path``: the spill file (None: what cannot be written is dropped and counted);
        ``synchronous``: "FULL" or "NORMAL" (see :mod:`station.store.db`); ``free_check_s``: at
        most one free-space check (``os.statvfs``) per this many seconds while writes succeed."""
        if is_memory(db_path):
            raise ValueError("the recorder needs a database file (store.db_path), not an in-memory database")
        if batch_size < 1:
            raise ValueError(f"store.batch_size must be >= 1, not {batch_size}")
        self.db_path = Path(db_path)
        self.images = images
        self.counters = counters
        self.subscription = subscription
        self.batch_size = batch_size
        self.on_status = on_status
        self.on_commit = on_commit
        self.station = station
        self.component = component
        self.busy_timeout_ms = busy_timeout_ms
        self.max_batch_s = max_batch_s
        self.max_backoff_s = max_backoff_s
        self.poll_s = poll_s
        if spill_path is not None and Path(spill_path).resolve() == self.db_path.resolve():
            raise ValueError(f"the spill file must not be the database: {spill_path}")
        self.spill = SpillFile(spill_path) if spill_path is not None else None
        self.synchronous = synchronous
        self.free_check_s = free_check_s
        self.run_id = uuid.uuid4().hex

        self._lock = threading.Lock()
        self._batch: list[PartRows] = []
        self._alarm_rows: list[tuple[float, str, str, str]] = []
        self._in_hand = 0  # PartResults taken from the queue and not yet committed or refused
        self._written = 0
        self._rejected = 0
        self._dropped_synced = 0
        self._max_part_id = 0
        self._stalled_since: float | None = None
        self.last_error: str | None = None
        self._image_failing = False

        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._ready = threading.Event()
        self._open_error: BaseException | None = None
        self._deadline = math.inf
        self._lost = 0  # records that could not be written, nor spilled, at stop (part of records_dropped)
        self._spilled = 0  # records of this run in the spill file, not yet in the database (part of pending)
        self._spilled_total = 0
        self._db: Any = None
        self._db_id: tuple[int, int] | None = None
        self._next_free_check = 0.0
        self._disk_short = False
        self.stop_report: dict[str, Any] | None = None

    # -- public state -------------------------------------------------------
    @property
    def pending(self) -> int:
        """PartResults queued for the recorder plus those in its hands, not yet committed."""
        n = self.subscription.results_waiting()
        with self._lock:
            return n + self._in_hand + self._spilled

    @property
    def spilled(self) -> int:
        """Records of this run in the spill file, not yet in the database (included in :attr:`pending`)."""
        return self._spilled

    @property
    def records_dropped(self) -> int:
        """Records that will never be written: dropped by the bus (full queue), refused as invalid, or lost at stop."""
        return self.subscription.dropped_of(PartResult) + self._rejected + self._lost

    @property
    def records_written(self) -> int:
        """PartResults committed by this recorder since it was created."""
        return self._written

    @property
    def records_rejected(self) -> int:
        """PartResults the database refused (duplicate part id, invalid values); included in records_dropped."""
        return self._rejected

    @property
    def stalled(self) -> bool:
        """True while writes are failing and being retried."""
        return self._stalled_since is not None

    @property
    def running(self) -> bool:
        """True while the writer thread runs."""
        return self._thread is not None and self._thread.is_alive()

    # -- lifecycle ----------------------------------------------------------
    def start(self, open_timeout_s: float = 30.0) -> None:
        """Start the writer thread; raises StoreError if its database cannot be opened."""
        if self._thread is not None:
            raise RuntimeError("recorder already started")
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()
        if not self._ready.wait(open_timeout_s):
            raise StoreError(f"{self.db_path}: the recorder could not open the database within {open_timeout_s:g} s")
        if self._open_error is not None:
            self._thread.join()
            raise self._open_error

    def stop(self, timeout: float = 10.0) -> bool:
        """Write everything queued, then stop. Returns True if every record is in the database.

        If the database stays unwritable for ``timeout`` seconds the thread gives
        up: what it held and what is still queued goes to the spill file (counted
        in :attr:`pending` and :attr:`spilled`, replayed at the next start) or, with
        no usable spill file, is counted in :attr:`records_dropped`. The log line
        and :attr:`stop_report` say which.
        """
        if self._thread is None:
            return True
        self._deadline = time.monotonic() + timeout
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout + 2 * self.busy_timeout_ms / 1000 + 5.0)
        if self._thread.is_alive():
            log.error("recorder did not stop within %.1f s (%d records pending)", timeout, self.pending)
            return False
        self._sync_dropped()
        left = self.pending
        report = {
            "written": self._written,
            "dropped": self.records_dropped,
            "spilled": self._spilled,
            "pending": left - self._spilled,
            "lost_at_stop": self._lost,
            "spill_path": str(self.spill.path) if self.spill else None,
        }
        self.stop_report = report
        if self._lost or self._spilled:
            log.error(
                "recorder stopped: %d records written this run; NOT written to %s: %d spilled to %s (replayed at the "
                "next start), "
                "%d dropped at stop; records_dropped %d in all",
                self._written,
                self.db_path,
                self._spilled,
                report["spill_path"],
                self._lost,
                report["dropped"],
            )
        elif report["dropped"]:
            log.warning(
                "recorder stopped: %d records written, %d dropped (counted in records_dropped)",
                self._written,
                report["dropped"],
            )
        return left == 0 and self._lost == 0

    # -- thread -------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._open()
        except BaseException as exc:  # reported to start() in the caller's thread
            self._open_error = exc
            self._ready.set()
            return
        self._ready.set()
        backoff = 0.05
        try:
            while True:
                self._sync_dropped()
                stopping = self._stopping.is_set()
                if (
                    not self._batch
                ):  # held alarm rows alone must not stop the recorder taking records (and spilling them)
                    if stopping and (not self.subscription.pending or time.monotonic() > self._deadline):
                        if not self._alarm_rows:
                            if self._spilled and not self.stalled:
                                self._replay_own()
                            break
                    else:
                        self._collect(block=not stopping and not self._alarm_rows)
                if not self._batch and not self._alarm_rows:
                    continue
                if self._write():
                    backoff = 0.05
                    if self._spilled:
                        self._replay_own()
                    self._enforce_budget()
                    continue
                self._check_free_space(force=True)  # a full disk: make room (images first) before the retry
                if stopping and time.monotonic() > self._deadline:
                    log.error("recorder gives up at stop: %d records not written (%s)", self._in_hand, self.last_error)
                    break
                if self._spill_if_filling():
                    continue
                self._wake.wait(backoff)
                self._wake.clear()
                backoff = min(backoff * 2, self.max_backoff_s)
            self._dispose_unwritten()
        finally:
            if self._db is not None:
                self._db.close()

    def _open(self) -> None:
        self._db = open_db(self.db_path, synchronous=self.synchronous, busy_timeout_ms=self.busy_timeout_ms)  # type: ignore[arg-type]
        st = os.stat(self.db_path)
        self._db_id = (st.st_dev, st.st_ino)

    def _check_db_file(self) -> None:
        """Raise sqlite3.OperationalError if the database file is not the one we opened (deleted, replaced).

        A deleted file still takes writes through the open connection, and they would be lost
        when it is closed. If a database file is back at ``db_path`` (folder restored), reopen it.
        """
        try:
            st = os.stat(self.db_path)
        except FileNotFoundError:
            if self.db_path.parent.is_dir():  # the file alone was removed: start a new one in its folder
                self._reopen()
                return
            raise sqlite3.OperationalError(
                f"database file {self.db_path} is gone (its folder was deleted or unmounted)"
            ) from None
        except OSError as exc:
            raise sqlite3.OperationalError(f"database file {self.db_path}: {exc}") from None
        if (st.st_dev, st.st_ino) != self._db_id:
            self._reopen()

    def _reopen(self) -> None:
        log.warning("recorder: %s was deleted or replaced; reopening it", self.db_path)
        old = self._db
        try:
            self._open()
        except (StoreError, OSError, sqlite3.Error) as exc:
            raise sqlite3.OperationalError(
                f"database file {self.db_path} was deleted or replaced and cannot be reopened: {exc}"
            ) from None
        if old is not None:
            with contextlib.suppress(sqlite3.Error):
                old.close()

    def _spill_if_filling(self) -> bool:
        """While writes fail: move the held batch to the spill file once the queue is half full."""
        if self.spill is None or not self._batch:
            return False
        sub = self.subscription
        if sub.maxsize and sub.pending < sub.maxsize // 2 and not self._stopping.is_set():
            return False
        n = self._spill_batch()
        # the writes are failing: move what is queued too, without a write attempt (a lock wait) per batch
        while n and self.subscription.pending:
            self._collect(block=False)
            if not self._batch or not self._spill_batch():
                break
        return n > 0

    def _spill_batch(self) -> int:
        """Append the held batch to the spill file; returns how many (0 if the file cannot be written)."""
        assert self.spill is not None
        batch = self._batch
        try:
            self.spill.append(to_spill(p, self.run_id) for p in batch)
        except (OSError, ValueError) as exc:
            log.error("recorder: spill file %s cannot be written either: %s", self.spill.path, exc)
            return 0
        with self._lock:
            self._in_hand -= len(batch)
            self._spilled += len(batch)
            self._spilled_total += len(batch)
            self._batch = []
        log.warning(
            "recorder: %d records spilled to %s (%d there in all) while %s is not writable",
            len(batch),
            self.spill.path,
            self._spilled,
            self.db_path,
        )
        return len(batch)

    def _replay_own(self) -> None:
        """The database writes again: move the spill file into it (one transaction)."""
        try:
            self._check_db_file()
            res = replay_spill(self._db, self.spill.path if self.spill else None, self.images, run=self.run_id)
        except (sqlite3.Error, OSError) as exc:
            log.warning("recorder: spill file not replayed yet: %s", exc)
            return
        with self._lock:
            lost = self._spilled - res.own_inserted
            self.counters.add("records_written", res.own_inserted)
            self._written += res.own_inserted
            self._rejected += max(0, lost)
            self._spilled = 0
        self._sync_dropped()
        self._persist_counters()

    def _persist_counters(self) -> None:
        try:
            with write_transaction(self._db):
                self._db.conn.execute(
                    _UPSERT_COUNTERS, (dumps(self.counters.snapshot().as_dict()), self._max_part_id, time.time())
                )
        except sqlite3.Error as exc:
            log.debug("counters not persisted: %s", exc)

    def _dispose_unwritten(self) -> None:
        """At stop: what could not be written (held + still queued) is spilled, or counted as dropped."""
        for event in self.subscription.drain():
            if isinstance(event, PartResult):
                self._take(event, keep_images=False)
        if not self._batch:
            return
        n = len(self._batch)
        if self.spill is not None and self._spill_batch():
            return
        with self._lock:
            self._in_hand -= n
            self._lost += n
            self._batch = []
        self._sync_dropped()
        log.error("recorder: %d records could not be written at stop and are dropped (counted in records_dropped)", n)

    def _collect(self, block: bool) -> None:
        """Take up to ``batch_size`` events; store kept images as they come."""
        t_first: float | None = None
        for taken in range(self.batch_size):
            try:
                event = self.subscription.get(timeout=self.poll_s if taken == 0 and block else 0)
            except queue.Empty:
                return
            if t_first is None:
                t_first = time.monotonic()
            self._take(event)
            if time.monotonic() - t_first > self.max_batch_s:
                return

    def _take(self, event: Any, keep_images: bool = True) -> None:
        if isinstance(event, PartResult):
            with self._lock:
                self._in_hand += 1
            try:
                prepared = self._prepare(event, keep_images)
            except Exception:  # a malformed result must not stop the recorder
                log.exception("recorder: cannot record part %s; dropped", getattr(event.trigger, "part_id", "?"))
                with self._lock:
                    self._in_hand -= 1
                    self._rejected += 1
                return
            self._batch.append(prepared)
            self._max_part_id = max(self._max_part_id, prepared.part_id)
        elif isinstance(event, StatusEvent):
            # our own alarms are written directly (they may be raised while the DB is down)
            if event.component != self.component and event.state in ("warning", "alarm"):
                self._alarm_rows.append(
                    (event.t_wall or time.time(), str(event.component), event.state, str(event.message))
                )
        else:
            log.debug("recorder ignores %s", type(event).__name__)

    def _prepare(self, r: PartResult, keep_images: bool = True) -> PartRows:
        """Rows for one part; kept images are encoded and written to disk here (unless not ``keep_images``)."""
        t = r.trigger
        outcome = Outcome(r.verdict.outcome).value
        inspection, defects = part_rows(r, self.station)
        images: list[tuple[str, StoredImage, str]] = []
        maps: dict[int, tuple[StoredImage, float | None]] = {}
        reason = self.images.should_keep(outcome, int(t.part_id)) if keep_images else None
        if reason is not None:
            self._check_free_space()  # images saved since the last check may be nearing the floor
            for i, f in enumerate(r.frames):
                try:
                    images.append((f.camera_id, self.images.save(f.image), reason))
                    det = r.detections[i] if i < len(r.detections) else None
                    if det is not None and det.anomaly_map is not None:
                        try:
                            maps[len(images) - 1] = (self.images.save_map(det.anomaly_map), frame_score(det))
                        except (OSError, ValueError) as exc:  # the image is still worth recording
                            log.error("heat map of part %s camera %s not saved: %s", t.part_id, f.camera_id, exc)
                except (OSError, ValueError) as exc:
                    log.error("image of part %s camera %s not saved: %s", t.part_id, f.camera_id, exc)
                    if not self._image_failing:
                        self._image_failing = True
                        self._status("warning", f"images not saved: {exc}", f"{self.component}:images")
                    continue
                if self._image_failing:
                    self._image_failing = False
                    self._status("ok", "images saved again", f"{self.component}:images")
        return PartRows(int(t.part_id), inspection, defects, images, maps)

    def _write(self) -> bool:
        """Write the batch in one transaction; False if the database refused (retry later)."""
        batch = self._batch
        accepted: list[int] = []
        refused: list[tuple[int, str]] = []
        try:
            self._check_db_file()
            db = self._db
            conn: sqlite3.Connection = db.conn
            with write_transaction(db):
                for p in batch:
                    why = insert_part(conn, p)
                    if why is None:
                        accepted.append(p.part_id)
                    else:
                        refused.append((p.part_id, why))
                if self._alarm_rows:
                    conn.executemany(_INSERT_ALARM, self._alarm_rows)
                snap = self.counters.snapshot().as_dict()
                snap["records_written"] += len(accepted)
                snap["records_dropped"] = snap["records_dropped"] + (
                    self.records_dropped + len(refused) - self._dropped_synced
                )
                conn.execute(_UPSERT_COUNTERS, (dumps(snap), self._max_part_id, time.time()))
        except sqlite3.Error as exc:
            self._failed(exc)
            return False
        with self._lock:
            self.counters.add("records_written", len(accepted))
            self._written += len(accepted)
            self._rejected += len(refused)
            self._in_hand -= len(batch)
            self._batch = []
        self._alarm_rows = []
        self._sync_dropped()
        for part_id, why in refused:
            log.error("part %d refused by the database and dropped: %s", part_id, why)
        if self._stalled_since is not None:
            secs = time.monotonic() - self._stalled_since
            self._stalled_since = None
            self.last_error = None
            log.warning("recorder writing again after %.1f s", secs)
            self._status("ok", f"writing again after {secs:.1f} s")
        if self.on_commit is not None and accepted:
            try:
                self.on_commit(accepted)
            except Exception:
                log.exception("recorder on_commit callback failed")
        return True

    def _failed(self, exc: sqlite3.Error) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self._stalled_since is None:
            self._stalled_since = time.monotonic()
            msg = f"database writes failing ({exc}); {self._in_hand} records held, retrying"
            log.error("recorder: %s", msg)
            self._alarm_rows.append((time.time(), self.component, "alarm", msg))
            self._status("alarm", msg)
        else:
            log.debug("recorder write failed again: %s", exc)

    def _status(self, state: str, message: str, component: str | None = None) -> None:
        if self.on_status is None:
            return
        try:
            self.on_status(StatusEvent(component or self.component, state, message, time.time()))
        except Exception:
            log.exception("recorder on_status callback failed")

    def _sync_dropped(self) -> None:
        """Mirror subscription drops and refusals into ``counters.records_dropped``."""
        with self._lock:
            d = self.records_dropped
            delta = d - self._dropped_synced
            if delta:
                self.counters.add("records_dropped", delta)
                self._dropped_synced = d

    def _enforce_budget(self) -> None:
        try:
            self.images.enforce_budget(self._db)
        except (sqlite3.Error, OSError) as exc:
            log.warning("disk budget not enforced this time: %s", exc)
        self._check_free_space()

    def _check_free_space(self, force: bool = False) -> None:
        """The free-space watermark of the images disk (``os.statvfs``), at most every ``free_check_s``."""
        if not self.images.watermark:
            return
        now = time.monotonic()
        if (
            not force
            and now < self._next_free_check
            and self.images.bytes_since_check < max(1, self.images.last_floor // 4)
        ):
            return
        self._next_free_check = now + self.free_check_s
        try:
            short, free, floor = self.images.enforce_free_space(self._db)
        except (sqlite3.Error, OSError) as exc:
            log.warning("free-space watermark not enforced this time: %s", exc)
            return
        if short and not self._disk_short:
            self._disk_short = True
            self._status(
                "alarm",
                f"free space on {self.images.root} is {free / 2**20:.1f} MB, below the floor of {floor / 2**20:.1f} MB "
                "and no image is left to delete",
                f"{self.component}:disk",
            )
        elif not short and self._disk_short:
            self._disk_short = False
            self._status("ok", f"free space back above the floor ({free / 2**20:.1f} MB)", f"{self.component}:disk")
