"""The store modules that own the web's SQL: users and sessions, alarm acknowledgements (real in-memory SQLite)."""

from __future__ import annotations

import pytest

from station.store import alarms, users
from station.store.db import write_transaction


def test_users_and_sessions(fresh_db) -> None:
    db = fresh_db
    assert users.add_user(db, "ann", "h1", "qa", 1.0)
    assert not users.add_user(db, "ann", "h2", "admin", 2.0)  # taken: nothing written
    assert users.credentials(db, "ann") == ("h1", "qa", False)
    assert users.credentials(db, "bob") is None
    assert not users.has_enabled_admin(db)
    users.start_session(db, "t1", "ann", 10.0, 100.0, "c1")
    assert users.live_session(db, "t1", 50.0) == ("ann", "qa", "c1", 100.0)
    assert users.live_session(db, "t1", 100.0) is None  # expired
    users.start_session(db, "t2", "ann", 200.0, 300.0, "c2")  # purges t1 (expired at 200)
    assert db["sessions"].count_where("token_hash = 't1'") == 0
    assert users.update_user(db, "ann", role="admin")
    assert users.has_enabled_admin(db) and users.live_session(db, "t2", 250.0) == ("ann", "admin", "c2", 300.0)
    assert users.update_user(db, "ann", disabled=1, end_sessions=True)
    assert users.live_session(db, "t2", 250.0) is None and db["sessions"].count == 0
    assert not users.update_user(db, "nobody", role="qa")
    with pytest.raises(ValueError, match="password_hash, role, disabled"):
        users.update_user(db, "ann", username="eve")
    assert users.list_users(db) == [{"username": "ann", "role": "admin", "created_at": 1.0, "disabled": True}]
    users.end_session(db, "t2")


def test_sqlite_utils_writes_roll_back_with_the_callers_transaction(fresh_db) -> None:
    db = fresh_db
    with pytest.raises(RuntimeError), write_transaction(db):
        db["users"].insert({"username": "x", "password_hash": "h", "role": "qa", "created_at": 0.0, "disabled": 0})
        raise RuntimeError("boom")
    assert not users.user_exists(db, "x")


def test_alarm_acknowledgements(fresh_db) -> None:
    db = fresh_db
    db["alarms"].insert_all(
        [
            {"t_wall": 1.0, "component": "camera", "state": "alarm", "message": "lost"},
            {"t_wall": 2.0, "component": "plc", "state": "warning", "message": "slow"},
            {"t_wall": 3.0, "component": "disk", "state": "alarm", "message": "full"},
        ]
    )
    assert alarms.unacknowledged_count(db) == 3
    assert alarms.acknowledge(db, 3, "op", 10.0)
    assert not alarms.acknowledge(db, 3, "op2", 11.0)  # already: the first acknowledgement stays
    assert alarms.get_alarm(db, 3) == {"acknowledged_by": "op", "component": "disk", "message": "full"}
    assert alarms.get_alarm(db, 99) is None
    assert [a["id"] for a in alarms.alarm_log(db, 10)] == [2, 1, 3]  # unacknowledged first, newest first
    assert alarms.acknowledge_all(db, "op", 12.0) == 2 and alarms.unacknowledged_count(db) == 0
    assert alarms.acknowledge_all(db, "op", 13.0) == 0
