"""Ordered, recorded schema migrations.

A migration is a plain function ``fn(db)`` registered with ``@migration``; the
order of registration is the order of application. ``_migrations`` records the
name and time of each applied migration, so opening a database applies only
the new ones. Each migration runs in its own ``BEGIN IMMEDIATE`` transaction
together with its record: it is applied completely or not at all, and two
processes opening the same file cannot both apply it.

Never edit or reorder a migration that has shipped: add a new one.

Schema notes: JSON columns are TEXT holding JSON; times ``*_wall``/``*_at``
are UNIX seconds (REAL). ``labels`` and ``audit`` are append-only (triggers
refuse UPDATE and DELETE): a relabel inserts a new label row that
``supersedes`` the old one, a removal inserts a row with status 'deleted'.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Sequence

import sqlite_utils

from .db import StoreError, write_transaction

log = logging.getLogger(__name__)

MigrationFn = Callable[[sqlite_utils.Database], None]
MIGRATIONS: list[tuple[str, MigrationFn]] = []
TABLE = "_migrations"


def migration(fn: MigrationFn) -> MigrationFn:
    """Register ``fn`` as the next migration, named after the function."""
    name = fn.__name__
    if any(n == name for n, _ in MIGRATIONS):
        raise ValueError(f"migration {name!r} is registered twice")
    MIGRATIONS.append((name, fn))
    return fn


def _ensure_table(db: sqlite_utils.Database) -> None:
    db.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")


def applied_migrations(db: sqlite_utils.Database) -> list[tuple[str, float]]:
    """(name, applied_at) of every applied migration, in the order applied."""
    if TABLE not in db.table_names():
        return []
    return [(r[0], r[1]) for r in db.execute(f"SELECT name, applied_at FROM {TABLE} ORDER BY rowid")]


def apply_migrations(
    db: sqlite_utils.Database, migrations: Sequence[tuple[str, MigrationFn]] | None = None, *, where: str = "database"
) -> list[str]:
    """Apply the migrations not yet recorded in ``db``; return their names.

    Raises :class:`StoreError` if the database records migrations this code
    does not know (it was written by a newer version of the station).
    """
    migrations = MIGRATIONS if migrations is None else migrations
    applied = [n for n, _ in applied_migrations(db)]
    known = {n for n, _ in migrations}
    unknown = [n for n in applied if n not in known]
    if unknown:
        raise StoreError(
            f"{where}: migrated by a newer station version (unknown migrations: {', '.join(unknown)}); "
            "upgrade the station software or restore a backup made by this version"
        )
    todo = [(n, fn) for n, fn in migrations if n not in set(applied)]
    if not todo:
        return []  # nothing to do: no write lock taken, so opening never waits for the writer
    if TABLE not in db.table_names():
        _ensure_table(db)
    done: list[str] = []
    for name, fn in todo:
        with write_transaction(db):
            # re-checked inside the write lock: another process may have just applied it
            if db.execute(f"SELECT 1 FROM {TABLE} WHERE name = ?", [name]).fetchone():
                continue
            fn(db)
            db.execute(f"INSERT INTO {TABLE} (name, applied_at) VALUES (?, ?)", [name, time.time()])
        done.append(name)
        log.info("%s: applied migration %s", where, name)
    return done


def _script(db: sqlite_utils.Database, sql: str) -> None:
    """Run ``;``-separated DDL inside the caller's transaction (no implicit COMMIT)."""
    for stmt in _split(sql):
        db.conn.execute(stmt)


def _append_only(db: sqlite_utils.Database, table: str, message: str, *, on_delete: str | None = None) -> None:
    """Triggers ``<table>_no_update`` / ``_no_delete`` that refuse both with ``message`` (``on_delete`` for DELETE)."""
    for op, msg in (("UPDATE", message), ("DELETE", on_delete or message)):
        if "'" in msg:
            raise ValueError(f"append-only message for {table} must not contain a quote: {msg!r}")
        db.conn.execute(
            f"CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} BEGIN SELECT RAISE(ABORT, '{msg}'); END"
        )


