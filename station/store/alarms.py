"""The ``alarms`` table as the operator screen reads and acknowledges it.

The recorder writes alarm rows (:mod:`station.store.recorder`); this module reads the log and
records who acknowledged what. The audit row of an acknowledgement is the caller's
(:func:`station.store.audit.record`).
"""

from __future__ import annotations

from typing import Any

import sqlite_utils

from .db import write_transaction


def alarm_log(db: sqlite_utils.Database, limit: int) -> list[dict[str, Any]]:
    """Recorded alarms, unacknowledged first, newest first within each group, at most ``limit``."""
    return list(
        db["alarms"].rows_where(
            select="id, t_wall, component, state, message, acknowledged_by, acknowledged_at",
            order_by="acknowledged_at IS NOT NULL, t_wall DESC, id DESC",
            limit=int(limit),
        )
    )


def unacknowledged_count(db: sqlite_utils.Database) -> int:
    """How many recorded alarms nobody has acknowledged."""
    return int(db["alarms"].count_where("acknowledged_at IS NULL"))


def get_alarm(db: sqlite_utils.Database, alarm_id: int) -> dict[str, Any] | None:
    """``acknowledged_by``, ``component`` and ``message`` of one alarm, or None for an unknown id."""
    for r in db["alarms"].rows_where("id = ?", [alarm_id], select="acknowledged_by, component, message"):
        return r
    return None


def acknowledge(db: sqlite_utils.Database, alarm_id: int, user: str, t_wall: float) -> bool:
    """Mark alarm ``alarm_id`` acknowledged by ``user`` at ``t_wall``; False when it was already (or is unknown)."""
    with write_transaction(db):
        cur = db.execute(
            "UPDATE alarms SET acknowledged_by = ?, acknowledged_at = ? WHERE id = ? AND acknowledged_at IS NULL",
            [user, t_wall, alarm_id],
        )
    return cur.rowcount == 1


def acknowledge_all(db: sqlite_utils.Database, user: str, t_wall: float) -> int:
    """Mark every unacknowledged alarm acknowledged by ``user`` at ``t_wall``; returns how many."""
    with write_transaction(db):
        cur = db.execute(
            "UPDATE alarms SET acknowledged_by = ?, acknowledged_at = ? WHERE acknowledged_at IS NULL", [user, t_wall]
        )
    return int(cur.rowcount)
