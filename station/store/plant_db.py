"""The plant database (PostgreSQL, psycopg 3): schema, exactly-once result writes, rollups.

All of the plant tier's SQL is here (the station's own SQLite SQL is in the
modules beside this one). Tables:

* ``result_keys (station_id, seq)`` — the primary key every result is checked
  against: ``INSERT ... ON CONFLICT (station_id, seq) DO NOTHING RETURNING``
  tells which results of a batch are new. It is a plain table because
  PostgreSQL wants the partition key in every unique index of a partitioned one.
* ``inspections`` — one row per part, partitioned by month of ``t`` (the part's
  trigger time); a month's partition is created when its first part arrives.
* ``rollups`` — per line, station, product, hour (UTC) and shift: counts per
  outcome and the latency sum; ``defect_rollups`` — defects per class, same key.
  Both are updated in the same transaction as the insert, from the new rows only.
* ``stations`` — last seen, last model, per station.
* ``labels``, ``dataset_snapshots`` — QA labels from every station and dataset snapshots
  across stations (SQL in :mod:`station.store.plant_labels`).
* ``models`` — the central registry (content hash, S3 key; lineage of a model trained from a
  dataset snapshot: snapshot id, training host, metrics); ``rollouts`` — each staged rollout
  (SQL in :mod:`station.store.plant_models`).

One transaction per batch: keys, rows, rollups, commit; the caller acks the
messages after the commit, so a crash before it means a redelivery and the
keys make it a no-op.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from . import plant_labels
from .db import given
from .pg import dict_rows

if TYPE_CHECKING:  # the message types of the plant wire (the store does not import the plant tier)
    from station.plant.wire import ResultMsg

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS plant_schema (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS result_keys (
    station_id text NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (station_id, seq)
);
CREATE TABLE IF NOT EXISTS inspections (
    station_id text NOT NULL,
    seq bigint NOT NULL,
    t timestamptz NOT NULL,
    line text NOT NULL,
    product text NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('PASS', 'FAIL', 'UNCERTAIN', 'FAILSAFE')),
    part_id bigint NOT NULL,
    model_id text NOT NULL,
    latency_ms real NOT NULL,
    defects text[] NOT NULL,
    images text[] NOT NULL,
    shift text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (t);
CREATE INDEX IF NOT EXISTS inspections_station_seq ON inspections (station_id, seq);
CREATE INDEX IF NOT EXISTS inspections_line_t ON inspections (line, t);
CREATE TABLE IF NOT EXISTS rollups (
    line text NOT NULL,
    station_id text NOT NULL,
    product text NOT NULL,
    hour timestamptz NOT NULL,
    shift text NOT NULL,
    total bigint NOT NULL,
    pass bigint NOT NULL,
    fail bigint NOT NULL,
    uncertain bigint NOT NULL,
    failsafe bigint NOT NULL,
    latency_ms_sum double precision NOT NULL,
    PRIMARY KEY (line, station_id, product, hour, shift)
);
CREATE TABLE IF NOT EXISTS defect_rollups (
    line text NOT NULL,
    station_id text NOT NULL,
    product text NOT NULL,
    hour timestamptz NOT NULL,
    shift text NOT NULL,
    class_name text NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (line, station_id, product, hour, shift, class_name)
);
CREATE TABLE IF NOT EXISTS models (
    sha256 text PRIMARY KEY,
    version text NOT NULL,
    key text NOT NULL,
    size bigint NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE models ADD COLUMN IF NOT EXISTS snapshot_id text;
ALTER TABLE models ADD COLUMN IF NOT EXISTS trained_on text;
ALTER TABLE models ADD COLUMN IF NOT EXISTS metrics jsonb;
CREATE TABLE IF NOT EXISTS rollouts (
    id bigserial PRIMARY KEY,
    version text NOT NULL,
    sha256 text NOT NULL REFERENCES models (sha256),
    groups text[] NOT NULL,
    state text NOT NULL CHECK (state IN ('running', 'done', 'rolled_back')),
    reached text[] NOT NULL DEFAULT '{}',
    reason text NOT NULL DEFAULT '',
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE TABLE IF NOT EXISTS stations (
    station_id text PRIMARY KEY,
    line text NOT NULL,
    last_seen timestamptz NOT NULL,
    last_t timestamptz NOT NULL,
    model_id text NOT NULL
);
"""

