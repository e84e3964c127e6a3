"""Security of the web app: role matrix of every write route, CSRF, login rate limit, sessions, cookies."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from station.app import Station
from station.store.db import open_db
from station.web import auth, create_app
from station.web.auth import LoginLimiter
from tests.fixtures_review import recorded_station

from .helpers import PASSWORDS, fastapi_app, login, try_login, wait_for

ROLE_USER = {"operator": "op", "qa": "qa", "admin": "boss"}
ALL = {"anonymous": 401, "operator": 200, "qa": 200, "admin": 200}
QA_ONLY = {"anonymous": 401, "operator": 403, "qa": 200, "admin": 200}
QA_PAGE = {"anonymous": 303, "operator": 403, "qa": 200, "admin": 200}  # anonymous: redirected to the login page

# Expected status of every write route for each role, in the order the matrix sends them.
# admin's model swap names an unregistered model: 404 proves it passed the role check.
EXPECTED: dict[tuple[str, str], dict[str, int]] = {
    ("POST", "/api/alarms/{alarm_id}/ack"): ALL,
    ("POST", "/api/alarms/ack-all"): ALL,
    ("POST", "/api/line/pause"): ALL,
    ("POST", "/api/line/resume"): ALL,
    ("POST", "/api/trigger"): ALL,
    ("POST", "/api/model/swap"): {"anonymous": 401, "operator": 403, "qa": 403, "admin": 404},
    ("POST", "/api/users"): {"anonymous": 401, "operator": 403, "qa": 403, "admin": 201},
    ("POST", "/api/me/password"): ALL,
    # QA review (station/web/routes_review.py): qa and admin only; {label_id} is the image's newest current label
    ("POST", "/api/review/images/{image_id}/labels"): {**QA_ONLY, "qa": 201, "admin": 201},
    ("PATCH", "/api/review/images/{image_id}/labels/{label_id}"): QA_ONLY,
    ("POST", "/api/review/images/{image_id}/confirm"): QA_ONLY,
    ("DELETE", "/api/review/images/{image_id}/labels/{label_id}"): QA_ONLY,
    ("POST", "/api/review/images/{image_id}/good"): QA_ONLY,
    # after "good" the image has no current label: 404 proves the role check passed
    ("POST", "/api/review/images/{image_id}/labels/{label_id}/as-defect"): {**QA_ONLY, "qa": 404, "admin": 404},
    ("POST", "/api/review/bulk/confirm"): QA_ONLY,
    ("POST", "/api/review/bulk/good"): QA_ONLY,
    ("POST", "/api/review/snapshots"): {**QA_ONLY, "qa": 201, "admin": 201},
    # a JSON body is not a zip: 415 proves the request passed the role check
    ("POST", "/api/review/import"): {**QA_ONLY, "qa": 415, "admin": 415},
    # models page (station/web/routes_models.py): qa trains / evaluates / shadows, admin promotes / rolls back / applies
    # thresholds; unknown ids give 404 (or 409: nothing running / no override), proving the role check passed
    ("POST", "/api/models/train"): {**QA_ONLY, "qa": 404, "admin": 404},
    ("POST", "/api/models/jobs/{job_id}/cancel"): {**QA_ONLY, "qa": 409, "admin": 409},
    ("POST", "/api/models/{sha}/evaluate"): {**QA_ONLY, "qa": 404, "admin": 404},
    ("POST", "/api/models/evaluations/{eval_id}/tune"): {**QA_ONLY, "qa": 404, "admin": 404},
    ("POST", "/api/models/{sha}/shadow"): {**QA_ONLY, "qa": 404, "admin": 404},
    ("POST", "/api/models/shadow/stop"): QA_ONLY,
    ("POST", "/api/models/golden"): {**QA_ONLY, "qa": 404, "admin": 404},
    ("POST", "/api/models/{sha}/promote"): {"anonymous": 401, "operator": 403, "qa": 403, "admin": 404},
    ("POST", "/api/models/rollback"): {"anonymous": 401, "operator": 403, "qa": 403, "admin": 404},
    ("POST", "/api/models/rules"): {"anonymous": 401, "operator": 403, "qa": 403, "admin": 404},
    ("POST", "/api/models/rules/reset"): {"anonymous": 401, "operator": 403, "qa": 403, "admin": 409},
    # camera setup (admin): empty regions saved; views that are no image; a version that does not exist
    ("POST", "/api/setup/{camera_id}/regions"): {"anonymous": 401, "operator": 403, "qa": 403, "admin": 200},
    ("POST", "/api/setup/{camera_id}/calibration"): {"anonymous": 401, "operator": 403, "qa": 403, "admin": 422},
    ("POST", "/api/setup/{camera_id}/{kind}/rollback"): {"anonymous": 401, "operator": 403, "qa": 403, "admin": 409},
    ("POST", "/api/health/relearn"): ALL,  # image health (station/web/routes_health.py)
    ("POST", "/api/logout"): ALL,
}
# Read routes that need a role even when anonymous view is on.
EXPECTED_READ: dict[tuple[str, str], dict[str, int]] = {
    ("GET", "/api/users"): {"anonymous": 401, "operator": 403, "qa": 403, "admin": 200},
    ("GET", "/api/me"): {"anonymous": 401, "operator": 200, "qa": 200, "admin": 200},
    # QA review data is never anonymous, even with web.anonymous_view
    ("GET", "/review"): QA_PAGE,
    ("GET", "/review/image/{image_id}"): QA_PAGE,
    ("GET", "/review/dataset"): QA_PAGE,
    ("GET", "/review/stats"): QA_PAGE,
    ("GET", "/api/review/queue"): QA_ONLY,
    ("GET", "/api/review/facets"): QA_ONLY,
    ("GET", "/api/review/images/{image_id}"): QA_ONLY,
    ("GET", "/api/review/images/{image_id}/thumb"): QA_ONLY,
    ("GET", "/api/review/images/{image_id}/file"): QA_ONLY,
    ("GET", "/api/review/images/{image_id}/heatmap"): QA_ONLY,  # 404 for qa and admin when the image has no heat map
    ("GET", "/api/review/snapshots"): QA_ONLY,
    ("GET", "/api/review/snapshots/{snapshot_id}/yolo"): QA_ONLY,
    ("GET", "/api/review/snapshots/{snapshot_id}/coco"): QA_ONLY,
    ("GET", "/api/review/stats"): QA_ONLY,
    ("GET", "/models"): QA_PAGE,
    ("GET", "/api/models"): QA_ONLY,
    ("GET", "/api/models/history"): QA_ONLY,
    ("GET", "/api/models/jobs"): QA_ONLY,
    ("GET", "/api/models/evaluations"): QA_ONLY,
    ("GET", "/api/models/shadow"): QA_ONLY,
    ("GET", "/api/models/rules"): QA_ONLY,
    ("GET", "/setup"): {"anonymous": 303, "operator": 403, "qa": 403, "admin": 200},
    ("GET", "/api/setup/{camera_id}/{kind}/history"): QA_ONLY,
    ("GET", "/api/setup/{camera_id}/reference.jpg"): {**QA_ONLY, "qa": 200, "admin": 200},
}
NOT_ROLE_GATED = {("POST", "/api/login")}  # checks its own double-submit token


def raise_alarm(client: TestClient, station: Station, component: str) -> int:
    """Raise a real alarm through the station's alarm board; wait until the recorder wrote it; return its id."""
    station.alarms.report(component, "alarm", f"{component} test alarm")

    def row() -> Any:
        log = client.get("/api/alarms", params={"limit": 100}).json()["log"]
        return next((a["id"] for a in log if a["component"] == component), None)

    return wait_for(row, 10, f"alarm row of {component}")


