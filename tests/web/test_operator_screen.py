"""The operator screen in headless Chromium against a real station and a real uvicorn server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import APIResponse, Page, Route, expect

from station.app import Station

from .helpers import ARTIFACTS, PASSWORDS, needs_chromium, panel_viewport, served_url, wait_for  # noqa: F401 - viewport

pytestmark = needs_chromium


@pytest.fixture
def running_line(make_station: Any) -> Iterator[tuple[Station, str]]:
    """A timer-triggered line at 300 parts/min with 1280x800 frames, served on a free port."""
    st = make_station(
        trigger={"type": "timer", "parts_per_minute": 300},
        cameras=[{"type": "synthetic", "id": "cam0", "width": 1280, "height": 800, "defect_rate": 0.5, "seed": 5}],
        inspector={"type": "reference", "learn_parts": 5},
    )
    with served_url(st) as base:
        yield st, base


@pytest.fixture
def quiet_line(station: Station) -> Iterator[tuple[Station, str]]:
    """A software-triggered station (no parts unless triggered), served on a free port."""
    with served_url(station) as base:
        yield station, base


def num(page: Page, sel: str) -> int:
    return int(page.locator(sel).inner_text().replace(",", "") or 0)


def test_operator_screen_updates_live(running_line: tuple[Station, str], page: Page) -> None:
    station, base = running_line
    page.goto(base + "/")
    page.evaluate("window.__sameDocument = true")
    expect(page.locator("#conn-text")).to_have_text("LIVE", timeout=10_000)
    expect(page.locator("#run-state")).to_contain_text("RUNNING")

    page.wait_for_function("() => Number(document.getElementById('verdict-part').textContent) > 0", timeout=10_000)
    first_part = num(page, "#verdict-part")
    first_triggers = num(page, "#c-triggers")
    # the verdict follows the line: several new parts arrive without any reload
    page.wait_for_function(
        f"() => Number(document.getElementById('verdict-part').textContent) >= {first_part + 4}", timeout=15_000
    )
    word = page.locator("#verdict-word").inner_text()
    assert word in {"PASS", "FAIL", "UNCERTAIN", "FAILSAFE"}
    assert page.locator("#verdict").get_attribute("data-outcome") == word
    page.wait_for_function(
        f"() => Number(document.getElementById('c-triggers').textContent.replace(/,/g, '')) >= {first_triggers + 4}",
        timeout=15_000,
    )
    assert num(page, "#c-triggers") <= station.counters.snapshot().triggers
    expect(page.locator("#c-ppm")).not_to_have_text("-", timeout=10_000)

    # the live image loads and is a real decoded picture of a recent part
    page.wait_for_function("() => document.getElementById('live-img').naturalWidth > 0", timeout=10_000)
    assert page.evaluate("document.getElementById('live-img').naturalWidth") == 1000
    assert num(page, "#live-part") >= first_part

    # a rejected part shows its boxes with a text label (not colour alone)
    page.wait_for_function(
        "() => document.getElementById('live-defects').textContent.includes('REJECT')", timeout=30_000
    )
    painted = page.evaluate("""() => {
        const c = document.getElementById('overlay');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }""")
    assert painted > 100
    expect(page.locator("#rejects-body tr").first).not_to_have_class("empty", timeout=10_000)
    assert page.evaluate("window.__sameDocument") is True  # never reloaded
    if station.counters.snapshot().dropped == 0:
        expect(page.locator("#live-note")).to_be_hidden()  # every part had an image: no "NO IMAGE" note
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "operator_screen.png"))


def test_login_pause_resume_ack_in_browser(quiet_line: tuple[Station, str], page: Page) -> None:
    station, base = quiet_line
    page.goto(base + "/")
    expect(page.locator("#conn-text")).to_have_text("LIVE", timeout=10_000)
    expect(page.locator("#pause-form")).to_be_hidden()
    expect(page.locator("#controls-anon")).to_be_visible()

    page.click("#login-link")
    page.wait_for_url(base + "/login?next=/")
    page.fill("#username", "op")
    page.fill("#password", "not-the-password")
    page.click("#login-btn")
    expect(page.locator("#login-error")).to_have_text("Wrong username or password.")
    page.fill("#password", PASSWORDS["op"])
    page.click("#login-btn")
    page.wait_for_url(base + "/")
    expect(page.locator("#user-name")).to_have_text("op (operator)")
    expect(page.locator("#pause-form")).to_be_visible()

    page.select_option("#pause-reason-select", "Maintenance")
    page.fill("#pause-note", "belt tension")
    page.click("#pause-btn")
    expect(page.locator("#pause-banner")).to_be_visible()
    expect(page.locator("#pause-reason")).to_have_text("Maintenance: belt tension")
    expect(page.locator("#run-state")).to_contain_text("PAUSED")
    assert station.pipeline.paused
    page.click("#resume-btn")
    expect(page.locator("#pause-banner")).to_be_hidden()
    assert not station.pipeline.paused

    expect(page.locator("#trigger-btn")).to_be_enabled()
    with page.expect_response(lambda r: r.url.endswith("/api/trigger")) as answer:
        page.click("#trigger-btn")
    assert answer.value.status == 200, answer.value.text()
    part_id = answer.value.json()["part_id"]
    wait_for(
        lambda: station.counters.snapshot().verdicts >= 1,
        20,
        f"the verdict of part {part_id}, triggered from the browser",
    )

    station.alarms.report("camera:cam0", "alarm", "no frame within 500 ms")
    ack = page.locator("#alarm-list li", has_text="no frame within 500 ms").locator("button.ack")
    expect(ack).to_be_visible(timeout=10_000)
    ack.click()
    expect(page.locator("#alarm-list li", has_text="no frame within 500 ms").first).to_contain_text("ack op")

    page.click("#logout")
    expect(page.locator("#login-link")).to_be_visible()
    expect(page.locator("#pause-form")).to_be_hidden()


def test_a_late_status_answer_never_undoes_a_newer_one(quiet_line: tuple[Station, str], page: Page) -> None:
    """A status GET sent while the line was paused and answered after RESUME must not show it paused again."""
    station, base = quiet_line
    page.goto(base + "/login?next=/")
    page.fill("#username", "op")
    page.fill("#password", PASSWORDS["op"])
    page.click("#login-btn")
    page.wait_for_url(base + "/")
    expect(page.locator("#pause-form")).to_be_visible()

    held: list[tuple[Route, APIResponse]] = []

    def hold_paused_answers(route: Route) -> None:
        answer = route.fetch()
        if answer.json().get("paused"):
            held.append((route, answer))  # answered later, after RESUME
        else:
            route.fulfill(response=answer)

    page.route("**/api/status", hold_paused_answers)
    page.click("#pause-btn")
    expect(page.locator("#pause-banner")).to_be_visible()
    for _ in range(100):  # the pause's status event makes the page ask for the status again
        if held:
            break
        page.wait_for_timeout(50)
    assert held, "the page did not ask for the status after the pause"
    page.click("#resume-btn")
    expect(page.locator("#pause-banner")).to_be_hidden()
    expect(page.locator("#trigger-btn")).to_be_enabled()
    for route, answer in held:
        route.fulfill(response=answer)  # the stale "paused" answers arrive now
    page.wait_for_timeout(500)
    expect(page.locator("#pause-banner")).to_be_hidden()
    expect(page.locator("#trigger-btn")).to_be_enabled()
    expect(page.locator("#run-state")).to_contain_text("RUNNING")
    assert not station.pipeline.paused