_ROLLUP_UPSERT = """
INSERT INTO rollups (line, station_id, product, hour, shift, total, pass, fail, uncertain, failsafe, latency_ms_sum)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (line, station_id, product, hour, shift) DO UPDATE SET
    total = rollups.total + EXCLUDED.total, pass = rollups.pass + EXCLUDED.pass, fail = rollups.fail + EXCLUDED.fail,
    uncertain = rollups.uncertain + EXCLUDED.uncertain, failsafe = rollups.failsafe + EXCLUDED.failsafe,
    latency_ms_sum = rollups.latency_ms_sum + EXCLUDED.latency_ms_sum
"""
_DEFECT_UPSERT = """
INSERT INTO defect_rollups (line, station_id, product, hour, shift, class_name, n) VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (line, station_id, product, hour, shift, class_name) DO UPDATE SET n = defect_rollups.n + EXCLUDED.n
"""
_STATION_UPSERT = """
INSERT INTO stations (station_id, line, last_seen, last_t, model_id) VALUES (%s, %s, now(), %s, %s)
ON CONFLICT (station_id) DO UPDATE SET line = EXCLUDED.line, last_seen = now(),
    last_t = GREATEST(stations.last_t, EXCLUDED.last_t),
    model_id = CASE WHEN EXCLUDED.last_t >= stations.last_t THEN EXCLUDED.model_id ELSE stations.model_id END
"""
INSPECTION_COLUMNS = (
    "station_id",
    "seq",
    "t",
    "line",
    "product",
    "outcome",
    "part_id",
    "model_id",
    "latency_ms",
    "defects",
    "images",
    "shift",
)
_OUTCOMES = ("PASS", "FAIL", "UNCERTAIN", "FAILSAFE")


ShiftFn = Callable[[float], str]


def create_database(conn: Any, name: str) -> None:
    """Create database ``name`` on the server of ``conn`` (an autocommit connection) if it does not exist."""
    if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
        conn.execute(f'CREATE DATABASE "{name}"')


