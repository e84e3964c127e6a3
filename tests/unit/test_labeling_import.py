"""Import of YOLO and COCO datasets: round trips through a fresh database, relabel round trip, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from labeling import labels as L
from labeling.export import export_coco, export_yolo
from labeling.importer import import_coco, import_yolo
from labeling.snapshot import create_snapshot, snapshot_items
from station.contracts import Outcome
from station.store import audit, queries
from station.store.db import open_db
from station.store.images import ImageStore
from tests.fixtures_labeling import CLASSES, draw, line, part, review_of  # noqa: F401  (fixture)

CAMS = ("top", "side")


@pytest.fixture
def snap_line(line):
    """6 two-camera parts reviewed (one good part, one relabelled box) and a snapshot of them."""
    results = [
        part(
            i,
            Outcome.FAIL if i % 3 else Outcome.PASS,
            [(CLASSES[i % 3], 0.9, (2.0 + i, 3.0, 20.0 + i, 25.5))] if i % 3 else [],
            cameras=CAMS,
        )
        for i in range(1, 7)
    ]
    line.record(results)
    db = line.db
    for i in range(1, 7):
        for cam in CAMS:
            img = line.image_id(i, cam)
            if i == 2 and cam == "top":
                lab = L.current_labels(db, img)[0]
                L.update_label(db, "qa", img, lab.id, box=(1.25, 2.5, 33.75, 40.125))
                L.add_label(db, "qa", img, (40, 30, 63, 47), "stain", classes=CLASSES)
            elif i % 3 == 0:
                L.mark_image_good(db, "qa", img)
            else:
                L.mark_reviewed(db, "qa", img)
    snap = create_snapshot(db, "trainer")
    return line, snap


def _by_sha(db) -> dict[str, list[tuple[str, tuple[float, ...]]]]:
    """{image sha256: sorted current labels} of every image (the identity that survives a round trip)."""
    out: dict[str, list[tuple[str, tuple[float, ...]]]] = {}
    for iid, sha in db.execute("SELECT id, sha256 FROM images WHERE deleted_at IS NULL"):
        out[sha] = sorted((lab.class_name, lab.box) for lab in L.current_labels(db, iid))
    return out


def _assert_same_labels(a, b, abs_px: float) -> None:
    assert a.keys() == b.keys()
    for sha in a:
        assert [c for c, _ in a[sha]] == [c for c, _ in b[sha]], sha
        for (_, ba), (_, bb) in zip(a[sha], b[sha]):
            assert ba == pytest.approx(bb, abs=abs_px)


def test_yolo_round_trip_into_a_fresh_database(snap_line, tmp_path) -> None:
    ln, snap = snap_line
    data_yaml = export_yolo(ln.db, ln.images, snap.id, tmp_path / "ds", val_fraction=0.34)
    db2 = open_db(tmp_path / "fresh.db")
    store2 = ImageStore(tmp_path / "images2")
    res = import_yolo(db2, store2, data_yaml, "importer")
    assert (res.n_images, res.n_new, res.n_existing, res.n_labels) == (12, 12, 0, snap.n_labels)
    _assert_same_labels(_by_sha(db2), _by_sha(ln.db), abs_px=1e-4)
    # the synthetic inspections: negative part ids, grouped by the original part, cameras kept
    insp = db2.execute(
        "SELECT part_id, source, model_id, outcome, n_frames FROM inspections ORDER BY part_id"
    ).fetchall()
    assert (
        [r[0] for r in insp] == list(range(-6, 0))
        and {r[1] for r in insp} == {"import"}
        and {r[4] for r in insp} == {2}
    )
    assert {r[3] for r in insp} == {"PASS", "FAIL"}
    cams = db2.execute("SELECT part_id, GROUP_CONCAT(camera_id) FROM images GROUP BY part_id").fetchall()
    assert all(sorted(c.split(",")) == ["side", "top"] for _, c in cams)
    assert queries.last_part_id(db2) == 0  # imports never move the next line part id
    # every imported image is a reviewed image with import labels
    assert {review_of(db2, i).verdict for i in res.image_ids} == {"labeled", "good"}
    assert {lab.source for i in res.image_ids for lab in L.current_labels(db2, i)} == {"import"}
    assert [a.action for a in audit.history(db2)].count("import") == 12
    # the same content gives the same snapshot hash in the other database
    again = create_snapshot(db2, "trainer")
    assert again.sha == snap.sha and again.class_names == snap.class_names
    # and a re-export still splits by part
    root = export_yolo(db2, store2, again.id, tmp_path / "ds2", val_fraction=0.34).parent
    parts_in = {sub: {f.stem.rsplit("_", 2)[0] for f in (root / "images" / sub).iterdir()} for sub in ("train", "val")}
    assert parts_in["val"] and not parts_in["train"] & parts_in["val"]


def test_coco_round_trip_into_a_fresh_database(snap_line, tmp_path) -> None:
    ln, snap = snap_line
    path = export_coco(ln.db, ln.images, snap.id, tmp_path / "coco" / "annotations.json")
    db2 = open_db(tmp_path / "fresh.db")
    res = import_coco(db2, ImageStore(tmp_path / "images2"), path, path.parent / "images", "importer")
    assert (res.n_images, res.n_new, res.n_labels) == (12, 12, snap.n_labels)
    _assert_same_labels(_by_sha(db2), _by_sha(ln.db), abs_px=1e-9)
    assert create_snapshot(db2, "t").sha == snap.sha
    # trigger times travel in the COCO file, so a time split sees the same order
    t1 = {it.sha256: it.t_wall for it in snapshot_items(ln.db, snap.id)}
    t2 = {
        sha: t
        for sha, t in db2.execute("SELECT i.sha256, p.t_trigger_wall FROM images i JOIN inspections p USING (part_id)")
    }
    assert t1 == t2


def test_relabel_round_trip_into_the_same_database(snap_line, tmp_path) -> None:
    """Export to COCO, fix labels in an annotation tool, import back: the tool's boxes become the labels."""
    ln, snap = snap_line
    db = ln.db
    path = export_coco(db, ln.images, snap.id, tmp_path / "coco" / "annotations.json")
    doc = json.loads(path.read_text())
    img_p1 = ln.image_id(1, "top")  # one model box (confirmed by QA)
    img_p4 = ln.image_id(4, "side")
    img_p5 = ln.image_id(5, "top")
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] != img_p4]  # the tool's user removed it
    for a in doc["annotations"]:
        if a["image_id"] == img_p5:
            a["bbox"] = [10.0, 11.0, 12.0, 13.0]  # moved
    doc["annotations"].append(
        {"id": 999, "image_id": img_p1, "category_id": 1, "bbox": [40, 30, 10, 10], "area": 100, "iscrowd": 0}
    )
    path.write_text(json.dumps(doc))
    n_insp = db.execute("SELECT COUNT(*) FROM inspections").fetchone()[0]
    before_p1 = L.current_labels(db, img_p1)

    res = import_coco(db, ln.images, path, path.parent / "images", "cvat.user")
    assert (res.n_new, res.n_existing) == (0, 12)
    assert db.execute("SELECT COUNT(*) FROM inspections").fetchone()[0] == n_insp
    assert L.current_labels(db, img_p4) == []
    p5 = L.current_labels(db, img_p5)
    assert [(lab.box, lab.source) for lab in p5] == [((10.0, 11.0, 22.0, 24.0), "import")]
    p1 = L.current_labels(db, img_p1)
    assert [lab.id for lab in p1][:1] == [before_p1[0].id]  # unchanged QA box kept as is
    assert [(lab.class_name, lab.box, lab.source) for lab in p1[1:]] == [
        (snap.class_names[0], (40.0, 30.0, 50.0, 40.0), "import")
    ]
    assert review_of(db, img_p4).reviewed_by == "cvat.user"
    actions = [a.action for a in audit.history(db, user="cvat.user")]
    assert actions.count("import_delete") == 2 and actions.count("import_add") == 2 and actions[-1] == "import_dataset"
    # importing the same file again changes nothing
    n_labels = db.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
    import_coco(db, ln.images, path, path.parent / "images", "cvat.user")
    assert db.execute("SELECT COUNT(*) FROM labels").fetchone()[0] == n_labels