def _split(sql: str) -> list[str]:
    """Split a script into complete statements (trigger bodies stay whole)."""
    out, buf = [], ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip() and not all(ln.strip().startswith("--") or not ln.strip() for ln in buf.splitlines()):
        raise ValueError(f"incomplete SQL statement in migration: {buf.strip()[:80]!r}")
    return out


@migration
def m0001_core(db: sqlite_utils.Database) -> None:
    """Inspections, defects, images, counters, alarms."""
    _script(
        db,
        """
        CREATE TABLE inspections (
            part_id INTEGER PRIMARY KEY,
            seq INTEGER NOT NULL,
            t_trigger_wall REAL,
            t_decided_wall REAL,
            t_recorded_wall REAL NOT NULL,
            outcome TEXT NOT NULL CHECK (outcome IN ('PASS', 'FAIL', 'UNCERTAIN', 'FAILSAFE')),
            reasons TEXT NOT NULL DEFAULT '[]',
            model_id TEXT NOT NULL,
            config_hash TEXT NOT NULL,
            calibration_id TEXT NOT NULL,
            timings TEXT NOT NULL DEFAULT '{}',
            deadline_slack_ms REAL,
            ground_truth TEXT,
            defect_count INTEGER NOT NULL DEFAULT 0,
            max_score REAL,
            source TEXT NOT NULL,
            station TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX inspections_outcome ON inspections (outcome, part_id);
        CREATE INDEX inspections_t_trigger ON inspections (t_trigger_wall);
        CREATE INDEX inspections_model ON inspections (model_id, part_id);

        CREATE TABLE defects (
            id INTEGER PRIMARY KEY,
            part_id INTEGER NOT NULL REFERENCES inspections (part_id),
            camera_id TEXT NOT NULL,
            class_name TEXT NOT NULL,
            confidence REAL NOT NULL,
            x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
            area_mm2 REAL,
            action TEXT NOT NULL CHECK (action IN ('reject', 'uncertain', 'ignore')),
            rule TEXT NOT NULL DEFAULT '',
            model_id TEXT NOT NULL
        );
        CREATE INDEX defects_part ON defects (part_id);
        CREATE INDEX defects_class ON defects (class_name, part_id);

        -- One row per kept frame. Files are content-addressed (sha256 of the
        -- encoded bytes), so two rows may share a file. Budget enforcement marks
        -- rows deleted (deleted_at) instead of removing them: labels refer to
        -- image ids, and the history "this part had an image" is kept.
        CREATE TABLE images (
            id INTEGER PRIMARY KEY,
            part_id INTEGER NOT NULL REFERENCES inspections (part_id),
            camera_id TEXT NOT NULL,
            sha256 TEXT NOT NULL CHECK (length(sha256) = 64),
            relpath TEXT NOT NULL,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            format TEXT NOT NULL CHECK (format IN ('png', 'jpg')),
            bytes INTEGER NOT NULL,
            kept_reason TEXT NOT NULL,
            deleted_at REAL,
            deleted_reason TEXT
        );
        CREATE INDEX images_part ON images (part_id);
        CREATE INDEX images_sha ON images (sha256);

        -- The station counters as of the last committed batch (key 'station').
        CREATE TABLE counters (
            key TEXT PRIMARY KEY,
            counters TEXT NOT NULL,
            last_part_id INTEGER NOT NULL DEFAULT 0,
            updated_at REAL NOT NULL
        );

        CREATE TABLE alarms (
            id INTEGER PRIMARY KEY,
            t_wall REAL NOT NULL,
            component TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('warning', 'alarm')),
            message TEXT NOT NULL,
            acknowledged_by TEXT,
            acknowledged_at REAL
        );
        CREATE INDEX alarms_t ON alarms (t_wall);
        CREATE INDEX alarms_open ON alarms (acknowledged_at, t_wall);
        """,
    )


