"""The camera setup API on a real station: roles, regions saved and applied at once, calibration from uploads,
rollback."""

from __future__ import annotations

import base64
import time

import cv2
import numpy as np
from fastapi.testclient import TestClient

from station.app import Station
from station.contracts import Detections, Frame, Outcome, Trigger, Verdict
from station.web import create_app
from tests.calib_views import CHESS, views
from tests.fixtures_review import query, recorded_station

from .anomaly_parts import BOX, anomaly_part, publish_part
from .helpers import login

ZONE = {"name": "clamp", "points": [[390, 110], [490, 110], [490, 210], [390, 210]]}


def judge(station: Station) -> Verdict:
    """The station's decision in force on a part whose only defect is at BOX."""
    det = Detections(
        np.array([BOX], np.float32), np.array([0.9], np.float32), np.array([0], np.int32), ("anomaly",), "m"
    )
    return station.decider.decide(Trigger(1, 1, 0), [Frame(1, "cam0", np.zeros((400, 640), np.uint8), 0)], [det], {})


def test_regions_roles_apply_and_rollback(station: Station, client: TestClient) -> None:
    assert client.get("/api/setup").status_code == 200  # the operator screen draws the regions (web.anonymous_view)
    assert client.get("/api/setup/cam0/regions/history").status_code == 401
    assert judge(station).outcome is Outcome.FAIL
    for user in ("op", "qa"):
        tok = login(client, user)
        r = client.post("/api/setup/cam0/regions", json={"regions": {"ignore": [ZONE]}}, headers={"X-CSRF-Token": tok})
        assert r.status_code == 403, r.text
        client.post("/api/logout", headers={"X-CSRF-Token": tok})
    tok = login(client, "boss")
    hdr = {"X-CSRF-Token": tok}
    assert (
        client.post("/api/setup/cam0/regions", json={"regions": {"ignore": [ZONE]}}).status_code == 403
    )  # no CSRF token
    bad = client.post(
        "/api/setup/cam0/regions",
        json={"regions": {"image_size": [640, 400], "ignore": [{"points": [[0, 0], [900, 0], [0, 9]]}]}},
        headers=hdr,
    )
    assert bad.status_code == 422 and "outside the 640x400 reference image" in bad.text
    assert client.post("/api/setup/cam9/regions", json={"regions": {}}, headers=hdr).status_code == 404
    r = client.post(
        "/api/setup/cam0/regions",
        json={"regions": {"image_size": [640, 400], "ignore": [ZONE]}, "reason": "clamp"},
        headers=hdr,
    )
    assert r.status_code == 200 and r.json()["version"] == 1
    v = judge(station)
    assert (
        v.outcome is Outcome.PASS and v.defects[0].rule == "ignore zone clamp" and v.config_hash.endswith("+gcam0:v1")
    )
    assert client.get("/api/setup").json()["cameras"][0]["regions"]["ignore"][0]["name"] == "clamp"
    assert (
        client.post("/api/setup/cam0/regions", json={"regions": {}, "reason": "none"}, headers=hdr).json()["version"]
        == 2
    )
    assert judge(station).outcome is Outcome.FAIL
    r = client.post("/api/setup/cam0/regions/rollback", json={"version": 1, "reason": "back"}, headers=hdr)
    assert r.status_code == 200 and judge(station).outcome is Outcome.PASS
    assert client.post("/api/setup/cam0/regions/rollback", json={"version": 1}, headers=hdr).status_code == 409
    hist = client.get("/api/setup/cam0/regions/history").json()
    assert hist["in_force"] == 1 and [h["version"] for h in hist["versions"]] == [2, 1]
    audit = station.db.execute("SELECT action, user FROM audit WHERE object_type = 'regions' ORDER BY id").fetchall()
    assert audit == [("regions_new", "boss"), ("regions_new", "boss"), ("regions_rollback", "boss")]


def test_reference_image_is_the_cameras_last_frame(station: Station, client: TestClient) -> None:
    login(client, "qa")
    r = client.get("/api/setup/cam0/reference.jpg")
    assert r.status_code == 404 and "trigger a part" in r.json()["detail"]
    publish_part(station, anomaly_part(7))
    r = client.get("/api/setup/cam0/reference.jpg")
    assert r.status_code == 200 and (r.headers["x-frame-width"], r.headers["x-frame-height"]) == ("640", "400")
    ref = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    assert ref is not None and ref.shape == (400, 640, 3)


