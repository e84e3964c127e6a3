"""The QA review pages in headless Chromium against a real station and a real uvicorn server.

A QA user opens the queue, deletes a false positive, draws a missed defect, resizes it, marks
another image good from the keyboard, takes a snapshot and downloads the YOLO and COCO exports;
Ultralytics' own dataset checker and pycocotools then read the downloads.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from labeling.queue import iou
from station.app import Station
from tests.fixtures_review import mistakes, query, recorded_station

from .helpers import ARTIFACTS, browser_login, needs_chromium, served_url, wait_for

pytestmark = [
    needs_chromium,
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


@pytest.fixture
def served(make_station: Callable[..., Station]) -> Iterator[tuple[Station, str]]:
    """A station after 24 recorded parts of the synthetic line, served by uvicorn on a free port."""
    station = recorded_station(make_station, parts=24)
    with served_url(station) as url:
        yield station, url


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"review_{name}.png"))


def login_via_review(page: Page, base: str, path: str = "/review") -> None:
    browser_login(page, base, path, "qa", ready=True)


def on_screen(page: Page, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of image pixel (x, y) in the editor (the canvas publishes its view transform)."""
    c = page.locator("#canvas")
    bb = c.bounding_box()
    assert bb is not None
    s, ox, oy = (float(c.get_attribute(a) or "nan") for a in ("data-scale", "data-ox", "data-oy"))
    return bb["x"] + ox + x * s, bb["y"] + oy + y * s


def current(station: Station, image_id: int) -> list[tuple[Any, ...]]:
    """(id, class, x1, y1, x2, y2, source, supersedes) of the image's current labels."""
    return query(
        station,
        "SELECT l.id, l.class_name, l.x1, l.y1, l.x2, l.y2, l.source, l.supersedes FROM labels l WHERE l.image_id = ? "
        "AND l.status = 'active' AND NOT EXISTS (SELECT 1 FROM labels s WHERE s.supersedes = l.id) ORDER BY l.id",
        [image_id],
    )


