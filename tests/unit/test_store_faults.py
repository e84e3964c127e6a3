"""Never lose a verdict, never lie about it: the recorder on a full disk, a read-only database, a deleted folder.

Each test runs the real recorder against real files and checks, while the line runs and after
stop, that ``records written + dropped + pending (spilled included) == verdicts``, and that what
was spilled reaches the database at the next start. The disk-full and read-only tests mount a
real tmpfs (we run as root in CI); they are skipped, saying why, where mounting is not permitted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from station.bus import Bus
from station.contracts import Outcome, StatusEvent
from station.counters import Counters, reconcile
from station.store.db import open_db
from station.store.images import ImageStore
from station.store.recorder import Recorder, replay_at_start, replay_spill
from station.store.spill import SpillFile
from tests.unit.test_recorder import _publish, new_recorder

CYCLE = (Outcome.PASS, Outcome.PASS, Outcome.FAIL, Outcome.PASS, Outcome.UNCERTAIN, Outcome.FAILSAFE)
BIG = (120, 160, 3)  # random pixels: ~57 kB PNG each


def _mount(*args: str) -> None:
    r = subprocess.run(["mount", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise OSError(r.stderr.strip() or f"mount {' '.join(args)} failed")


def _umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 3 MB tmpfs at tmp_path/disk (unmounted in teardown)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        _mount("-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk))
    except OSError as exc:
        pytest.skip(f"cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN): {exc}")
    try:
        yield disk
    finally:
        _umount(disk)


class Watch:
    """Checks the records invariant every few ms while the line runs (a settled check, as /health does)."""

    def __init__(self, rec: Recorder, counters: Counters):
        self.rec, self.counters = rec, counters
        self.broken: list[str] = []
        self.checks = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _check(self) -> list[str]:
        problems: list[str] = []
        for _ in range(
            20
        ):  # the snapshot and pending are read apart, and bus drops reach the counters at the recorder's next loop
            problems = reconcile(self.counters.snapshot(), pending_records=self.rec.pending)
            if not problems:
                return []
            time.sleep(0.01)
        return problems

    def _run(self) -> None:
        while not self._stop.is_set():
            self.checks += 1
            self.broken += self._check()
            time.sleep(0.005)

    def __enter__(self) -> Watch:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def _ids(db_path: Path) -> set[int]:
    with contextlib.closing(sqlite3.connect(db_path)) as c:
        return {r[0] for r in c.execute("SELECT part_id FROM inspections")}


def _fill(disk: Path) -> Path:
    """Another program fills the disk to the last byte."""
    filler = disk / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (65536, 4096, 512):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)
    return filler


def _after_stop(rec: Recorder, counters: Counters, n: int) -> dict:
    snap = counters.snapshot()
    assert reconcile(snap, pending_records=rec.pending) == []
    rep = rec.stop_report
    assert rep is not None and rep["pending"] == 0, rep  # nothing left "pending" in memory after stop
    assert rep["written"] + rep["dropped"] + rep["spilled"] == n == snap.verdicts, rep
    assert (snap.records_written, snap.records_dropped) == (rep["written"], rep["dropped"])
    return rep


def _spilling_recorder(
    db_path: Path, images: ImageStore, spill: Path | None, *, queue: int = 60, batch_size: int = 4, **kw: Any
) -> tuple[Bus, Counters, list[StatusEvent], Recorder]:
    """A recorder (not started) that notices a failing database quickly (50 ms busy timeout, backoff up to 50 ms)
    and spills to ``spill``; with its bus, counters and the status events it sent."""
    return new_recorder(
        db_path,
        images,
        queue=queue,
        batch_size=batch_size,
        busy_timeout_ms=50,
        max_backoff_s=0.05,
        spill_path=spill,
        **kw,
    )


def _first_ten_written(bus: Bus, counters: Counters, rec: Recorder, make_result: Any) -> None:
    """Parts 1-10 (PASS, no image kept) published and written while the database still works."""
    _publish(bus, counters, [make_result(pid, Outcome.PASS) for pid in range(1, 11)])
    deadline = time.monotonic() + 10
    while rec.records_written < 10 and time.monotonic() < deadline:
        time.sleep(0.01)


def _publish_until_stalled(
    bus: Bus, counters: Counters, rec: Recorder, make_result: Any, parts: range, error: str
) -> None:
    """``parts`` published at a line's pace (the queue is the memory, the spill file the rest); the recorder is then
    stalled on ``error`` and does not stop cleanly."""
    for pid in parts:
        _publish(bus, counters, [make_result(pid, CYCLE[pid % len(CYCLE)])])
        time.sleep(0.005)
    time.sleep(0.5)
    assert rec.stalled and error in (rec.last_error or "")
    assert rec.stop(timeout=0.5) is False


def test_images_go_first_so_the_database_keeps_writing_on_a_small_disk(tmpfs: Path, make_result) -> None:
    """Images fill a 3 MB disk: the watermark deletes the oldest PASS images (then others), every verdict row is
    written."""
    bus, counters = Bus(), Counters()
    statuses: list[StatusEvent] = []
    images = ImageStore(tmpfs / "images", "png", 1, 1000.0, min_free_mb=0.6, fsync=False)
    rec = Recorder(
        tmpfs / "s.db",
        images,
        counters,
        bus.subscribe("recorder", maxsize=1000),
        batch_size=8,
        on_status=statuses.append,
        free_check_s=0.0,
    )
    rec.start()
    n = 150  # ~8.5 MB of images through a 3 MB disk
    with Watch(rec, counters) as w:
        for pid in range(1, n + 1):
            _publish(bus, counters, [make_result(pid, CYCLE[pid % len(CYCLE)], shape=BIG)])
            time.sleep(0.002)
        assert rec.stop(timeout=20)
    assert w.broken == [] and w.checks > 10
    rep = _after_stop(rec, counters, n)
    assert rep["written"] == n and rep["dropped"] == 0
    assert _ids(tmpfs / "s.db") == set(range(1, n + 1))
    with contextlib.closing(sqlite3.connect(tmpfs / "s.db")) as c:
        deleted = c.execute(
            "SELECT i.deleted_at, p.outcome FROM images i JOIN inspections p USING (part_id) WHERE i.deleted_reason = "
            "'free space' "
            "ORDER BY i.deleted_at, i.id"
        ).fetchall()
        live = c.execute("SELECT COUNT(*) FROM images WHERE deleted_at IS NULL").fetchone()[0]
    assert deleted and live > 0
    first_sweep = [o for t, o in deleted if t == deleted[0][0]]
    assert set(first_sweep) == {"PASS"}, first_sweep  # the oldest PASS images go first
    free, _ = images.disk_space()
    assert free > 0.3 * 2**20
    assert not any(s.state == "alarm" and s.component == "recorder" for s in statuses)  # SQLite never failed


def test_disk_full_by_another_program_spills_and_replays_every_record(tmpfs: Path, tmp_path: Path, make_result) -> None:
    """The disk is filled by someone else: nothing to delete, SQLite fails; records go to the spill file on another
    disk."""
    images = ImageStore(tmpfs / "images", "png", 0, 1000.0, min_free_mb=0.5, fsync=False)
    spill = tmp_path / "elsewhere" / "spill.jsonl"
    bus, counters, statuses, rec = _spilling_recorder(
        tmpfs / "s.db", images, spill, queue=100, batch_size=8, free_check_s=0.2
    )
    rec.start()
    n = 200
    with Watch(rec, counters) as w:
        _first_ten_written(bus, counters, rec, make_result)
        filler = _fill(tmpfs)
        for pid in range(11, n + 1):
            _publish(bus, counters, [make_result(pid, CYCLE[pid % len(CYCLE)], shape=BIG)])
            time.sleep(0.002)
        time.sleep(0.5)
        assert rec.stalled and rec.records_dropped == 0
        assert rec.spilled > 0  # the queue (100) would have overflowed: the spill file took the rest
        assert rec.stop(timeout=1.0) is False
    assert w.broken == [], w.broken[:3]
    rep = _after_stop(rec, counters, n)
    assert rep["dropped"] == 0 and rep["spilled"] == n - rep["written"] > 0
    assert ("recorder", "alarm") in [(s.component, s.state) for s in statuses]
    assert ("recorder:disk", "alarm") in [(s.component, s.state) for s in statuses]  # space short, nothing to delete

    # the next start, with room again: every record reaches the database, once
    filler.unlink()
    db = open_db(tmpfs / "s.db")
    try:
        res = replay_at_start(db, spill, images)
        assert res.inserted == rep["spilled"] and res.unreadable == 0
        assert not spill.exists()
    finally:
        db.close()
    assert _ids(tmpfs / "s.db") == set(range(1, n + 1))


def test_read_only_database_spills_then_replays_idempotently(tmpfs: Path, tmp_path: Path, make_result) -> None:
    """A read-only database (read-only bind mount): writes fail, records are spilled; replay twice writes them once."""
    dbdir = tmpfs / "db"
    db_path = dbdir / "s.db"
    keep = open_db(db_path)  # migrated; an open connection keeps the WAL index, as the station's own does
    try:
        try:
            _mount("--bind", str(dbdir), str(dbdir))
        except OSError as exc:
            pytest.skip(f"cannot bind-mount here: {exc}")
        try:
            _mount("-o", "remount,bind,ro", str(dbdir))
            spill = tmp_path / "spill.jsonl"
            bus, counters, _, rec = _spilling_recorder(db_path, ImageStore(tmp_path / "images", "png", 5, 100.0), spill)
            rec.start()
            n = 60
            with Watch(rec, counters) as w:
                _publish_until_stalled(bus, counters, rec, make_result, range(1, n + 1), "readonly")
            assert w.broken == []
            rep = _after_stop(rec, counters, n)
            assert (rep["written"], rep["dropped"], rep["spilled"]) == (0, 0, n)
        finally:
            _umount(dbdir)
    finally:
        keep.close()
    copy = tmp_path / "spill-copy.jsonl"
    shutil.copy(spill, copy)
    db = open_db(db_path)
    try:
        assert replay_spill(db, spill).inserted == n
        again = replay_spill(db, copy)  # a crash between COMMIT and removing the file: replayed again
        assert (again.inserted, again.already) == (0, n)
    finally:
        db.close()
    assert _ids(db_path) == set(range(1, n + 1))


@pytest.mark.parametrize("with_spill", [True, False], ids=["spill", "no-spill"])
def test_deleted_database_folder(tmp_path: Path, make_result, with_spill: bool) -> None:
    """The database folder is deleted while the line runs: no write into the deleted file; spilled or counted as
    dropped."""
    dbdir = tmp_path / "db"
    db_path = dbdir / "s.db"
    spill = tmp_path / "spill.jsonl" if with_spill else None
    bus, counters, statuses, rec = _spilling_recorder(db_path, ImageStore(tmp_path / "images", "png", 5, 100.0), spill)
    rec.start()
    n = 50
    with Watch(rec, counters) as w:
        _first_ten_written(bus, counters, rec, make_result)
        shutil.rmtree(dbdir)
        _publish_until_stalled(bus, counters, rec, make_result, range(11, n + 1), "gone")
    assert w.broken == []
    rep = _after_stop(rec, counters, n)
    assert rep["written"] == 10  # written to the file that was then deleted: nothing after it went there
    assert ("recorder", "alarm") in [(s.component, s.state) for s in statuses]
    if with_spill:
        assert (rep["dropped"], rep["spilled"]) == (0, n - 10)
        db = open_db(db_path)  # the next start makes a new database there and replays
        try:
            assert replay_at_start(db, spill).inserted == n - 10
        finally:
            db.close()
        assert _ids(db_path) == set(range(11, n + 1))
    else:
        # the truth at stop: every unwritten record counted as dropped, none left "pending"
        assert (rep["dropped"], rep["spilled"], rec.pending) == (n - 10, 0, 0)
        assert counters.snapshot().records_dropped == n - 10


def test_database_back_while_running_replays_the_spill_and_counts_it_written(
    tmp_store, tmp_path: Path, make_result
) -> None:
    """A lock held long enough to spill; when it goes, the spill file is replayed at run time and counted as written."""
    spill = tmp_path / "spill.jsonl"
    bus, counters, _, rec = _spilling_recorder(tmp_store.db_path, tmp_store.images, spill)
    rec.start()
    blocker = sqlite3.connect(tmp_store.db_path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        for pid in range(1, 61):
            _publish(bus, counters, [make_result(pid, CYCLE[pid % len(CYCLE)])])
            time.sleep(0.005)
        time.sleep(0.3)
        assert rec.spilled > 0 and rec.records_dropped == 0
        assert reconcile(counters.snapshot(), pending_records=rec.pending) == []
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert rec.stop(timeout=10)
    assert (rec.records_written, rec.records_dropped, rec.spilled, rec.pending) == (60, 0, 0, 0)
    assert not spill.exists()
    assert _ids(tmp_store.db_path) == set(range(1, 61))
    assert reconcile(counters.snapshot(), pending_records=rec.pending) == []


def test_spill_file_survives_a_torn_last_line(tmp_path: Path) -> None:
    f = SpillFile(tmp_path / "s.jsonl")
    f.append([{"v": 1, "part_id": 1}])
    with open(f.path, "ab") as raw:
        raw.write(b'{"v": 1, "part_id": 2, "insp')  # a crash mid-append
    f.append([{"v": 1, "part_id": 3}])
    records, bad = f.read()
    assert [r["part_id"] for r in records] == [1, 3] and bad == 1
