"""QA label operations on a real SQLite file filled by the real Recorder: history, reviews, audit, append-only."""

from __future__ import annotations

import sqlite3

import pytest

from labeling import labels as L
from station.contracts import Outcome
from station.store import audit
from tests.fixtures_labeling import CLASSES, line, part, review_of  # noqa: F401  (fixture)

BOX_A = (5.0, 5.0, 20.0, 20.0)
BOX_B = (30.0, 10.0, 50.0, 30.0)


@pytest.fixture
def fail_image(line):
    """Part 1 FAIL with two model detections (scratch, dent) and part 2 PASS without any; returns (line, img1, img2)."""
    line.record(
        [
            part(1, Outcome.FAIL, [("scratch", 0.9, BOX_A), ("dent", 0.7, BOX_B)]),
            part(2, Outcome.PASS),
        ]
    )
    return line, line.image_id(1), line.image_id(2)


def _boxes(db, image_id):
    return sorted((lab.class_name, lab.box, lab.source) for lab in L.current_labels(db, image_id))


def test_model_detections_are_the_initial_labels(fail_image) -> None:
    ln, img, img2 = fail_image
    labs = L.current_labels(ln.db, img)
    assert [(lab.class_name, lab.box, lab.source, lab.status, lab.supersedes) for lab in labs] == [
        ("scratch", BOX_A, "model", "active", None),
        ("dent", BOX_B, "model", "active", None),
    ]
    assert [lab.confidence for lab in labs] == [pytest.approx(0.9), pytest.approx(0.7)]
    assert all(lab.created_by == "model:model-a" for lab in labs)
    assert L.current_labels(ln.db, img2) == []
    assert L.review_state(ln.db, img) is None and L.review_state(ln.db, img2) is None


def test_multi_camera_detections_go_to_their_own_image(line) -> None:
    line.record([part(7, Outcome.FAIL, [("stain", 0.8, BOX_A)], cameras=("top", "side"))])
    top, side = line.image_id(7, "top"), line.image_id(7, "side")
    assert _boxes(line.db, top) == [("stain", BOX_A, "model")]
    assert _boxes(line.db, side) == [("stain", BOX_A, "model")]
    assert len(line.db.execute("SELECT * FROM labels").fetchall()) == 2


def test_history_resolution_add_move_reclass_delete(fail_image) -> None:
    ln, img, _ = fail_image
    db = ln.db
    scratch, dent = L.current_labels(db, img)

    moved = L.update_label(db, "qa.anna", img, scratch.id, box=(6, 6, 22, 21))
    assert (moved.supersedes, moved.source, moved.class_name, moved.box) == (
        scratch.id,
        "qa",
        "scratch",
        (6.0, 6.0, 22.0, 21.0),
    )
    reclassed = L.update_label(db, "qa.anna", img, moved.id, class_name="stain", classes=CLASSES)
    assert (reclassed.supersedes, reclassed.class_name, reclassed.box) == (moved.id, "stain", (6.0, 6.0, 22.0, 21.0))
    gone = L.delete_label(db, "qa.anna", img, dent.id, reason="reflection")
    assert (gone.status, gone.supersedes, gone.box) == ("deleted", dent.id, BOX_B)
    added = L.add_label(db, "qa.anna", img, (40, 35, 60, 47), "dent")

    assert _boxes(db, img) == sorted(
        [("stain", (6.0, 6.0, 22.0, 21.0), "qa"), ("dent", (40.0, 35.0, 60.0, 47.0), "qa")]
    )
    assert [lab.id for lab in L.current_labels(db, img)] == [reclassed.id, added.id]
    hist = L.label_history(db, img)
    assert [(h.id, h.status, h.supersedes) for h in hist] == [
        (scratch.id, "active", None),
        (dent.id, "active", None),
        (moved.id, "active", scratch.id),
        (reclassed.id, "active", moved.id),
        (gone.id, "deleted", dent.id),
        (added.id, "active", None),
    ]
    review = L.review_state(db, img)
    assert review is not None and (review.verdict, review.reviewed_by) == ("labeled", "qa.anna")


