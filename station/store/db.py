"""Opening the station database: one SQLite file in WAL mode, migrated on open.

Durability choice
-----------------
The database runs in WAL mode. With ``synchronous=NORMAL`` a WAL database
survives a *process* crash (SIGKILL, segfault) with every committed
transaction intact, but an *OS* crash or power cut can lose the last
transactions, because the WAL is only fsynced at checkpoints. The station's
promise is "a crash loses no committed row", and a power cut is a crash on a
factory floor, so the default here is ``synchronous=FULL``: every COMMIT
fsyncs the WAL. That costs one fsync per transaction, which is cheap because
the only writer (:class:`~station.store.recorder.Recorder`) commits batches
of rows, not single rows. Readers (web, tools) may pass ``NORMAL``; the
setting only matters for connections that write. The recorder's mode is
``store.synchronous`` (FULL or NORMAL); docs/storage.md has the measured cost.

Other settings: ``foreign_keys=ON`` (rows of ``defects``/``images`` must
belong to an inspection), ``busy_timeout`` so a reader never fails at once on a
momentary lock. No STRICT tables and no ``->>`` operator: the Python on a
Jetson (Ubuntu 20.04) links SQLite 3.31.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import sqlite_utils

log = logging.getLogger(__name__)

DEFAULT_BUSY_TIMEOUT_MS = 5000
Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]


class StoreError(RuntimeError):
    """The database cannot be used as it is; the message names the file and the fix."""


def is_memory(path: Path | str | None) -> bool:
    """True for the in-memory database (``None`` or ``":memory:"``)."""
    return path is None or str(path) == ":memory:"


def open_db(
    path: Path | str | None,
    *,
    synchronous: Synchronous = "FULL",
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    migrate: bool = True,
    check_same_thread: bool = True,
) -> sqlite_utils.Database:
    """Open (creating if needed) the station database and apply pending migrations.

    ``path`` ``None`` or ``":memory:"`` gives a private in-memory database (tests).
    A file database is put in WAL mode; its parent folder is created.
    ``check_same_thread=False`` lets a connection be handed to another thread
    (the caller then serialises its use). Raises :class:`StoreError` when the
    file is not a database, cannot be created, or was migrated by a newer
    version of the station.
    """
    if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}")
    if is_memory(path):
        conn = sqlite3.connect(":memory:", check_same_thread=check_same_thread)
        where = ":memory:"
    else:
        p = Path(path)  # type: ignore[arg-type]
        where = str(p)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(p), timeout=busy_timeout_ms / 1000, check_same_thread=check_same_thread)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(
                f"{where}: cannot open the database ({exc}); check that the folder exists and is writable "
                "(store.db_path)"
            ) from None
    try:
        db = sqlite_utils.Database(conn, execute_plugins=False)
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if not is_memory(path):
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                log.warning("%s: journal_mode is %s, not WAL (is the file on a network share?)", where, mode)
        db.execute(f"PRAGMA synchronous = {synchronous}")
        db.execute("PRAGMA foreign_keys = ON")
        if migrate:
            from .migrations import apply_migrations

            apply_migrations(db, where=where)
    except sqlite3.DatabaseError as exc:
        conn.close()
        if "locked" in str(exc) or "busy" in str(exc):
            raise StoreError(
                f"{where}: the database is locked by another process ({exc}); stop it or wait and retry"
            ) from None
        raise StoreError(
            f"{where}: not a usable station database ({exc}); point store.db_path at a new file or restore a backup"
        ) from None
    except BaseException:
        conn.close()
        raise
    return db


@contextlib.contextmanager
def write_transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any error.

    IMMEDIATE takes the write lock at the start, so a busy database fails (after
    ``busy_timeout``) before any work is done, and two writers can never
    deadlock upgrading read locks. Not re-entrant.
    """
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


_savepoints = itertools.count(1)


@contextlib.contextmanager
def transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """A write transaction that nests: :func:`write_transaction` normally, a SAVEPOINT inside one already open.

    Lets a bulk operation run many single operations atomically, and lets a caller that holds its
    own transaction include another operation (a label change, its audit row) in it.
    """
    conn = db.conn
    if not conn.in_transaction:
        with write_transaction(db):
            yield db
        return
    name = f"sp_{next(_savepoints)}"
    conn.execute(f"SAVEPOINT {name}")
    try:
        yield db
    except BaseException:
        conn.execute(f"ROLLBACK TO {name}")
        conn.execute(f"RELEASE {name}")
        raise
    conn.execute(f"RELEASE {name}")


def rows(db: sqlite_utils.Database, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """Run ``sql`` and return every row as a dict."""
    cur = db.execute(sql, list(params))
    keys = [d[0] for d in cur.description]
    return [dict(zip(keys, r)) for r in cur.fetchall()]


PART_T_WALL = "COALESCE(p.t_trigger_wall, p.t_recorded_wall)"
"""When a part (``inspections p``) was made: its trigger time, else when it was recorded (imports have no trigger)."""


def given(*conditions: tuple[str, Any] | tuple[str, Any, Callable[[Any], Any]]) -> tuple[list[str], list[Any]]:
    """The SQL conditions whose value is given (not None) and their parameters, in order.

    Each condition is ``(sql, value)`` or ``(sql, value, bind)`` with one placeholder (``?`` in SQLite, ``%s`` in
    PostgreSQL); ``bind`` converts (and checks) the value. ``given(("outcome = ?", outcome), ("part_id < ?",
    before, int))``.
    """
    where: list[str] = []
    params: list[Any] = []
    for sql, value, *bind in conditions:
        if value is not None:
            where.append(sql)
            params.append(bind[0](value) if bind else value)
    return where, params


def part_time_range(since: float | None, until: float | None) -> tuple[list[str], list[Any]]:
    """SQL conditions and their parameters for the parts with ``since <= PART_T_WALL < until`` (None: open end)."""
    return given((f"{PART_T_WALL} >= ?", since, float), (f"{PART_T_WALL} < ?", until, float))


def inserted_id(rowid: int | None) -> int:
    """The id of the row an INSERT just wrote (``cursor.lastrowid`` / ``Table.last_rowid``, typed ``int | None``)."""
    if rowid is None:
        raise StoreError("the INSERT reported no row id (was the statement an INSERT into a rowid table?)")
    return rowid