@migration
def m0002_labels_audit_models(db: sqlite_utils.Database) -> None:
    """Append-only labels and audit trail; the model registry."""
    _script(
        db,
        """
        CREATE TABLE labels (
            id INTEGER PRIMARY KEY,
            part_id INTEGER NOT NULL REFERENCES inspections (part_id),
            image_id INTEGER REFERENCES images (id),
            class_name TEXT NOT NULL,
            x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
            source TEXT NOT NULL CHECK (source IN ('model', 'qa', 'import')),
            status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deleted')),
            created_by TEXT NOT NULL,
            created_at REAL NOT NULL,
            supersedes INTEGER REFERENCES labels (id)
        );
        CREATE INDEX labels_image ON labels (image_id, status);
        CREATE INDEX labels_part ON labels (part_id);
        CREATE INDEX labels_supersedes ON labels (supersedes);

        CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            t_wall REAL NOT NULL,
            user TEXT NOT NULL,
            action TEXT NOT NULL,
            object_type TEXT NOT NULL,
            object_id TEXT,
            before TEXT,
            after TEXT,
            reason TEXT
        );
        CREATE INDEX audit_t ON audit (t_wall);
        CREATE INDEX audit_object ON audit (object_type, object_id);

        CREATE TABLE models (
            id INTEGER PRIMARY KEY,
            sha256 TEXT NOT NULL UNIQUE,
            path TEXT NOT NULL,
            task TEXT NOT NULL,
            names TEXT NOT NULL DEFAULT '[]',
            imgsz INTEGER,
            created_at REAL NOT NULL,
            parent_sha TEXT,
            dataset_snapshot TEXT,
            metrics TEXT,
            trained_by TEXT,
            promoted_by TEXT,
            promoted_at REAL,
            status TEXT NOT NULL DEFAULT 'candidate'
        );
        CREATE INDEX models_status ON models (status);
        """,
    )
    _append_only(
        db,
        "labels",
        "labels are append-only: insert a row that supersedes this one",
        on_delete="labels are append-only: insert a row with status deleted",
    )
    _append_only(db, "audit", "the audit trail is append-only")


@migration
def m0003_users_sessions(db: sqlite_utils.Database) -> None:
    """Users with roles, and login sessions (tokens stored hashed)."""
    _script(
        db,
        """
        CREATE TABLE users (
            username TEXT PRIMARY KEY,
            password_hash TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('operator', 'qa', 'admin')),
            created_at REAL NOT NULL,
            disabled INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE sessions (
            token_hash TEXT PRIMARY KEY,
            username TEXT NOT NULL REFERENCES users (username) ON DELETE CASCADE,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            csrf TEXT NOT NULL
        );
        CREATE INDEX sessions_user ON sessions (username);
        CREATE INDEX sessions_expiry ON sessions (expires_at);
        """,
    )


@migration
def m0004_inspection_frames_rejected(db: sqlite_utils.Database) -> None:
    """Per inspection: frames acquired and whether a reject was scheduled (counters resume from these)."""
    _script(
        db,
        """
        ALTER TABLE inspections ADD COLUMN n_frames INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE inspections ADD COLUMN rejected INTEGER NOT NULL DEFAULT 0;
        """,
    )


