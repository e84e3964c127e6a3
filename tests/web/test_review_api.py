"""The QA review API against a real station (synthetic line, reference inspector, SQLite and images in tmp_path).

Queue, editor operations (append-only, audited), images by id only, thumbnails, snapshots, YOLO/COCO
export and import, upload limits (size, type, zip slip) and the statistics.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient

import labeling
from labeling.importer import read_yolo
from station.app import Station
from station.store.db import open_db
from station.store.images import ImageStore
from station.web import create_app
from tests.fixtures_review import mistakes, query, recorded_station, unzip, zip_bytes

from .helpers import login

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def line(make_station: Callable[..., Station]) -> Station:
    """A station after 24 recorded parts of the synthetic line."""
    return recorded_station(make_station, parts=24)


def qa_client(station: Station, user: str = "qa") -> Iterator[tuple[TestClient, dict[str, str]]]:
    with TestClient(create_app(station)) as c:
        csrf = login(c, user)
        yield c, {"X-CSRF-Token": csrf}


@pytest.fixture
def qa(line: Station) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """A TestClient logged in as the qa user, and the headers of its writes."""
    yield from qa_client(line)


def db_of(station: Station) -> Any:
    return open_db(station.cfg.store.db_path, migrate=False)


def work_dir(station: Station) -> Path:
    return Path(station.cfg.store.images_dir).resolve().parent / ".web-tmp"


def leftovers(station: Station) -> list[Path]:
    """Files the review routes left in their work folder (must be none after every request)."""
    root = work_dir(station)
    return sorted(root.rglob("*")) if root.exists() else []


# -- queue ------------------------------------------------------------------------------------------
def test_queue_is_labelings_order_with_filters_and_pages(line: Station, qa: tuple[TestClient, dict[str, str]]) -> None:
    c, _ = qa
    db = db_of(line)
    try:
        expected = [it.image_id for it in labeling.review_queue(db, limit=1000, rules=line.cfg.rules)]
        fails = [it.image_id for it in labeling.review_queue(db, outcome="FAIL", limit=1000, rules=line.cfg.rules)]
        spot = [it.image_id for it in labeling.review_queue(db, class_name="spot", limit=1000, rules=line.cfg.rules)]
        confident = [
            it.image_id
            for it in labeling.review_queue(db, min_conf=0.6, max_conf=1.0, limit=1000, rules=line.cfg.rules)
        ]
        labels = labeling.current_labels_many(db, expected)
    finally:
        db.close()
    assert len(expected) >= 10 and fails and spot and confident

    r = c.get("/api/review/queue", params={"limit": 200})
    assert r.status_code == 200
    body = r.json()
    assert [it["image_id"] for it in body["items"]] == expected
    assert body["total"] == len(expected) == sum(body["counts"].values())
    first = body["items"][0]
    assert first["tier"] in ("uncertain", "disagreement") and first["why"]
    for it in body["items"]:  # the gallery overlay: size and the current boxes of each image
        assert (it["width"], it["height"]) == (640, 400)
        assert sorted(b[:5] for b in it["boxes"]) == sorted(
            [lab.x1, lab.y1, lab.x2, lab.y2, lab.class_name] for lab in labels.get(it["image_id"], [])
        )

    # pages concatenate to the whole queue
    pages = [
        c.get("/api/review/queue", params={"limit": 5, "offset": o}).json()["items"] for o in range(0, len(expected), 5)
    ]
    assert [it["image_id"] for p in pages for it in p] == expected

    assert [
        it["image_id"] for it in c.get("/api/review/queue", params={"outcome": "FAIL", "limit": 200}).json()["items"]
    ] == fails
    assert all(it["outcome"] == "FAIL" for it in c.get("/api/review/queue", params={"outcome": "FAIL"}).json()["items"])
    assert [
        it["image_id"] for it in c.get("/api/review/queue", params={"class_name": "spot", "limit": 200}).json()["items"]
    ] == spot
    got = c.get("/api/review/queue", params={"min_conf": 0.6, "max_conf": 1.0, "limit": 200}).json()["items"]
    assert [it["image_id"] for it in got] == confident and all(it["max_score"] >= 0.6 for it in got)
    t_last = max(it["t_wall"] for it in body["items"])
    assert c.get("/api/review/queue", params={"since": t_last + 1}).json()["total"] == 0
    assert c.get("/api/review/queue", params={"until": t_last + 1}).json()["total"] == len(expected)
    models = c.get("/api/review/facets").json()["models"]
    by_model = c.get("/api/review/queue", params={"model_id": models[0], "limit": 200}).json()["items"]
    assert by_model and all(it["model_id"] == models[0] for it in by_model)

    # reviewed / not reviewed
    c.post(f"/api/review/images/{expected[0]}/good", json={}, headers=qa[1]).raise_for_status()
    assert expected[0] not in [
        it["image_id"] for it in c.get("/api/review/queue", params={"limit": 200}).json()["items"]
    ]
    done = c.get("/api/review/queue", params={"reviewed": "yes"}).json()["items"]
    assert [(it["image_id"], it["reviewed"], it["verdict"]) for it in done] == [(expected[0], True, "good")]
    assert body["items"][1]["verdict"] is None
    assert c.get("/api/review/queue", params={"reviewed": "all", "limit": 200}).json()["total"] == len(expected)

    # bad filters: 422 naming the field, never a 500
    for params in (
        {"outcome": "MAYBE"},
        {"min_conf": 2},
        {"limit": 0},
        {"offset": -1},
        {"since": "nan"},
        {"reviewed": "perhaps"},
    ):
        r = c.get("/api/review/queue", params=params)
        assert r.status_code == 422, params
        assert next(iter(params)) in json.dumps(r.json()["detail"])


def test_facets_list_the_models_classes_first(line: Station, qa: tuple[TestClient, dict[str, str]]) -> None:
    f = qa[0].get("/api/review/facets").json()
    assert f["classes"][:3] == list(line.inspector.names) == ["scratch", "spot", "missing"]
    assert set(f["models"]) == {r[0] for r in query(line, "SELECT DISTINCT model_id FROM inspections")}
    assert f["t_first"] <= f["t_last"]


# -- editor -------------------------------------------------------------------------------------------
def test_editor_changes_are_append_only_and_audited(line: Station, qa: tuple[TestClient, dict[str, str]]) -> None:
    c, h = qa
    m = next(m for m in mistakes(line) if m.false_positive)
    iid = m.image_id
    d0 = c.get(f"/api/review/images/{iid}").json()
    assert d0["image"]["id"] == iid and d0["inspection"]["part_id"] == m.part_id and d0["review"] is None
    assert d0["classes"][:3] == ["scratch", "spot", "missing"]
    assert d0["inspection"]["images"] == [{"id": iid, "camera_id": "cam0", "deleted": False}]
    n_rows = query(line, "SELECT COUNT(*) FROM labels")[0][0]

    # delete the false positive
    assert m.false_positive is not None
    fp_id = m.false_positive[0]
    r = c.delete(f"/api/review/images/{iid}/labels/{fp_id}", params={"reason": "false positive: reflection"}, headers=h)
    assert r.status_code == 200
    d = r.json()["detail"]
    assert fp_id not in [lab["id"] for lab in d["labels"]]
    assert d["review"]["verdict"] in ("labeled", "good") and d["review"]["reviewed_by"] == "qa"
    # add a missed defect, move it, reclassify it
    r = c.post(
        f"/api/review/images/{iid}/labels", json={"box": [100, 120, 140.5, 150], "class_name": "scratch"}, headers=h
    )
    assert r.status_code == 201
    added = r.json()["changed"]
    assert added["source"] == "qa" and added["supersedes"] is None and added["created_by"] == "qa"
    r = c.patch(f"/api/review/images/{iid}/labels/{added['id']}", json={"box": [102, 121, 142, 152]}, headers=h)
    moved = r.json()["changed"]
    assert r.status_code == 200 and moved["supersedes"] == added["id"] and moved["x1"] == 102
    r = c.patch(f"/api/review/images/{iid}/labels/{moved['id']}", json={"class_name": "missing"}, headers=h)
    reclassed = r.json()["changed"]
    assert r.status_code == 200 and reclassed["class_name"] == "missing" and reclassed["x2"] == 142
    # confirm one model label
    others = [lab for lab in r.json()["detail"]["labels"] if lab["source"] == "model"]
    if others:
        r = c.post(f"/api/review/images/{iid}/confirm", json={"label_ids": [others[0]["id"]]}, headers=h)
        assert r.status_code == 200 and r.json()["changed"][0]["supersedes"] == others[0]["id"]

    # refused: stale label (409), box outside the image / unknown class / no change (422), unknown ids (404)
    stale = c.patch(f"/api/review/images/{iid}/labels/{added['id']}", json={"box": [1, 1, 5, 5]}, headers=h)
    assert stale.status_code == 409 and "no longer current" in stale.json()["detail"]
    assert c.delete(f"/api/review/images/{iid}/labels/{fp_id}", headers=h).status_code == 409
    outside = c.post(
        f"/api/review/images/{iid}/labels", json={"box": [600, 10, 700, 40], "class_name": "spot"}, headers=h
    )
    assert outside.status_code == 422 and "inside the 640x400 image" in outside.json()["detail"]
    assert (
        c.post(
            f"/api/review/images/{iid}/labels", json={"box": [30, 10, 20, 40], "class_name": "spot"}, headers=h
        ).status_code
        == 422
    )
    unknown = c.post(
        f"/api/review/images/{iid}/labels", json={"box": [10, 10, 20, 20], "class_name": "dragon"}, headers=h
    )
    assert unknown.status_code == 422 and "dragon" in unknown.json()["detail"]
    assert c.patch(f"/api/review/images/{iid}/labels/{reclassed['id']}", json={}, headers=h).status_code == 422
    assert (
        c.post(
            "/api/review/images/999999/labels", json={"box": [1, 1, 5, 5], "class_name": "spot"}, headers=h
        ).status_code
        == 404
    )
    assert c.delete(f"/api/review/images/{iid}/labels/999999", headers=h).status_code == 404
    other_image = next(x for x in query(line, "SELECT id FROM images WHERE id != ?", [iid]))[0]
    assert c.delete(f"/api/review/images/{other_image}/labels/{reclassed['id']}", headers=h).status_code == 422
    for bad in (
        {"box": [1, 2, 3], "class_name": "spot"},
        {"box": [1, 2, 3, "x"], "class_name": "spot"},
        {"box": [1, 2, 3, 4]},
        {"box": [1, 2, 3, 4], "class_name": ""},
        {"box": [1e308, 2, 3, 4], "class_name": "spot"},
    ):
        assert c.post(f"/api/review/images/{iid}/labels", json=bad, headers=h).status_code == 422, bad

    # nothing was changed in place: rows were only appended, and every change has its audit row
    hist = c.get(f"/api/review/images/{iid}").json()
    assert query(line, "SELECT COUNT(*) FROM labels")[0][0] == n_rows + 4 + (1 if others else 0)
    ids = [lab["id"] for lab in hist["history"]]
    assert fp_id in ids and added["id"] in ids and moved["id"] in ids and ids == sorted(ids)
    assert next(lab for lab in hist["history"] if lab["supersedes"] == fp_id)["status"] == "deleted"
    actions = [(a["user"], a["action"], a["object_id"]) for a in hist["audit"]]
    assert ("qa", "delete", str(fp_id)) in actions
    assert ("qa", "add", str(added["id"])) in actions
    assert ("qa", "move", str(added["id"])) in actions
    assert ("qa", "reclass", str(moved["id"])) in actions
    fp_row = next(a for a in hist["audit"] if a["action"] == "delete")
    assert fp_row["reason"] == "false positive: reflection" and fp_row["before"]["id"] == fp_id
    assert [
        r[0]
        for r in query(
            line, "SELECT action FROM audit WHERE user = 'qa' AND action IN ('delete', 'add', 'move', 'reclass')"
        )
    ] == ["delete", "add", "move", "reclass"]


def test_mark_good_confirm_all_and_bulk_are_all_or_nothing(
    line: Station, qa: tuple[TestClient, dict[str, str]]
) -> None:
    c, h = qa
    with_boxes = [
        r[0] for r in query(line, "SELECT DISTINCT image_id FROM labels WHERE source = 'model' ORDER BY image_id")
    ]
    assert len(with_boxes) >= 4
    a, b, x, y = with_boxes[:4]
    r = c.post(f"/api/review/images/{a}/good", json={"reason": "reflection, no defect"}, headers=h)
    assert (
        r.status_code == 200
        and r.json()["detail"]["labels"] == []
        and r.json()["detail"]["review"]["verdict"] == "good"
    )
    r = c.post(f"/api/review/images/{b}/confirm", headers=h)  # no body: every label, image reviewed
    d = r.json()["detail"]
    assert (
        r.status_code == 200
        and d["labels"]
        and all(lab["source"] == "qa" for lab in d["labels"])
        and d["review"]["verdict"] == "labeled"
    )

    before = query(line, "SELECT COUNT(*) FROM labels")[0][0], query(line, "SELECT COUNT(*) FROM audit")[0][0]
    assert c.post("/api/review/bulk/good", json={"image_ids": [x, 999999]}, headers=h).status_code == 404
    assert c.post("/api/review/bulk/confirm", json={"image_ids": [y, 999999]}, headers=h).status_code == 404
    assert (query(line, "SELECT COUNT(*) FROM labels")[0][0], query(line, "SELECT COUNT(*) FROM audit")[0][0]) == before
    assert c.post("/api/review/bulk/good", json={"image_ids": []}, headers=h).status_code == 422
    assert c.post("/api/review/bulk/good", json={"image_ids": list(range(1, 502))}, headers=h).status_code == 422

    assert c.post("/api/review/bulk/confirm", json={"image_ids": [x]}, headers=h).json() == {"images": 1}
    assert c.post("/api/review/bulk/good", json={"image_ids": [y, y]}, headers=h).json() == {"images": 1}
    reviews = dict(query(line, "SELECT image_id, verdict FROM image_review_latest"))
    assert reviews == {a: "good", b: "labeled", x: "labeled", y: "good"}
    actions = query(line, "SELECT action, object_type, object_id FROM audit WHERE user = 'qa' AND action = 'mark_good'")
    assert sorted(int(r[2]) for r in actions) == sorted([a, y]) and all(r[1] == "image" for r in actions)


# -- images by id only ----------------------------------------------------------------------------------
def test_images_are_served_by_integer_id_only(line: Station, qa: tuple[TestClient, dict[str, str]]) -> None:
    c, _ = qa
    iid, sha = query(line, "SELECT id, sha256 FROM images ORDER BY id LIMIT 1")[0]
    full = c.get(f"/api/review/images/{iid}/file")
    assert full.status_code == 200 and full.headers["content-type"] == "image/png"
    assert hashlib.sha256(full.content).hexdigest() == sha  # the stored file itself
    thumb = c.get(f"/api/review/images/{iid}/thumb", params={"size": 128})
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    img = cv2.imdecode(np.frombuffer(thumb.content, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[:2] == (80, 128)  # 640x400 downsized on the server, aspect kept
    big = cv2.imdecode(
        np.frombuffer(c.get(f"/api/review/images/{iid}/thumb", params={"size": 1024}).content, np.uint8),
        cv2.IMREAD_COLOR,
    )
    assert big is not None and big.shape[:2] == (400, 640)  # never upscaled
    assert c.get(f"/api/review/images/{iid}/thumb", params={"size": 5000}).status_code == 422

    secret = Path(line.cfg.store.db_path).resolve()
    attempts = [
        "/api/review/images/../../etc/passwd/file",
        "/api/review/images/..%2F..%2Fetc%2Fpasswd/file",
        "/api/review/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd/file",
        "/api/review/images/%2e%2e/file",
        "/api/review/images/..%252f..%252fetc/file",
        f"/api/review/images/{secret}/file",
        f"/api/review/images/%2F{str(secret).lstrip('/').replace('/', '%2F')}/file",
        "/api/review/images//etc/passwd/file",
        "/api/review/images/1.5/file",
        "/api/review/images/-1/file",
        "/api/review/images/0/thumb",
        "/api/review/images/0x1/file",
        "/api/review/images/1e3/file",
        f"/api/review/images/{sha}/file",
        "/api/review/images/999999/file",
        "/api/review/images/99999999999999999999999/thumb",
        "/api/review/images/1%00/file",
        "/api/review/images/%20/file",
        "/api/review/images/1/file/../../../../etc/passwd",
        "/api/review/images/1/thumb?size=../../etc/passwd",
    ]
    for path in attempts:
        r = c.get(path)
        assert r.status_code in (404, 422), (path, r.status_code)
        assert b"root:" not in r.content and b"SQLite format" not in r.content, path

    # an image deleted by the disk budget (the store's real retention) is gone from every route
    db = db_of(line)
    try:
        store = ImageStore(line.cfg.store.images_dir, line.cfg.store.image_format, disk_budget_mb=0.2)
        assert store.enforce_budget(db, force=True) > 0
    finally:
        db.close()
    gone = query(
        line,
        "SELECT id FROM images WHERE deleted_at IS NOT NULL "
        "AND id IN (SELECT image_id FROM labels) ORDER BY id LIMIT 1",
    )[0][0]
    assert c.get(f"/api/review/images/{gone}/file").status_code == 404
    assert c.get(f"/api/review/images/{gone}/thumb").status_code == 404
    assert c.get(f"/api/review/images/{gone}").json()["image"]["deleted"] is True
    r = c.post(f"/api/review/images/{gone}/good", json={}, headers=qa[1])
    assert r.status_code == 409 and "disk budget" in r.json()["detail"]


# -- snapshots, export, import -----------------------------------------------------------------------------
def _review_some(c: TestClient, h: dict[str, str], line: Station) -> tuple[list[int], int]:
    """Review a few images (a false positive deleted, a box added, one marked good); return (image ids, boxes)."""
    ms = [m for m in mistakes(line) if m.false_positive]
    fp = ms[0]
    assert fp.false_positive is not None
    c.delete(f"/api/review/images/{fp.image_id}/labels/{fp.false_positive[0]}", headers=h).raise_for_status()
    c.post(
        f"/api/review/images/{fp.image_id}/labels", json={"box": [300, 100, 340, 130], "class_name": "spot"}, headers=h
    ).raise_for_status()
    other = next(
        r[0]
        for r in query(
            line, "SELECT DISTINCT image_id FROM labels WHERE image_id != ? ORDER BY image_id", [fp.image_id]
        )
    )
    c.post(f"/api/review/images/{other}/confirm", headers=h).raise_for_status()
    good = next(
        r[0] for r in query(line, "SELECT id FROM images WHERE id NOT IN (?, ?) ORDER BY id DESC", [fp.image_id, other])
    )
    c.post(f"/api/review/images/{good}/good", json={}, headers=h).raise_for_status()
    ids = sorted([fp.image_id, other, good])
    db = db_of(line)
    try:
        boxes = sum(len(v) for v in labeling.current_labels_many(db, ids).values())
    finally:
        db.close()
    return ids, boxes


def test_snapshot_and_exports_download(line: Station, qa: tuple[TestClient, dict[str, str]], tmp_path: Path) -> None:
    c, h = qa
    assert c.post("/api/review/snapshots", json={}, headers=h).status_code == 422  # nothing reviewed yet
    ids, boxes = _review_some(c, h, line)
    r = c.post("/api/review/snapshots", json={"name": "week 12"}, headers=h)
    assert r.status_code == 201
    snap = r.json()
    assert snap["n_images"] == 3 and snap["n_labels"] == boxes and snap["class_names"] == ["scratch", "spot", "missing"]
    assert c.get("/api/review/snapshots").json()[0]["id"] == snap["id"]
    assert c.post("/api/review/snapshots", json={"name": "../x"}, headers=h).status_code == 422

    r = c.get(f"/api/review/snapshots/{snap['id']}/yolo", params={"val_fraction": 0.34})
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert f"snapshot-{snap['id']}-yolo.zip" in r.headers["content-disposition"]
    names = unzip(r.content, tmp_path / "yolo")
    root = tmp_path / "yolo" / f"snapshot-{snap['id']}-yolo"
    data = yaml.safe_load((root / "data.yaml").read_text())
    assert "path" not in data and data["names"] == {0: "scratch", 1: "spot", 2: "missing"}
    assert sum(n.endswith(".png") for n in names) == 3
    classes, items = read_yolo(root / "data.yaml")  # the importer reads the unzipped download as it is
    assert classes == ["scratch", "spot", "missing"] and sum(len(it.boxes) for it in items) == boxes
    assert json.loads((root / "dataset.json").read_text())["snapshot"].endswith(snap["sha"])

    from pycocotools.coco import COCO

    r = c.get(f"/api/review/snapshots/{snap['id']}/coco")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    (tmp_path / "coco.json").write_bytes(r.content)
    coco = COCO(str(tmp_path / "coco.json"))
    assert len(coco.getAnnIds()) == boxes and sorted(coco.getImgIds()) == ids
    r = c.get(f"/api/review/snapshots/{snap['id']}/coco", params={"images": "true"})
    names = unzip(r.content, tmp_path / "coco")
    assert f"snapshot-{snap['id']}-coco/annotations.json" in names and sum(n.endswith(".png") for n in names) == 3

    assert c.get("/api/review/snapshots/999/yolo").status_code == 404
    assert c.get(f"/api/review/snapshots/{snap['id']}/yolo", params={"val_fraction": 1.5}).status_code == 422
    assert leftovers(line) == []  # the temporary export folders are gone once sent


def _exported(c: TestClient, h: dict[str, str], line: Station, kind: str) -> tuple[bytes, dict[str, Any]]:
    _review_some(c, h, line)
    snap = c.post("/api/review/snapshots", json={}, headers=h).json()
    url = (
        f"/api/review/snapshots/{snap['id']}/yolo"
        if kind == "yolo"
        else f"/api/review/snapshots/{snap['id']}/coco?images=true"
    )
    return c.get(url).content, snap


def _rezip(data: bytes, edit: Callable[[str, bytes], bytes | None], extra: dict[str, bytes] | None = None) -> bytes:
    """A copy of a zip with each entry passed through ``edit`` (None drops it) and ``extra`` entries added."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            new = edit(info.filename, src.read(info))
            if new is not None:
                dst.writestr(info.filename, new)
        for name, content in (extra or {}).items():
            dst.writestr(name, content)
    return out.getvalue()


