"""The live API on a real station: event stream, live image, counters, rejects, alarms, /health, /metrics."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Generator, Iterator
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from station.app import Station
from station.contracts import Frame, Outcome, PartResult, StatusEvent, Trigger, Verdict
from station.store.db import open_db
from station.web import create_app
from station.web.live import LiveImages, RateMeter, select_events
from station.web.server import serve, start_in_thread

from .helpers import decided, login, try_login, wait_for


@pytest.fixture
def served(station: Station) -> Iterator[tuple[Station, str]]:
    """The station's app on a real uvicorn server on 127.0.0.1 (free port); yields (station, base_url)."""
    server, thread, port = start_in_thread(station, station.cfg.web)
    yield station, f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    assert not thread.is_alive()


def read_events(lines: Iterator[str], until: Any, timeout_s: float = 15.0) -> list[tuple[str | None, Any]]:
    """Parse SSE messages from ``lines`` (keep the iterator: dropping it closes the connection) until
    ``until(events)``."""
    events: list[tuple[str | None, Any]] = []
    name, deadline = None, time.monotonic() + timeout_s
    for line in lines:
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            events.append((name, json.loads(line[6:])))
            if until(events):
                return events
        if time.monotonic() > deadline:
            break
    pytest.fail(f"event stream ended or timed out; got {[e[0] for e in events]}")


def web_subs(station: Station) -> list[Any]:
    return [s for s in station.bus.subscriptions() if s.name.startswith("web-live-")]


def test_event_stream_results_counters_and_unsubscribe(served: tuple[Station, str]) -> None:
    station, base = served
    decided(station, 4)  # the reference inspector learns from the first 3 parts
    with httpx.Client(base_url=base, timeout=20) as c, c.stream("GET", "/api/events") as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        got_hello: list[Any] = []

        def until(evs: list[tuple[str, Any]]) -> bool:
            if evs and evs[0][0] == "hello" and not got_hello:
                got_hello.append(evs[0][1])
                assert len(web_subs(station)) == 1  # one bus subscription per client
                threading.Thread(target=decided, args=(station, 3), daemon=True).start()
            results = [d for n, d in evs if n == "result"]
            return len(results) >= 3 and any(
                n == "counters" and d["verdicts"] >= results[-1]["part_id"] for n, d in evs
            )

        events = read_events(resp.iter_lines(), until)
    hello = got_hello[0]
    assert hello["status"]["station"] == "line-7" and hello["counters"]["triggers"] >= 4
    assert hello["result"]["part_id"] == 4
    results = [d for n, d in events if n == "result"]
    assert [r["part_id"] for r in results][:3] == [5, 6, 7]
    assert all(r["outcome"] in {o.value for o in Outcome} for r in results)
    assert results[0]["frames"][0]["width"] == 640 and "timings_ms" in results[0]
    counters = [d for n, d in events if n == "counters"][-1]
    assert counters["PASS"] + counters["FAIL"] + counters["UNCERTAIN"] + counters["FAILSAFE"] == counters["verdicts"]
    # the client is gone: its subscription too
    wait_for(lambda: not web_subs(station), 10, "the SSE subscription to be removed")


def test_live_clients_are_limited(make_station: Any) -> None:
    station = make_station(web={"max_live_clients": 1})
    server, thread, port = start_in_thread(station, station.cfg.web)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            with c.stream("GET", "/api/events") as first:
                lines = first.iter_lines()
                assert isinstance(lines, Generator)  # closed below (typed Iterator by httpx)
                read_events(lines, lambda evs: evs[0][0] == "hello")
                with c.stream("GET", "/api/events") as refused:
                    assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
                assert len(web_subs(station)) == 1
                lines.close()
            wait_for(lambda: not web_subs(station), 10, "the first client to be released")
            with c.stream("GET", "/api/events") as again:
                assert read_events(again.iter_lines(), lambda evs: evs[0][0] == "hello")[0][1]["status"]["running"]
    finally:
        server.should_exit = True
        thread.join(10)


def test_event_stream_ends_when_the_viewer_session_expires(make_station: Any) -> None:
    station = make_station(web={"anonymous_view": False})
    server, thread, port = start_in_thread(station, station.cfg.web)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            assert c.get("/api/events").status_code == 401
            assert try_login(c, "qa").status_code == 200
            db = open_db(station.cfg.store.db_path, migrate=False)
            try:
                db.execute("UPDATE sessions SET expires_at = ?", [time.time() + 1.5])
                db.conn.commit()
            finally:
                db.close()
            t0 = time.monotonic()
            with c.stream("GET", "/api/events") as resp:
                assert resp.status_code == 200
                names = [
                    line for line in resp.iter_lines() if line.startswith("event: ")
                ]  # ends when the server ends it
            assert names[0] == "event: hello" and time.monotonic() - t0 < 8
            assert c.get("/api/events").status_code == 401
    finally:
        server.should_exit = True
        thread.join(10)


