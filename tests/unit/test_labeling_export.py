"""Snapshots and dataset export, checked by Ultralytics' own dataset code and by pycocotools."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
import yaml

from labeling import labels as L
from labeling.export import export_coco, export_yolo, split_parts
from labeling.snapshot import create_snapshot, get_snapshot, list_snapshots, snapshot_items
from station.contracts import Outcome
from tests.fixtures_labeling import CLASSES, H, W, line, part  # noqa: F401  (fixture)

CAMS = ("top", "side")
N_PARTS = 12


def _box(i: int) -> tuple[float, float, float, float]:
    return (4.0 + i, 6.0, 24.0 + i, 30.0)


@pytest.fixture
def reviewed_line(line):
    """12 two-camera parts: FAILs with boxes (one box pokes out of the image), reviewed in various ways."""
    results = []
    for i in range(1, N_PARTS + 1):
        if i % 4 == 0:
            results.append(part(i, Outcome.PASS, cameras=CAMS))
        else:
            dets = [(CLASSES[i % 3], 0.9, _box(i))]
            if i == 5:
                dets.append(("dent", 0.6, (50.0, 30.0, 66.5, 50.0)))  # partly outside the 64x48 frame
            results.append(part(i, Outcome.FAIL, dets, cameras=CAMS))
    line.record(results)
    db = line.db
    for i in range(1, N_PARTS + 1):
        for cam in CAMS:
            img = line.image_id(i, cam)
            if i % 4 == 0:
                L.mark_image_good(db, "qa", img)
            elif i == 3 and cam == "side":
                L.mark_image_good(db, "qa", img)  # false positive on one camera
            elif i == 7:
                lab = L.current_labels(db, img)[0]
                L.update_label(db, "qa", img, lab.id, box=(10, 10, 30, 40), class_name="stain", classes=CLASSES)
            elif i != 11:  # part 11 stays unreviewed
                L.mark_reviewed(db, "qa", img)
    return line


def _expected(db, item_ids, names):
    """{image_id: sorted YOLO rows} computed from the current labels."""
    out = {}
    for iid in item_ids:
        rows = []
        for lab in L.current_labels(db, iid):
            x1, y1, x2, y2 = max(lab.x1, 0), max(lab.y1, 0), min(lab.x2, W), min(lab.y2, H)
            rows.append(
                (names.index(lab.class_name), (x1 + x2) / 2 / W, (y1 + y2) / 2 / H, (x2 - x1) / W, (y2 - y1) / H)
            )
        out[iid] = sorted(rows)
    return out


def _read_labels(path: Path) -> list[tuple[float, ...]]:
    rows: list[tuple[float, ...]] = []
    for line_ in path.read_text().splitlines():
        c, *v = line_.split()
        rows.append((int(c), *(float(x) for x in v)))
    return sorted(rows)


def test_snapshot_selects_reviewed_images_and_is_frozen(reviewed_line) -> None:
    db = reviewed_line.db
    snap = create_snapshot(db, "trainer", name="first")
    assert snap.name == "first" and snap.class_names == ("dent", "scratch", "stain")
    unreviewed = {reviewed_line.image_id(11, c) for c in CAMS}
    assert len(snap.image_ids) == 2 * N_PARTS - 2 and not unreviewed & set(snap.image_ids)
    items = snapshot_items(db, snap.id)
    clipped = [lab for it in items for lab in it.labels if it.part_id == 5 and lab.class_name == "dent"]
    assert clipped and all(lab.x2 == W and lab.y2 == H for lab in clipped)
    assert get_snapshot(db, snap.id) == snap and list_snapshots(db) == [snap]

    # relabel after the snapshot: the snapshot does not move, a new one does
    img = reviewed_line.image_id(1, "top")
    L.mark_image_good(db, "qa", img)
    assert snapshot_items(db, snap.id) == items
    again = create_snapshot(db, "trainer")
    assert again.sha != snap.sha
    same = [it for it in snapshot_items(db, again.id) if it.image_id == img][0]
    assert same.labels == () and same.verdict == "good"
    assert create_snapshot(db, "trainer").sha == again.sha  # same content, same hash

    everything = create_snapshot(db, "trainer", only_reviewed=False)
    assert len(everything.image_ids) == 2 * N_PARTS
    conn = sqlite3.connect(reviewed_line.db_path)
    with pytest.raises(sqlite3.DatabaseError, match="frozen"):
        conn.execute("UPDATE dataset_snapshot_items SET labels = '[]'")
    with pytest.raises(sqlite3.DatabaseError, match="frozen"):
        conn.execute("DELETE FROM dataset_snapshots")
    conn.close()


def test_snapshot_errors(reviewed_line) -> None:
    db = reviewed_line.db
    with pytest.raises(ValueError, match="no reviewed images"):
        create_snapshot(db, "t", until=1.0)
    with pytest.raises(ValueError, match="not in class_names: stain"):
        create_snapshot(db, "t", class_names=["dent", "scratch"])
    snap = create_snapshot(db, "t", class_names=["stain", "dent", "scratch", "pit"])
    assert snap.class_names == ("stain", "dent", "scratch", "pit")
    with pytest.raises(LookupError, match="snapshot 99 does not exist"):
        get_snapshot(db, 99)


def test_yolo_export_is_split_by_part_and_time(reviewed_line, tmp_path) -> None:
    db, store = reviewed_line.db, reviewed_line.images
    snap = create_snapshot(db, "trainer")
    data_yaml = export_yolo(db, store, snap.id, tmp_path / "ds", val_fraction=0.25)
    root = data_yaml.parent
    data = yaml.safe_load(data_yaml.read_text())
    assert data == {
        "path": str(root),
        "train": "images/train",
        "val": "images/val",
        "names": {0: "dent", 1: "scratch", 2: "stain"},
    }
    assert snap.sha in data_yaml.read_text()

    items = {it.image_id: it for it in snapshot_items(db, snap.id)}
    split_of: dict[int, set[str]] = {}
    for sub in ("train", "val"):
        for f in (root / "images" / sub).iterdir():
            iid = int(f.stem.rsplit("_", 1)[1])
            split_of.setdefault(items[iid].part_id, set()).add(sub)
            assert (root / "labels" / sub / f"{f.stem}.txt").is_file()
            assert f.read_bytes() == store.open_path(items[iid].sha256, "png").read_bytes()
    assert sum(1 for _ in (root / "images").rglob("*.png")) == len(items)
    assert all(len(s) == 1 for s in split_of.values()), "a part is in both train and val"
    val_parts = sorted(p for p, s in split_of.items() if s == {"val"})
    assert val_parts == [9, 10, 12]  # the latest round(0.25 * 11) = 3 reviewed parts by trigger time (11 is unreviewed)
    manifest = json.loads((root / "dataset.json").read_text())
    assert manifest["snapshot"] == f"labeling:{snap.id}:{snap.sha}"
    from models.dataset import dataset_snapshot  # what training records as the model's lineage

    assert dataset_snapshot(data_yaml) == manifest["snapshot"]
    assert manifest["snapshot_id"] == snap.id and manifest["val_parts"] == val_parts


def test_yolo_label_lines(reviewed_line, tmp_path) -> None:
    db, store = reviewed_line.db, reviewed_line.images
    snap = create_snapshot(db, "trainer")
    root = export_yolo(db, store, snap.id, tmp_path / "ds").parent
    expected = _expected(db, snap.image_ids, list(snap.class_names))
    n_empty = 0
    for f in (root / "labels").rglob("*.txt"):
        iid = int(f.stem.rsplit("_", 1)[1])
        got = _read_labels(f)
        assert len(got) == len(expected[iid])
        for g, e in zip(got, expected[iid]):
            assert g[0] == e[0] and g[1:] == pytest.approx(e[1:], abs=1e-6)
            assert all(0.0 <= v <= 1.0 for v in g[1:])
            assert g[3] > 0 and g[4] > 0
        n_empty += not got
    assert n_empty == 2 * 3 + 1  # parts 4, 8, 12 both cameras good, part 3 side good
    good = reviewed_line.image_id(3, "side")
    assert next((root / "labels").rglob(f"p3_side_{good}.txt")).read_text() == ""
    stain = reviewed_line.image_id(7, "top")
    assert _read_labels(next((root / "labels").rglob(f"p7_top_{stain}.txt"))) == [
        (2, pytest.approx(20 / W), pytest.approx(25 / H), pytest.approx(20 / W), pytest.approx(30 / H))
    ]


def test_yolo_group_split_and_deterministic_reexport(reviewed_line, tmp_path) -> None:
    db, store = reviewed_line.db, reviewed_line.images
    snap = create_snapshot(db, "trainer")
    a = export_yolo(db, store, snap.id, tmp_path / "a", val_fraction=0.3, seed=7, split="group").parent
    L.mark_image_good(db, "qa", reviewed_line.image_id(1, "top"))  # a relabel after the snapshot changes nothing
    b = export_yolo(db, store, snap.id, tmp_path / "b", val_fraction=0.3, seed=7, split="group", link=False).parent
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files_a:
        if rel.name != "data.yaml":
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    items = snapshot_items(db, snap.id)
    train, val = split_parts(items, 0.3, 7, "group")
    assert not train & val and len(val) == 3 and train | val == {it.part_id for it in items}
    assert split_parts(items, 0.3, 8, "group")[1] != val or split_parts(items, 0.3, 9, "group")[1] != val
    assert split_parts(items, 0.0)[1] == set() and split_parts(items[:1], 0.5)[1] == set()
    assert len(split_parts(items, 0.01)[1]) == 1 and len(split_parts(items, 0.99)[0]) == 1  # both splits keep a part
    c = export_yolo(db, store, snap.id, tmp_path / "c", val_fraction=0.0)
    assert yaml.safe_load(c.read_text())["val"] == "images/train" and not (c.parent / "images" / "val").exists()
    # hard links share the store's file; copies do not
    img = next((a / "images").rglob("*.png"))
    item = next(it for it in items if img.stem.endswith(f"_{it.image_id}"))
    src = store.open_path(item.sha256, "png")
    assert os.stat(img).st_ino == os.stat(src).st_ino
    assert os.stat(b / img.relative_to(a)).st_ino != os.stat(src).st_ino


def test_export_refuses_a_used_folder_and_missing_files(reviewed_line, tmp_path) -> None:
    db, store = reviewed_line.db, reviewed_line.images
    snap = create_snapshot(db, "trainer")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        export_yolo(db, store, snap.id, tmp_path / "used")
    assert [p.name for p in (tmp_path / "used").iterdir()] == ["x.txt"]
    victim = snapshot_items(db, snap.id)[0]
    store.open_path(victim.sha256, "png").unlink()
    with pytest.raises(
        FileNotFoundError, match=rf"1 image file\(s\) .*image {victim.image_id} \(part {victim.part_id}"
    ):
        export_yolo(db, store, snap.id, tmp_path / "new")
    assert not (tmp_path / "new").exists()
    with pytest.raises(ValueError, match="val_fraction"):
        export_yolo(db, store, snap.id, tmp_path / "new2", val_fraction=1.0)


def test_ultralytics_accepts_the_yolo_export(reviewed_line, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    db, store = reviewed_line.db, reviewed_line.images
    snap = create_snapshot(db, "trainer")
    data_yaml = export_yolo(db, store, snap.id, tmp_path / "ds", val_fraction=0.25)
    data = check_det_dataset(str(data_yaml))
    assert data["nc"] == 3 and data["names"] == {0: "dent", 1: "scratch", 2: "stain"}
    expected = _expected(db, snap.image_ids, list(snap.class_names))
    seen = 0
    for split in ("train", "val"):
        n_files = len(list(Path(data[split]).iterdir()))
        ds = YOLODataset(img_path=data[split], data=data, task="detect", imgsz=64, augment=False)
        assert len(ds.labels) == n_files  # nothing dropped as corrupt
        for lb in ds.labels:
            iid = int(Path(lb["im_file"]).stem.rsplit("_", 1)[1])
            got = sorted((int(c), *map(float, b)) for c, b in zip(lb["cls"].ravel(), lb["bboxes"]))
            assert len(got) == len(expected[iid])
            for g, e in zip(got, expected[iid]):
                assert g[0] == e[0] and g[1:] == pytest.approx(e[1:], abs=1e-5)
            assert lb["shape"] == (H, W)
            seen += 1
    assert seen == len(snap.image_ids)


@pytest.mark.slow
def test_ultralytics_trains_one_epoch_on_the_export(reviewed_line, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    db, store = reviewed_line.db, reviewed_line.images
    snap = create_snapshot(db, "trainer")
    data_yaml = export_yolo(db, store, snap.id, tmp_path / "ds", val_fraction=0.25)
    model = YOLO("yolov8n.yaml")
    model.train(
        data=str(data_yaml),
        epochs=1,
        imgsz=64,
        batch=8,
        plots=False,
        device="cpu",
        workers=0,
        project=str(tmp_path / "runs"),
        name="t",
        exist_ok=True,
        verbose=False,
        amp=False,
        pretrained=False,
        seed=0,
    )
    assert (tmp_path / "runs" / "t" / "weights" / "last.pt").is_file()


def test_coco_export_loads_in_pycocotools(reviewed_line, tmp_path) -> None:
    from pycocotools.coco import COCO

    db, store = reviewed_line.db, reviewed_line.images
    snap = create_snapshot(db, "trainer")
    path = export_coco(db, store, snap.id, tmp_path / "coco" / "annotations.json")
    coco = COCO(str(path))
    assert sorted(coco.getImgIds()) == sorted(snap.image_ids)
    assert len(coco.getAnnIds()) == snap.n_labels
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(snap.class_names)
    for it in snapshot_items(db, snap.id):
        img = coco.loadImgs(it.image_id)[0]
        assert (img["width"], img["height"]) == (W, H) and (path.parent / "images" / img["file_name"]).is_file()
        anns = coco.loadAnns(coco.getAnnIds(imgIds=it.image_id))
        got = sorted((coco.loadCats(a["category_id"])[0]["name"], *a["bbox"], a["area"]) for a in anns)
        want = sorted(
            (lab.class_name, lab.x1, lab.y1, lab.x2 - lab.x1, lab.y2 - lab.y1, (lab.x2 - lab.x1) * (lab.y2 - lab.y1))
            for lab in it.labels
        )
        assert [g[0] for g in got] == [w[0] for w in want]
        assert [g[1:] for g in got] == [pytest.approx(w[1:]) for w in want]
    dent = coco.getCatIds(catNms=["dent"])
    assert len(coco.getAnnIds(catIds=dent)) == sum(
        lab.class_name == "dent" for it in snapshot_items(db, snap.id) for lab in it.labels
    )
    with pytest.raises(FileExistsError):
        export_coco(db, store, snap.id, path)