def test_import_yolo_zip_relabels_known_images(line: Station, qa: tuple[TestClient, dict[str, str]]) -> None:
    c, h = qa
    data, snap = _exported(c, h, line, "yolo")
    # relabel outside the station: the first non-empty label file loses its boxes, another image gets one
    emptied: list[str] = []

    def edit(name: str, content: bytes) -> bytes:
        if name.endswith(".txt") and "/labels/" in name and content.strip() and not emptied:
            emptied.append(name)
            return b""
        if name.endswith(".txt") and "/labels/" in name and not content.strip():
            return b"0 0.5 0.5 0.1 0.1\n"
        return content

    relabelled = _rezip(data, edit)
    r = c.post(
        "/api/review/import",
        params={"format": "yolo", "name": "cvat round 1"},
        content=relabelled,
        headers={**h, "Content-Type": "application/zip"},
    )
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["images"] == snap["n_images"] and res["existing"] == snap["n_images"] and res["new"] == 0
    emptied_id = int(Path(emptied[0]).stem.rsplit("_", 1)[1])
    assert c.get(f"/api/review/images/{emptied_id}").json()["labels"] == []
    audit = query(line, "SELECT user, action, object_id FROM audit WHERE action LIKE 'import%'")
    assert ("qa", "import_dataset", "upload:cvat round 1") in audit and any(a[1] == "import_delete" for a in audit)
    assert any(a[1] == "import_add" for a in audit)
    assert leftovers(line) == []


