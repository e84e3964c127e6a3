"""SQLite store: migrations, images on disk, disk budget, read queries (real files in tmp_path)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from station.store import queries
from station.store.db import StoreError, open_db, write_transaction
from station.store.images import ImageStore, StoredImage
from station.store.migrations import MIGRATIONS, applied_migrations, apply_migrations

TABLES = {
    "_migrations",
    "inspections",
    "defects",
    "images",
    "labels",
    "audit",
    "models",
    "counters",
    "alarms",
    "users",
    "sessions",
}


# -- migrations ---------------------------------------------------------------


def test_migrations_create_schema_and_are_recorded(tmp_path: Path) -> None:
    t0 = time.time()
    db = open_db(tmp_path / "sub" / "s.db")  # the folder is created
    assert set(db.table_names()) >= TABLES
    applied = applied_migrations(db)
    assert [n for n, _ in applied] == [n for n, _ in MIGRATIONS]
    assert all(t0 - 1 <= t <= time.time() + 1 for _, t in applied)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    db.close()


def test_reopening_applies_nothing_and_new_migrations_only_once(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    open_db(path).close()
    db = open_db(path)
    before = applied_migrations(db)
    assert apply_migrations(db) == []
    assert applied_migrations(db) == before

    calls = []

    def m9999_extra(d) -> None:
        calls.append(1)
        d.execute("CREATE TABLE extra (x INTEGER)")

    extended = [*MIGRATIONS, ("m9999_extra", m9999_extra)]
    assert apply_migrations(db, extended) == ["m9999_extra"]
    assert apply_migrations(db, extended) == []
    assert calls == [1]
    assert "extra" in db.table_names()
    assert [n for n, _ in applied_migrations(db)][-1] == "m9999_extra"
    db.close()


def test_failing_migration_is_rolled_back_and_stays_pending(tmp_path: Path) -> None:
    db = open_db(tmp_path / "s.db")

    def m9999_broken(d) -> None:
        d.execute("CREATE TABLE half_done (x INTEGER)")
        d.execute("INSERT INTO half_done VALUES (1)")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        apply_migrations(db, [*MIGRATIONS, ("m9999_broken", m9999_broken)])
    assert "half_done" not in db.table_names()
    assert "m9999_broken" not in [n for n, _ in applied_migrations(db)]
    assert not db.conn.in_transaction
    db.close()


def test_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    db = open_db(path)
    db.execute("INSERT INTO _migrations VALUES ('m9999_from_the_future', 0)")
    db.close()
    with pytest.raises(StoreError, match=r"s\.db.*newer.*m9999_from_the_future"):
        open_db(path)


def test_not_a_database_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "notes.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"notes\.db.*store\.db_path"):
        open_db(bad)
    assert bad.read_bytes() == b"this is not sqlite" * 100  # nothing lost


def test_labels_and_audit_are_append_only(fresh_db) -> None:
    _insert_inspection(fresh_db, 1, "FAIL")
    fresh_db.execute(
        "INSERT INTO labels (part_id, class_name, x1, y1, x2, y2, source, created_by, created_at) VALUES (1, 'dent', "
        "0, 0, 1, 1, 'qa', 'eve', 0)"
    )
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        fresh_db.execute("UPDATE labels SET class_name = 'scratch'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        fresh_db.execute("DELETE FROM labels")
    with pytest.raises(sqlite3.IntegrityError, match="source"):
        fresh_db.execute(
            "INSERT INTO labels (part_id, class_name, x1, y1, x2, y2, source, created_by, created_at) VALUES (1, "
            "'dent', 0, 0, 1, 1, 'guess', 'eve', 0)"
        )
    fresh_db.execute("INSERT INTO audit (t_wall, user, action, object_type) VALUES (0, 'eve', 'relabel', 'label')")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        fresh_db.execute("DELETE FROM audit")
    assert fresh_db.execute("SELECT COUNT(*) FROM labels").fetchone()[0] == 1


def test_defects_must_belong_to_an_inspection(fresh_db) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        fresh_db.execute(
            "INSERT INTO defects (part_id, camera_id, class_name, confidence, x1, y1, x2, y2, action, model_id) "
            "VALUES (99, 'c', 'dent', 0.9, 0, 0, 1, 1, 'reject', 'm')"
        )


def test_write_transaction_rolls_back_on_error(fresh_db) -> None:
    with pytest.raises(ValueError), write_transaction(fresh_db):
        _insert_inspection(fresh_db, 5, "PASS")
        raise ValueError("abort")
    assert fresh_db.execute("SELECT COUNT(*) FROM inspections").fetchone()[0] == 0


# -- images -------------------------------------------------------------------


def test_save_is_content_addressed_atomic_and_idempotent(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "img", "png", 10, 10.0)
    img = np.random.default_rng(1).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    a = store.save(img)
    path = tmp_path / "img" / a.relpath
    data = path.read_bytes()
    assert a.sha256 == hashlib.sha256(data).hexdigest()
    assert a.relpath == f"{a.sha256[:2]}/{a.sha256[2:4]}/{a.sha256}.png"
    assert (a.width, a.height, a.bytes, a.format) == (30, 40, len(data), "png")
    back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert back is not None and np.array_equal(back, img)  # png is lossless
    mtime = path.stat().st_mtime_ns
    assert store.save(img.copy()) == a
    assert path.stat().st_mtime_ns == mtime  # not rewritten
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left
    assert store.open_path(a.sha256) == path
    assert store.open_path(a.sha256.upper()) == path


def test_jpg_and_gray_images(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, "jpg", 10, 10.0)
    gray = np.full((20, 24), 128, np.uint8)
    s = store.save(gray)
    assert s.relpath.endswith(".jpg") and (s.width, s.height) == (24, 20)
    back = cv2.imread(str(store.open_path(s.sha256, "jpg")), cv2.IMREAD_UNCHANGED)
    assert back is not None and back.shape == (20, 24)
    with pytest.raises(ValueError, match="2-D or 3-D"):
        store.save(np.zeros((0,), np.uint8))


def test_put_stores_encoded_bytes_as_they_are(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, "png", 10, 10.0)
    img = np.random.default_rng(2).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    data = buf.tobytes()
    s = store.put(data, "jpg", 24, 20)  # another format than the store's own: kept byte for byte
    assert s == StoredImage(hashlib.sha256(data).hexdigest(), s.relpath, len(data), 24, 20, "jpg")
    assert s.relpath.endswith(".jpg") and store.open_path(s.sha256, "jpg").read_bytes() == data
    assert store.put(data, "jpg", 24, 20) == s
    assert [p.name for p in store.open_path(s.sha256, "jpg").parent.iterdir()] == [f"{s.sha256}.jpg"]
    png = store.save(img)
    assert store.put(store.open_path(png.sha256).read_bytes(), "png", 24, 20) == png  # save is put of the encoded image
    with pytest.raises(ValueError, match="image format"):
        store.put(data, "bmp", 24, 20)


def test_bad_store_settings_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="store.image_format"):
        ImageStore(tmp_path, "bmp", 1, 1.0)
    with pytest.raises(ValueError, match="store.keep_pass_every"):
        ImageStore(tmp_path, "png", -1, 1.0)


def test_keep_policy(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, "png", keep_pass_every=4, disk_budget_mb=1.0)
    assert store.should_keep("FAIL", 3) == "fail"
    assert store.should_keep("UNCERTAIN", 3) == "uncertain"
    assert store.should_keep("FAILSAFE", 3) == "failsafe"
    kept = [pid for pid in range(1, 21) if store.should_keep("PASS", pid)]
    assert kept == [4, 8, 12, 16, 20]
    assert store.should_keep("PASS", 8) == "pass-sample"
    never = ImageStore(tmp_path, "png", keep_pass_every=0, disk_budget_mb=1.0)
    assert not any(never.should_keep("PASS", pid) for pid in range(1, 50))
    with pytest.raises(ValueError):
        store.should_keep("MAYBE", 1)


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "..%2f..%2fetc%2fpasswd",
        "%2e%2e%2f" * 7 + "abc",
        "a" * 31 + "/" + "a" * 32,
        "a" * 30 + "/../" + "a" * 30,
        "a" * 63,
        "a" * 65,
        "g" * 64,
        "a" * 64 + "\n",
        "\u0661" * 64,  # Arabic-Indic digits are digits, not hex
        "",
    ],
)
def test_open_path_refuses_anything_but_a_sha(tmp_path: Path, name: str) -> None:
    store = ImageStore(tmp_path / "img", "png", 1, 1.0)
    (tmp_path / "secret.png").write_bytes(b"x")
    with pytest.raises(ValueError, match="64 hex"):
        store.open_path(name)


def test_open_path_refuses_a_format_that_is_a_path(tmp_path: Path) -> None:
    store = ImageStore(tmp_path, "png", 1, 1.0)
    with pytest.raises(ValueError, match="format"):
        store.open_path("a" * 64, "../../png")
    with pytest.raises(FileNotFoundError, match="a{64}"):
        store.open_path("a" * 64)


# -- disk budget ----------------------------------------------------------------


def _insert_inspection(db, part_id: int, outcome: str) -> None:
    db.execute(
        "INSERT INTO inspections (part_id, seq, t_recorded_wall, outcome, model_id, config_hash, calibration_id, "
        "source) "
        "VALUES (?, ?, ?, ?, 'm', 'c', 'cal', 'test')",
        [part_id, part_id, time.time(), outcome],
    )


def _insert_image(db, store: ImageStore, part_id: int, img: np.ndarray, reason: str) -> tuple[int, int, str]:
    s = store.save(img)
    cur = db.execute(
        "INSERT INTO images (part_id, camera_id, sha256, relpath, width, height, format, bytes, kept_reason) VALUES "
        "(?,?,?,?,?,?,?,?,?)",
        [part_id, "cam0", s.sha256, s.relpath, s.width, s.height, s.format, s.bytes, reason],
    )
    return cur.lastrowid, s.bytes, s.sha256


def _rand(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def test_budget_deletes_oldest_pass_first_then_oldest_others(tmp_path: Path) -> None:
    db = open_db(tmp_path / "s.db")
    store = ImageStore(tmp_path / "img", "png", 1, 1000.0, low_water=1.0)
    outcomes = ["PASS", "FAIL", "PASS", "FAIL", "PASS", "UNCERTAIN"]
    info = {}
    for pid, o in enumerate(outcomes, start=1):
        _insert_inspection(db, pid, o)
        info[pid] = _insert_image(db, store, pid, _rand(pid), o.lower())
    total = sum(b for _, b, _ in info.values())
    assert store.used_bytes(db) == total
    assert store.enforce_budget(db) == 0  # under budget: nothing happens

    store.budget_bytes = total - info[1][1] - info[3][1]
    freed = store.enforce_budget(db)
    assert freed == info[1][1] + info[3][1]
    deleted = {r[0] for r in db.execute("SELECT part_id FROM images WHERE deleted_at IS NOT NULL")}
    assert deleted == {1, 3}
    for pid, (image_id, _, sha) in info.items():
        assert (tmp_path / "img" / f"{sha[:2]}/{sha[2:4]}/{sha}.png").exists() == (pid not in deleted)
        assert (queries.image_for(db, image_id) is None) == (pid in deleted)
    assert store.used_bytes(db) <= store.budget_bytes

    store.budget_bytes = info[6][1]  # room for one file: the newest non-PASS survives
    freed = store.enforce_budget(db)
    assert freed == info[5][1] + info[2][1] + info[4][1]
    alive = [r[0] for r in db.execute("SELECT part_id FROM images WHERE deleted_at IS NULL")]
    assert alive == [6]
    reasons = {r[0] for r in db.execute("SELECT deleted_reason FROM images WHERE deleted_at IS NOT NULL")}
    assert reasons == {"disk budget"}
    with pytest.raises(FileNotFoundError):
        store.open_path(info[2][2])
    db.close()


def test_budget_keeps_a_file_shared_with_a_fail_longer(tmp_path: Path) -> None:
    db = open_db(tmp_path / "s.db")
    store = ImageStore(tmp_path / "img", "png", 1, 1000.0, low_water=1.0)
    same = _rand(7)
    _insert_inspection(db, 1, "PASS")
    _, size_shared, sha_shared = _insert_image(db, store, 1, same, "pass-sample")
    _insert_inspection(db, 2, "FAIL")
    _insert_image(db, store, 2, same, "fail")  # same content: same file
    _insert_inspection(db, 3, "PASS")
    _, size_other, sha_other = _insert_image(db, store, 3, _rand(8), "pass-sample")
    assert store.used_bytes(db) == size_shared + size_other  # the shared file counts once
    store.budget_bytes = size_shared
    assert store.enforce_budget(db) == size_other
    assert store.open_path(sha_shared).exists()
    with pytest.raises(FileNotFoundError):
        store.open_path(sha_other)
    # deleting the shared file marks both of its rows
    store.budget_bytes = 1
    assert store.enforce_budget(db) == size_shared
    assert db.execute("SELECT COUNT(*) FROM images WHERE deleted_at IS NULL").fetchone()[0] == 0
    db.close()


def _insert_map(db, store: ImageStore, image_id: int, part_id: int, heat: np.ndarray) -> StoredImage:
    m = store.save_map(heat)
    db.execute(
        "INSERT INTO anomaly_maps (image_id, part_id, camera_id, sha256, width, height, bytes, image_score) VALUES "
        "(?,?,?,?,?,?,?,?)",
        [image_id, part_id, "cam0", m.sha256, m.width, m.height, m.bytes, 1.5],
    )
    return m


def test_budget_deletes_heat_maps_with_their_images(tmp_path: Path) -> None:
    """A heat map lives and dies with its image; a map file shared by two parts goes with the last of them."""
    db = open_db(tmp_path / "s.db")
    store = ImageStore(tmp_path / "img", "png", 1, 1000.0, low_water=1.0)
    shared_heat = np.zeros((30, 40), np.uint8)  # e.g. a normal part: the same all-zero map
    own_heat = np.random.default_rng(3).integers(0, 256, (30, 40), dtype=np.uint8)
    parts = {1: ("PASS", shared_heat), 2: ("FAIL", shared_heat), 3: ("PASS", own_heat), 4: ("FAIL", None)}
    images, maps = {}, {}
    for pid, (outcome, heat) in parts.items():
        _insert_inspection(db, pid, outcome)
        images[pid] = _insert_image(db, store, pid, _rand(100 + pid), outcome.lower())
        if heat is not None:
            maps[pid] = _insert_map(db, store, images[pid][0], pid, heat)
    assert maps[1].sha256 == maps[2].sha256 != maps[3].sha256
    img_bytes = sum(b for _, b, _ in images.values())
    assert store.used_bytes(db) == img_bytes + maps[1].bytes + maps[3].bytes  # maps count, a shared file once

    def live_maps() -> set[int]:
        return {r[0] for r in db.execute("SELECT part_id FROM anomaly_maps WHERE deleted_at IS NULL")}

    # the two PASS images go first: part 1's map row goes with its image, but part 2 still uses the file
    store.budget_bytes = images[2][1] + images[4][1] + maps[2].bytes
    freed = store.enforce_budget(db)
    assert {r[0] for r in db.execute("SELECT part_id FROM images WHERE deleted_at IS NOT NULL")} == {1, 3}
    assert live_maps() == {2}
    assert freed == images[1][1] + images[3][1] + maps[3].bytes
    assert store.open_map_path(maps[2].sha256).exists()
    with pytest.raises(FileNotFoundError):
        store.open_map_path(maps[3].sha256)
    assert {r[0] for r in db.execute("SELECT deleted_reason FROM anomaly_maps WHERE deleted_at IS NOT NULL")} == {
        "disk budget"
    }

    # part 2's image goes: now nobody uses the shared map file
    store.budget_bytes = images[4][1]
    assert store.enforce_budget(db) == images[2][1] + maps[2].bytes
    assert live_maps() == set()
    with pytest.raises(FileNotFoundError):
        store.open_map_path(maps[2].sha256)
    assert store.open_path(images[4][2]).exists()
    assert store.used_bytes(db) == images[4][1]
    db.close()


def test_heat_map_names_cannot_leave_the_store(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "img", "png", 1, 1000.0)
    for bad in ("../" * 3 + "etc/passwd", "a" * 63, "/" + "a" * 63, "g" * 64):
        with pytest.raises(ValueError):
            store.open_map_path(bad)
    with pytest.raises(FileNotFoundError):
        store.open_map_path("a" * 64)
    with pytest.raises(ValueError):
        store.save_map(np.zeros((4, 4), np.float32))


def test_budget_estimate_follows_saves(tmp_path: Path) -> None:
    db = open_db(tmp_path / "s.db")
    store = ImageStore(tmp_path / "img", "png", 1, 1000.0, low_water=0.5)
    _insert_inspection(db, 1, "PASS")
    _, size1, _ = _insert_image(db, store, 1, _rand(1), "pass-sample")
    store.budget_bytes = size1 * 3
    assert store.enforce_budget(db) == 0  # reads usage from the database once
    for pid in range(2, 6):
        _insert_inspection(db, pid, "PASS")
        _insert_image(db, store, pid, _rand(pid), "pass-sample")
    freed = store.enforce_budget(db)  # the estimate grew with each save, so it runs
    assert freed > 0
    assert store.used_bytes(db) <= store.budget_bytes * 0.5
    db.close()


# -- queries --------------------------------------------------------------------


def test_queries_on_rows(fresh_db) -> None:
    db = fresh_db
    outcomes = ["PASS", "FAIL", "PASS", "UNCERTAIN", "FAILSAFE", "FAIL", "PASS"]
    for pid, o in enumerate(outcomes, start=10):
        _insert_inspection(db, pid, o)
    db.execute("UPDATE inspections SET reasons = '[\"dent (conf)\"]', timings = '{\"total\": 9.5}' WHERE part_id = 11")
    db.execute(
        "INSERT INTO defects (part_id, camera_id, class_name, confidence, x1, y1, x2, y2, action, model_id) "
        "VALUES (11, 'cam0', 'dent', 0.9, 1, 2, 3, 4, 'reject', 'm')"
    )
    db.execute(
        "INSERT INTO images (part_id, camera_id, sha256, relpath, width, height, format, bytes, kept_reason) "
        "VALUES (11, 'cam0', ?, 'x', 4, 3, 'png', 10, 'fail')",
        ["ab" * 32],
    )
    assert queries.last_part_id(db) == 16
    assert queries.outcome_counts(db) == {"PASS": 3, "FAIL": 2, "UNCERTAIN": 1, "FAILSAFE": 1}
    page1 = queries.recent_inspections(db, limit=3)
    assert [r["part_id"] for r in page1] == [16, 15, 14]
    page2 = queries.recent_inspections(db, limit=3, before_part_id=page1[-1]["part_id"])
    assert [r["part_id"] for r in page2] == [13, 12, 11]
    fails = queries.recent_inspections(db, limit=10, outcome="FAIL")
    assert [r["part_id"] for r in fails] == [15, 11]
    assert fails[1]["reasons"] == ["dent (conf)"] and fails[1]["timings"] == {"total": 9.5}
    with pytest.raises(ValueError):
        queries.recent_inspections(db, outcome="MAYBE")
    rec = queries.get_inspection(db, 11)
    assert rec is not None and rec["outcome"] == "FAIL"
    assert [(d["class_name"], d["x2"]) for d in rec["defects"]] == [("dent", 3.0)]
    assert [i["sha256"] for i in rec["images"]] == ["ab" * 32]
    assert queries.image_for(db, rec["images"][0]["id"]) == ("ab" * 32, "png")
    assert queries.image_for(db, 999) is None
    assert queries.get_inspection(db, 999) is None
    assert queries.load_counters(db) is None
    db.execute(
        "INSERT INTO counters (key, counters, last_part_id, updated_at) VALUES ('station', ?, 40, 0)",
        [json.dumps({"verdicts": 7, "records_written": 7, "not_a_counter_any_more": 1})],
    )
    assert queries.load_counters(db) == {"verdicts": 7, "records_written": 7}
    assert queries.last_part_id(db) == 40  # ids used by parts never recorded are not reused


def test_empty_database_queries(fresh_db) -> None:
    assert queries.last_part_id(fresh_db) == 0
    assert queries.recent_inspections(fresh_db) == []
    assert queries.outcome_counts(fresh_db) == {"PASS": 0, "FAIL": 0, "UNCERTAIN": 0, "FAILSAFE": 0}
    assert queries.recent_alarms(fresh_db) == []
