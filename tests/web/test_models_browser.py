"""The models page in headless Chromium against a real station and a real uvicorn server.

Admin logs in, evaluates the candidate against the current model (worker process, production
path), sees the side-by-side figures and the golden images where they disagree, runs it in shadow
mode, promotes it (the line hot-swaps), then rolls back in one action; a second test starts a
training run from the form and watches its live progress. Screenshots: test-artifacts/models_*.png.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from models import registry
from station.app import Station
from tests.fixtures_models_web import ModelsLine, review_recorded_images, run_parts, snapshot, wait_for
from tests.model_factory import detecting_model, tiny_model

from .helpers import ARTIFACTS, browser_login, needs_chromium, served_url

pytestmark = needs_chromium


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Station, str, dict[str, str], dict]]:
    """A running line (weak model current), the good model registered as a candidate, served on a free port."""
    weak, good = tiny_model("detect"), detecting_model()
    ln = ModelsLine(tmp_path, weak, 16, 303, golden=("golden-scenes", 30, 404))
    db = ln.db()
    try:
        cur = registry.ensure_current(db, weak, store_dir=ln.data / "models")
    finally:
        db.close()
    cand = ln.register(good, "model_factory")
    try:
        with served_url(ln.station) as url:
            yield ln.station, url, {"weak": cur.sha256, "good": cand}, ln.truth
    finally:
        ln.station.stop()


def row(page: Page, sha: str):  # noqa: ANN201 - a playwright Locator
    return page.locator(f"#registry-body tr[data-sha='{sha}']")


def confirm_swap(page: Page, st: Station, reason: str, toast: str, sha: str) -> None:
    """Confirms the open promote/rollback dialog with ``reason``: the page says ``toast`` and marks ``sha`` current,
    and the line hot-swaps to it."""
    page.fill("#dlg-reason", reason)
    page.click("#dlg-ok")
    expect(page.locator("#toast")).to_contain_text(toast)
    expect(row(page, sha).locator(".md-chip")).to_have_text("current")
    wait_for(lambda: st.inspector.model_id.endswith(sha[:12]), 30, f"the hot swap to {sha[:12]}")
    expect(page.locator("#running-model")).to_contain_text(sha[:12], timeout=10_000)


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"models_{name}.png"), full_page=True)


def test_evaluate_shadow_promote_rollback_in_browser(
    served: tuple[Station, str, dict[str, str], dict], page: Page
) -> None:
    st, base, sha, _ = served
    browser_login(page, base, "/models", "boss")
    expect(page.locator("#user-name")).to_have_text("boss (admin)")
    expect(row(page, sha["weak"]).locator(".md-chip")).to_have_text("current")
    expect(row(page, sha["good"]).locator(".md-chip")).to_have_text("candidate")
    expect(page.locator("#running-state")).to_have_text("registry current")

    # evaluate the candidate against the current model: the figures side by side, the disagreeing images
    row(page, sha["good"]).locator("button[data-action=evaluate]").click()
    expect(page.locator("#e-state")).to_have_text("succeeded", timeout=90_000)
    expect(page.locator("#e-gate")).to_contain_text("Gate: PASSES")
    expect(page.locator("#e-side tbody tr").first).to_contain_text("Escape rate")
    expect(page.locator("#e-classes tbody tr")).to_have_count(2)
    tiles = page.locator("#e-images figure")
    expect(tiles.first).to_be_visible()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#e-images img')].slice(0, 4)"
        ".every(i => i.complete && i.naturalWidth > 0)",
        timeout=15_000,
    )
    # the registry row now shows the candidate's golden-set figures
    expect(row(page, sha["good"]).locator("td.num").first).not_to_have_text("-", timeout=10_000)
    shot(page, "evaluation")

    # shadow mode with the candidate while parts run: disagreements appear, the line keeps its verdicts
    page.select_option("#s-model", sha["good"])
    page.click("#shadow-start")
    expect(page.locator("#shadow-stop")).to_be_visible()
    run_parts(st, 16)
    expect(page.locator("#shadow-body tr td.num").first).to_be_visible(timeout=20_000)
    expect(page.locator("#shadow-counters")).to_contain_text("judged")
    wait_for(lambda: st.shadow is not None and st.shadow.snapshot()["recorded"] >= 16, 30, "shadow verdicts")
    page.wait_for_timeout(2500)  # one more refresh of the panel
    shot(page, "shadow")
    page.click("#shadow-stop")
    expect(page.locator("#shadow-start")).to_be_visible()
    assert st.shadow is None and st.counters.snapshot().FAIL == 0

    # promote (admin): the gate passes, the line hot-swaps to the candidate
    row(page, sha["good"]).locator("button[data-action=promote]").click()
    expect(page.locator("#dlg")).to_be_visible()
    expect(page.locator("#dlg-text")).to_contain_text("escape rate")
    confirm_swap(page, st, "better on the golden set", "Promoted", sha["good"])
    expect(page.locator("#history")).to_contain_text("promote")
    shot(page, "promoted")

    # roll back in one action
    page.click("#rollback-last")
    confirm_swap(page, st, "back to the old model", "Rolled back", sha["weak"])
    # the rollback is audited; the hot swap that follows it adds its own line, so it need not be the newest
    expect(page.locator("#history li", has_text="rollback").first).to_contain_text(sha["weak"][:12])
    shot(page, "rolled_back")


@pytest.mark.slow
def test_training_run_with_live_progress_in_browser(
    served: tuple[Station, str, dict[str, str], dict], page: Page
) -> None:
    st, base, sha, truth = served
    run_parts(st, 16)
    review_recorded_images(st, truth)
    snap = snapshot(st, "browser-scenes")
    browser_login(page, base, "/models", "qa")
    expect(page.locator("#user-name")).to_have_text("qa (qa)")
    expect(page.locator("button[data-action=promote]")).to_have_count(0)  # qa does not promote
    page.reload()
    page.select_option("#t-snapshot", str(snap))
    page.fill("#t-epochs", "2")
    page.fill("#t-imgsz", "64")
    page.fill("#t-batch", "8")
    page.click("#train-start")
    expect(page.locator("#job-status")).to_have_text(re.compile("running|succeeded"))
    # the first epoch's losses and metrics (a fast machine may finish both epochs between two polls)
    expect(page.locator("#job-epochs tbody tr").first).to_be_visible(timeout=120_000)
    shot(page, "training")
    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=180_000)
    expect(page.locator("#job-epochs tbody tr")).to_have_count(2)
    expect(page.locator("#job-result")).to_contain_text("Registered candidate")
    page.click("#job-log-box summary")
    expect(page.locator("#job-log")).to_contain_text("Ultralytics", timeout=10_000)
    expect(page.locator("#registry-body tr")).to_have_count(3, timeout=10_000)
    shot(page, "trained")