def test_reference_image_after_a_restart_is_the_newest_stored_one(make_station) -> None:
    station = recorded_station(make_station, parts=6)
    station.last_result = None  # as after a restart: no frame in memory
    newest = query(station, "SELECT sha256 FROM images WHERE camera_id = 'cam0' ORDER BY id DESC LIMIT 1")[0][0]
    with TestClient(create_app(station)) as client:
        login(client, "qa")
        r = client.get("/api/setup/cam0/reference.jpg")
    assert r.status_code == 200 and r.content == station.images.open_path(newest).read_bytes()
    assert (r.headers["x-frame-width"], r.headers["x-frame-height"]) == ("640", "400")


def _png(img: np.ndarray) -> str:
    return base64.b64encode(cv2.imencode(".png", img)[1].tobytes()).decode()


def test_calibration_upload_refusal_and_rollback(station: Station, client: TestClient) -> None:
    hdr = {"X-CSRF-Token": login(client, "boss")}
    vs = views(CHESS)
    board = {"target": "chessboard", "cols": 9, "rows": 6, "square_mm": 15.0}
    few = client.post(
        "/api/setup/cam0/calibration",
        json={**board, "views": [{"name": n, "data": _png(i)} for n, i in vs[:2]]},
        headers=hdr,
    )
    assert few.status_code == 422 and few.json()["detail"]["reasons"] == ["too few usable views: 2 of 2 (need 5)"]
    junk = client.post(
        "/api/setup/cam0/calibration",
        json={**board, "views": [{"name": "x.png", "data": base64.b64encode(b"no image").decode()}]},
        headers=hdr,
    )
    assert junk.status_code == 422 and "views[0] (x.png): not an image" in junk.text
    ok = client.post(
        "/api/setup/cam0/calibration",
        json={**board, "views": [{"name": n, "data": _png(i)} for n, i in vs], "reason": "setup"},
        headers=hdr,
    )
    assert ok.status_code == 200, ok.text
    first = ok.json()
    assert first["version"] == 1 and first["body"]["rms_px"] < 0.3 and len(first["images"]) == 7
    assert judge(station).calibration_id == first["ref"]  # every verdict now names it
    ok2 = client.post(
        "/api/setup/cam0/calibration",
        json={**board, "views": [{"name": n, "data": _png(i)} for n, i in vs[:6]]},
        headers=hdr,
    )
    assert ok2.json()["version"] == 2 and judge(station).calibration_id == ok2.json()["ref"] != first["ref"]
    assert (
        client.post(
            "/api/setup/cam0/calibration/rollback", json={"version": 1, "reason": "v2 off"}, headers=hdr
        ).status_code
        == 200
    )
    assert judge(station).calibration_id == first["ref"]
    actions = [
        r[0] for r in station.db.execute("SELECT action FROM audit WHERE object_type = 'calibration' ORDER BY id")
    ]
    assert actions == ["calibration_new", "calibration_new", "calibration_rollback"]


def test_undistortion_on_the_line(make_station, tmp_path) -> None:
    """calibration.undistort: each frame is remapped before inspection; a frame of another size fails its part, saying
    why."""
    from calibration.camera import CameraCalibration
    from calibration.records import record
    from station import camera_setup

    station = make_station(calibration={"undistort": True})
    identity = CameraCalibration(
        "cal-ident", (640, 400), [[500.0, 0, 320], [0, 500.0, 200], [0, 0, 1]], [0.0] * 5, 0.1, 0.2, 1.0, {}, "v0"
    )
    other = CameraCalibration(
        "cal-other",
        (960, 720),
        [[800.0, 0, 480], [0, 800.0, 360], [0, 0, 1]],
        [-0.1, 0, 0, 0, 0],
        0.1,
        0.2,
        1.0,
        {},
        "v0",
    )

    def run_part() -> tuple:
        before = station.counters.snapshot().verdicts
        assert station.trigger("test") is not None
        deadline = time.monotonic() + 20
        while station.counters.snapshot().verdicts == before:
            assert time.monotonic() < deadline, "no verdict"
            time.sleep(0.05)
        return station.last_result.verdict.reasons

    for cal in (identity, other):
        record(station.db, station.cfg.name, "cam0", cal, user="boss")
        station.set_camera_setup(camera_setup.load(station.db, station.cfg.name, ["cam0"]))
        assert set(station.pipeline.undistort) == {"cam0"}
        reasons = run_part()
        if cal is identity:
            assert not any("calibration" in r for r in reasons), reasons  # remapped (same size): inspected as usual
            assert station.last_result.verdict.calibration_id == "cal-ident"
        else:
            assert reasons == (
                "camera cam0: frame 640x400 but the calibration is for 960x720: recalibrate this camera",
            )
