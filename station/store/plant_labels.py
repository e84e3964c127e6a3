"""Plant database (PostgreSQL): QA labels from every station, and dataset snapshots across stations.

* ``labels`` — one row per (station, revision): the whole current label set of one image after a
  QA change on that station (``revision`` = the station's review row id). Rows are never changed:
  the newest revision of a (station, image) is its current labels, the older ones its history.
  A redelivered message hits the primary key and changes nothing.
* ``dataset_snapshots`` — a frozen dataset: its id is the content hash of its class list and
  images with their labels (:func:`labeling.snapshot.content_sha`), so the same content gives
  the same id; the manifest (JSON) is in the object store under ``key``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .db import given
from .pg import dict_rows, one_by_prefix

if TYPE_CHECKING:  # the message types of the plant wire (the store does not import the plant tier)
    from station.plant.wire import LabelMsg

SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    station_id text NOT NULL,
    revision bigint NOT NULL,
    image_id bigint NOT NULL,
    part_id bigint NOT NULL,
    camera_id text NOT NULL,
    image_key text NOT NULL,
    sha256 text NOT NULL,
    width integer NOT NULL,
    height integer NOT NULL,
    verdict text NOT NULL CHECK (verdict IN ('labeled', 'good')),
    boxes jsonb NOT NULL,
    reviewed_by text NOT NULL,
    reviewed_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (station_id, revision)
);
CREATE INDEX IF NOT EXISTS labels_image ON labels (station_id, image_id, revision DESC);
CREATE TABLE IF NOT EXISTS dataset_snapshots (
    id text PRIMARY KEY,
    name text NOT NULL,
    stations text[] NOT NULL,
    since timestamptz,
    until timestamptz,
    class_names text[] NOT NULL,
    n_images integer NOT NULL,
    n_labels integer NOT NULL,
    key text NOT NULL,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
"""

_COLUMNS = (
    "station_id",
    "revision",
    "image_id",
    "part_id",
    "camera_id",
    "image_key",
    "sha256",
    "width",
    "height",
    "verdict",
    "boxes",
    "reviewed_by",
    "reviewed_at",
)


def write_labels(conn: Any, changes: Sequence[LabelMsg]) -> int:
    """Store the label changes not stored yet, in one transaction; returns how many were new."""
    from psycopg.types.json import Jsonb

    if not changes:
        return 0
    rows = [
        (
            c.station,
            c.revision,
            c.image_id,
            c.part_id,
            c.camera_id,
            c.image_key,
            c.sha256,
            c.width,
            c.height,
            c.verdict,
            Jsonb([list(b) for b in c.labels]),
            c.reviewed_by,
            dt.datetime.fromtimestamp(c.reviewed_at, dt.UTC),
        )
        for c in changes
    ]
    with conn.transaction(), conn.cursor() as cur:
        new = 0
        for r in rows:
            cur.execute(
                f"INSERT INTO labels ({', '.join(_COLUMNS)}) VALUES ({', '.join(['%s'] * len(_COLUMNS))}) "
                "ON CONFLICT (station_id, revision) DO NOTHING",
                r,
            )
            new += cur.rowcount
    return new


def current_labels(
    conn: Any, stations: Sequence[str], since: dt.datetime | None = None, until: dt.datetime | None = None
) -> list[dict[str, Any]]:
    """The newest revision of every image of ``stations``, reviewed in [since, until), by station and image."""
    where, params = given(
        ("station_id = ANY(%s)", list(stations)), ("reviewed_at >= %s", since), ("reviewed_at < %s", until)
    )
    cur = conn.execute(
        f"SELECT * FROM (SELECT DISTINCT ON (station_id, image_id) {', '.join(_COLUMNS)} FROM labels "
        f"ORDER BY station_id, image_id, revision DESC) cur WHERE {' AND '.join(where)} ORDER BY station_id, image_id",
        params,
    )
    return dict_rows(cur)


def label_history(conn: Any, station: str, image_id: int) -> list[dict[str, Any]]:
    """Every revision of one image of one station, oldest first."""
    cur = conn.execute(
        f"SELECT {', '.join(_COLUMNS)}, received_at FROM labels WHERE station_id = %s AND image_id = %s "
        "ORDER BY revision",
        (station, image_id),
    )
    return dict_rows(cur)


def add_snapshot(conn: Any, row: dict[str, Any]) -> bool:
    """Record a dataset snapshot (its id is its content hash); False when it was recorded before."""
    with conn.transaction():
        cur = conn.execute(
            "INSERT INTO dataset_snapshots (id, name, stations, since, until, class_names, n_images, n_labels, key, "
            "created_by) VALUES (%(id)s, %(name)s, %(stations)s, %(since)s, %(until)s, %(class_names)s, %(n_images)s, "
            "%(n_labels)s, %(key)s, %(created_by)s) ON CONFLICT (id) DO NOTHING",
            row,
        )
        return bool(cur.rowcount == 1)


def snapshot(conn: Any, snapshot_id: str) -> dict[str, Any]:
    """One dataset snapshot row (by id or a unique prefix of 8+ characters); ValueError otherwise."""
    if len(snapshot_id) < 8:
        raise ValueError(f"snapshot {snapshot_id!r}: give its id (at least 8 hex digits)")
    cur = conn.execute("SELECT * FROM dataset_snapshots WHERE id LIKE %s LIMIT 2", (snapshot_id.lower() + "%",))
    return one_by_prefix(cur, f"snapshot {snapshot_id!r}", "no such snapshot")


def snapshots(conn: Any) -> list[dict[str, Any]]:
    """Every dataset snapshot, newest first."""
    cur = conn.execute("SELECT * FROM dataset_snapshots ORDER BY created_at DESC, id")
    return dict_rows(cur)