@migration
def m0005_labeling(db: sqlite_utils.Database) -> None:
    """QA review: model detections as label rows, review verdicts per image, frozen dataset snapshots.

    - ``labels.defect_id`` links a ``source='model'`` label to the detection it came from. Two
      triggers create those rows: whichever of a ``defects`` row and the ``images`` row of the same
      (part, camera) is inserted second inserts the label, so every kept image carries its model
      detections as label rows from the moment it is recorded (the backfill does the same for older
      rows). QA edits then only ever *append* rows that supersede these.
    - ``labels_supersedes_once``: a label is superseded at most once (history is a chain, never a fork).
    - ``image_reviews``: append-only log of QA verdicts per image ('labeled' or 'good'); the latest
      row is the image's review state (view ``image_review_latest``).
    - ``dataset_snapshots`` / ``dataset_snapshot_items``: append-only, the frozen image and label
      list of a training dataset (lineage for trained models; re-export is identical).
    """
    _script(
        db,
        """
        ALTER TABLE labels ADD COLUMN defect_id INTEGER REFERENCES defects (id);
        CREATE INDEX labels_defect ON labels (defect_id);
        CREATE UNIQUE INDEX labels_supersedes_once ON labels (supersedes) WHERE supersedes IS NOT NULL;

        INSERT INTO labels (part_id, image_id, class_name, x1, y1, x2, y2, source, status, created_by, created_at,
                            supersedes, defect_id)
        SELECT d.part_id, i.id, d.class_name, d.x1, d.y1, d.x2, d.y2, 'model', 'active', 'model:' || d.model_id,
               p.t_recorded_wall, NULL, d.id
        FROM defects d
        JOIN images i ON i.part_id = d.part_id AND i.camera_id = d.camera_id
        JOIN inspections p ON p.part_id = d.part_id
        ORDER BY i.id, d.id;

        CREATE TRIGGER images_model_labels AFTER INSERT ON images BEGIN
            INSERT INTO labels (part_id, image_id, class_name, x1, y1, x2, y2, source, status, created_by, created_at,
                                supersedes, defect_id)
            SELECT d.part_id, NEW.id, d.class_name, d.x1, d.y1, d.x2, d.y2, 'model', 'active', 'model:' || d.model_id,
                   (SELECT p.t_recorded_wall FROM inspections p WHERE p.part_id = NEW.part_id), NULL, d.id
            FROM defects d
            WHERE d.part_id = NEW.part_id AND d.camera_id = NEW.camera_id
            ORDER BY d.id;
        END;
        CREATE TRIGGER defects_model_labels AFTER INSERT ON defects BEGIN
            INSERT INTO labels (part_id, image_id, class_name, x1, y1, x2, y2, source, status, created_by, created_at,
                                supersedes, defect_id)
            SELECT NEW.part_id, i.id, NEW.class_name, NEW.x1, NEW.y1, NEW.x2, NEW.y2, 'model', 'active',
                   'model:' || NEW.model_id,
                   (SELECT p.t_recorded_wall FROM inspections p WHERE p.part_id = NEW.part_id), NULL, NEW.id
            FROM images i
            WHERE i.part_id = NEW.part_id AND i.camera_id = NEW.camera_id
            ORDER BY i.id;
        END;

        CREATE TABLE image_reviews (
            id INTEGER PRIMARY KEY,
            image_id INTEGER NOT NULL REFERENCES images (id),
            verdict TEXT NOT NULL CHECK (verdict IN ('labeled', 'good')),
            reviewed_by TEXT NOT NULL,
            reviewed_at REAL NOT NULL
        );
        CREATE INDEX image_reviews_image ON image_reviews (image_id, id);
        CREATE VIEW image_review_latest AS
            SELECT r.* FROM image_reviews r
            WHERE r.id = (SELECT MAX(r2.id) FROM image_reviews r2 WHERE r2.image_id = r.image_id);

        CREATE TABLE dataset_snapshots (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            created_at REAL NOT NULL,
            created_by TEXT NOT NULL,
            params TEXT NOT NULL DEFAULT '{}',
            class_names TEXT NOT NULL,
            content_sha256 TEXT NOT NULL CHECK (length(content_sha256) = 64),
            n_images INTEGER NOT NULL,
            n_labels INTEGER NOT NULL
        );
        CREATE INDEX dataset_snapshots_sha ON dataset_snapshots (content_sha256);
        CREATE TABLE dataset_snapshot_items (
            snapshot_id INTEGER NOT NULL REFERENCES dataset_snapshots (id),
            image_id INTEGER NOT NULL REFERENCES images (id),
            part_id INTEGER NOT NULL,
            camera_id TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            format TEXT NOT NULL,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            t_wall REAL,
            verdict TEXT,
            labels TEXT NOT NULL DEFAULT '[]',
            PRIMARY KEY (snapshot_id, image_id)
        );
        """,
    )
    _append_only(db, "image_reviews", "image reviews are append-only: insert a new review")
    _append_only(db, "dataset_snapshots", "dataset snapshots are frozen: create a new snapshot")
    _append_only(db, "dataset_snapshot_items", "dataset snapshots are frozen: create a new snapshot")


