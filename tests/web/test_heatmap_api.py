"""Heat maps of no-labels inspectors through the real recorder, SQLite files and the FastAPI app.

A part whose Detections carry an ``anomaly_map`` has its map stored beside its image, served by
``/api/review/images/{id}/heatmap`` and ``/api/live/heatmap``, and deleted with its image by the
disk budget; a part without one answers 404. An ``anomaly`` box becomes a labelled defect through
the label store (a ``qa`` label superseding it, an audit row).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from station.app import Station
from station.store.db import open_db
from station.store.images import ImageStore
from station.web import create_app
from tests.fixtures_review import query

from .anomaly_parts import BOX, anomaly_part, heat_map, publish_part
from .helpers import login, wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

A, B = 1001, 1002  # part with a heat map, part without (a supervised model's result)


def _recorded(station: Station, *part_ids: int) -> None:
    wait_for(
        lambda: (
            len(
                query(
                    station, f"SELECT 1 FROM inspections WHERE part_id IN ({','.join('?' * len(part_ids))})", part_ids
                )
            )
            == len(part_ids)
        ),
        15,
        "the recorder to write the parts",
    )


def _image_id(station: Station, part_id: int) -> int:
    return int(query(station, "SELECT id FROM images WHERE part_id = ?", [part_id])[0][0])


@pytest.fixture
def parts(station: Station) -> Station:
    publish_part(station, anomaly_part(A))
    publish_part(station, anomaly_part(B, with_map=False))
    _recorded(station, A, B)
    return station


@pytest.fixture
def qa(parts: Station) -> Iterator[tuple[TestClient, dict[str, str]]]:
    with TestClient(create_app(parts)) as c:
        yield c, {"X-CSRF-Token": login(c, "qa")}


def _png(content: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(content, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img is not None, "not a decodable image"
    return img


def test_heat_map_is_recorded_served_and_deleted_with_its_image(
    parts: Station, qa: tuple[TestClient, dict[str, str]]
) -> None:
    station, (c, _) = parts, qa
    img_a, img_b = _image_id(station, A), _image_id(station, B)
    assert dict(query(station, "SELECT part_id, image_score FROM inspections WHERE part_id IN (?, ?)", [A, B])) == {
        A: pytest.approx(1.8),
        B: None,
    }
    ((sha, map_image_id),) = query(station, "SELECT sha256, image_id FROM anomaly_maps WHERE part_id = ?", [A])
    assert map_image_id == img_a
    path = station.images.open_map_path(sha)
    assert path.is_file() and Path(station.cfg.store.images_dir) / "maps" in path.parents

    r = c.get(f"/api/review/images/{img_a}/heatmap")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert np.array_equal(_png(r.content), heat_map())  # the map as the inspector made it (it is under 256 px)
    detail = c.get(f"/api/review/images/{img_a}").json()
    assert detail["heatmap"]["url"] == f"/api/review/images/{img_a}/heatmap"
    assert (detail["heatmap"]["width"], detail["heatmap"]["height"]) == (160, 100)
    assert detail["heatmap"]["image_score"] == pytest.approx(1.8) and detail["inspection"][
        "image_score"
    ] == pytest.approx(1.8)
    assert detail["anomaly_class"] == "anomaly"

    # no map: 404, and the detail says so
    assert c.get(f"/api/review/images/{img_b}/heatmap").status_code == 404
    assert c.get(f"/api/review/images/{img_b}").json()["heatmap"] is None
    assert c.get("/api/review/images/999999/heatmap").status_code == 404

    # same auth as the image file: qa only
    c.cookies.clear()
    assert c.get(f"/api/review/images/{img_a}/heatmap").status_code == 401
    login(c, "op")
    assert c.get(f"/api/review/images/{img_a}/heatmap").status_code == 403
    login(c, "qa")

    # the disk budget deletes the image, and its heat map goes with it
    db = open_db(station.cfg.store.db_path, migrate=False)
    try:
        store = ImageStore(station.cfg.store.images_dir, station.cfg.store.image_format, disk_budget_mb=0.0001)
        assert store.enforce_budget(db, force=True) > 0
    finally:
        db.close()
    assert query(station, "SELECT deleted_at IS NOT NULL FROM images WHERE id = ?", [img_a])[0][0] == 1
    assert query(station, "SELECT deleted_reason FROM anomaly_maps WHERE part_id = ?", [A])[0][0] == "disk budget"
    assert not path.exists()
    assert c.get(f"/api/review/images/{img_a}/heatmap").status_code == 404
    assert c.get(f"/api/review/images/{img_a}").json()["heatmap"] is None


def test_live_heat_map_and_score(station: Station) -> None:
    with TestClient(create_app(station)) as c:  # the live screen is readable without login (web.anonymous_view)
        publish_part(station, anomaly_part(A, score=2.25))
        wait_for(lambda: c.get("/api/result/last").json()["result"], 10, "the last result")
        last = c.get("/api/result/last").json()["result"]
        assert last["part_id"] == A and last["heatmap"] is True and last["image_score"] == pytest.approx(2.25)
        assert (
            c.get("/api/live/heatmap", params={"part_id": A}).status_code == 404
        )  # no image served yet: nothing cached
        r = c.get("/api/live/image", params={"part_id": A})
        assert r.status_code == 200 and r.headers["x-part-id"] == str(A)
        r = c.get("/api/live/heatmap", params={"part_id": A})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert np.array_equal(_png(r.content), heat_map())

        publish_part(station, anomaly_part(B, with_map=False))
        last = c.get("/api/result/last").json()["result"]
        assert last["part_id"] == B and last["heatmap"] is False and last["image_score"] is None
        c.get("/api/live/image", params={"part_id": B})
        assert c.get("/api/live/heatmap", params={"part_id": B}).status_code == 404
        assert c.get("/api/live/heatmap").status_code == 422  # the part id is required


def _current(station: Station, image_id: int) -> list[tuple[Any, ...]]:
    return query(
        station,
        "SELECT id, class_name, source, supersedes, x1, y1, x2, y2 FROM labels l WHERE image_id = ? AND status = "
        "'active' "
        "AND NOT EXISTS (SELECT 1 FROM labels s WHERE s.supersedes = l.id) ORDER BY id",
        [image_id],
    )


def test_anomaly_box_becomes_a_labelled_defect(parts: Station, qa: tuple[TestClient, dict[str, str]]) -> None:
    station, (c, h) = parts, qa
    img = _image_id(station, A)
    ((anomaly_id, cls, src, _, *box),) = _current(station, img)
    assert (cls, src, tuple(box)) == ("anomaly", "model", BOX)

    # a name that cannot be a class, or the anomaly class itself: refused, nothing written
    for bad in ("anomaly", " ", "../x", "a" * 65):
        r = c.post(f"/api/review/images/{img}/labels/{anomaly_id}/as-defect", json={"class_name": bad}, headers=h)
        assert r.status_code == 422, (bad, r.text)
    assert (
        c.post(f"/api/review/images/{img}/labels/{anomaly_id}/as-defect", json={"class_name": "burr"}).status_code
        == 403
    )  # no CSRF
    assert _current(station, img)[0][0] == anomaly_id

    r = c.post(f"/api/review/images/{img}/labels/{anomaly_id}/as-defect", json={"class_name": " burr "}, headers=h)
    assert r.status_code == 200, r.text
    new = r.json()["changed"]
    assert (new["class_name"], new["source"], new["supersedes"], new["created_by"]) == ("burr", "qa", anomaly_id, "qa")
    assert [(x[1], x[2], x[3], tuple(x[4:])) for x in _current(station, img)] == [("burr", "qa", anomaly_id, BOX)]
    assert "burr" in r.json()["detail"]["classes"]  # a new class: offered from now on
    audit = query(station, "SELECT user, action, object_id, reason FROM audit WHERE object_type = 'label' ORDER BY id")
    assert audit[-1] == ("qa", "reclass", str(anomaly_id), "anomaly labelled as burr")
    review = query(
        station, "SELECT verdict, reviewed_by FROM image_reviews WHERE image_id = ? ORDER BY id DESC LIMIT 1", [img]
    )
    assert review == [("labeled", "qa")]

    # the anomaly box is gone: a second try is a conflict; a box that is not an anomaly is refused
    r = c.post(f"/api/review/images/{img}/labels/{anomaly_id}/as-defect", json={"class_name": "dent"}, headers=h)
    assert r.status_code == 409, r.text
    r = c.post(f"/api/review/images/{img}/labels/{new['id']}/as-defect", json={"class_name": "dent"}, headers=h)
    assert r.status_code == 422 and "not an 'anomaly' box" in r.json()["detail"]
    other = _image_id(station, B)
    r = c.post(f"/api/review/images/{other}/labels/{anomaly_id}/as-defect", json={"class_name": "dent"}, headers=h)
    assert r.status_code == 422 and "belongs to image" in r.json()["detail"]
    assert (
        c.post(
            f"/api/review/images/{img}/labels/99999999/as-defect", json={"class_name": "dent"}, headers=h
        ).status_code
        == 404
    )
