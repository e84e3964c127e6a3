"""Fixtures for the web tests: a real Station on a synthetic line in tmp_path, real users, a TestClient."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from station.app import Station
from station.web import create_app

from .helpers import add_users, web_station_config


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
