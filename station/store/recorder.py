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
import dataclasses
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
from .heatmaps import frame_score, part_score
from .images import ImageStore, StoredImage
from .spill import SpillFile

log = logging.getLogger(__name__)

SLACK_KEYS = ("deadline_slack", "deadline_slack_ms", "slack")


@dataclasses.dataclass
class _Prepared:
    """One PartResult turned into rows, its images already on disk."""

    part_id: int
    inspection: tuple[Any, ...]
    defects: list[tuple[Any, ...]]
    images: list[tuple[str, StoredImage, str]]  # camera_id, stored file, kept reason
    maps: dict[int, tuple[StoredImage, float | None]] = dataclasses.field(
        default_factory=dict
    )  # images index -> heat map, score


_INSERT_INSPECTION = """
INSERT INTO inspections (part_id, seq, t_trigger_wall, t_decided_wall, t_recorded_wall, outcome, reasons, model_id,
    config_hash, calibration_id, timings, deadline_slack_ms, ground_truth, defect_count, max_score, source, station,
    n_frames, rejected, image_score)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_INSERT_DEFECT = """
INSERT INTO defects (part_id, camera_id, class_name, confidence, x1, y1, x2, y2, area_mm2, action, rule, model_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_INSERT_IMAGE = """
INSERT INTO images (part_id, camera_id, sha256, relpath, width, height, format, bytes, kept_reason)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_INSERT_MAP = """
INSERT INTO anomaly_maps (image_id, part_id, camera_id, sha256, width, height, bytes, image_score)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""
_INSERT_ALARM = "INSERT INTO alarms (t_wall, component, state, message) VALUES (?, ?, ?, ?)"
_UPSERT_COUNTERS = """
INSERT INTO counters (key, counters, last_part_id, updated_at) VALUES ('station', ?, ?, ?)
ON CONFLICT (key) DO UPDATE SET counters = excluded.counters,
    last_part_id = MAX(counters.last_part_id, excluded.last_part_id), updated_at = excluded.updated_at
"""


def _insert_part(conn: sqlite3.Connection, p: _Prepared) -> None:
    """The rows of one part (raises sqlite3.IntegrityError for a duplicate part id or invalid values)."""
    conn.execute(_INSERT_INSPECTION, p.inspection)
    if p.defects:
        conn.executemany(_INSERT_DEFECT, p.defects)
    if p.images and not p.maps:
        conn.executemany(
            _INSERT_IMAGE,
            [
                (p.part_id, cam, s.sha256, s.relpath, s.width, s.height, s.format, s.bytes, why)
                for cam, s, why in p.images
            ],
        )
    elif p.images:
        for i, (cam, s, why) in enumerate(p.images):
            cur = conn.execute(
                _INSERT_IMAGE, (p.part_id, cam, s.sha256, s.relpath, s.width, s.height, s.format, s.bytes, why)
            )
            if i in p.maps:
                m, score = p.maps[i]
                conn.execute(_INSERT_MAP, (cur.lastrowid, p.part_id, cam, m.sha256, m.width, m.height, m.bytes, score))


def _to_spill(p: _Prepared, run: str) -> dict[str, Any]:
    return {
        "v": 1,
        "run": run,
        "part_id": p.part_id,
        "inspection": list(p.inspection),
        "defects": [list(d) for d in p.defects],
        "images": [[cam, dataclasses.asdict(s), why] for cam, s, why in p.images],
        "maps": {str(i): [dataclasses.asdict(m), score] for i, (m, score) in p.maps.items()},
    }


def _from_spill(rec: dict[str, Any], images: ImageStore | None) -> _Prepared:
    """A spilled record back to rows; image (and map) files that are gone are left out."""
    kept: list[tuple[str, StoredImage, str]] = []
    maps: dict[int, tuple[StoredImage, float | None]] = {}
    for i, (cam, s, why) in enumerate(rec.get("images", [])):
        stored = StoredImage(**s)
        if images is not None and not (images.root / stored.relpath).is_file():
            continue
        m = rec.get("maps", {}).get(str(i))
        if m is not None:
            ms = StoredImage(**m[0])
            if images is None or (images.maps_root / ms.relpath).is_file():
                maps[len(kept)] = (ms, m[1])
        kept.append((str(cam), stored, str(why)))
    return _Prepared(
        int(rec["part_id"]), tuple(rec["inspection"]), [tuple(d) for d in rec.get("defects", [])], kept, maps
    )


@dataclasses.dataclass
class ReplayResult:
    """What :func:`replay_spill` did."""

    inserted: int = 0  # records now in the database
    already: int = 0  # their part was in the database already (an earlier replay): skipped
    refused: int = 0  # the database refused them (invalid values): dropped
    unreadable: int = 0  # torn or foreign lines: dropped
    own_inserted: int = 0  # of ``inserted``, records spilled by the run named ``run``


def replay_spill(
    db: Any, spill_path: Path | str | None, images: ImageStore | None = None, *, run: str | None = None
) -> ReplayResult:
    """Write the records of the spill file into ``db`` in one transaction, then remove the file.

    Idempotent: a part already in the database is skipped. Image rows whose file is gone
    are left out. Raises sqlite3.Error when the database cannot be written (the file stays).
    """
    res = ReplayResult()
    if spill_path is None:
        return res
    spill = SpillFile(spill_path)
    records, res.unreadable = spill.read()
    if not records and not res.unreadable:
        return res
    conn: sqlite3.Connection = db.conn
    with write_transaction(db):
        for rec in records:
            own = run is not None and rec.get("run") == run
            try:
                p = _from_spill(rec, images)
            except (KeyError, TypeError, ValueError) as exc:
                log.error("spill file %s: a record cannot be read (%s); dropped", spill_path, exc)
                res.refused += 1
                continue
            if conn.execute("SELECT 1 FROM inspections WHERE part_id = ?", (p.part_id,)).fetchone():
                res.already += 1
                continue
            conn.execute("SAVEPOINT part")
            try:
                _insert_part(conn, p)
                conn.execute("RELEASE part")
                res.inserted += 1
                res.own_inserted += own
            except sqlite3.IntegrityError as exc:
                conn.execute("ROLLBACK TO part")
                conn.execute("RELEASE part")
                log.error("spill file %s: part %d refused by the database and dropped: %s", spill_path, p.part_id, exc)
                res.refused += 1
    spill.remove()
    log.warning(
        "spill file %s replayed: %d records written, %d already in the database, %d refused, %d unreadable lines",
        spill_path,
        res.inserted,
        res.already,
        res.refused,
        res.unreadable,
    )
    return res


def replay_at_start(db: Any, spill_path: Path | str | None, images: ImageStore | None = None) -> ReplayResult:
    """At start, before the counters are rebuilt from the rows: replay what an earlier run spilled.

    Never raises for a database that cannot be written: the file stays and the recorder
    replays it once it can write (its records are then recovered, not counted as this run's).
    """
    try:
        return replay_spill(db, spill_path, images)
    except (sqlite3.Error, OSError) as exc:
        log.error(
            "spill file %s not replayed at start (%s); the recorder will retry when the database can be written",
            spill_path,
            exc,
        )
        return ReplayResult()


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
        self._batch: list[_Prepared] = []
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
            self.spill.append(_to_spill(p, self.run_id) for p in batch)
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

    def _prepare(self, r: PartResult, keep_images: bool = True) -> _Prepared:
        """Rows for one part; kept images are encoded and written to disk here (unless not ``keep_images``)."""
        v, t = r.verdict, r.trigger
        outcome = Outcome(v.outcome).value
        slack = next((float(v.timings_ms[k]) for k in SLACK_KEYS if k in v.timings_ms), None)
        t_trig_wall = float(t.t_trigger_wall) if t.t_trigger_wall else None
        t_decided_wall = None
        if t_trig_wall is not None and v.t_decided_ns and (v.t_trigger_ns or t.t_trigger_ns):
            t_decided_wall = t_trig_wall + (v.t_decided_ns - (v.t_trigger_ns or t.t_trigger_ns)) / 1e9
        truth = {f.camera_id: f.meta["truth"] for f in r.frames if "truth" in f.meta}
        scores = [float(d.confidence) for d in v.defects]
        inspection = (
            int(t.part_id),
            int(t.seq),
            t_trig_wall,
            t_decided_wall,
            time.time(),
            outcome,
            dumps(list(v.reasons)),
            str(v.model_id),
            str(v.config_hash),
            str(v.calibration_id),
            dumps({str(k): float(x) for k, x in v.timings_ms.items()}),
            slack,
            dumps(truth) if truth else None,
            len(v.defects),
            max(scores) if scores else None,
            str(t.source),
            self.station,
            len(r.frames),
            int(r.reject_fire_at_ns is not None),
            part_score(r.detections),
        )
        defects = [
            (
                int(t.part_id),
                str(d.camera_id),
                str(d.class_name),
                float(d.confidence),
                *(float(x) for x in d.box_xyxy),
                float(d.area_mm2),
                str(d.action),
                str(d.rule),
                str(v.model_id),
            )
            for d in v.defects
        ]
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
        return _Prepared(int(t.part_id), inspection, defects, images, maps)

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
                    conn.execute("SAVEPOINT part")
                    try:
                        _insert_part(conn, p)
                        conn.execute("RELEASE part")
                        accepted.append(p.part_id)
                    except sqlite3.IntegrityError as exc:
                        conn.execute("ROLLBACK TO part")
                        conn.execute("RELEASE part")
                        refused.append((p.part_id, str(exc)))
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