def test_every_change_writes_an_audit_row_with_before_and_after(fail_image) -> None:
    ln, img, img2 = fail_image
    db = ln.db
    scratch, dent = L.current_labels(db, img)
    moved = L.update_label(db, "qa.bo", img, scratch.id, box=(6, 6, 22, 21), reason="tighter")
    gone = L.delete_label(db, "qa.bo", img, dent.id, reason="false positive")
    added = L.add_label(db, "qa.bo", img, (40, 35, 60, 47), "stain", classes=CLASSES)
    confirmed = L.confirm(db, "qa.cy", img, [moved.id])
    L.mark_image_good(db, "qa.cy", img2)

    rows = audit.history(db)
    assert [(r.user, r.action, r.object_type, r.object_id) for r in rows] == [
        ("qa.bo", "move", "label", str(scratch.id)),
        ("qa.bo", "delete", "label", str(dent.id)),
        ("qa.bo", "add", "label", str(added.id)),
        ("qa.cy", "confirm", "label", str(moved.id)),
        ("qa.cy", "mark_good", "image", str(img2)),
    ]
    move, delete, add, conf, good = rows
    assert move.before == scratch.as_dict() and move.after == moved.as_dict() and move.reason == "tighter"
    assert delete.before == dent.as_dict() and delete.after == gone.as_dict() and delete.after["status"] == "deleted"
    assert add.before is None and add.after == added.as_dict()
    assert conf.before == moved.as_dict() and conf.after == confirmed[0].as_dict()
    assert good.before == {"labels": [], "review": None}
    assert good.after["labels"] == [] and good.after["review"]["verdict"] == "good"
    assert all(r.t_wall > 0 for r in rows)
    # filtered history
    assert [r.action for r in audit.history(db, "label", scratch.id)] == ["move"]
    assert [r.action for r in audit.history(db, user="qa.cy")] == ["confirm", "mark_good"]
    assert [r.action for r in audit.history(db, limit=2)] == ["confirm", "mark_good"]


def test_confirm_makes_qa_copies_and_is_idempotent(fail_image) -> None:
    ln, img, _ = fail_image
    db = ln.db
    scratch, dent = L.current_labels(db, img)
    out = L.confirm(db, "qa", img, [scratch.id])
    assert [(c.source, c.supersedes, c.box, c.class_name) for c in out] == [("qa", scratch.id, BOX_A, "scratch")]
    assert sorted(lab.source for lab in L.current_labels(db, img)) == ["model", "qa"]
    again = L.confirm(db, "qa", img, [out[0].id])
    assert again == out  # already qa: nothing appended
    assert len(L.label_history(db, img)) == 3
    with pytest.raises(ValueError, match="no longer current"):
        L.confirm(db, "qa", img, [scratch.id])


def test_mark_good_makes_a_reviewed_negative(fail_image) -> None:
    ln, img, img2 = fail_image
    db = ln.db
    before = L.current_labels(db, img)
    review = L.mark_image_good(db, "qa", img, reason="dust")
    assert L.current_labels(db, img) == []
    assert review.verdict == "good" and L.review_state(db, img) == review
    deletions = [h for h in L.label_history(db, img) if h.status == "deleted"]
    assert sorted(d.supersedes or 0 for d in deletions) == sorted(lab.id for lab in before)  # ids start at 1
    # an image that never had labels: unreviewed before, reviewed negative after
    assert L.review_state(db, img2) is None
    L.mark_image_good(db, "qa", img2)
    assert L.current_labels(db, img2) == [] and review_of(db, img2).verdict == "good"
    # a label added later turns the verdict back to labeled
    L.add_label(db, "qa2", img, (1, 1, 5, 5), "dent")
    assert review_of(db, img).verdict == "labeled"


def test_mark_reviewed_accepts_labels_as_they_are(fail_image) -> None:
    ln, img, _ = fail_image
    review = L.mark_reviewed(ln.db, "qa", img)
    assert review.verdict == "labeled"
    assert _boxes(ln.db, img) == sorted([("scratch", BOX_A, "qa"), ("dent", BOX_B, "qa")])


