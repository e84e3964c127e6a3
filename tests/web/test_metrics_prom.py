"""/metrics through prometheus_client: the page parses with Prometheus' own parser, and the
per-stage latency histograms count every part a real station decided; one registry per app."""

from __future__ import annotations

import math
from typing import Any

import prometheus_client
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from station.app import Station
from station.store import queries
from station.store.db import open_db
from station.timings import StageTimings
from station.web import create_app

from .helpers import decided, fastapi_app, wait_for

# every family the hand-written page had (their names and labels must not change)
FAMILIES = {
    "station_info": "gauge",
    "station_running": "gauge",
    "station_paused": "gauge",
    "station_triggers": "counter",
    "station_frames": "counter",
    "station_dropped": "counter",
    "station_verdicts": "counter",
    "station_rejects_scheduled": "counter",
    "station_rejects_fired": "counter",
    "station_records_written": "counter",
    "station_records_dropped": "counter",
    "station_verdicts_by_outcome": "counter",
    "station_yield_ratio": "gauge",
    "station_parts_per_minute": "gauge",
    "station_parts_in_flight": "gauge",
    "station_records_pending": "gauge",
    "station_records_spilled": "gauge",
    "station_rejects_pending": "gauge",
    "station_counters_reconciled": "gauge",
    "station_alarms_active": "gauge",
    "station_bus_dropped": "counter",
    "station_web_events_dropped": "counter",
    "station_web_live_clients": "gauge",
    "station_timing_p50_ms": "gauge",
    "station_timing_p95_ms": "gauge",
    "station_stage_duration_seconds": "histogram",
}


def test_stage_histograms_count_every_decided_part(client: TestClient, station: Station) -> None:
    decided(
        station, 8
    )  # the first parts are FAILSAFE while the reference learns (acquire, queue only), then full timings
    wait_for(lambda: station.recorder.pending == 0, 10, "records written")
    r = client.get("/metrics")
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    fams = {f.name: f for f in text_string_to_metric_families(r.text)}
    assert {n: fams[n].type for n in FAMILIES if n in fams} == FAMILIES
    hist = fams["station_stage_duration_seconds"]
    by_stage: dict[str, dict[str, Any]] = {}
    for s in hist.samples:
        by_stage.setdefault(s.labels["stage"], {"buckets": []})
        if s.name.endswith("_bucket"):
            by_stage[s.labels["stage"]]["buckets"].append((float(s.labels["le"]), s.value))
        else:
            by_stage[s.labels["stage"]][s.name.rsplit("_", 1)[1]] = s.value
    assert {"acquire", "inspect", "decide", "total"} <= set(by_stage) and "deadline_slack_ms" not in by_stage
    verdicts = station.counters.snapshot().verdicts
    with open_db(station.cfg.store.db_path, migrate=False) as db:
        rows = queries.recent_inspections(db, 100)
    assert len(rows) == verdicts >= 8
    for stage, h in by_stage.items():
        buckets = h["buckets"]
        les = [b[0] for b in buckets]
        counts = [b[1] for b in buckets]
        assert les == sorted(les) and les[-1] == math.inf, stage
        assert counts == sorted(counts) and counts[-1] == h["count"], f"{stage}: buckets are cumulative, +Inf = count"
        recorded = [r["timings"][stage] for r in rows if stage in r["timings"]]
        assert h["count"] == len(recorded), stage
        assert h["sum"] == pytest.approx(sum(recorded) / 1000, rel=1e-6, abs=1e-6), stage
        for le, c in buckets:  # each bucket holds exactly the parts at or under its bound
            assert c == sum(1 for ms in recorded if ms / 1000 <= le * (1 + 1e-12)), (stage, le)
    assert by_stage["acquire"]["count"] == verdicts > by_stage["total"]["count"] > 0
    # a second app on the same station has its own registry (several stations per process: tests, the plant
    # tier); nothing lands in the process-wide one
    with TestClient(create_app(station)) as other:
        assert fastapi_app(other).state.web.metrics_registry is not fastapi_app(client).state.web.metrics_registry
        assert "station_verdicts_total " in other.get("/metrics").text
    assert not [f.name for f in prometheus_client.REGISTRY.collect() if f.name.startswith("station_")]


def test_stage_timings_buckets() -> None:
    t = StageTimings((1, 10))
    t.observe({"infer": 1.0, "total": 10.5, "deadline_slack_ms": -3.0})
    t.observe({"infer": 0.2, "total": math.nan})
    t.observe({"infer": 7})
    snap = {h.stage: h for h in t.snapshot()}
    assert set(snap) == {"infer", "total"}
    assert snap["infer"].bounds_ms == (1.0, 10.0, math.inf)
    assert (
        snap["infer"].cumulative == (2, 3, 3)
        and snap["infer"].count == 3
        and snap["infer"].sum_ms == pytest.approx(8.2)
    )
    assert snap["total"].cumulative == (0, 0, 1) and snap["total"].sum_ms == 10.5
    with pytest.raises(ValueError, match="buckets_ms"):
        StageTimings((10, 1))