def body_for(route: tuple[str, str], role: str) -> tuple[str, dict[str, Any] | None]:
    """(concrete path, JSON body) for one request of the matrix."""
    user = ROLE_USER.get(role, "nobody")
    path = route[1]
    bodies: dict[str, tuple[str, dict[str, Any] | None]] = {
        "/api/line/pause": (path, {"reason": f"matrix {role}"}),
        "/api/line/resume": (path, {}),
        "/api/health/relearn": (path, {"reason": f"matrix {role}"}),
        "/api/model/swap": (path, {"sha256": "ab" * 32}),
        "/api/users": (path, {"username": f"new-{role}", "password": "new-user-pass-1", "role": "operator"}),
        "/api/me/password": (
            path,
            {"old_password": PASSWORDS.get(user, "x" * 10), "new_password": PASSWORDS.get(user, "x") + "-2"},
        ),
        "/api/review/images/{image_id}/labels": (
            path,
            {"box": [10, 10, 40, 30], "class_name": "scratch", "reason": f"matrix {role}"},
        ),
        "/api/review/images/{image_id}/labels/{label_id}": (
            path,
            {"box": [12, 12, 44, 33]} if route[0] == "PATCH" else None,
        ),
        "/api/review/images/{image_id}/good": (path, {"reason": f"matrix {role}"}),
        "/api/review/images/{image_id}/labels/{label_id}/as-defect": (path, {"class_name": "burr"}),
        "/api/review/bulk/confirm": (path, {"image_ids": [REVIEW_IDS["image_id"]] if REVIEW_IDS else [1]}),
        "/api/review/bulk/good": (path, {"image_ids": [REVIEW_IDS["image_id"]] if REVIEW_IDS else [1]}),
        "/api/review/snapshots": (path, {"name": f"matrix-{role}"}),
        "/api/review/import": (path + "?format=yolo", {"not": "a zip"}),
        "/api/models/train": (path, {"snapshot_id": 999999, "epochs": 1, "imgsz": 64}),
        "/api/models/jobs/{job_id}/cancel": ("/api/models/jobs/20250101-000000-abcdef/cancel", None),
        "/api/models/{sha}/evaluate": (f"/api/models/{'ab' * 32}/evaluate", {}),
        "/api/models/evaluations/{eval_id}/tune": (
            "/api/models/evaluations/e20250101-000000-abcdef/tune",
            {"target_escape_rate": 0.05},
        ),
        "/api/models/{sha}/shadow": (f"/api/models/{'ab' * 32}/shadow", {}),
        "/api/models/golden": (path, {"snapshot_id": 999999, "name": f"matrix-{role}"}),
        "/api/models/{sha}/promote": (f"/api/models/{'ab' * 32}/promote", {}),
        "/api/models/rollback": (path, {"sha256": "ab" * 32, "reason": f"matrix {role}"}),
        "/api/models/rules": (
            path,
            {"eval_id": "e20250101-000000-abcdef", "target_escape_rate": 0.05, "reason": f"matrix {role}"},
        ),
        "/api/models/rules/reset": (path, {"reason": f"matrix {role}"}),
        "/api/setup/{camera_id}/regions": (path, {"regions": {}, "reason": f"matrix {role}"}),
        "/api/setup/{camera_id}/calibration": (
            path,
            {"views": [{"name": "x.png", "data": "bm90IGFuIGltYWdl"}], "cols": 9, "rows": 6, "square_mm": 5},
        ),
        "/api/setup/{camera_id}/{kind}/rollback": (path, {"version": 99, "reason": f"matrix {role}"}),
    }
    return bodies.get(path, (path, None))