def test_bulk_operations_and_their_atomicity(line) -> None:
    line.record([part(i, Outcome.FAIL, [("scratch", 0.9, BOX_A)]) for i in range(1, 5)])
    db = line.db
    ids = [line.image_id(i) for i in range(1, 5)]
    assert L.bulk_confirm(db, "qa", ids[:2]) == 2
    for i in ids[:2]:
        assert _boxes(db, i) == [("scratch", BOX_A, "qa")] and review_of(db, i).verdict == "labeled"
    assert L.bulk_mark_good(db, "qa", ids[2:]) == 2
    for i in ids[2:]:
        assert L.current_labels(db, i) == [] and review_of(db, i).verdict == "good"
    n_labels = db.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
    n_audit = db.execute("SELECT COUNT(*) FROM audit").fetchone()[0]
    # one unknown image: nothing of the bulk operation is written
    with pytest.raises(LookupError, match="image 999 does not exist"):
        L.bulk_mark_good(db, "qa", [ids[0], 999])
    assert L.current_labels(db, ids[0]) != []
    assert db.execute("SELECT COUNT(*) FROM labels").fetchone()[0] == n_labels
    assert db.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == n_audit
    with pytest.raises(ValueError, match="no image ids"):
        L.bulk_confirm(db, "qa", [])


@pytest.mark.parametrize(
    ("box", "cls", "match"),
    [
        ((10, 10, 5, 20), "dent", r"x1 \(10\) must be < x2 \(5\)"),
        ((10, 20, 15, 20), "dent", r"y1 \(20\) must be < y2 \(20\)"),
        ((-1, 0, 10, 10), "dent", r"inside the 64x48 image"),
        ((0, 0, 65, 10), "dent", r"inside the 64x48 image"),
        ((0, 0, 10, 48.5), "dent", r"inside the 64x48 image"),
        ((0, 0, 10), "dent", r"4 numbers"),
        ((0, 0, 10, float("nan")), "dent", r"box.y2 must be a finite number"),
        ((1, 1, 10, 10), "crack", r"class 'crack' is not a known class \(known: dent, scratch, stain\)"),
    ],
)
def test_invalid_input_is_refused_and_nothing_written(fail_image, box, cls, match) -> None:
    ln, img, _ = fail_image
    n = ln.db.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
    with pytest.raises(ValueError, match=match):
        L.add_label(ln.db, "qa", img, box, cls, classes=CLASSES)
    assert ln.db.execute("SELECT COUNT(*) FROM labels").fetchone()[0] == n
    assert ln.db.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 0
    assert L.review_state(ln.db, img) is None


def test_class_list_defaults_to_known_classes_and_can_be_extended(fail_image) -> None:
    ln, img, _ = fail_image
    assert L.known_classes(ln.db) == ["dent", "scratch"]
    with pytest.raises(ValueError, match="not a known class"):
        L.add_label(ln.db, "qa", img, (1, 1, 10, 10), "stain")
    lab = L.add_label(ln.db, "qa", img, (1, 1, 10, 10), "stain", classes=CLASSES)
    assert lab.class_name == "stain" and "stain" in L.known_classes(ln.db)


def test_stale_wrong_image_and_unknown_labels(fail_image) -> None:
    ln, img, img2 = fail_image
    db = ln.db
    scratch, dent = L.current_labels(db, img)
    L.update_label(db, "qa1", img, scratch.id, box=(6, 6, 22, 21))
    with pytest.raises(ValueError, match=f"label {scratch.id} on image {img} is no longer current"):
        L.update_label(db, "qa2", img, scratch.id, box=(7, 7, 22, 21))  # a second reviewer with a stale page
    with pytest.raises(ValueError, match=f"belongs to image {img}, not image {img2}"):
        L.delete_label(db, "qa", img2, dent.id)
    with pytest.raises(LookupError, match="label 12345 does not exist"):
        L.delete_label(db, "qa", img, 12345)
    with pytest.raises(ValueError, match="needs a new box and/or a new class_name"):
        L.update_label(db, "qa", img, dent.id)
    with pytest.raises(ValueError, match="user must be a non-empty"):
        L.delete_label(db, "  ", img, dent.id)
    gone = L.delete_label(db, "qa", img, dent.id)
    with pytest.raises(ValueError, match="no longer current|deletion record"):
        L.update_label(db, "qa", img, gone.id, class_name="scratch")


