"""Image health on the web: /api/health/image, /metrics, the alarm on the operator screen and the OPC UA view,
relearning, the panel in Chromium."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import pytest
from fastapi.testclient import TestClient

from station.acquire.synthetic import iter_parts
from station.app import Station
from station.config import SyntheticCameraConfig
from station.web import create_app
from tests.integration.test_opcua import read as read_opcua

from .helpers import ARTIFACTS, decided, login, needs_chromium, served_url, wait_for

LEARN, SETUP, N_ALARM, BLURRED = 3, 5, 3, 4


def _read_opcua(station: Station, *paths: str) -> dict[str, Any]:
    """An asyncua client read, in a thread of its own: Playwright's sync API keeps an event loop in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(read_opcua, station, *paths).result(timeout=20)


def _folder(tmp_path: Path) -> Path:
    """LEARN + SETUP good frames, BLURRED blurred ones, then good ones again."""
    folder = tmp_path / "line"
    folder.mkdir()
    cfg = SyntheticCameraConfig(width=640, height=400, defect_rate=0.0, harmless_mark_rate=0.0, jitter_px=6, seed=4)
    n = LEARN + SETUP + BLURRED + 6
    for pid, part in iter_parts(cfg, 1, n):
        blurred = LEARN + SETUP < pid <= LEARN + SETUP + BLURRED
        cv2.imwrite(
            str(folder / f"{pid:03d}.png"), cv2.GaussianBlur(part.image, (0, 0), 2.5) if blurred else part.image
        )
    return folder


def _blurred(make_station: Any, tmp_path: Path, **extra: Any) -> Station:
    """A software-triggered station whose camera turned blurry after setup, with the sharpness alarm raised."""
    st = make_station(
        cameras=[{"type": "folder", "id": "cam0", "path": str(_folder(tmp_path)), "loop": False}],
        health={"setup_parts": SETUP, "alarm_after_parts": N_ALARM, "clear_after_parts": 1},
        reject={"travel_ms": 3000},  # a slow CI machine must not miss a deadline: a FAILSAFE part is not measured
        **extra,
    )
    for _ in range(LEARN + SETUP + BLURRED):
        decided(st, 1)  # one part at a time: each frame in turn
    return st


@pytest.fixture
def blurred_station(make_station: Any, tmp_path: Path) -> Station:
    """The blurred line, with its OPC UA server on a free port."""
    return _blurred(make_station, tmp_path, publish={"opcua": {"port": 0, "update_ms": 50}})


def test_api_metrics_alarm_and_relearn(blurred_station: Station) -> None:
    st = blurred_station
    with TestClient(create_app(st)) as c:
        h = c.get("/api/health/image").json()
        cam = h["cameras"]["cam0"]
        assert not cam["learning"] and set(cam["alarms"]) == {"sharpness"}
        assert "% less sharp than at setup: lens dirty or focus moved" in cam["alarms"]["sharpness"]
        assert len(cam["trend"]["sharpness"]) == LEARN + SETUP + BLURRED
        assert cam["trend"]["sharpness"][-1] < cam["bands"]["sharpness"]["low"] < cam["trend"]["sharpness"][LEARN]
        assert h["model"]["model_id"] == st.inspector.model_id
        assert h["uncertain_on_drift"] is False and st.last_result is not None
        assert not any("image health" in r for r in st.last_result.verdict.reasons), (
            "off by default: the alarm changes no verdict"
        )
        text = c.get("/metrics").text
        assert 'station_image_health_alarm{camera="cam0",check="sharpness"} 1' in text
        assert 'station_image_health_alarm{camera="cam0",check="position"} 0' in text
        sharp = next(line for line in text.splitlines() if line.startswith('station_image_sharpness{camera="cam0"}'))
        assert float(sharp.split()[-1]) == pytest.approx(cam["last"]["sharpness"])
        # the operator screen's alarm list, and the OPC UA server's ActiveAlarms read by a real asyncua client
        alarms = c.get("/api/status").json()["alarms"]
        assert any(a["component"] == "health:cam0:sharpness" and "less sharp" in a["message"] for a in alarms)
        ua = wait_for(
            lambda: (lambda v: v if v["State.ActiveAlarms"] else None)(_read_opcua(st, "State.ActiveAlarms")),
            5,
            "OPC UA alarms",
        )
        assert any(a.startswith("health:cam0:sharpness: camera cam0: image") for a in ua["State.ActiveAlarms"])

        # relearning needs an operator, and clears the alarm at the next part
        assert c.post("/api/health/relearn", json={"reason": "lens replaced"}).status_code in (401, 403)
        csrf = login(c, "op")
        r = c.post("/api/health/relearn", json={"reason": "lens replaced"}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200, r.text
        decided(st, 1)
        wait_for(lambda: not c.get("/api/health/image").json()["cameras"]["cam0"]["alarms"], 5, "the alarm cleared")
        assert c.get("/api/health/image").json()["cameras"]["cam0"]["learning"]
        assert not any(a["component"].startswith("health:") for a in c.get("/api/status").json()["alarms"])


@needs_chromium
def test_health_panel_draws_the_trends(make_station: Any, tmp_path: Path, page: Any) -> None:
    from playwright.sync_api import expect

    blurred_station = _blurred(make_station, tmp_path)

    page.set_viewport_size({"width": 1920, "height": 1080})
    health = blurred_station.image_health
    assert health is not None
    with served_url(blurred_station) as url:
        page.goto(f"{url}/")
        chart = page.locator('#health .health-cam[data-camera="cam0"] .health-chart[data-check="sharpness"]')
        expect(chart).to_have_class("health-chart bad")
        expect(chart).to_have_attribute("title", health.cameras["cam0"].messages["sharpness"])
        expect(page.locator('#health .health-chart[data-check="brightness"]')).to_have_class("health-chart")
        page.wait_for_function("""() => {
            const c = document.querySelector('#health .health-chart[data-check="sharpness"] canvas');
            if (!c || !c.width) return false;
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            for (let i = 3; i < d.length; i += 4) if (d[i]) return true; return false; }""")
        # drawn by Chart.js (static/vendor/chartjs): a chart on each canvas, its plot the size of the 30 px strip
        page.wait_for_function("""() => [...document.querySelectorAll('#health .health-chart canvas')].every((c) => {
            const chart = window.Chart.getChart(c);
            return chart && chart.chartArea.width > 20 && chart.height >= 20; })""")
        assert page.locator("#health .health-chart canvas").count() == 4
        # the panel fits the 1920x1080 screen under the live image, above the bottom lists
        box, img = page.locator("#health").bounding_box(), page.locator("#live-frame").bounding_box()
        lists = page.locator("section.lists").bounding_box()
        assert box is not None and img is not None and lists is not None
        assert box["height"] >= 60 and img["y"] + img["height"] <= box["y"] and box["y"] + box["height"] <= lists["y"]
        assert img["height"] >= 400, "the live image keeps most of its room"
        page.screenshot(path=str(ARTIFACTS / "health_panel.png"))


def test_health_off(make_station: Any) -> None:
    st = make_station(health={"enabled": False})
    decided(st, 2)
    assert st.image_health is None and st.pipeline.health is None
    with TestClient(create_app(st)) as c:
        assert c.get("/api/health/image").json() == {"enabled": False}
        assert "station_image_" not in c.get("/metrics").text
        csrf = login(c, "op")
        r = c.post("/api/health/relearn", json={"reason": "x"}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 409 and "health.enabled" in r.json()["detail"]
