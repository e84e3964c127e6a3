"""Helpers shared by the web tests (fixtures are in conftest.py)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from station.app import Station
from station.config import StationConfig, parse_config
from station.store.db import open_db
from station.web import auth
from tests.fixtures_floor import wait_for
from tests.station_configs import store_section

if TYPE_CHECKING:
    from playwright.sync_api import Page

PASSWORDS = {"op": "operator-secret-1", "qa": "qa-secret-12345", "boss": "admin-secret-123"}
ROLES = {"op": "operator", "qa": "qa", "boss": "admin"}


def web_station_config(tmp_path: Path, **overrides: Any) -> StationConfig:
    """A small synthetic line writing into ``tmp_path``; top-level sections can be overridden."""
    data: dict[str, Any] = {
        "name": "line-7",
        "cameras": [{"type": "synthetic", "id": "cam0", "width": 640, "height": 400, "defect_rate": 0.5, "seed": 11}],
        "trigger": {"type": "software"},
        "inspector": {"type": "reference", "learn_parts": 3},
        "reject": {"travel_ms": 600, "safety_margin_ms": 100, "pulse_ms": 20},
        "store": store_section(tmp_path, keep_pass_every=5),
        "web": {"port": 0},
    }
    for k, v in overrides.items():
        data[k] = {**data[k], **v} if isinstance(data.get(k), dict) and isinstance(v, dict) and k != "trigger" else v
    return parse_config(data)


_USER_ROWS: list[tuple[Any, ...]] = []


def add_users(db_path: Path) -> None:
    """The three test users (one per role).

    They are created once per test session with the functions the CLI uses
    (``auth.create_user``: argon2 hashing is slow on purpose); each station
    database then gets a copy of those rows.
    """
    if not _USER_ROWS:
        first = open_db(db_path)
        try:
            for name, pw in PASSWORDS.items():
                auth.create_user(first, name, pw, ROLES[name])
            _USER_ROWS.extend(
                first.execute("SELECT username, password_hash, role, created_at, disabled FROM users").fetchall()
            )
        finally:
            first.close()
        return
    db = open_db(db_path)
    try:
        db.conn.executemany(
            "INSERT INTO users (username, password_hash, role, created_at, disabled) VALUES (?, ?, ?, ?, ?)", _USER_ROWS
        )
        db.conn.commit()
    finally:
        db.close()


def try_login(client: httpx.Client, username: str, password: str | None = None) -> httpx.Response:
    """One login attempt through the API, with the login form's CSRF token (the password from ``PASSWORDS`` unless
    given); the caller judges the answer."""
    tok = client.get("/api/login").json()["csrf"]
    return client.post(
        "/api/login",
        json={"username": username, "password": password or PASSWORDS[username]},
        headers={"X-CSRF-Token": tok},
    )


def login(client: httpx.Client, username: str, password: str | None = None) -> str:
    """Log ``username`` in through the API; returns the session's CSRF token."""
    r = try_login(client, username, password)
    assert r.status_code == 200, r.text
    return r.json()["csrf"]


def decided(station: Station, n: int, timeout_s: float = 15.0) -> None:
    """Trigger parts until ``n`` more verdicts exist (software trigger)."""
    start = station.counters.snapshot().verdicts
    for _ in range(n):
        assert station.trigger("test") is not None
        time.sleep(0.03)
    wait_for(lambda: station.counters.snapshot().verdicts >= start + n, timeout_s, f"{n} verdicts")


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Outside CI a machine without Debian's chromium skips the browser tests; in CI they must run.
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"),
    reason="needs /usr/bin/chromium (apt-get install chromium)",
)


@contextlib.contextmanager
def served_url(station: Station) -> Iterator[str]:
    """``station``'s web app served by uvicorn on a free 127.0.0.1 port: its base URL, stopped after."""
    from station.web.server import start_in_thread

    server, thread, port = start_in_thread(station, station.cfg.web)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def fastapi_app(client: TestClient) -> FastAPI:
    """The FastAPI app behind ``client`` (TestClient types it as any ASGI callable)."""
    app = client.app
    assert isinstance(app, FastAPI)
    return app


def browser_login(page: Page, base: str, path: str, user: str, ready: bool = False) -> None:
    """Opens ``path`` signed out, is sent to the login form, signs in as ``user`` (password from ``PASSWORDS``) and
    lands back on ``path``; ``ready``: then waits until the page says it has loaded its data (``data-ready``)."""
    page.goto(base + path)
    page.wait_for_url(f"{base}/login?next={path}")
    page.fill("#username", user)
    page.fill("#password", PASSWORDS[user])
    page.click("#login-btn")
    page.wait_for_url(base + path)
    if ready:
        page.wait_for_selector("body[data-ready='1']")


@pytest.fixture(name="viewport")
def panel_viewport() -> dict[str, int]:
    """The line-side panel, 1920x1080: a test module that imports this fixture opens its pages at that size (it
    overrides the ``viewport`` of tests/web/conftest.py)."""
    return {"width": 1920, "height": 1080}