def test_serve_runs_until_stop_event(station: Station) -> None:
    stop = threading.Event()
    cfg = station.cfg.web.model_copy(update={"port": 0})
    t = threading.Thread(target=serve, args=(station, cfg), kwargs={"stop_event": stop}, daemon=True)
    t.start()
    time.sleep(1.0)
    assert t.is_alive()
    stop.set()
    t.join(10)
    assert not t.is_alive()


def test_live_image_is_the_last_part_downscaled(make_station: Any) -> None:
    station = make_station(cameras=[{"type": "synthetic", "id": "cam0", "width": 1280, "height": 800, "seed": 3}])
    with TestClient(create_app(station)) as c:
        assert c.get("/api/live/image").status_code == 404  # no part yet
        decided(station, 2)
        res = station.last_result  # later parts may come: compare with this one
        last = res.verdict.part_id
        # the live view takes results from its own bus subscription: it may be a moment behind
        wait_for(
            lambda: c.get("/api/live/image", params={"part_id": last}).status_code == 200,
            10,
            "the last part's live image",
        )
        r = c.get("/api/live/image", params={"part_id": last})
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        assert int(r.headers["X-Part-Id"]) == last and r.headers["X-Camera-Id"] == "cam0"
        assert (int(r.headers["X-Frame-Width"]), int(r.headers["X-Frame-Height"])) == (1280, 800)
        img = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_UNCHANGED)
        assert img is not None and img.shape[:2] == (625, 1000)  # web.live_width 1000, aspect kept
        # the encoded image is the frame, not something else
        frame = cv2.resize(res.frames[0].image, (1000, 625), interpolation=cv2.INTER_AREA)
        assert np.abs(img.astype(int) - frame.astype(int)).mean() < 4
        again = c.get("/api/live/image", params={"part_id": last})
        assert again.content == r.content and "max-age" in again.headers["cache-control"]


def _result(part_id: int, image: np.ndarray | None, outcome: Outcome = Outcome.PASS) -> PartResult:
    trig = Trigger(part_id, part_id, 0, None, "test", time.time())
    v = Verdict(part_id, outcome, (), (), "m", "c", "cal", {})
    frames = (Frame(part_id, "cam0", image, 0, {}),) if image is not None else ()
    return PartResult(trig, v, frames)


def test_live_images_rate_limit_and_cache() -> None:
    li = LiveImages(fps=5, max_width=100, quality=80)
    img = np.full((50, 200), 128, np.uint8)
    a = li.get(_result(1, img), 1, now=10.0)
    assert a is not None and a.part_id == 1 and (a.width, a.height) == (100, 25)
    b = li.get(_result(2, img), 2, now=10.1)  # sooner than 1/5 s: the newest encoded image instead
    assert b is not None and b.part_id == 1 and li.encoded == 1
    c = li.get(_result(3, img), 3, now=10.25)
    assert c is not None and c.part_id == 3 and li.encoded == 2
    cached = li.get(_result(3, img), 1, now=10.3)
    assert cached is not None and cached.part_id == 1  # still cached
    d = li.get(_result(4, None), 4, now=11.0)  # a part without a frame (dropped): the newest image
    assert d is not None and d.part_id == 3
    deep = LiveImages(fps=5, max_width=100, quality=80).get(_result(5, np.full((10, 10), 4095, np.uint16)), 5)
    assert deep is not None
    shown = cv2.imdecode(np.frombuffer(deep.jpeg, np.uint8), cv2.IMREAD_UNCHANGED)
    assert shown is not None and shown.mean() > 250  # 12-bit scaled to 8-bit


def test_rate_meter_parts_per_minute() -> None:
    m = RateMeter(window_s=60)
    assert m.per_minute(0, now=0.0) is None
    for i in range(0, 121):
        m.sample(i * 5, now=float(i))  # 5 parts per second
    assert m.per_minute(600, now=120.0) == pytest.approx(300.0)


def test_select_events_keeps_non_pass_and_newest() -> None:
    ev = StatusEvent("cam", "alarm", "lost", 1.0)
    failed, newest = _result(2, None, Outcome.FAIL), _result(4, None)
    batch = [_result(1, None), failed, _result(3, None), ev, newest]
    assert [getattr(e, "verdict", e) for e in select_events(batch)] == [failed.verdict, ev, newest.verdict]


