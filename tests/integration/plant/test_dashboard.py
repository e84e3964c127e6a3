"""The plant dashboard on a real plant: login (the station's), yield and Pareto from the rollups equal
the raw rows, station status from the KV bucket, drill down to a part's image from S3, in Chromium."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from station.plant.desired import pin, with_bucket
from station.plant.follower import Desired
from station.plant.ingest import Ingest
from tests.fixtures_plant import Plant, SimStation, wait_until
from tests.web.helpers import CHROMIUM, CHROMIUM_ARGS, add_users, browser_login, login, needs_chromium


@pytest.fixture
def dashboard(plant: Plant, tmp_path: Path):
    ing = Ingest(plant.dsn, plant.engines.nats.url, prefix=plant.prefix).start()
    sts = [
        SimStation(n, plant.link(outbox_path=tmp_path / f"{n}.db", line=line)).start()
        for n, line in (("st-a", "line-1"), ("st-b", "line-2"))
    ]
    try:
        for i, st in enumerate(sts):
            st.send(21 * (i + 1))  # the cycle of outcomes: 3 of 7 are not PASS, FAIL ones have a scratch
        wait_until(lambda: ing.stats.written == 63, 30, "63 parts ingested")
        wait_until(lambda: all(s.uplink._status_kv is not None for s in sts), 10, "status published")
        pinned = Desired("v-pin", f"models/{'a' * 64}.onnx", "a" * 64)  # the stations table shows a pin
        with_bucket(plant.engines.nats.url, plant.prefix, lambda kv: pin(kv, "st-b", pinned))
    finally:
        for st in sts:
            st.stop()
        ing.stop()
    users = tmp_path / "users.db"
    add_users(users)
    with plant.dashboard(users) as url:
        yield url


def test_dashboard_api(dashboard: str):
    with httpx.Client(base_url=dashboard) as c:
        assert c.get("/api/plant/yield").status_code == 401, "login required"
        login(c, "op")
        by_line = {r["key"]: r for r in c.get("/api/plant/yield", params={"by": "line"}).json()}
        assert {k: (r["total"], r["pass"], r["fail"], r["failsafe"], r["uncertain"]) for k, r in by_line.items()} == {
            "line-1": (21, 12, 3, 3, 3),
            "line-2": (42, 24, 6, 6, 6),
        }
        assert by_line["line-1"]["yield"] == pytest.approx(12 / 21)
        assert c.get("/api/plant/yield", params={"by": "nonsense"}).status_code == 422
        pareto = c.get("/api/plant/pareto", params={"by": "station_id", "key": "st-b"}).json()
        assert pareto == [{"class_name": "scratch", "count": 6, "cumulative_share": 1.0}]
        stations = {s["station_id"]: s for s in c.get("/api/plant/stations").json()}
        assert set(stations) == {"st-a", "st-b"} and stations["st-a"]["line"] == "line-1"
        assert stations["st-b"]["status"]["outbox"] == 0 and stations["st-b"]["model_id"] == "m1"
        part = c.get("/api/plant/parts", params={"station": "st-a", "outcome": "FAIL", "limit": 1}).json()[0]
        img = c.get(f"/api/plant/image/{part['images'][0]}")
        assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"
        assert part["images"][0] == f"images/{hashlib.sha256(img.content).hexdigest()}.jpg"
        assert c.get("/api/plant/image/../../etc/passwd").status_code in (404, 422)


@needs_chromium
def test_dashboard_in_chromium_drills_down_to_an_image(dashboard: str):
    expect.set_options(timeout=20_000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        browser_login(page, dashboard, "/", "op")
        expect(page.locator("#yield tbody tr")).to_have_count(2)
        expect(page.locator("#stations tbody tr")).to_have_count(2)
        expect(page.locator("#stations tbody tr", has_text="st-b")).to_contain_text("v-pin (pinned)")
        page.select_option("#by", "station_id")
        expect(page.locator("#yield tbody tr").first).to_contain_text("st-a")
        page.locator("#yield tbody tr").nth(1).click()  # st-b: its Pareto and its parts
        expect(page.locator("#pareto-key")).to_have_text("(station_id st-b)")
        expect(page.locator("#parts tbody tr").first).to_contain_text("st-b")
        page.locator("#parts .image-link").first.click()
        expect(page.locator("#viewer")).to_be_visible()
        # a function, not an expression string: the page's CSP forbids eval, which a polled string needs
        page.wait_for_function(
            "() => { const i = document.getElementById('part-image'); return i.complete && i.naturalWidth > 0; }"
        )
        assert page.evaluate("document.getElementById('part-image').naturalWidth") == 64
        browser.close()
    assert not errors, errors
