"""The audit trail: who did what to which object, with before/after JSON. Its one writer.

Every change a person or a tool makes (labels, models, rules, users, sessions, alarms, the
line) is recorded here. :func:`record` writes one row inside the caller's transaction (so the
change and its audit row commit or roll back together), or commits at once when none is open;
:func:`history` reads rows back. The ``audit`` table is append-only (database triggers refuse
UPDATE and DELETE).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from ..serialize import dumps
from .db import given, inserted_id, rows, transaction

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit row; ``before``/``after`` are decoded JSON (None when absent)."""

    id: int
    t_wall: float
    user: str
    action: str
    object_type: str
    object_id: str | None
    before: Any
    after: Any
    reason: str | None


def _json(value: Any) -> str | None:
    if value is None:
        return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return dumps(value, canonical=True)


def check_user(user: object) -> str:
    """``user`` as a non-empty string, else ValueError (every change must name who made it)."""
    if not isinstance(user, str) or not user.strip():
        raise ValueError(f"user must be a non-empty user name, not {user!r}")
    return user.strip()


def record(
    db: sqlite_utils.Database,
    user: str,
    action: str,
    object_type: str,
    object_id: Any = None,
    before: Any = None,
    after: Any = None,
    reason: str | None = None,
    *,
    t_wall: float | None = None,
) -> int:
    """Append one audit row and return its id: in the caller's transaction if one is open, else committed at once.

    ``before``/``after`` are any JSON-able values (dataclasses included) or None.
    ``object_id`` is stored as text.
    """
    user = check_user(user)
    if not action or not object_type:
        raise ValueError("audit rows need an action and an object_type")
    with transaction(db):  # joins the caller's transaction; commits at once when there is none
        cur = db.execute(
            "INSERT INTO audit (t_wall, user, action, object_type, object_id, before, after, reason) VALUES (?, ?, ?, "
            "?, ?, ?, ?, ?)",
            [
                time.time() if t_wall is None else float(t_wall),
                user,
                action,
                object_type,
                None if object_id is None else str(object_id),
                _json(before),
                _json(after),
                reason,
            ],
        )
    return inserted_id(cur.lastrowid)


def history(
    db: sqlite_utils.Database,
    object_type: str | None = None,
    object_id: Any = None,
    *,
    user: str | None = None,
    limit: int | None = None,
) -> list[AuditEntry]:
    """Audit rows, oldest first, optionally for one object type / object id / user; the newest ``limit`` if given."""
    where, params = given(("object_type = ?", object_type), ("object_id = ?", object_id, str), ("user = ?", user))
    sql = "SELECT * FROM audit" + (" WHERE " + " AND ".join(where) if where else "")
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, not {limit}")
        sql = f"SELECT * FROM ({sql} ORDER BY id DESC LIMIT ?) ORDER BY id"
        params.append(int(limit))
    else:
        sql += " ORDER BY id"
    return [_entry(r) for r in rows(db, sql, params)]


def image_history(db: sqlite_utils.Database, image_id: int) -> list[AuditEntry]:
    """Audit rows about image ``image_id`` and about any of its labels, oldest first."""
    found = db["audit"].rows_where(
        "(object_type = 'label' AND object_id IN (SELECT CAST(id AS TEXT) FROM labels WHERE image_id = ?)) "
        "OR (object_type = 'image' AND object_id = ?)",
        [image_id, str(image_id)],
        order_by="id",
    )
    return [_entry(r) for r in found]


def _entry(r: dict[str, Any]) -> AuditEntry:
    return AuditEntry(
        id=r["id"],
        t_wall=r["t_wall"],
        user=r["user"],
        action=r["action"],
        object_type=r["object_type"],
        object_id=r["object_id"],
        before=json.loads(r["before"]) if r["before"] else None,
        after=json.loads(r["after"]) if r["after"] else None,
        reason=r["reason"],
    )