REVIEW_IDS: dict[str, int] = {}  # ids of real review objects for the matrix (filled by review_data)


def review_data(station: Station) -> None:
    """Recorded parts and one snapshot, so the review routes of the matrix act on real objects."""
    import labeling

    image_id = max(r[0] for r in _rows(station, "SELECT id FROM images WHERE deleted_at IS NULL"))
    db = open_db(station.cfg.store.db_path, migrate=False)
    try:
        labeling.mark_image_good(db, "seed", image_id)
        snap = labeling.create_snapshot(db, "seed", class_names=["scratch", "spot", "missing"])
    finally:
        db.close()
    REVIEW_IDS.clear()
    REVIEW_IDS.update(image_id=image_id, snapshot_id=snap.id)


def _rows(station: Station, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    db = open_db(station.cfg.store.db_path, migrate=False)
    try:
        return [tuple(r) for r in db.execute(sql, params or []).fetchall()]
    finally:
        db.close()


def concrete(station: Station, path: str) -> str:
    """``path`` with its {image_id}, {label_id} and {snapshot_id} replaced by real ids."""
    if "{label_id}" in path:
        newest = _rows(
            station,
            "SELECT MAX(l.id) FROM labels l WHERE l.image_id = ? AND l.status = 'active' AND NOT EXISTS "
            "(SELECT 1 FROM labels s WHERE s.supersedes = l.id)",
            [REVIEW_IDS["image_id"]],
        )[0][0]
        path = path.replace("{label_id}", str(newest or 10**12))
    for key, value in REVIEW_IDS.items():
        path = path.replace("{" + key + "}", str(value))
    return path.replace("{camera_id}", "cam0").replace("{kind}", "regions")


def api_routes(routes: Any) -> Iterator[APIRoute]:
    """Every APIRoute of an app, including those of included routers (FastAPI may wrap them)."""
    for r in routes:
        if isinstance(r, APIRoute):
            yield r
        else:
            inner = getattr(r, "original_router", None)
            if inner is not None:
                yield from api_routes(inner.routes)


def test_every_write_route_is_in_the_matrix_and_role_gated(client: TestClient) -> None:
    """A new non-GET route without an entry here (or without require(role)) fails this test."""
    app = fastapi_app(client)
    in_schema = {
        (m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops if m.upper() not in ("GET", "HEAD")
    }
    routes = {(m, r.path): r for r in api_routes(app.routes) for m in r.methods or () if m not in ("GET", "HEAD")}
    assert set(routes) == in_schema == set(EXPECTED) | NOT_ROLE_GATED
    for key, r in routes.items():
        if key in NOT_ROLE_GATED:
            continue
        roles = [getattr(d.call, "required_role", None) for d in r.dependant.dependencies]
        assert any(roles), f"{key} has no require(role) dependency"


@pytest.fixture
def matrix_station(make_station: Any) -> Station:
    """A station whose synthetic line has recorded parts (the review routes need real images)."""
    st = recorded_station(make_station, parts=8)
    review_data(st)
    return st


def test_role_matrix(matrix_station: Station) -> None:
    """Every write route (and every role-gated read) x (anonymous, operator, qa, admin) gives the expected status."""
    station = matrix_station
    with TestClient(create_app(station)) as client:
        _role_matrix(client, station)


def _role_matrix(client: TestClient, station: Station) -> None:
    got: dict[tuple[tuple[str, str], str], int] = {}
    for role in ("anonymous", "operator", "qa", "admin"):
        client.cookies.clear()
        csrf = login(client, ROLE_USER[role]) if role != "anonymous" else "not-a-token"
        for route in EXPECTED_READ:
            got[(route, role)] = client.request(
                route[0], concrete(station, route[1]), follow_redirects=False
            ).status_code
        for route in EXPECTED:  # logout comes last
            path, body = body_for(route, role)
            path = concrete(station, path)
            if "{alarm_id}" in path:
                path = path.replace("{alarm_id}", str(raise_alarm(client, station, f"matrix-{role}")))
            r = client.request(route[0], path, json=body, headers={"X-CSRF-Token": csrf})
            got[(route, role)] = r.status_code
            if route[1] == "/api/me/password" and r.status_code == 200:
                csrf = r.json()["csrf"]  # a password change ends the session and starts a new one
    expected = {
        (route, role): code
        for table in (EXPECTED, EXPECTED_READ)
        for route, codes in table.items()
        for role, code in codes.items()
    }
    if not _rows(
        station, "SELECT 1 FROM anomaly_maps WHERE image_id = ? AND deleted_at IS NULL", [REVIEW_IDS["image_id"]]
    ):
        # the inspector made no heat map of this image (a supervised model): 404 proves the role check passed
        expected.update({(("GET", "/api/review/images/{image_id}/heatmap"), role): 404 for role in ("qa", "admin")})
    wrong = {k: (got[k], v) for k, v in expected.items() if got[k] != v}
    assert not wrong, f"(route, role): (got, expected): {wrong}"
    # the writes really happened, by the right users
    db = open_db(station.cfg.store.db_path, migrate=False)
    try:
        actions = db.execute("SELECT user, action FROM audit ORDER BY id").fetchall()
    finally:
        db.close()
    for user in ROLE_USER.values():
        for action in ("alarm_ack", "pause", "resume", "password_change", "logout"):
            assert (user, action) in actions, (user, action)
    assert ("boss", "user_create") in actions and ("op", "user_create") not in actions
    for user in ("qa", "boss"):  # the review writes went through labeling, audited under the right user
        for action in ("add", "move", "delete", "confirm", "mark_good", "create"):
            assert (user, action) in actions, (user, action)
    assert not any(u in ("op", "nobody") for u, a in actions if a in ("add", "move", "mark_good", "create"))
    assert not station.pipeline.paused


def test_every_review_read_route_is_in_the_matrix(client: TestClient) -> None:
    """A new GET route of the review pages or API without an entry in EXPECTED_READ fails this test."""
    reads = {
        ("GET", r.path)
        for r in api_routes(fastapi_app(client).routes)
        if "GET" in (r.methods or ()) and (r.path.startswith("/review") or r.path.startswith("/api/review"))
    }
    assert reads and reads <= set(EXPECTED_READ), reads - set(EXPECTED_READ)


def test_write_without_csrf_is_refused_and_does_nothing(client: TestClient, station: Station) -> None:
    csrf = login(client, "op")
    before = station.counters.snapshot().triggers
    assert client.post("/api/trigger").status_code == 403
    assert client.post("/api/trigger", headers={"X-CSRF-Token": "wrong"}).status_code == 403
    # the token of another session does not work either
    other = TestClient(client.app)  # no `with`: the app's lifespan belongs to `client`
    other_csrf = login(other, "qa")
    assert client.post("/api/trigger", headers={"X-CSRF-Token": other_csrf}).status_code == 403
    assert client.post("/api/line/pause", json={"reason": "x"}).status_code == 403
    assert not station.pipeline.paused
    assert station.counters.snapshot().triggers == before
    ok = client.post("/api/trigger", headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 200 and ok.json()["part_id"] >= 1
    # an unknown path still needs login + CSRF for writes (secure by default)
    assert client.post("/api/not-a-route").status_code == 403
    client.cookies.clear()
    assert client.post("/api/not-a-route", headers={"X-CSRF-Token": csrf}).status_code == 401


def test_login_needs_its_double_submit_token(client: TestClient) -> None:
    creds = {"username": "op", "password": PASSWORDS["op"]}
    assert client.post("/api/login", json=creds).status_code == 403  # no cookie, no header
    tok = client.get("/api/login").json()["csrf"]
    assert client.post("/api/login", json=creds).status_code == 403  # cookie but no header
    assert client.post("/api/login", json=creds, headers={"X-CSRF-Token": tok + "x"}).status_code == 403
    client.cookies.clear()
    assert (
        client.post("/api/login", json=creds, headers={"X-CSRF-Token": tok}).status_code == 403
    )  # header but no cookie
    tok = client.get("/api/login").json()["csrf"]
    r = client.post("/api/login", json=creds, headers={"X-CSRF-Token": tok})
    assert r.status_code == 200 and r.json()["role"] == "operator"


def test_form_login_without_javascript(client: TestClient) -> None:
    page = client.get("/login")
    assert page.status_code == 200
    found = re.search(r'name="csrf_token" id="csrf_token" value="([^"]+)"', page.text)
    assert found is not None
    tok = found.group(1)
    bad = client.post("/api/login", data={"username": "op", "password": "nope-nope", "csrf_token": tok})
    assert bad.status_code == 401 and "Wrong username or password" in bad.text
    r = client.post(
        "/api/login",
        data={"username": "op", "password": PASSWORDS["op"], "csrf_token": tok, "next": "//evil.example/x"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/"  # no open redirect
    assert client.get("/api/me").json()["username"] == "op"


def test_failed_login_rate_limit(client: TestClient) -> None:
    tok = client.get("/api/login").json()["csrf"]
    h = {"X-CSRF-Token": tok}
    for _ in range(5):
        assert (
            client.post("/api/login", json={"username": "op", "password": "wrong-password"}, headers=h).status_code
            == 401
        )
    r = client.post("/api/login", json={"username": "op", "password": "wrong-password"}, headers=h)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    # even the right password is refused while limited
    assert client.post("/api/login", json={"username": "op", "password": PASSWORDS["op"]}, headers=h).status_code == 429
    # another user from the same client is not locked out by op's failures
    assert client.post("/api/login", json={"username": "qa", "password": PASSWORDS["qa"]}, headers=h).status_code == 200


def test_login_limiter_window() -> None:
    lim = LoginLimiter(max_failures=3, window_s=60)
    for t in (0.0, 1.0, 2.0):
        assert lim.retry_after("u", "1.2.3.4", now=t) == 0
        lim.failed("u", "1.2.3.4", now=t)
    assert lim.retry_after("u", "1.2.3.4", now=3.0) == pytest.approx(57.0)
    assert lim.retry_after("u", "5.6.7.8", now=3.0) == 0  # another client
    assert lim.retry_after("u", "1.2.3.4", now=60.5) == 0  # the first failure left the window
    # one client spraying many usernames is limited too (4 x max_failures)
    for i in range(12):
        lim.failed(f"user{i}", "9.9.9.9", now=100.0)
    assert lim.retry_after("fresh-name", "9.9.9.9", now=101.0) > 0


def test_session_expiry(client: TestClient, station: Station) -> None:
    before = time.time()
    csrf = login(client, "op")
    me = client.get("/api/me").json()
    assert me["expires_at"] == pytest.approx(before + station.cfg.web.session_hours * 3600, abs=5)
    token = client.cookies.get(auth.SESSION_COOKIE)
    db = open_db(station.cfg.store.db_path, migrate=False)
    try:
        n = db.execute(
            "UPDATE sessions SET expires_at = ? WHERE token_hash = ?", [time.time() - 1, auth.token_hash(token)]
        ).rowcount
        db.conn.commit()
    finally:
        db.close()
    assert n == 1
    assert client.get("/api/me").status_code == 401
    assert client.post("/api/trigger", headers={"X-CSRF-Token": csrf}).status_code == 401


def test_disabled_user_loses_its_session(client: TestClient, station: Station) -> None:
    csrf = login(client, "qa")
    db = open_db(station.cfg.store.db_path, migrate=False)
    try:
        auth.set_disabled(db, "qa")
    finally:
        db.close()
    assert client.post("/api/trigger", headers={"X-CSRF-Token": csrf}).status_code == 401
    assert try_login(client, "qa").status_code == 401


def _set_cookie(resp: Any, name: str) -> str:
    return next(c for c in resp.headers.get_list("set-cookie") if c.startswith(name + "="))


def test_session_cookie_flags_over_http(client: TestClient, station: Station) -> None:
    r = try_login(client, "op")
    c = _set_cookie(r, auth.SESSION_COOKIE).lower()
    assert "httponly" in c and "samesite=strict" in c and "path=/" in c
    assert f"max-age={int(station.cfg.web.session_hours * 3600)}" in c
    assert "secure" not in c  # plain http: a Secure cookie would never come back
    # the token is stored hashed only
    token = client.cookies.get(auth.SESSION_COOKIE)
    db = open_db(station.cfg.store.db_path, migrate=False)
    try:
        rows = db.execute("SELECT token_hash FROM sessions").fetchall()
        pw = db.execute("SELECT password_hash FROM users WHERE username = 'op'").fetchone()[0]
    finally:
        db.close()
    assert (hashlib.sha256(token.encode()).hexdigest(),) in rows and (token,) not in rows
    assert pw.startswith("$argon2id$") and PASSWORDS["op"] not in pw


@pytest.mark.parametrize(
    "mode,base_url,secure",
    [
        ("auto", "https://testserver", True),
        ("always", "https://testserver", True),
        ("never", "https://testserver", False),
    ],
)
def test_session_cookie_secure_flag(make_station: Any, mode: str, base_url: str, secure: bool) -> None:
    st = make_station(web={"cookie_secure": mode})
    with TestClient(create_app(st), base_url=base_url) as c:
        first = c.get("/api/login")
        assert ("; secure" in _set_cookie(first, auth.LOGIN_CSRF_COOKIE).lower()) is secure
        r = c.post(
            "/api/login",
            json={"username": "op", "password": PASSWORDS["op"]},
            headers={"X-CSRF-Token": first.json()["csrf"]},
        )
        assert r.status_code == 200
        assert ("; secure" in _set_cookie(r, auth.SESSION_COOKIE).lower()) is secure


def test_cookie_secure_always_refuses_plain_http_login(make_station: Any) -> None:
    """With cookie_secure: always, a plain-http client never returns the Secure login cookie, so login fails closed."""
    st = make_station(web={"cookie_secure": "always"})
    with TestClient(create_app(st)) as c:
        assert try_login(c, "op").status_code == 403


def test_anonymous_view_off_needs_login_everywhere(make_station: Any) -> None:
    st = make_station(web={"anonymous_view": False})
    with TestClient(create_app(st)) as c:
        r = c.get("/", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
        for path in (
            "/api/events",
            "/api/live/image",
            "/api/status",
            "/api/counters",
            "/api/rejects",
            "/api/alarms",
            "/health",
        ):
            assert c.get(path).status_code == 401, path
        assert c.get("/metrics").status_code == 200  # metrics_anonymous (default)
        login(c, "op")
        assert c.get("/").status_code == 200
        assert c.get("/api/status").json()["station"] == "line-7"
        assert c.get("/health").status_code == 200


def test_anonymous_view_on_reads_but_cannot_write(client: TestClient) -> None:
    assert client.get("/").status_code == 200
    assert client.get("/api/status").status_code == 200
    assert client.get("/health").status_code == 200
    assert client.post("/api/line/pause", json={"reason": "x"}).status_code == 401


def test_metrics_can_require_login(make_station: Any) -> None:
    st = make_station(web={"metrics_anonymous": False})
    with TestClient(create_app(st)) as c:
        assert c.get("/metrics").status_code == 401
        login(c, "op")
        assert c.get("/metrics").status_code == 200


def test_security_headers_and_no_external_assets(client: TestClient) -> None:
    r = client.get("/")
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
    assert client.get("/api/status").headers["cache-control"] == "no-store"
    web = Path(auth.__file__).parent
    for f in [*web.glob("static/*"), *web.glob("templates/*")]:
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", f.read_text()), f"{f.name} refers to another origin"
    assert client.get("/docs").status_code == 404  # Swagger UI would load from a CDN
    assert client.get("/openapi.json").status_code == 200


def test_no_route_takes_a_filesystem_path(client: TestClient) -> None:
    allowed = {
        "alarm_id",
        "part_id",
        "limit",
        "next",
        # review (ids are integers, the rest are filters and options; none names a file)
        "image_id",
        "label_id",
        "snapshot_id",
        "outcome",
        "class_name",
        "min_conf",
        "max_conf",
        "since",
        "until",
        "model_id",
        "reviewed",
        "offset",
        "size",
        "reason",
        "val_fraction",
        "split",
        "seed",
        "images",
        "format",
        "name",
        "bucket",
        "tz",
        # models page (models by sha256, jobs / evaluations by id, golden images by index)
        "sha",
        "job_id",
        "eval_id",
        "index",
        # camera setup (a camera id from the config, calibration or regions)
        "camera_id",
        "kind",
    }
    routes = list(api_routes(fastapi_app(client).routes))
    assert len(routes) > 20
    for r in routes:
        params = {p.name for p in (*r.dependant.query_params, *r.dependant.path_params)}
        assert params <= allowed, (r.path, params - allowed)
        for b in r.dependant.body_params:
            fields = getattr(b.field_info.annotation, "model_fields", {})
            for name, f in fields.items():
                assert f.annotation is not Path and "path" not in name.lower(), (r.path, name)


def test_model_swap_by_registry_id_only(client: TestClient, station: Station) -> None:
    csrf = login(client, "boss")
    h = {"X-CSRF-Token": csrf}
    assert client.post("/api/model/swap", json={"sha256": "../../etc/passwd"}, headers=h).status_code == 422
    sha = "cd" * 32
    db = open_db(station.cfg.store.db_path, migrate=False)
    try:
        db.execute(
            "INSERT INTO models (sha256, path, task, created_at) VALUES (?, ?, 'detect', ?)",
            [sha, "models/x.onnx", time.time()],
        )
        db.conn.commit()
    finally:
        db.close()
    r = client.post("/api/model/swap", json={"sha256": sha}, headers=h)
    assert r.status_code == 409 and "onnx" in r.json()["detail"]  # this station runs the reference inspector


def test_first_start_creates_admin_once(tmp_path: Path) -> None:
    db = open_db(tmp_path / "fresh.db")
    try:
        said: list[str] = []
        pw = auth.ensure_admin(db, announce=said.append)
        assert pw and len(said) == 1 and pw in said[0]
        assert auth.ensure_admin(db, announce=said.append) is None and len(said) == 1
        assert auth.verify_user(db, "admin", pw) == auth.User("admin", "admin")
        assert auth.verify_user(db, "admin", pw + "x") is None
        auth.set_password(db, "admin", "a-new-admin-password")
        assert auth.verify_user(db, "admin", pw) is None
        assert auth.verify_user(db, "admin", "a-new-admin-password") is not None
        with pytest.raises(auth.AuthError, match="already exists"):
            auth.create_user(db, "admin", "whatever-123", "qa")
        with pytest.raises(auth.AuthError, match="too short"):
            auth.create_user(db, "shorty", "short", "qa")
        with pytest.raises(auth.AuthError, match="unknown role"):
            auth.create_user(db, "root", "long-enough-pw", "root")
        with pytest.raises(auth.AuthError, match="invalid username"):
            auth.create_user(db, "../x", "long-enough-pw", "qa")
    finally:
        db.close()


def test_password_change_needs_old_password_and_ends_other_sessions(client: TestClient, station: Station) -> None:
    csrf = login(client, "op")
    other = TestClient(client.app)  # no `with`: the app's lifespan belongs to `client`
    other_csrf = login(other, "op")
    r = client.post(
        "/api/me/password",
        json={"old_password": "not-it-at-all", "new_password": "op-new-password"},
        headers={"X-CSRF-Token": csrf},
    )
    assert r.status_code == 403
    r = client.post(
        "/api/me/password",
        json={"old_password": PASSWORDS["op"], "new_password": "op-new-password"},
        headers={"X-CSRF-Token": csrf},
    )
    assert r.status_code == 200
    assert client.get("/api/me").status_code == 200  # this client got a new session
    assert other.post("/api/trigger", headers={"X-CSRF-Token": other_csrf}).status_code == 401


def test_login_body_limits_and_no_password_echo(client: TestClient) -> None:
    tok = client.get("/api/login").json()["csrf"]
    h = {"X-CSRF-Token": tok, "Content-Type": "application/json"}
    assert client.post("/api/login", content=b"x" * 20000, headers=h).status_code == 413
    r = client.post("/api/login", content=b'{"username": "op"}', headers=h)
    assert r.status_code == 422 and "password" in r.json()["detail"]
    csrf = login(client, "op")
    secret = "my-secret-pw-that-is-much-too-long" * 40
    r = client.post(
        "/api/me/password",
        json={"old_password": PASSWORDS["op"], "new_password": secret},
        headers={"X-CSRF-Token": csrf},
    )
    assert r.status_code == 422 and "new_password" in r.text and secret not in r.text