def create_schema(conn: Any) -> None:
    """Create the tables (idempotent)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(74831)")  # two ingest processes starting together
        conn.execute(_SCHEMA)
        conn.execute(plant_labels.SCHEMA)
        conn.execute("INSERT INTO plant_schema (version) VALUES (%s) ON CONFLICT DO NOTHING", (SCHEMA_VERSION,))


def _month(t: float) -> dt.date:
    d = dt.datetime.fromtimestamp(t, dt.UTC)
    return dt.date(d.year, d.month, 1)


def ensure_partitions(conn: Any, months: Iterable[dt.date], known: set[dt.date]) -> None:
    """Create the monthly partitions of ``inspections`` not yet in ``known`` (updated)."""
    for m in sorted(set(months) - known):
        nxt = dt.date(m.year + m.month // 12, m.month % 12 + 1, 1)
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS inspections_{m:%Y_%m} PARTITION OF inspections "
            f"FOR VALUES FROM ('{m.isoformat()}') TO ('{nxt.isoformat()}')"
        )
        known.add(m)


def _ts(t: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, dt.UTC)


def _inspection_row(r: ResultMsg, shift: str) -> tuple[Any, ...]:
    """The ``inspections`` row of one result, in :data:`INSPECTION_COLUMNS` order."""
    return (
        r.station,
        r.seq,
        _ts(r.t),
        r.line,
        r.product,
        r.outcome,
        r.part_id,
        r.model_id,
        r.latency_ms,
        list(r.defects),
        list(r.images),
        shift,
    )


def write_results(conn: Any, results: Sequence[ResultMsg], shift_of: ShiftFn, partitions: set[dt.date]) -> int:
    """Store the new results of a batch and add them to the rollups, in one transaction; returns how many were new.

    Results already stored (same station and seq: a redelivery or a replay) change nothing.
    """
    unique = {(r.station, r.seq): r for r in results}
    if not unique:
        return 0
    with conn.transaction():
        ensure_partitions(conn, (_month(r.t) for r in unique.values()), partitions)
        cur = conn.execute(
            "INSERT INTO result_keys (station_id, seq) SELECT * FROM unnest(%s::text[], %s::bigint[]) "
            "ON CONFLICT (station_id, seq) DO NOTHING RETURNING station_id, seq",
            ([k[0] for k in unique], [k[1] for k in unique]),
        )
        new = [unique[(s, q)] for s, q in cur.fetchall()]
        if not new:
            return 0
        shifts = [shift_of(r.t) for r in new]
        with conn.cursor().copy(f"COPY inspections ({', '.join(INSPECTION_COLUMNS)}) FROM STDIN") as copy:
            for r, shift in zip(new, shifts):
                copy.write_row(_inspection_row(r, shift))
        roll: dict[tuple[Any, ...], list[float]] = defaultdict(lambda: [0, 0, 0, 0, 0, 0.0])
        defects: dict[tuple[Any, ...], int] = defaultdict(int)
        last: dict[str, ResultMsg] = {}
        for r, shift in zip(new, shifts):
            key = (r.line, r.station, r.product, _ts(r.t // 3600 * 3600), shift)
            acc = roll[key]
            acc[0] += 1
            acc[1 + _OUTCOMES.index(r.outcome)] += 1
            acc[5] += r.latency_ms
            for c in r.defects:
                defects[(*key, c)] += 1
            if r.station not in last or r.t >= last[r.station].t:
                last[r.station] = r
        with conn.cursor() as c:
            c.executemany(
                _ROLLUP_UPSERT, [(*k, *v) for k, v in sorted(roll.items())]
            )  # sorted: two writers lock rows in one order
            if defects:
                c.executemany(_DEFECT_UPSERT, [(*k, n) for k, n in sorted(defects.items())])
            c.executemany(_STATION_UPSERT, [(s, r.line, _ts(r.t), r.model_id) for s, r in sorted(last.items())])
    return len(new)


def insert_plain(conn: Any, results: Sequence[ResultMsg], shift_of: ShiftFn, partitions: set[dt.date]) -> None:
    """The bench's reference: a plain ``executemany`` INSERT of the rows (no de-duplication, no rollups)."""
    with conn.transaction():
        ensure_partitions(conn, (_month(r.t) for r in results), partitions)
        with conn.cursor() as c:
            c.executemany(
                f"INSERT INTO inspections ({', '.join(INSPECTION_COLUMNS)}) VALUES "
                f"({', '.join(['%s'] * len(INSPECTION_COLUMNS))})",
                [_inspection_row(r, shift_of(r.t)) for r in results],
            )


DIMENSIONS = ("line", "station_id", "shift", "product")


def _dim(by: str) -> str:
    if by not in DIMENSIONS:
        raise ValueError(f"by must be one of {', '.join(DIMENSIONS)}, not {by!r}")
    return by


def yield_by(conn: Any, by: str, since: dt.datetime, until: dt.datetime) -> list[dict[str, Any]]:
    """Counts per outcome and yield (PASS / total) per ``by`` (line, station_id, shift, product), from the rollups."""
    col = _dim(by)
    cur = conn.execute(
        f"SELECT {col} AS key, sum(total)::bigint AS total, sum(pass)::bigint AS pass, sum(fail)::bigint AS fail, "
        "sum(uncertain)::bigint AS uncertain, sum(failsafe)::bigint AS failsafe, sum(latency_ms_sum) / "
        "nullif(sum(total), 0) AS latency_ms_mean "
        f"FROM rollups WHERE hour >= %s AND hour < %s GROUP BY {col} ORDER BY {col}",
        (since, until),
    )
    rows = dict_rows(cur)
    for r in rows:
        r["yield"] = r["pass"] / r["total"] if r["total"] else None
    return rows


