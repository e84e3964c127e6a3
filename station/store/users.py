"""The ``users`` and ``sessions`` tables: the SQL behind :mod:`station.web.auth`.

Policy (password rules, hashing, roles, token generation) stays in the web's auth module; this
module only reads and writes rows. Every write runs in its own :func:`~station.store.db.write_transaction`.
"""

from __future__ import annotations

from typing import Any

import sqlite_utils

from .db import write_transaction

_USER_COLUMNS = ("password_hash", "role", "disabled")


def add_user(db: sqlite_utils.Database, name: str, password_hash: str, role: str, created_at: float) -> bool:
    """Insert an enabled user; False (nothing written) when ``name`` is taken."""
    with write_transaction(db):
        if user_exists(db, name):
            return False
        db.table("users").insert(
            {"username": name, "password_hash": password_hash, "role": role, "created_at": created_at, "disabled": 0}
        )
    return True


def update_user(db: sqlite_utils.Database, name: str, *, end_sessions: bool = False, **columns: Any) -> bool:
    """Set ``columns`` (password_hash, role, disabled) of user ``name``; False when there is no such user.

    ``end_sessions`` also deletes every session of the user, in the same transaction.
    """
    unknown = set(columns) - set(_USER_COLUMNS)
    if not columns or unknown:
        raise ValueError(f"update_user sets {', '.join(_USER_COLUMNS)}, not {sorted(unknown) or 'nothing'}")
    assignments = ", ".join(f"{c} = ?" for c in columns)
    with write_transaction(db):
        cur = db.execute(f"UPDATE users SET {assignments} WHERE username = ?", [*columns.values(), name])
        if cur.rowcount != 1:
            return False
        if end_sessions:
            db.table("sessions").delete_where("username = ?", [name])
    return True


def user_exists(db: sqlite_utils.Database, name: str) -> bool:
    """True when a user (enabled or not) is called ``name``."""
    return db["users"].count_where("username = ?", [name]) > 0


def has_enabled_admin(db: sqlite_utils.Database) -> bool:
    """True when at least one enabled user has the admin role."""
    return db["users"].count_where("role = 'admin' AND disabled = 0") > 0


def list_users(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Every user by name: username, role, created_at, disabled (a bool); never the hash."""
    rows = db["users"].rows_where(select="username, role, created_at, disabled", order_by="username")
    return [{**r, "disabled": bool(r["disabled"])} for r in rows]


def credentials(db: sqlite_utils.Database, name: str) -> tuple[str, str, bool] | None:
    """(password_hash, role, disabled) of user ``name``, or None."""
    for r in db["users"].rows_where("username = ?", [name], select="password_hash, role, disabled"):
        return r["password_hash"], r["role"], bool(r["disabled"])
    return None


def start_session(
    db: sqlite_utils.Database, token_hash: str, username: str, created_at: float, expires_at: float, csrf: str
) -> None:
    """Store a new session; sessions expired by ``created_at`` are purged in the same transaction."""
    with write_transaction(db):
        db.table("sessions").delete_where("expires_at <= ?", [created_at])
        db.table("sessions").insert(
            {
                "token_hash": token_hash,
                "username": username,
                "created_at": created_at,
                "expires_at": expires_at,
                "csrf": csrf,
            }
        )


def live_session(db: sqlite_utils.Database, token_hash: str, now: float) -> tuple[str, str, str, float] | None:
    """(username, role, csrf, expires_at) of the session ``token_hash`` if unexpired at ``now`` and its user enabled."""
    for r in db.query(
        "SELECT u.username, u.role, s.csrf, s.expires_at FROM sessions s JOIN users u ON u.username = s.username "
        "WHERE s.token_hash = ? AND s.expires_at > ? AND u.disabled = 0",
        [token_hash, now],
    ):
        return r["username"], r["role"], r["csrf"], r["expires_at"]
    return None


def end_session(db: sqlite_utils.Database, token_hash: str) -> None:
    """Delete the session ``token_hash`` (log out)."""
    with write_transaction(db):
        db.table("sessions").delete_where("token_hash = ?", [token_hash])
