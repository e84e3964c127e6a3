"""One service lifecycle: started in order, stopped in reverse; a failed start leaves nothing running."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from station.app import Station
from station.config import parse_config
from station.services import Services


def test_start_in_order_stop_in_reverse_and_a_failed_start_unwinds() -> None:
    calls: list[str] = []
    s = Services()
    for name in ("a", "b", "c"):
        s.add(name, functools.partial(calls.append, f"start {name}"), functools.partial(calls.append, f"stop {name}"))
    with pytest.raises(ValueError, match="added twice"):
        s.add("a", lambda: None, lambda: None)
    s.start()
    assert s.running == ["a", "b", "c"]
    s.stop()
    assert calls == ["start a", "start b", "start c", "stop c", "stop b", "stop a"] and s.running == []

    calls.clear()

    def boom() -> None:
        raise OSError("camera cam1 not found")

    s2 = Services()
    s2.add("a", lambda: calls.append("start a"), lambda: calls.append("stop a"))
    s2.add("b", boom, lambda: calls.append("stop b"))
    s2.add("c", lambda: calls.append("start c"), lambda: calls.append("stop c"))
    with pytest.raises(OSError, match="cam1"):
        s2.start()
    assert calls == ["start a", "stop a"] and s2.running == []


def test_station_services_order(tmp_path: Path) -> None:
    """The trigger starts last and stops first; the scheduler drains after the line, before the outputs; the recorder
    stops last."""
    cfg = parse_config(
        {"store": {"db_path": str(tmp_path / "s.db"), "images_dir": str(tmp_path / "img")}, "web": {"enabled": False}}
    )
    st = Station(cfg)
    try:
        names = st.services.names
        assert names[0] == "recorder" and names[-2:] == ["trigger", "watchdog"]
        assert names.index("output") < names.index("scheduler") < names.index("line") < names.index("trigger")
        assert names.index("floor") < names.index("scheduler")
        st.start()
        assert st.running and st.services.running == names
    finally:
        st.stop()
    assert not st.running and st.services.running == []