def test_import_coco_zip_adds_new_images(line: Station, qa: tuple[TestClient, dict[str, str]]) -> None:
    c, h = qa
    data, snap = _exported(c, h, line, "coco")
    # a third-party image the station never saw, with one box
    img = np.full((120, 160, 3), 60, np.uint8)
    cv2.rectangle(img, (40, 30), (90, 70), (230, 230, 230), -1)
    png = cv2.imencode(".png", img)[1].tobytes()

    def edit(name: str, content: bytes) -> bytes:
        if name.endswith("annotations.json"):
            doc = json.loads(content)
            doc["images"].append({"id": 99001, "file_name": "vendor_part.png", "width": 160, "height": 120})
            doc["annotations"].append(
                {
                    "id": 99001,
                    "image_id": 99001,
                    "category_id": 2,
                    "bbox": [40, 30, 51, 41],
                    "area": 51 * 41,
                    "iscrowd": 0,
                }
            )
            return json.dumps(doc).encode()
        return content

    zipped = _rezip(data, edit, {f"snapshot-{snap['id']}-coco/images/vendor_part.png": png})
    r = c.post(
        "/api/review/import",
        params={"format": "coco"},
        content=zipped,
        headers={**h, "Content-Type": "application/zip"},
    )
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["new"] == 1 and res["existing"] == snap["n_images"] and res["parts_created"] == 1
    sha = hashlib.sha256(png).hexdigest()
    ((iid, pid),) = query(line, "SELECT i.id, i.part_id FROM images i WHERE sha256 = ?", [sha])
    assert pid < 0  # a synthetic inspection, never a line part id
    labs = c.get(f"/api/review/images/{iid}").json()["labels"]
    assert [(lab["class_name"], lab["x1"], lab["y2"], lab["source"]) for lab in labs] == [
        ("spot", 40.0, 71.0, "import")
    ]
    assert hashlib.sha256(c.get(f"/api/review/images/{iid}/file").content).hexdigest() == sha
    # imported images are not line production: not in the queue, not in the statistics
    assert iid not in [
        it["image_id"] for it in c.get("/api/review/queue", params={"reviewed": "all", "limit": 200}).json()["items"]
    ]
    assert leftovers(line) == []


