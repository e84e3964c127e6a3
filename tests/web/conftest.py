"""Fixtures for the web tests: a real Station on a synthetic line in tmp_path, real users, a TestClient."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, ViewportSize
from fastapi.testclient import TestClient

from station.app import Station
from station.web import create_app

from .helpers import CHROMIUM, CHROMIUM_ARGS, add_users, web_station_config


@pytest.fixture
def make_station(tmp_path: Path) -> Iterator[Callable[..., Station]]:
    """Factory: ``make_station(**config_overrides)`` -> a started Station with the test users; stopped at teardown."""
    made: list[Station] = []

    def make(**overrides: Any) -> Station:
        cfg = web_station_config(tmp_path, **overrides)
        st = Station(cfg)
        add_users(cfg.store.db_path)
        st.start()
        made.append(st)
        return st

    yield make
    for st in made:
        st.stop()


@pytest.fixture
def station(make_station: Callable[..., Station]) -> Station:
    """A running station with a software trigger."""
    return make_station()


@pytest.fixture
def client(station: Station) -> Iterator[TestClient]:
    """A TestClient on the station's app (http://testserver)."""
    with TestClient(create_app(station)) as c:
        yield c


@pytest.fixture
def viewport() -> ViewportSize:
    """Browser window size; a test module overrides it (the operator screen is 1920x1080)."""
    return {"width": 1600, "height": 1000}


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium driven by Playwright (no browser download)."""
    from playwright.sync_api import expect, sync_playwright

    # Assertions wait for the page; a busy 2-core CI machine needs more than the default 5 s.
    expect.set_options(timeout=20_000)

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser, viewport: ViewportSize) -> Iterator[Page]:
    """A fresh page; any JavaScript error on it fails the test."""
    ctx = browser.new_context(viewport=viewport, accept_downloads=True)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
