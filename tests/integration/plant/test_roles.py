"""Plant roles on the dashboard: any login reads; writes need a plant role granted on the users file
(``plant role grant``), a station role (even admin) is not enough; the CSRF token is checked as on a station."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import psycopg
import pytest

from station.plant import cli
from station.plant.controller import upload_model
from station.plant.desired import desired_now
from station.store import plant_db, plant_models
from tests.fixtures_plant import Plant
from tests.integration.plant.test_dashboard import login
from tests.integration.plant.test_rollout import onnx_model
from tests.web.helpers import add_users


@pytest.fixture
def site(plant: Plant, tmp_path: Path):
    users = tmp_path / "users.db"
    add_users(users)
    with plant.dashboard(users) as url:
        yield url, users


def csrf(c: httpx.Client) -> dict[str, str]:
    return {"X-CSRF-Token": c.get("/api/me").json()["csrf"]}


def test_writes_need_a_plant_role(site, plant: Plant, tmp_path: Path, capsys):
    url, users = site
    s3 = plant.s3()
    body = onnx_model(tmp_path / "m.onnx", 5.0).read_bytes()
    sha, key = upload_model(s3, plant.bucket, body)
    with psycopg.connect(plant.dsn) as conn:
        plant_db.create_schema(conn)
        plant_models.register_model(conn, sha, "v5", key, len(body))
    pin = {"station": "st-7", "model": sha[:16]}

    with httpx.Client(base_url=url) as anon:
        assert anon.post("/api/plant/pin", json=pin).status_code == 401
    for user in ("op", "boss"):  # a viewer, and a station admin without a plant role
        with httpx.Client(base_url=url) as c:
            login(c, user)
            assert c.get("/api/plant/models").json()[0]["sha256"] == sha, "any login reads"
            r = c.post("/api/plant/pin", json=pin, headers=csrf(c))
            assert r.status_code == 403 and "plant role plant_admin" in r.json()["detail"], r.text
            assert c.post("/api/plant/rollback", json={"group": "g"}, headers=csrf(c)).status_code == 403
    assert desired_now(plant.engines.nats.url, plant.prefix)["stations"] == {}, "nothing was written"

    assert cli.main(["role", "grant", "boss", "plant_admin", "--users", str(users)]) == 0
    assert cli.main(["role", "grant", "qa", "quality_lead", "--users", str(users)]) == 0
    assert cli.main(["role", "grant", "nobody", "plant_admin", "--users", str(users)]) == 2
    snap = {"stations": ["st-7"], "name": "s"}
    with httpx.Client(base_url=url) as c:
        login(c, "op")
        assert c.post("/api/plant/snapshot", json=snap, headers=csrf(c)).status_code == 403
    with httpx.Client(base_url=url) as c:
        login(c, "qa")  # a quality lead may snapshot, not roll out
        assert c.post("/api/plant/pin", json=pin, headers=csrf(c)).status_code == 403
        r = c.post("/api/plant/snapshot", json=snap, headers=csrf(c))  # allowed; this plant has no labels yet
        assert r.status_code == 422 and "no reviewed images of st-7" in r.json()["detail"], r.text
    with httpx.Client(base_url=url) as c:
        login(c, "boss")
        assert c.post("/api/plant/pin", json=pin).status_code == 403, "no CSRF token"
        r = c.post("/api/plant/pin", json=pin, headers=csrf(c))
        assert r.status_code == 200 and r.json()["pinned"]["sha256"] == sha, r.text
        assert c.get("/api/plant/desired").json()["stations"] == {"st-7": {"version": "v5", "key": key, "sha256": sha}}
        assert c.post("/api/plant/pin", json={**pin, "model": "0123456789"}, headers=csrf(c)).status_code == 422
        assert c.post("/api/plant/pin", json={**pin, "extra": 1}, headers=csrf(c)).status_code == 422
        r = c.post("/api/plant/unpin", json={"station": "st-7"}, headers=csrf(c))
        assert r.status_code == 200 and r.json()["unpinned"] is True
    assert desired_now(plant.engines.nats.url, plant.prefix)["stations"] == {}

    assert cli.main(["role", "revoke", "boss", "--users", str(users)]) == 0
    with httpx.Client(base_url=url) as c:
        login(c, "boss")
        assert c.post("/api/plant/pin", json=pin, headers=csrf(c)).status_code == 403, "revoked"
    capsys.readouterr()
    assert cli.main(["role", "list", "--users", str(users)]) == 0
    assert [(g["username"], g["role"]) for g in json.loads(capsys.readouterr().out)] == [("qa", "quality_lead")]