# -- upload limits ----------------------------------------------------------------------------------------
def test_upload_size_type_and_zip_slip_are_refused(make_station: Callable[..., Station]) -> None:
    line = recorded_station(
        make_station, parts=6, web={"max_upload_mb": 0.05, "max_upload_unpacked_mb": 0.2, "max_upload_files": 50}
    )
    images_before = query(line, "SELECT COUNT(*) FROM images")[0][0]
    outside = Path(line.cfg.store.images_dir).resolve().parent
    for c, h in qa_client(line):

        def post(body: Any, ctype: str = "application/zip", fmt: str = "yolo") -> Any:
            return c.post(
                "/api/review/import", params={"format": fmt}, content=body, headers={**h, "Content-Type": ctype}
            )

        # too big: refused from Content-Length before reading, and while streaming when there is none
        big = zip_bytes({"data.yaml": "names: [a]\n", "noise.bin": np.random.default_rng(0).bytes(80_000)})
        r = post(big)
        assert r.status_code == 413 and "max_upload_mb" in r.json()["detail"]
        r = post(iter([big[i : i + 8192] for i in range(0, len(big), 8192)]))  # chunked: no Content-Length
        assert r.status_code == 413
        # wrong type
        assert post(b"name,box\n1,2\n", "text/csv").status_code == 415
        assert post(b"%PDF-1.4 not a zip at all").status_code == 415
        assert post(b"{}", "application/json").status_code == 415
        assert post(b"").status_code == 422
        assert post(b"PK\x03\x04 broken zip").status_code == 422
        # zip slip and friends: 400, and nothing lands outside the upload folder
        for name in (
            "../evil.txt",
            "../../evil.txt",
            "/tmp/evil.txt",
            "ok/../../evil.txt",
            "C:/evil.txt",
            "a\\..\\..\\evil.txt",
        ):
            r = post(zip_bytes({"data.yaml": "names: [a]\ntrain: images\nval: images\n", name: "pwned"}))
            assert r.status_code == 400 and "refused" in r.json()["detail"], name
        r = post(zip_bytes({"data.yaml": "names: [a]\n"}, symlink="images/link.png"))
        assert r.status_code == 400 and "link" in r.json()["detail"]
        assert not list(outside.rglob("evil.txt")) and not Path("/tmp/evil.txt").exists()
        # zip bomb: more unpacked bytes or more entries than allowed
        bomb = io.BytesIO()
        with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("zeros.bin", b"\0" * 400_000)
        assert post(bomb.getvalue()).status_code == 413
        assert post(zip_bytes({f"f{i}.txt": "" for i in range(60)})).status_code == 413
        # the dataset inside is checked: YAML / JSON parse, paths inside the zip only
        assert post(zip_bytes({"data.yaml": "names: [a\n"})).status_code == 422
        r = post(zip_bytes({"data.yaml": "names: [a]\ntrain: /etc\nval: /etc\n"}))
        assert r.status_code == 422 and "relative" in r.json()["detail"]
        r = post(zip_bytes({"data.yaml": f"path: /\nnames: [a]\ntrain: {outside}\nval: images\n"}))
        assert r.status_code == 422
        r = post(zip_bytes({"data.yaml": "names: [a]\ntrain: list.txt\nval: list.txt\n", "list.txt": "/etc/hosts\n"}))
        assert r.status_code == 422 and "inside the zip" in r.json()["detail"]
        r = post(zip_bytes({"a.json": "{not json"}), fmt="coco")
        assert r.status_code == 422 and "JSON" in r.json()["detail"]
        coco = {
            "images": [{"id": 1, "file_name": "../../station.db", "width": 1, "height": 1}],
            "annotations": [],
            "categories": [],
        }
        r = post(zip_bytes({"a.json": json.dumps(coco)}), fmt="coco")
        assert r.status_code == 422 and "inside the zip" in r.json()["detail"]
        r = post(zip_bytes({"data.yaml": "names: [a]\ntrain: images\nval: images\n", "images/x.png": b"not a png"}))
        assert (
            r.status_code == 422 and "nothing was imported" in r.json()["detail"] and "<upload>" in r.json()["detail"]
        )
        assert post(zip_bytes({"data.yaml": "names: [a]\n"}), fmt="xml").status_code == 422
    assert query(line, "SELECT COUNT(*) FROM images")[0][0] == images_before
    assert not query(line, "SELECT 1 FROM audit WHERE action LIKE 'import%'")
    assert leftovers(line) == []