def test_model_labels_confirmed_by_an_import(line, tmp_path) -> None:
    line.record([part(1, Outcome.FAIL, [("dent", 0.8, (5.0, 5.0, 20.0, 20.0))])])
    img = line.image_id(1)
    snap = create_snapshot(line.db, "t", only_reviewed=False)
    path = export_coco(line.db, line.images, snap.id, tmp_path / "c.json")
    import_coco(line.db, line.images, path, tmp_path / "images", "tool")
    (lab,) = L.current_labels(line.db, img)
    assert (lab.source, lab.box, lab.supersedes is not None) == ("import", (5.0, 5.0, 20.0, 20.0), True)


def _third_party(tmp_path: Path) -> Path:
    """A YOLO dataset as another tool writes it: its own names, a BMP image, a negative without a label file."""
    root = tmp_path / "third"
    for sub in ("train", "val"):
        (root / "images" / sub).mkdir(parents=True)
        (root / "labels" / sub).mkdir(parents=True)
    cv2.imwrite(str(root / "images" / "train" / "a.png"), draw(1, [(8, 8, 24, 24)]))
    (root / "labels" / "train" / "a.txt").write_text("1 0.25 0.333333 0.25 0.333333\n")
    cv2.imwrite(str(root / "images" / "train" / "b.bmp"), draw(2, []))
    cv2.imwrite(str(root / "images" / "val" / "c.jpg"), draw(3, [(0, 0, 64, 48)]))
    (root / "labels" / "val" / "c.txt").write_text("0 0.5 0.5 1.0 1.0\n\n")
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: [crack, pit]\n")
    return root / "data.yaml"


