"""Fixtures for every test directory."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator

import pytest

from station.rt import freeze_heap
from tests.host_stalls import HostStallProbe


@pytest.fixture
def host_stalls() -> Iterator[HostStallProbe]:
    """A :class:`~tests.host_stalls.HostStallProbe` running for the test: edge-timing checks excuse host stalls only."""
    # Flush what is waiting to be written (a CI machine has just installed a virtualenv of several
    # GB, the previous test wrote images and databases) before a timed run, not during it.
    os.sync()
    freeze_heap()  # as Station.start() does: the test process's heap holds pytest, torch, Ultralytics
    try:
        with HostStallProbe() as probe:
            yield probe
    finally:
        gc.unfreeze()


_reruns: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Keep why a test was rerun (pytest-rerunfailures shows only that it was)."""
    if report.outcome == "rerun":
        lines = [line for line in report.longreprtext.splitlines() if line.startswith("E ")]
        _reruns.append((report.nodeid, "\n".join(lines[:6]) or report.longreprtext[-500:]))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print why each rerun test failed its first run."""
    if _reruns:
        terminalreporter.section("why tests were rerun")
        for nodeid, why in _reruns:
            terminalreporter.write_line(f"{nodeid}\n{why}")
