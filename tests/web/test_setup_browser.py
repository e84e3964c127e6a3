"""Regions drawn in headless Chromium: draw an ignore zone on the camera's last frame, save it, and a part whose only
defect lies in it passes (decided by the station's decision in force), with the zone drawn on the operator screen."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from station.app import Station
from station.contracts import PartResult

from .anomaly_parts import H, W, anomaly_part, publish_part
from .helpers import (
    ARTIFACTS,
    browser_login,
    needs_chromium,
    panel_viewport,  # noqa: F401 - the viewport fixture: the line-side panel, 1920x1080
)
from .test_heatmap_browser import served  # noqa: F401 - a software-triggered station served on a free port

pytestmark = [needs_chromium, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
ZONE = [(390, 110), (490, 110), (490, 210), (390, 210)]  # frame pixels around BOX


def decided(station: Station, part_id: int) -> PartResult:
    """A part whose only defect is at BOX, judged by the decision the station has in force now."""
    p = anomaly_part(part_id)
    v = station.decider.decide(p.trigger, p.frames, p.detections, {"inspect": 5.0})
    return PartResult(p.trigger, v, p.frames, p.detections)


def test_draw_a_zone_save_and_the_part_passes(served: tuple[Station, str], page: Page) -> None:
    station, base = served
    before = decided(station, 2001)
    assert before.verdict.outcome == "FAIL"
    publish_part(station, before)  # the reference image: the camera's last frame

    browser_login(page, base, "/setup", "boss", ready=True)
    canvas = page.locator("#draw")
    bb = canvas.bounding_box()
    assert bb is not None and bb["width"] > 100
    page.select_option("#kind", "ignore")
    page.fill("#poly-name", "clamp")
    for x, y in ZONE:
        canvas.click(position={"x": x * bb["width"] / W, "y": y * bb["height"] / H})
    page.click("#close-poly")
    expect(page.locator("#poly-list")).to_contain_text("ignore zone clamp")
    page.fill("#regions-reason", "clamp holds the part here")
    page.click("#save-regions")
    expect(page.locator("#regions-msg")).to_have_text("Saved: version 1 is in force")
    expect(page.locator("#regions-history")).to_contain_text("clamp holds the part here")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "setup_regions.png"))

    # the zone, as drawn, is in force: the same part now passes
    after = decided(station, 2002)
    assert after.verdict.outcome == "PASS" and [d.rule for d in after.verdict.defects] == ["ignore zone clamp"]
    spec = station.decider.setup["cam0"].regions_spec
    assert spec is not None
    zone = spec.ignore[0]
    xs, ys = [p[0] for p in zone.points], [p[1] for p in zone.points]
    assert abs(min(xs) - 390) < 3 and abs(max(xs) - 490) < 3 and abs(min(ys) - 110) < 3 and abs(max(ys) - 210) < 3

    publish_part(
        station, after
    )  # before the screen opens: the live image is rate-limited (web.live_fps), not the point here
    page.goto(base + "/")
    expect(page.locator("#conn-text")).to_have_text("LIVE", timeout=10_000)
    expect(page.locator("#live-part")).to_have_text("2002", timeout=10_000)
    expect(page.locator("#verdict-word")).to_have_text("PASS")
    expect(page.locator("#live-defects")).to_contain_text("IGNORED anomaly")
    # the zone is painted on the operator screen's overlay (grey fill inside it; the regions load with the screen)
    page.wait_for_function(
        """([fx, fy]) => {
        const c = document.getElementById('overlay');
        if (!c.width) return false;
        return c.getContext('2d').getImageData(Math.round(fx * c.width), Math.round(fy * c.height), 1, 1).data[3] > 0;
        }""",
        arg=[395 / W, 205 / H],
        timeout=10_000,
    )  # inside the zone, clear of the defect box and its label
    page.screenshot(path=str(ARTIFACTS / "setup_regions_operator.png"))
