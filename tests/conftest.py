"""Fixtures for every test directory."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.host_stalls import HostStallProbe


@pytest.fixture
def host_stalls() -> Iterator[HostStallProbe]:
    """A :class:`~tests.host_stalls.HostStallProbe` running for the test: edge-timing checks excuse host stalls only."""
    with HostStallProbe() as probe:
        yield probe