def test_images_deleted_by_the_disk_budget_cannot_be_edited(fail_image) -> None:
    ln, img, _ = fail_image
    ln.db.execute("UPDATE images SET deleted_at = 1.0, deleted_reason = 'disk budget' WHERE id = ?", [img])
    ln.db.conn.commit()
    with pytest.raises(ValueError, match="deleted by the disk budget"):
        L.mark_image_good(ln.db, "qa", img)


def test_labels_reviews_and_audit_are_append_only(fail_image) -> None:
    ln, img, _ = fail_image
    L.mark_image_good(ln.db, "qa", img)
    conn = sqlite3.connect(ln.db_path)
    try:
        for sql, msg in [
            ("UPDATE labels SET class_name = 'x'", "append-only"),
            ("DELETE FROM labels", "append-only"),
            ("UPDATE audit SET user = 'mallory'", "append-only"),
            ("DELETE FROM audit", "append-only"),
            ("UPDATE image_reviews SET verdict = 'labeled'", "append-only"),
            ("DELETE FROM image_reviews", "append-only"),
        ]:
            with pytest.raises(sqlite3.DatabaseError, match=msg):
                conn.execute(sql)
        # a label can be superseded only once: the history is a chain, never a fork
        first = conn.execute("SELECT id FROM labels WHERE supersedes IS NOT NULL").fetchone()[0]
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            conn.execute(
                "INSERT INTO labels (part_id, image_id, class_name, x1, y1, x2, y2, source, status, created_by, "
                "created_at, supersedes) "
                "SELECT part_id, image_id, class_name, x1, y1, x2, y2, 'qa', 'active', 'x', 0, supersedes FROM labels "
                "WHERE id = ?",
                [first],
            )
    finally:
        conn.close()


def test_operations_join_a_transaction_the_caller_holds(fail_image) -> None:
    ln, img, _ = fail_image
    db = ln.db
    scratch, _dent = L.current_labels(db, img)
    db.conn.execute("BEGIN IMMEDIATE")
    L.delete_label(db, "qa", img, scratch.id)
    assert len(L.current_labels(db, img)) == 1
    db.conn.execute("ROLLBACK")
    assert len(L.current_labels(db, img)) == 2 and audit.history(db) == []


def test_labels_of_images_recorded_before_the_migration_are_backfilled(tmp_path) -> None:
    """Rows recorded by a station without m0005 get their model labels when the migration runs."""
    from station.store.db import open_db
    from station.store.migrations import MIGRATIONS, apply_migrations

    db = open_db(tmp_path / "old.db", migrate=False)
    apply_migrations(db, [m for m in MIGRATIONS if m[0] < "m0005"])
    db.execute(
        "INSERT INTO inspections (part_id, seq, t_recorded_wall, outcome, model_id, config_hash, calibration_id, "
        "source) "
        "VALUES (1, 1, 5.0, 'FAIL', 'm', 'c', 'k', 'timer')"
    )
    db.execute(
        "INSERT INTO defects (part_id, camera_id, class_name, confidence, x1, y1, x2, y2, action, model_id) VALUES (1, "
        "'c0', 'dent', 0.9, 1, 2, 3, 4, 'reject', 'm')"
    )
    db.execute(
        "INSERT INTO images (part_id, camera_id, sha256, relpath, width, height, format, bytes, kept_reason) "
        "VALUES (1, 'c0', ?, 'x', 64, 48, 'png', 10, 'fail')",
        ["a" * 64],
    )
    db.conn.commit()
    apply_migrations(db)
    labs = L.current_labels(db, 1)
    assert [(lab.class_name, lab.box, lab.source, lab.created_at) for lab in labs] == [
        ("dent", (1.0, 2.0, 3.0, 4.0), "model", 5.0)
    ]
    db.close()


def test_audit_record_on_its_own_is_committed_at_once(line) -> None:
    rid = audit.record(line.db, "admin", "login", "user", "admin", None, {"ok": True}, reason="web")
    conn = sqlite3.connect(line.db_path)
    try:
        row = conn.execute(
            "SELECT user, action, object_type, object_id, before, after, reason FROM audit WHERE id = ?", [rid]
        ).fetchone()
    finally:
        conn.close()
    assert row == ("admin", "login", "user", "admin", None, '{"ok":true}', "web")
    assert not line.db.conn.in_transaction
    with pytest.raises(ValueError, match="user must be"):
        audit.record(line.db, "", "x", "y", 1, None, None)
