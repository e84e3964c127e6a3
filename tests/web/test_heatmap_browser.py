"""Heat maps in headless Chromium: the operator screen's overlay and toggle, and the review editor's
overlay, toggle and "label this anomaly as a defect" form, against a real station served by uvicorn."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from station.app import Station
from tests.fixtures_review import query
from tests.web.test_review_browser import current, login_via_review

from .anomaly_parts import BOX, H, W, anomaly_part, publish_part
from .helpers import ARTIFACTS, needs_chromium, panel_viewport, served_url, wait_for  # noqa: F401 - the viewport

pytestmark = [needs_chromium, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@pytest.fixture
def served(station: Station) -> Iterator[tuple[Station, str]]:
    """A software-triggered station (no parts unless published), served on a free port."""
    with served_url(station) as url:
        yield station, url


# Pixels of a canvas painted (alpha > 0) inside and outside a rectangle given as fractions of its size.
PAINTED = """([id, fx1, fy1, fx2, fy2]) => {
    const c = document.getElementById(id);
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    const x1 = fx1 * c.width, y1 = fy1 * c.height, x2 = fx2 * c.width, y2 = fy2 * c.height;
    let inside = 0, outside = 0;
    for (let y = 0; y < c.height; y++) for (let x = 0; x < c.width; x++) {
        if (d[(y * c.width + x) * 4 + 3] === 0) continue;
        if (x >= x1 && x <= x2 && y >= y1 && y <= y2) inside++; else outside++;
    }
    return [inside, outside, c.width * c.height]; }"""


def test_operator_screen_shows_the_heat_map_and_its_toggle_hides_it(served: tuple[Station, str], page: Page) -> None:
    station, base = served
    page.goto(base + "/")
    expect(page.locator("#conn-text")).to_have_text("LIVE", timeout=10_000)
    expect(page.locator("#heat-toggle")).to_be_hidden()

    publish_part(station, anomaly_part(1001, score=1.8))
    expect(page.locator("#live-part")).to_have_text("1001", timeout=10_000)
    heat = page.locator("#heat")
    expect(heat).to_be_visible(timeout=10_000)
    expect(page.locator("#heat-toggle")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#image-score")).to_have_text("1.80")
    expect(page.locator("#live-defects")).to_contain_text("REJECT anomaly")
    # the heat map lies over the image and is coloured only around the anomaly (the rest of the map is normal)
    img_box, heat_box = page.locator("#live-img").bounding_box(), heat.bounding_box()
    assert img_box and heat_box and all(abs(img_box[k] - heat_box[k]) < 1.5 for k in ("x", "y", "width", "height"))
    x1, y1, x2, y2 = BOX
    pad = 60  # the blob's tail beyond the box, in frame pixels
    inside, outside, total = page.evaluate(
        PAINTED, ["heat", (x1 - pad) / W, (y1 - pad) / H, (x2 + pad) / W, (y2 + pad) / H]
    )
    assert inside > 0.3 * ((x2 - x1) / W) * ((y2 - y1) / H) * total, (inside, total)
    assert outside == 0, outside
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "heatmap_operator.png"))

    page.click("#heat-toggle")
    expect(heat).to_be_hidden()
    expect(page.locator("#heat-toggle")).to_have_attribute("aria-pressed", "false")
    expect(page.locator("#overlay")).to_be_visible()  # the defect boxes stay
    page.screenshot(path=str(ARTIFACTS / "heatmap_operator_off.png"))
    page.click("#heat-toggle")
    expect(heat).to_be_visible()

    # a part without a heat map (a supervised model): no overlay, no toggle, no score
    publish_part(station, anomaly_part(1002, with_map=False))
    expect(page.locator("#live-part")).to_have_text("1002", timeout=10_000)
    expect(heat).to_be_hidden()
    expect(page.locator("#heat-toggle")).to_be_hidden()
    expect(page.locator("#live-score")).to_be_hidden()


def _current(station: Station, image_id: int) -> list[tuple[Any, ...]]:
    """(id, class, source, supersedes) of the image's current labels."""
    return [(r[0], r[1], r[6], r[7]) for r in current(station, image_id)]


def test_review_editor_heat_map_and_anomaly_to_defect(served: tuple[Station, str], page: Page) -> None:
    station, base = served
    publish_part(station, anomaly_part(1001))
    wait_for(lambda: query(station, "SELECT id FROM anomaly_maps WHERE part_id = 1001"), 15, "the recorded heat map")
    image_id = int(query(station, "SELECT id FROM images WHERE part_id = 1001")[0][0])
    ((anomaly_id, cls, _, _),) = _current(station, image_id)
    assert cls == "anomaly"

    login_via_review(page, base, f"/review/image/{image_id}")
    canvas = page.locator("#canvas")
    expect(canvas).to_have_attribute("data-heat", "on")
    expect(page.locator("#heat-toggle")).to_be_visible()
    expect(page.locator("#image-score")).to_have_text("1.80")

    def heat_pixels() -> int:
        """Canvas pixels where the heat map's yellow-red shows (the gray part image has none)."""
        return page.evaluate("""() => {
            const c = document.getElementById('canvas');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 150 && d[i] - d[i + 2] > 90) n++; return n;
            }""")

    on = heat_pixels()
    assert on > 100, on
    page.click("#heat-toggle")
    expect(canvas).to_have_attribute("data-heat", "off")
    expect(page.locator("#heat-toggle")).to_have_attribute("aria-pressed", "false")
    assert heat_pixels() < on / 10
    page.keyboard.press("h")
    expect(canvas).to_have_attribute("data-heat", "on")

    # select the anomaly box: the form offers the label store's classes; a new class name is accepted
    expect(page.locator("#anomaly-form")).to_be_hidden()
    page.locator(f'#label-list li[data-label-id="{anomaly_id}"]').click()
    expect(page.locator("#anomaly-form")).to_be_visible()
    options = page.eval_on_selector_all("#anomaly-classes option", "os => os.map(o => o.value)")
    assert "anomaly" not in options and set(station.inspector.names) - {"anomaly"} <= set(options)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "heatmap_review.png"))
    page.fill("#anomaly-class", "burr")
    page.click("#anomaly-save")
    expect(page.locator("#label-list li").first).to_contain_text("burr")
    expect(page.locator("#anomaly-form")).to_be_hidden()  # the selected box is a burr now
    expect(page.locator("#audit-body tr").first).to_contain_text("reclass")
    expect(page.locator("#audit-body tr").first).to_contain_text("anomaly")
    ((new_id, new_cls, src, supersedes),) = _current(station, image_id)
    assert (new_cls, src, supersedes) == ("burr", "qa", anomaly_id)
    audit = query(
        station,
        "SELECT user, action, reason FROM audit WHERE object_type = 'label' AND object_id = ?",
        [str(anomaly_id)],
    )
    assert audit == [("qa", "reclass", "anomaly labelled as burr")]
    page.screenshot(path=str(ARTIFACTS / "heatmap_review_labelled.png"))