# -- statistics and schema ----------------------------------------------------------------------------------
def test_stats_are_labelings_numbers(line: Station, qa: tuple[TestClient, dict[str, str]]) -> None:
    c, h = qa
    _review_some(c, h, line)
    r = c.get("/api/review/stats", params={"tz": "UTC"})
    assert r.status_code == 200
    s = r.json()
    db = db_of(line)
    try:
        assert s["defects_over_time"] == labeling.defects_by_class_over_time(db, "hour", tz="UTC")
        assert s["false_positives"] == labeling.false_positive_rate(db)
        assert s["yield_by_hour"] == labeling.yield_by_hour(db, tz="UTC")
        assert s["yield_by_shift"] == labeling.yield_by_shift(db, tz="UTC")
        assert s["pareto_model"] == labeling.defect_pareto(db)
        assert s["pareto_labels"] == labeling.defect_pareto(db, source="labels")
    finally:
        db.close()
    assert s["false_positives"]["false_positives"] >= 1 and s["false_positives"]["missed"] >= 1
    assert (
        sum(row["total"] for row in s["yield_by_hour"])
        == query(line, "SELECT COUNT(*) FROM inspections WHERE source != 'import'")[0][0]
    )
    day = c.get("/api/review/stats", params={"bucket": "day", "tz": "Europe/Berlin"}).json()
    assert sum(x["count"] for x in day["defects_over_time"]) == sum(x["count"] for x in s["defects_over_time"])
    r = c.get("/api/review/stats", params={"tz": "Mars/Olympus"})
    assert r.status_code == 422 and "time zone" in r.json()["detail"]
    assert c.get("/api/review/stats", params={"since": 4_000_000_000}).json()["yield_by_hour"] == []