def pareto(conn: Any, by: str, key: str | None, since: dt.datetime, until: dt.datetime) -> list[dict[str, Any]]:
    """Defects per class, most frequent first, with the cumulative share; for one ``by`` = ``key`` or all."""
    col = _dim(by)
    where = "hour >= %s AND hour < %s"
    params: list[dt.datetime | str] = [since, until]
    if key is not None:
        where += f" AND {col} = %s"
        params.append(key)
    rows = conn.execute(
        f"SELECT class_name, sum(n)::bigint FROM defect_rollups WHERE {where} GROUP BY class_name ORDER BY 2 DESC, 1",
        params,
    ).fetchall()
    total, acc, out = sum(n for _, n in rows), 0, []
    for c, n in rows:
        acc += n
        out.append({"class_name": c, "count": n, "cumulative_share": acc / total})
    return out


def stations(conn: Any) -> list[dict[str, Any]]:
    """Every station: line, last seen, newest part time, model id of its newest part."""
    cur = conn.execute("SELECT station_id, line, last_seen, last_t, model_id FROM stations ORDER BY line, station_id")
    return dict_rows(cur)


def parts(
    conn: Any, *, station: str | None = None, outcome: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """The newest parts, optionally of one station and/or outcome."""
    where, params = given(("station_id = %s", station), ("outcome = %s", outcome))
    cur = conn.execute(
        "SELECT station_id, seq, t, line, product, outcome, part_id, model_id, latency_ms, defects, images FROM "
        "inspections "
        f"WHERE {' AND '.join(['true', *where])} ORDER BY t DESC LIMIT %s",
        (*params, limit),
    )
    return dict_rows(cur)


def result_count(conn: Any) -> int:
    """Rows of ``inspections``; 0 before the ingest made the schema."""
    from psycopg.errors import UndefinedTable

    try:
        row = conn.execute("SELECT count(*) FROM inspections").fetchone()
    except UndefinedTable:
        return 0
    return int(row[0])


def counts(conn: Any) -> dict[str, Any]:
    """Totals for checks: rows, distinct (station, seq), keys, rollup sums per outcome, defect sums."""

    def one(sql: str) -> Any:
        return conn.execute(sql).fetchone()

    rows, distinct = one("SELECT count(*), count(DISTINCT (station_id, seq)) FROM inspections")
    raw = dict(conn.execute("SELECT outcome, count(*) FROM inspections GROUP BY outcome").fetchall())
    r = one(
        "SELECT coalesce(sum(total),0), coalesce(sum(pass),0), coalesce(sum(fail),0), coalesce(sum(uncertain),0), "
        "coalesce(sum(failsafe),0) FROM rollups"
    )
    raw_defects = dict(conn.execute("SELECT d, count(*) FROM inspections, unnest(defects) d GROUP BY d").fetchall())
    roll_defects = dict(
        conn.execute("SELECT class_name, sum(n)::bigint FROM defect_rollups GROUP BY class_name").fetchall()
    )
    return {
        "rows": rows,
        "distinct": distinct,
        "keys": one("SELECT count(*) FROM result_keys")[0],
        "raw": {o: raw.get(o, 0) for o in _OUTCOMES},
        "rollup_total": r[0],
        "rollup": dict(zip(_OUTCOMES, r[1:])),
        "raw_defects": raw_defects,
        "rollup_defects": {k: int(v) for k, v in roll_defects.items()},
    }


def per_station(conn: Any) -> dict[str, tuple[int, int, int]]:
    """station -> (rows, min seq, max seq)."""
    return {
        s: (n, lo, hi)
        for s, n, lo, hi in conn.execute(
            "SELECT station_id, count(*), min(seq), max(seq) FROM inspections GROUP BY station_id"
        )
    }