def test_qa_fixes_labels_and_exports_a_dataset(
    served: tuple[Station, str], page: Page, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    station, base = served
    found = mistakes(station, min_side=10)
    fp = next((m for m in found if m.false_positive and m.missed), None) or next(m for m in found if m.false_positive)
    miss = fp if fp.missed else next(m for m in found if m.missed)
    assert fp.false_positive and miss.missed
    fp_label, fp_class, fp_box = fp.false_positive

    # -- the queue, after logging in -------------------------------------------------------
    login_via_review(page, base)
    expect(page.locator(".rv-tile")).to_have_count(query(station, "SELECT COUNT(*) FROM images")[0][0])
    first_tile = page.locator(".rv-tile").first
    expect(first_tile.locator(".rv-why")).not_to_be_empty()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.rv-thumb img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    shot(page, "queue")

    # -- open the image with the false positive, select it on the canvas, Delete --------------
    page.click(f'.rv-tile[data-image-id="{fp.image_id}"] a.rv-thumb')
    page.wait_for_url(f"{base}/review/image/{fp.image_id}")
    page.wait_for_selector("body[data-ready='1']")
    expect(page.locator("#label-list li[data-label-id]")).to_have_count(len(current(station, fp.image_id)))
    cx, cy = on_screen(page, (fp_box[0] + fp_box[2]) / 2, (fp_box[1] + fp_box[3]) / 2)
    page.mouse.click(cx, cy)
    expect(page.locator("#label-list li.selected")).to_have_attribute("data-label-id", str(fp_label))
    shot(page, "editor_selected")
    page.keyboard.press("Delete")
    expect(page.locator(f'#label-list li[data-label-id="{fp_label}"]')).to_have_count(0)
    expect(page.locator("#audit-body tr[data-action='delete']")).to_have_count(1)
    assert fp_label not in [r[0] for r in current(station, fp.image_id)]
    assert query(station, "SELECT status, source, created_by FROM labels WHERE supersedes = ?", [fp_label]) == [
        ("deleted", "qa", "qa")
    ]

    # -- draw the missed defect: pick its class with its number key, b, drag ----------------------
    if miss.image_id != fp.image_id:
        page.goto(f"{base}/review/image/{miss.image_id}")
        page.wait_for_selector("body[data-ready='1']")
    cls, (x1, y1, x2, y2) = miss.missed
    before = {r[0] for r in current(station, miss.image_id)}
    page.keyboard.press("Escape")
    page.keyboard.press(str(list(station.inspector.names).index(cls) + 1))
    expect(page.locator("#class-select")).to_have_value(cls)
    page.keyboard.press("b")
    expect(page.locator("#stage")).to_have_attribute("data-mode", "draw")
    page.mouse.move(*on_screen(page, x1, y1))
    page.mouse.down()
    page.mouse.move(*on_screen(page, (x1 + x2) / 2, (y1 + y2) / 2), steps=4)
    page.mouse.move(*on_screen(page, x2, y2), steps=4)
    page.mouse.up()
    expect(page.locator("#label-list li[data-label-id]")).to_have_count(len(before) + 1)
    added = [r for r in current(station, miss.image_id) if r[0] not in before]
    assert len(added) == 1
    lid, got_cls, *box, source, supersedes = added[0]
    scale = float(page.locator("#canvas").get_attribute("data-scale") or 1)
    assert got_cls == cls and source == "qa" and supersedes is None
    assert box == pytest.approx([x1, y1, x2, y2], abs=1.0 / scale + 0.2)  # one screen pixel of the drag
    assert iou(box, (x1, y1, x2, y2)) > 0.8
    expect(page.locator("#label-list li.selected")).to_have_attribute("data-label-id", str(lid))

    # -- resize it by its bottom-right handle, zoom with the wheel, fit with 0 ------------------------
    hx, hy = on_screen(page, box[2], box[3])
    page.mouse.move(hx, hy)
    page.mouse.down()
    page.mouse.move(hx + 12, hy + 9, steps=3)
    page.mouse.up()
    wait_for(lambda: any(r[7] == lid for r in current(station, miss.image_id)), 10, "the resized label")
    resized = next(r for r in current(station, miss.image_id) if r[7] == lid)
    assert (
        resized[2:4] == pytest.approx(tuple(box[:2]), abs=0.11) and resized[4] > box[2] + 5 and resized[5] > box[3] + 3
    )
    expect(page.locator("#audit-body tr[data-action='move']")).to_have_count(1)
    fit = float(page.locator("#canvas").get_attribute("data-scale") or 0)
    page.mouse.move(*on_screen(page, 320, 200))
    page.mouse.wheel(0, -600)
    page.wait_for_function(f"() => Number(document.getElementById('canvas').dataset.scale) > {fit * 1.5}")
    page.keyboard.press("0")
    page.wait_for_function(f"() => Math.abs(Number(document.getElementById('canvas').dataset.scale) - {fit}) < 1e-6")
    shot(page, "editor")
    page.keyboard.press("?")
    expect(page.locator("#help")).to_be_visible()
    shot(page, "help")
    page.keyboard.press("Escape")
    expect(page.locator("#help")).to_be_hidden()

    # -- next image with n, mark it good with g (the editor then moves on by itself) -------------------
    edited = {fp.image_id, miss.image_id}
    page.keyboard.press("n")
    page.wait_for_function(f"() => !{sorted(edited)}.includes(Number(document.body.dataset.imageId))")
    page.wait_for_selector("body[data-ready='1']")
    good_id = int(page.locator("body").get_attribute("data-image-id") or 0)
    assert good_id not in edited
    page.keyboard.press("g")
    page.wait_for_function(f"() => Number(document.body.dataset.imageId) !== {good_id}")
    assert query(station, "SELECT verdict, reviewed_by FROM image_review_latest WHERE image_id = ?", [good_id]) == [
        ("good", "qa")
    ]
    assert current(station, good_id) == []

    # -- the editor moved on to the next image: c confirms all its boxes as they are --------------------
    page.wait_for_selector("body[data-ready='1']")
    confirmed_id = int(page.locator("body").get_attribute("data-image-id") or 0)
    assert confirmed_id not in edited | {good_id}
    boxes_before = [r[1:6] for r in current(station, confirmed_id)]
    page.keyboard.press("c")
    page.wait_for_function(f"() => Number(document.body.dataset.imageId) !== {confirmed_id}")
    after = current(station, confirmed_id)
    assert [r[1:6] for r in after] == boxes_before and all(r[6] == "qa" for r in after)
    assert query(station, "SELECT reviewed_by FROM image_review_latest WHERE image_id = ?", [confirmed_id]) == [("qa",)]
    edited |= {confirmed_id}

    # -- snapshot and downloads ---------------------------------------------------------------------------
    page.click("nav a[href='/review/dataset']")
    page.wait_for_url(base + "/review/dataset")
    page.wait_for_selector("body[data-ready='1']")
    page.fill("#s-name", "browser review")
    page.click("#snapshot-create")
    row = page.locator("#snapshot-body tr[data-snapshot-id]")
    expect(row).to_have_count(1)
    snap_id = int(row.get_attribute("data-snapshot-id") or 0)
    reviewed = sorted(r[0] for r in query(station, "SELECT image_id FROM image_review_latest"))
    assert reviewed == sorted(edited | {good_id})
    n_boxes = sum(len(current(station, i)) for i in reviewed)
    assert query(
        station, "SELECT name, n_images, n_labels, created_by FROM dataset_snapshots WHERE id = ?", [snap_id]
    ) == [("browser review", len(reviewed), n_boxes, "qa")]
    expect(row.locator("td").nth(5)).to_have_text(str(n_boxes))

    with page.expect_download() as dl:
        row.locator("a[data-export='yolo']").click()
    assert dl.value.suggested_filename == f"snapshot-{snap_id}-yolo.zip"
    zpath = tmp_path / "yolo.zip"
    dl.value.save_as(zpath)
    with zipfile.ZipFile(zpath) as zf:
        zf.extractall(tmp_path / "yolo")
    data_yaml = tmp_path / "yolo" / f"snapshot-{snap_id}-yolo" / "data.yaml"
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    from ultralytics.data.utils import check_det_dataset

    data = check_det_dataset(str(data_yaml))
    assert data["nc"] == 3 and data["names"] == dict(enumerate(station.inspector.names))
    label_lines = [
        ln for f in (tmp_path / "yolo").rglob("labels/*/*.txt") for ln in f.read_text().splitlines() if ln.strip()
    ]
    assert len(label_lines) == n_boxes
    n_images = sum(1 for split in ("train", "val") for _ in Path(data[split]).glob("*.png"))
    assert n_images == len(reviewed) or (data["val"] == data["train"] and n_images == 2 * len(reviewed))

    with page.expect_download() as dl:
        row.locator("a[data-export='coco']").click()
    cpath = tmp_path / "coco.json"
    dl.value.save_as(cpath)
    from pycocotools.coco import COCO

    coco = COCO(str(cpath))
    assert len(coco.getAnnIds()) == n_boxes and sorted(coco.getImgIds()) == reviewed
    assert {c["name"] for c in coco.loadCats(coco.getCatIds())} == set(station.inspector.names)
    assert (
        json.loads(cpath.read_text())["info"]["version"]
        == query(station, "SELECT content_sha256 FROM dataset_snapshots WHERE id = ?", [snap_id])[0][0]
    )

    # -- the downloaded zip goes back in through the import form (as after relabelling it elsewhere) ----------
    page.select_option("#i-format", "yolo")
    page.set_input_files("#i-file", str(zpath))
    page.fill("#i-name", "round trip")
    page.click("#import-btn")
    expect(page.locator("#import-result")).to_have_text(
        f"Imported {len(reviewed)} images (0 new, {len(reviewed)} already recorded), {n_boxes} boxes, as upload:round "
        "trip."
    )
    assert sum(len(current(station, i)) for i in reviewed) == n_boxes  # the same boxes came back: nothing changed
    shot(page, "dataset")

    # -- statistics show the relabels ------------------------------------------------------------------
    page.click("nav a[href='/review/stats']")
    page.wait_for_selector("body[data-ready='1']")
    expect(page.locator("#k-fp")).not_to_have_text("-")
    expect(page.locator("#k-missed")).to_have_text("1")
    expect(page.locator("#t-pareto tr").first).not_to_have_class("ui-empty-row")
    assert page.locator("#c-pareto").get_attribute("data-empty") is None
    # every chart is a Chart.js chart (static/vendor/chartjs) with a drawn area;
    # the Pareto bars are the table's counts
    page.wait_for_function(
        """() => ['c-defects', 'c-pareto', 'c-yield-hour', 'c-yield-shift', 'c-fp'].every((id) => {
            const c = window.Chart && window.Chart.getChart(id);
            return c && c.chartArea && c.chartArea.width > 50 && c.chartArea.height > 50; })"""
    )
    bars = page.evaluate("() => window.Chart.getChart('c-pareto').data.datasets.find((d) => d.type === 'bar').data")
    assert bars == [int(n) for n in page.locator("#t-pareto tr td:nth-child(2)").all_inner_texts()] and sum(bars) > 0
    page.screenshot(path=str(ARTIFACTS / "review_stats.png"), full_page=True)

    # -- every change has its audit row, by qa ------------------------------------------------------------
    audit = query(station, "SELECT user, action, object_type, object_id FROM audit WHERE user = 'qa' ORDER BY id")
    assert ("qa", "delete", "label", str(fp_label)) in audit
    assert ("qa", "add", "label", str(lid)) in audit
    assert ("qa", "move", "label", str(lid)) in audit
    assert ("qa", "mark_good", "image", str(good_id)) in audit
    assert ("qa", "create", "dataset_snapshot", str(snap_id)) in audit
    assert ("qa", "import_dataset", "dataset", "upload:round trip") in audit


def test_bulk_actions_in_the_gallery(served: tuple[Station, str], page: Page) -> None:
    station, base = served
    login_via_review(page, base)
    tiles = page.locator(".rv-tile")
    ids = [int(tiles.nth(i).get_attribute("data-image-id") or 0) for i in range(4)]
    expect(page.locator("#bulk-confirm")).to_be_disabled()
    for iid in ids[:2]:
        page.check(f'.rv-tile[data-image-id="{iid}"] input.rv-select')
    expect(page.locator("#selected-count")).to_have_text("2 selected")
    page.click("#bulk-confirm")
    expect(page.locator(f'.rv-tile[data-image-id="{ids[0]}"]')).to_have_count(0)  # reviewed: gone from the queue
    for iid in ids[2:]:
        page.check(f'.rv-tile[data-image-id="{iid}"] input.rv-select')
    page.click("#bulk-good")
    expect(page.locator("#bulk-good")).to_contain_text("Click again")  # destructive: asks for a second click
    assert not query(station, "SELECT 1 FROM image_reviews WHERE image_id IN (?, ?)", ids[2:])
    page.click("#bulk-good")
    expect(page.locator(f'.rv-tile[data-image-id="{ids[2]}"]')).to_have_count(0)
    reviews = dict(query(station, "SELECT image_id, verdict FROM image_review_latest"))
    assert reviews[ids[2]] == reviews[ids[3]] == "good" and {ids[0], ids[1]} <= reviews.keys()
    assert all(current(station, i) == [] for i in ids[2:])
    page.select_option("#f-reviewed", "yes")
    page.click("#apply")
    expect(page.locator(".rv-tile")).to_have_count(4)
    assert "reviewed=yes" in page.url
    shot(page, "queue_reviewed")
