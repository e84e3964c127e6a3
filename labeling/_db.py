"""Small shared helpers: transactions that nest, rows as dicts, canonical JSON."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
from typing import Any, Iterator, Sequence

import sqlite_utils

from station.store.db import write_transaction

_savepoints = itertools.count(1)


@contextlib.contextmanager
def transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """A write transaction: ``BEGIN IMMEDIATE`` normally, a SAVEPOINT inside one already open.

    Lets a bulk operation run many single operations atomically, and lets a caller that
    holds its own transaction include a labeling operation in it.
    """
    conn = db.conn
    if not conn.in_transaction:
        with write_transaction(db):
            yield db
        return
    name = f"labeling_{next(_savepoints)}"
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


def canonical_json(value: Any) -> str:
    """Compact, key-sorted JSON (stable bytes for hashing and audit rows)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def table_exists(db: sqlite_utils.Database, name: str) -> bool:
    """True if a table or view called ``name`` exists."""
    return db.execute("SELECT 1 FROM sqlite_master WHERE name = ? AND type IN ('table', 'view')", [name]).fetchone() is not None


def check_finite(name: str, value: Any) -> float:
    """``value`` as a finite float, else ValueError naming ``name``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, not {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, not {value!r}")
    return v
