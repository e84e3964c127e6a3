"""Reading rows from a psycopg cursor, shared by the plant's PostgreSQL tables (plant_db, plant_labels, plant_models).

Plain functions over the DB-API cursor, so that this module (like its callers) does not import
psycopg: the station runtime runs without it.
"""

from __future__ import annotations

from typing import Any


def dict_rows(cur: Any) -> list[dict[str, Any]]:
    """The cursor's remaining rows, each a dict by column name."""
    names = [d.name for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def one_by_prefix(cur: Any, what: str, none: str) -> dict[str, Any]:
    """The one row of a ``... LIKE 'prefix%' LIMIT 2`` lookup; ValueError ``"<what>: <none>"`` when there is none,
    or asking for more digits when the prefix matches several."""
    found = dict_rows(cur)
    if len(found) != 1:
        raise ValueError(f"{what}: {none if not found else 'ambiguous, give more digits'}")
    return found[0]