@migration
def m0006_models_lifecycle(db: sqlite_utils.Database) -> None:
    """Model registry details (models/registry.py): input size (h, w), kept training weights, lineage.

    ``imgsz`` (m0002) holds one number; Ultralytics exports may be non-square, so ``input_hw`` keeps
    ``[height, width]`` as JSON. ``weights_path`` is the ``.pt`` kept to fine-tune from (ONNX cannot
    be trained); ``lineage`` is the JSON lineage read from the model's metadata (dataset snapshot,
    parent sha, seed). At most one model is ``current`` (partial unique index).
    """
    _script(
        db,
        """
        ALTER TABLE models ADD COLUMN input_hw TEXT;
        ALTER TABLE models ADD COLUMN weights_path TEXT;
        ALTER TABLE models ADD COLUMN lineage TEXT NOT NULL DEFAULT '{}';
        CREATE UNIQUE INDEX models_one_current ON models (status) WHERE status = 'current';
        """,
    )


@migration
def m0007_shadow_rules_overrides(db: sqlite_utils.Database) -> None:
    """Shadow-mode results (station/shadow.py) and per-class threshold overrides (station/rules_overrides.py).

    - ``shadow_results``: one row per part a candidate model judged beside the production model,
      without acting. ``outcome`` / ``model_id`` are the SHADOW model's (the review queue reads
      ``shadow_results(part_id, outcome)``); ``production_outcome`` is what the line decided.
      ``differs``: the outcomes differ; ``eject_differs``: one would eject the part and the other not.
      No foreign key to ``inspections``: the recorder may write the part later (or drop it).
    - ``rules_overrides``: append-only; the newest row's per-class thresholds are laid over the
      configured ``rules`` when the station starts (and hot-applied when written from the web).
      An empty ``classes`` object reverts to the configured rules.
    """
    _script(
        db,
        """
        CREATE TABLE shadow_results (
            id INTEGER PRIMARY KEY,
            part_id INTEGER NOT NULL,
            t_wall REAL NOT NULL,
            production_outcome TEXT NOT NULL,
            production_model_id TEXT NOT NULL,
            outcome TEXT NOT NULL CHECK (outcome IN ('PASS', 'FAIL', 'UNCERTAIN', 'FAILSAFE')),
            model_id TEXT NOT NULL,
            model_sha TEXT NOT NULL,
            reasons TEXT NOT NULL DEFAULT '[]',
            defects TEXT NOT NULL DEFAULT '[]',
            differs INTEGER NOT NULL,
            eject_differs INTEGER NOT NULL,
            ms REAL
        );
        CREATE INDEX shadow_results_part ON shadow_results (part_id);
        CREATE INDEX shadow_results_model ON shadow_results (model_sha, differs, part_id);

        CREATE TABLE rules_overrides (
            id INTEGER PRIMARY KEY,
            t_wall REAL NOT NULL,
            user TEXT NOT NULL,
            reason TEXT,
            classes TEXT NOT NULL DEFAULT '{}',
            source TEXT NOT NULL DEFAULT '{}'
        );
        """,
    )
    _append_only(db, "rules_overrides", "rules overrides are append-only: insert a new row")