def test_openapi_documents_the_review_api(qa: tuple[TestClient, dict[str, str]]) -> None:
    paths = qa[0].get("/openapi.json").json()["paths"]
    for p in (
        "/api/review/queue",
        "/api/review/images/{image_id}",
        "/api/review/images/{image_id}/labels",
        "/api/review/images/{image_id}/labels/{label_id}",
        "/api/review/snapshots",
        "/api/review/import",
        "/api/review/stats",
    ):
        assert p in paths, p
        for op in paths[p].values():
            assert op["summary"] and "(qa)" in op["summary"]
    body = paths["/api/review/import"]["post"]["requestBody"]
    assert body["required"] and "application/zip" in body["content"]
    params = {p["name"]: p for p in paths["/api/review/images/{image_id}/thumb"]["get"]["parameters"]}
    assert params["image_id"]["schema"]["type"] == "integer" and params["size"]["schema"]["maximum"] == 1024
    assert not any(p.startswith("/review") for p in paths)  # the HTML pages are not API


def test_review_pages_need_qa_and_render(line: Station) -> None:
    with TestClient(create_app(line)) as c:
        r = c.get("/review/dataset", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login?next=/review/dataset"
        login(c, "op")
        r = c.get("/review")
        assert r.status_code == 403 and "needs the qa role" in r.text
        login(c, "boss")
        for path, marker in (
            ("/review", 'id="grid"'),
            ("/review/image/3", 'data-image-id="3"'),
            ("/review/dataset", 'data-max-upload-mb="500"'),
            ("/review/stats", 'id="c-pareto"'),
        ):
            r = c.get(path)
            assert r.status_code == 200 and marker in r.text and "/static/review.css" in r.text, path
            assert "boss (admin)" in r.text
        assert c.get("/review/image/abc").status_code == 422
        for asset in ("/static/review.js", "/static/review.css", "/static/stats.js"):
            assert c.get(asset).status_code == 200
