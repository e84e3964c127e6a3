"""Fixtures that build a whole station on real parts in a temp directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from station.config import StationConfig, parse_config
from tests.station_configs import store_section


def station_config(tmp_path: Path, **overrides: Any) -> StationConfig:
    """A fast synthetic-line config writing into ``tmp_path``; sections can be overridden."""
    data: dict[str, Any] = {
        "cameras": [{"type": "synthetic", "id": "cam0", "width": 640, "height": 400, "defect_rate": 0.4, "seed": 7}],
        "trigger": {"type": "timer", "parts_per_minute": 1200},
        "inspector": {"type": "reference", "learn_parts": 10},
        "reject": {"travel_ms": 400, "safety_margin_ms": 100, "pulse_ms": 20},
        "store": store_section(tmp_path, keep_pass_every=10),
        "web": {"enabled": False},
        # SCHED_FIFO for the station's threads when permitted (root in CI): reject edges on time
        # even when other processes load the CPU (see docs/architecture.md)
        "pipeline": {"realtime_priority": 1},
    }
    for k, v in overrides.items():
        data[k] = v
    return parse_config(data)


@pytest.fixture
def make_config(tmp_path: Path):
    """Factory: ``make_config(**section_overrides) -> StationConfig``."""
    return lambda **kw: station_config(tmp_path, **kw)