def test_counters_rejects_status_and_pause(client: TestClient, station: Station) -> None:
    decided(station, 12)
    wait_for(lambda: station.recorder.pending == 0 and station.counters.snapshot().records_written >= 12, 10, "records")
    c = client.get("/api/counters").json()
    snap = station.counters.snapshot()
    assert c["verdicts"] == snap.verdicts == 12 and c["triggers"] == 12
    assert c["yield_pct"] == pytest.approx(100 * snap.PASS / snap.verdicts, abs=0.01)
    assert c["rejects"] == snap.FAIL + snap.FAILSAFE + snap.UNCERTAIN  # uncertain_action: reject (default)
    rejects = client.get("/api/rejects", params={"limit": 50}).json()
    assert len(rejects) == c["rejects"] and all(r["outcome"] != "PASS" for r in rejects)
    assert [r["part_id"] for r in rejects] == sorted((r["part_id"] for r in rejects), reverse=True)
    assert any("learning" in " ".join(r["reasons"]) for r in rejects)  # the first parts: FAILSAFE while learning
    csrf = login(client, "op")
    h = {"X-CSRF-Token": csrf}
    s = client.post("/api/line/pause", json={"reason": "material change"}, headers=h).json()
    assert s["paused"] and s["pause"]["reason"] == "material change" and s["pause"]["by"] == "op"
    assert client.get("/api/status").json()["pause"]["reason"] == "material change"
    assert client.post("/api/trigger", headers=h).status_code == 409
    assert client.post("/api/line/pause", json={"reason": "   "}, headers=h).status_code == 422
    assert client.post("/api/line/pause", json={}, headers=h).status_code == 422
    assert client.post("/api/line/resume", headers=h).json()["paused"] is False
    assert client.post("/api/trigger", headers=h).status_code == 200


def test_alarm_acknowledge(client: TestClient, station: Station) -> None:
    station.alarms.report("camera:cam9", "alarm", "cable unplugged")

    def row() -> Any:
        log = client.get("/api/alarms").json()["log"]
        return next((a for a in log if a["component"] == "camera:cam9"), None)

    a = wait_for(row, 10, "alarm row")
    listing = client.get("/api/alarms").json()
    assert listing["unacknowledged"] >= 1 and any(x["component"] == "camera:cam9" for x in listing["active"])
    csrf = login(client, "op")
    h = {"X-CSRF-Token": csrf}
    r = client.post(f"/api/alarms/{a['id']}/ack", headers=h)
    assert r.status_code == 200 and r.json()["acknowledged_by"] == "op"
    again = client.post(f"/api/alarms/{a['id']}/ack", headers=h)
    assert again.status_code == 409 and "op" in again.json()["detail"]
    assert client.post("/api/alarms/999999/ack", headers=h).status_code == 404
    assert row()["acknowledged_by"] == "op"
    assert client.post("/api/alarms/ack-all", headers=h).json()["acknowledged"] >= 0
    assert client.get("/api/alarms").json()["unacknowledged"] == 0


def test_health_and_metrics(client: TestClient, station: Station) -> None:
    decided(station, 8)
    wait_for(lambda: station.recorder.pending == 0 and not station.reconcile(), 10, "settled counters")
    h = client.get("/health")
    assert h.status_code == 200
    body = h.json()
    assert body["running"] and body["reconcile"] == [] and body["components"]["camera:cam0"]["state"] == "ok"
    assert body["records"] == {"written": 8, "dropped": 0, "pending": 0, "spilled": 0}
    text = client.get("/metrics")
    assert text.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for line in text.text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) station_\w+ ", line), line
            continue
        m = re.match(r"^(station_\w+)(\{[^}]*\})? (\S+)$", line)
        assert m, f"not a Prometheus sample line: {line!r}"
        samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    snap = station.counters.snapshot()
    assert samples["station_verdicts_total"] == snap.verdicts == 8
    assert (
        sum(
            samples[f'station_verdicts_by_outcome_total{{outcome="{o}"}}']
            for o in ("PASS", "FAIL", "UNCERTAIN", "FAILSAFE")
        )
        == 8
    )
    assert samples["station_records_written_total"] == 8 and samples["station_counters_reconciled"] == 1
    assert samples["station_records_pending"] == samples["station_records_spilled"] == 0
    assert samples['station_bus_dropped_total{subscriber="recorder"}'] == 0
    assert samples['station_timing_p50_ms{stage="total"}'] > 0
    station.stop()
    assert client.get("/health").status_code == 503


def test_health_reconciles_on_a_running_line(make_station: Any) -> None:
    """Single reconcile() checks on a running line report parts in transit; /health reports only lasting problems."""
    station = make_station(trigger={"type": "timer", "parts_per_minute": 1200})
    with TestClient(create_app(station)) as c:
        wait_for(lambda: station.counters.snapshot().verdicts >= 10, 15, "10 parts")
        for _ in range(30):
            body = c.get("/health").json()
            assert body["running"] and body["reconcile"] == [], body["reconcile"]
        assert "station_counters_reconciled 1" in c.get("/metrics").text
