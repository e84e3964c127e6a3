"""Plant database (PostgreSQL): the central model registry and the staged rollouts (tables made by
:func:`station.store.plant_db.create_schema`).

* ``models`` — one row per model file (content hash, S3 key, size), with the lineage of a model
  trained on a training host from a dataset snapshot (``snapshot_id``, ``trained_on``, ``metrics``);
* ``rollouts`` — each staged rollout: groups, groups reached, state, reason;
* :func:`group_metrics` — what the rollout controller judges a group on, from ``inspections``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from .pg import dict_rows, one_by_prefix


def register_model(
    conn: Any,
    sha256: str,
    version: str,
    key: str,
    size: int,
    *,
    snapshot_id: str | None = None,
    trained_on: str | None = None,
    metrics: dict[str, float] | None = None,
) -> None:
    """Add a model file to the central registry (idempotent), with its lineage when it was trained here."""
    from psycopg.types.json import Jsonb

    with conn.transaction():
        conn.execute(
            "INSERT INTO models (sha256, version, key, size, snapshot_id, trained_on, metrics) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (sha256) DO NOTHING",
            (sha256, version, key, size, snapshot_id, trained_on, None if metrics is None else Jsonb(metrics)),
        )


_MODEL_COLUMNS = "sha256, version, key, size, snapshot_id, trained_on, metrics, registered_at"


def find_model(conn: Any, sha256: str) -> dict[str, Any]:
    """The registered model whose sha256 is or starts with ``sha256`` (8+ hex digits); ValueError otherwise."""
    sha = sha256.strip().lower()
    if len(sha) < 8 or any(c not in "0123456789abcdef" for c in sha):
        raise ValueError(f"model {sha256!r}: give its sha256 (at least 8 hex digits)")
    cur = conn.execute(
        f"SELECT {_MODEL_COLUMNS} FROM models WHERE sha256 LIKE %s ORDER BY sha256 LIMIT 2", (sha + "%",)
    )
    return one_by_prefix(cur, f"model {sha256!r}", "no registered model has it")


def models(conn: Any) -> list[dict[str, Any]]:
    """The central registry, newest first."""
    cur = conn.execute(f"SELECT {_MODEL_COLUMNS} FROM models ORDER BY registered_at DESC, sha256")
    return dict_rows(cur)


def start_rollout(conn: Any, version: str, sha256: str, groups: Sequence[str]) -> int:
    """A new rollout row; returns its id."""
    with conn.transaction():
        return int(
            conn.execute(
                "INSERT INTO rollouts (version, sha256, groups, state) VALUES (%s, %s, %s, 'running') RETURNING id",
                (version, sha256, list(groups)),
            ).fetchone()[0]
        )


def update_rollout(
    conn: Any, rollout_id: int, *, reached: Sequence[str], state: str = "running", reason: str = ""
) -> None:
    """Record the groups reached, and the end (done / rolled_back, with the reason)."""
    with conn.transaction():
        conn.execute(
            "UPDATE rollouts SET reached = %s, state = %s, reason = %s, "
            "finished_at = CASE WHEN %s = 'running' THEN NULL ELSE now() END WHERE id = %s",
            (list(reached), state, reason, state, rollout_id),
        )


def rollout(conn: Any, rollout_id: int) -> dict[str, Any]:
    """One rollout as a dict."""
    cur = conn.execute(
        "SELECT id, version, sha256, groups, state, reached, reason FROM rollouts WHERE id = %s", (rollout_id,)
    )
    return dict_rows(cur)[0]


def group_metrics(conn: Any, stations: Sequence[str], model_ids: Sequence[str], since: dt.datetime) -> dict[str, float]:
    """Parts of ``stations`` under ``model_ids`` received since ``since``: count, reject and FAILSAFE rates, p95
    latency."""
    conn.commit()  # a fresh snapshot
    n, rej, fs, p95 = conn.execute(
        "SELECT count(*), coalesce(avg((outcome <> 'PASS')::int), 0), coalesce(avg((outcome = 'FAILSAFE')::int), 0), "
        "coalesce(percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms), 0) FROM inspections "
        "WHERE station_id = ANY(%s) AND model_id = ANY(%s) AND received_at >= %s",
        (list(stations), list(model_ids), since),
    ).fetchone()
    return {"parts": int(n), "reject_rate": float(rej), "failsafe_rate": float(fs), "latency_ms_p95": float(p95)}