@migration
def m0008_anomaly_maps(db: sqlite_utils.Database) -> None:
    """Heat maps of no-labels inspectors (``Detections.anomaly_map``) and the per-part image score.

    - ``inspections.image_score``: the highest ``Detections.image_score`` over the part's frames
      (1.0 = at the decision threshold); NULL for supervised models.
    - ``anomaly_maps``: one row per kept image whose frame had a heat map: a grayscale PNG
      (0 normal, 128 the threshold, 255 twice it or more) stored by content hash under
      ``<images_dir>/maps``. It lives and dies with its image: the disk budget marks the map
      deleted in the transaction that marks its image deleted, and removes the file once no
      live row uses it (two parts may share the same map file).
    """
    _script(
        db,
        """
        ALTER TABLE inspections ADD COLUMN image_score REAL;

        CREATE TABLE anomaly_maps (
            id INTEGER PRIMARY KEY,
            image_id INTEGER NOT NULL UNIQUE REFERENCES images (id),
            part_id INTEGER NOT NULL REFERENCES inspections (part_id),
            camera_id TEXT NOT NULL,
            sha256 TEXT NOT NULL CHECK (length(sha256) = 64),
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            bytes INTEGER NOT NULL,
            image_score REAL,
            deleted_at REAL,
            deleted_reason TEXT
        );
        CREATE INDEX anomaly_maps_part ON anomaly_maps (part_id);
        CREATE INDEX anomaly_maps_sha ON anomaly_maps (sha256);
        """,
    )


@migration
def m0009_camera_setup(db: sqlite_utils.Database) -> None:
    """Versioned setup of each camera: calibrations and drawn regions (station/store/camera_setup.py).

    - ``camera_setup``: append-only; one row per version of a ``kind`` ('calibration' or
      'regions') of one station's camera: who, when, the images used (JSON list: name, sha256,
      used or why not) and the ``body`` (calibration figures, or the region polygons and rules).
      ``ref`` is a short id stamped on verdicts (a calibration's content hash, ``regions-v<n>``).
    - ``camera_setup_in_force``: append-only; the newest row per (kind, station, camera) names the
      version in force. A new version goes in force when saved; a rollback appends a row naming an
      older one, so the history of what was in force, and when, is kept.
    """
    _script(
        db,
        """
        CREATE TABLE camera_setup (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('calibration', 'regions')),
            station TEXT NOT NULL,
            camera_id TEXT NOT NULL,
            version INTEGER NOT NULL,
            ref TEXT NOT NULL,
            created_by TEXT NOT NULL,
            created_at REAL NOT NULL,
            images TEXT NOT NULL DEFAULT '[]',
            body TEXT NOT NULL,
            reason TEXT,
            UNIQUE (kind, station, camera_id, version)
        );

        CREATE TABLE camera_setup_in_force (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            station TEXT NOT NULL,
            camera_id TEXT NOT NULL,
            setup_id INTEGER NOT NULL REFERENCES camera_setup (id),
            t_wall REAL NOT NULL,
            user TEXT NOT NULL,
            action TEXT NOT NULL CHECK (action IN ('new', 'rollback')),
            reason TEXT
        );
        CREATE INDEX camera_setup_in_force_key ON camera_setup_in_force (kind, station, camera_id, id);
        """,
    )
    _append_only(db, "camera_setup", "camera setup versions are append-only: save a new version")
    _append_only(db, "camera_setup_in_force", "the in-force history is append-only")


@migration
def m0011_health_baselines(db: sqlite_utils.Database) -> None:
    """What image health learned (station/health/), kept across restarts.

    One row per camera (``kind`` 'camera', ``key`` the camera id: the setup mean and spread of each
    figure and the position reference) and per model (``kind`` 'model', ``key`` the model id: the
    baseline of image scores and detection counts). ``data`` is JSON; a relearn replaces the row.
    """
    _script(
        db,
        """
        CREATE TABLE health_baselines (
            kind TEXT NOT NULL CHECK (kind IN ('camera', 'model')),
            key TEXT NOT NULL,
            data TEXT NOT NULL,
            saved_wall REAL NOT NULL,
            PRIMARY KEY (kind, key)
        );
        """,
    )
