"""A bounded, durable FIFO of messages waiting for a broker: one SQLite file.

A message is committed to the outbox before it is sent and deleted only when
the broker acknowledged it, so neither a broker outage nor a station restart
loses it (it may be delivered twice: MQTT QoS 1 is at-least-once). Beyond
``max_rows`` the oldest messages are dropped (``drop_oldest``) or the new ones
refused (``drop_newest``), and counted. Used by the MQTT publisher and by the
plant uplink (:mod:`station.plant.uplink`), each with its own file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Literal, NamedTuple

OverflowPolicy = Literal["drop_oldest", "drop_newest"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    t_wall REAL NOT NULL
)
"""


class Message(NamedTuple):
    """One stored message."""

    seq: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Outbox:
    """Used from one thread (the publisher's); ``len()`` may be read from any thread."""

    def __init__(
        self,
        path: Path,
        max_rows: int,
        *,
        policy: OverflowPolicy = "drop_oldest",
        setting: str = "publish.mqtt.outbox_path",
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_rows = max_rows
        self.policy = policy
        self.dropped = 0
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
            self._count = int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            raise RuntimeError(
                f"outbox {path} is not usable ({exc}); move it aside (its unsent messages are in it) or set {setting}"
            ) from None

    def append(self, rows: Iterable[tuple[str, bytes, int, bool, float]]) -> int:
        """Store messages (topic, payload, qos, retain, t_wall) in one transaction; returns how many were stored."""
        rows = list(rows)
        if self.policy == "drop_newest" and self._count + len(rows) > self.max_rows:
            keep = max(0, self.max_rows - self._count)
            self.dropped += len(rows) - keep
            rows = rows[:keep]
        if not rows:
            return 0
        with self._tx():
            self._db.executemany(
                "INSERT INTO outbox (topic, payload, qos, retain, t_wall) VALUES (?, ?, ?, ?, ?)", rows
            )
            count = self._count + len(rows)
            excess = count - self.max_rows
            if excess > 0:
                self._db.execute(
                    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)", (excess,)
                )
                self.dropped += excess
                count -= excess
        self._count = count
        return len(rows)

    def after(self, seq: int, limit: int) -> list[Message]:
        """The next ``limit`` messages with a sequence number above ``seq``, oldest first."""
        cur = self._db.execute(
            "SELECT seq, topic, payload, qos, retain FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
        )
        return [Message(s, t, bytes(p), q, bool(r)) for s, t, p, q, r in cur.fetchall()]

    def delete(self, seqs: Iterable[int]) -> None:
        """Forget acknowledged messages."""
        seqs = list(seqs)
        if seqs:
            with self._tx():
                cur = self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
            self._count -= max(0, cur.rowcount)

    def __len__(self) -> int:
        """Messages stored (kept in memory: safe to read from another thread)."""
        return self._count

    def close(self) -> None:
        """Close the file."""
        self._db.close()

    def _tx(self) -> _Tx:
        return _Tx(self._db)


class _Tx:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