def test_third_party_yolo_dataset(tmp_path) -> None:
    data_yaml = _third_party(tmp_path)
    db = open_db(tmp_path / "s.db")
    store = ImageStore(tmp_path / "store")
    res = import_yolo(db, store, data_yaml, "imp")
    assert (res.n_new, res.n_labels) == (3, 2)
    rows = db.execute("SELECT i.id, i.format, i.camera_id, i.part_id FROM images i ORDER BY i.id").fetchall()
    assert [r[1] for r in rows] == ["png", "png", "jpg"] and {r[2] for r in rows} == {"import"}
    assert len({r[3] for r in rows}) == 3  # no part information: one part per image
    got = {r[0]: [(lab.class_name, lab.box) for lab in L.current_labels(db, r[0])] for r in rows}
    assert got[rows[0][0]][0][0] == "pit" and got[rows[0][0]][0][1] == pytest.approx((8.0, 8.0, 24.0, 24.0), abs=1e-3)
    assert got[rows[1][0]] == [] and review_of(db, rows[1][0]).verdict == "good"
    assert got[rows[2][0]] == [("crack", (0.0, 0.0, 64.0, 48.0))]
    for r in rows:
        assert store.open_path(
            db.execute("SELECT sha256 FROM images WHERE id = ?", [r[0]]).fetchone()[0], r[1]
        ).is_file()
    db.close()


@pytest.mark.parametrize(
    ("label", "match"),
    [
        ("5 0.5 0.5 0.1 0.1", r"a\.txt:1: class index 5 is not in names \(0\.\.1\)"),
        ("0 0.95 0.5 0.2 0.1", r"a\.txt:1: box .* is not inside 0\.\.1"),
        ("0 0.5 0.5 0.1", r"a\.txt:1: expected 'class cx cy w h'"),
        ("0 0.5 0.5 0 0.1", r"a\.txt:1: box width and height must be > 0"),
        ("x 0.5 0.5 0.1 0.1", r"a\.txt:1: not numbers"),
    ],
)
def test_bad_yolo_labels_are_refused_and_nothing_written(tmp_path, label, match) -> None:
    data_yaml = _third_party(tmp_path)
    (data_yaml.parent / "labels" / "train" / "a.txt").write_text(label + "\n")
    db = open_db(tmp_path / "s.db")
    with pytest.raises(ValueError, match=match):
        import_yolo(db, ImageStore(tmp_path / "store"), data_yaml, "imp")
    assert db.execute("SELECT COUNT(*) FROM inspections").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 0
    assert not (tmp_path / "store").exists()
    db.close()


def test_bad_yolo_dataset_files(tmp_path) -> None:
    data_yaml = _third_party(tmp_path)
    db = open_db(tmp_path / "s.db")
    store = ImageStore(tmp_path / "store")
    (data_yaml.parent / "images" / "val" / "c.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"c\.jpg: not a readable image"):
        import_yolo(db, store, data_yaml, "imp")
    data_yaml.write_text("path: .\ntrain: images/train\nval: images/nowhere\nnames: [a]\n")
    with pytest.raises(ValueError, match="split folder or list .*nowhere does not exist"):
        import_yolo(db, store, data_yaml, "imp")
    data_yaml.write_text("path: .\ntrain: images/train\n")
    with pytest.raises(ValueError, match="'names' is missing"):
        import_yolo(db, store, data_yaml, "imp")
    with pytest.raises(ValueError, match="cannot read the dataset YAML"):
        import_yolo(db, store, tmp_path / "missing.yaml", "imp")
    assert db.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 0
    db.close()


def test_bad_coco_files(snap_line, tmp_path) -> None:
    ln, snap = snap_line
    path = export_coco(ln.db, ln.images, snap.id, tmp_path / "coco" / "annotations.json")
    good = json.loads(path.read_text())
    db = open_db(tmp_path / "s.db")
    store = ImageStore(tmp_path / "store")
    cases = [
        (
            lambda d: d["annotations"][0].update(bbox=[60, 0, 10, 10]),
            r"annotations\[0\]: bbox \[60, 0, 10, 10\] is not inside the 64x48 image",
        ),
        (
            lambda d: d["annotations"][0].update(category_id=42),
            r"annotations\[0\]: category_id 42 is not in 'categories'",
        ),
        (lambda d: d["annotations"][0].update(image_id=4242), r"annotations\[0\]: image_id 4242 is not in 'images'"),
        (lambda d: d["images"][0].update(file_name="nope.png"), r"file 'nope.png' is not in"),
        (lambda d: d["images"][0].update(width=100), r"is 64x48 but the JSON says 100x48"),
        (lambda d: d.pop("categories"), r"'categories' must be a list"),
    ]
    for edit, match in cases:
        doc = json.loads(json.dumps(good))
        edit(doc)
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(doc))
        with pytest.raises(ValueError, match=match):
            import_coco(db, store, bad, path.parent / "images", "imp")
    assert db.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 0
    db.close()
