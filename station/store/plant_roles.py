"""The ``plant_roles`` table: who may change the plant (the SQL behind :mod:`station.plant.roles`).

It lives in the plant dashboard's users file (a station-schema SQLite database: the same users,
sessions and login as a station). A user's station role (operator, qa, admin) lets it log in and
read the dashboard; a plant role, granted here, lets it write: ``quality_lead`` (dataset
snapshots, training) and ``plant_admin`` (also promote, rollback, pin). The table is the plant's
own, created on first use, not a station migration: a station never has it.
"""

from __future__ import annotations

import time
from typing import Any

import sqlite_utils

from .db import write_transaction

PLANT_ROLES: tuple[str, ...] = ("quality_lead", "plant_admin")  # ordered: plant_admin may do what quality_lead may

_TABLE = """
CREATE TABLE IF NOT EXISTS plant_roles (
    username TEXT PRIMARY KEY REFERENCES users (username) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('quality_lead', 'plant_admin')),
    granted_by TEXT NOT NULL,
    granted_at REAL NOT NULL
)
"""


def ensure_table(db: sqlite_utils.Database) -> None:
    """Create the table (idempotent)."""
    with write_transaction(db):
        db.execute(_TABLE)


def grant(db: sqlite_utils.Database, username: str, role: str, granted_by: str) -> None:
    """Give ``username`` the plant role ``role`` (replacing the one it had); ValueError for an unknown user or role."""
    if role not in PLANT_ROLES:
        raise ValueError(f"unknown plant role {role!r}: use one of {', '.join(PLANT_ROLES)}")
    with write_transaction(db):
        if db["users"].count_where("username = ?", [username]) == 0:
            raise ValueError(f"no user {username!r}: create it first (station user add, on this users file)")
        db.execute(
            "INSERT INTO plant_roles (username, role, granted_by, granted_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (username) DO UPDATE SET role = excluded.role, granted_by = excluded.granted_by, "
            "granted_at = excluded.granted_at",
            [username, role, granted_by, time.time()],
        )


def revoke(db: sqlite_utils.Database, username: str) -> bool:
    """Take ``username``'s plant role away; False when it had none."""
    with write_transaction(db):
        return db.execute("DELETE FROM plant_roles WHERE username = ?", [username]).rowcount > 0


def role_of(db: sqlite_utils.Database, username: str) -> str | None:
    """The plant role of ``username`` (None: none, a reader only)."""
    row = db.execute("SELECT role FROM plant_roles WHERE username = ?", [username]).fetchone()
    return None if row is None else str(row[0])


def has_role(db: sqlite_utils.Database, role: str) -> bool:
    """True when some enabled user holds ``role``."""
    return (
        db.execute(
            "SELECT 1 FROM plant_roles p JOIN users u USING (username) WHERE p.role = ? AND u.disabled = 0 LIMIT 1",
            [role],
        ).fetchone()
        is not None
    )


def list_roles(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Every grant: username, role, granted_by, granted_at."""
    return list(db["plant_roles"].rows_where(order_by="username"))
