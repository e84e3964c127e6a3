"""A real Station publishing to a real mosquitto broker on a free loopback port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from station.app import Station
from station.contracts import Outcome
from tests.fixtures_floor import Mosquitto, MqttCollector, running, wait_for, wait_parts

REPO = Path(__file__).resolve().parents[2]


def mqtt_section(broker: Mosquitto, tmp_path: Path, **kw: object) -> dict:
    return {
        "mqtt": {
            "port": broker.port,
            "outbox_path": str(tmp_path / "outbox.db"),
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 0.5,
            **kw,
        }
    }


def result_ids(col: MqttCollector) -> list[int]:
    return [json.loads(p)["part_id"] for p, _ in col.of("/result")]


def test_every_verdict_once_in_order_status_retained_online_offline(make_config, tmp_path):
    broker = Mosquitto(tmp_path).start()
    col = MqttCollector(broker.port, "station/line-7/#")
    try:
        cfg = make_config(
            name="line-7", publish=mqtt_section(broker, tmp_path), trigger={"type": "timer", "parts_per_minute": 1200}
        )
        station = Station(cfg, max_parts=30)
        with running(station) as results:
            wait_for(lambda: col.of("/online") == [(b"online", False)], 5, "online")
            wait_for(lambda: station.counters.snapshot().verdicts >= 10, 10, "10 verdicts")
            station.pause(True)  # two status changes: line paused, line running
            time.sleep(0.2)
            station.pause(False)
            wait_for(station.trigger_source_done, 20, "the 30 triggers (parts arriving while paused are not inspected)")
            n = station.counters.snapshot().verdicts
            assert 15 <= n < 30
            wait_for(lambda: len(col.of("/result")) >= n, 10, "every result message")
        wait_for(lambda: col.of("/online")[-1][0] == b"offline", 5, "offline on a clean stop")

        decided = [r.trigger.part_id for r in results.items]
        assert result_ids(col) == decided, "every verdict exactly once, in decision order"
        first = json.loads(col.of("/result")[0][0])
        assert first["station"] == "line-7" and first["outcome"] in {o.value for o in Outcome}
        assert {"part_id", "outcome", "reasons", "defects", "model_id", "config_hash", "timings_ms"} <= set(first)
        outcomes = [json.loads(p)["outcome"] for p, _ in col.of("/result")]
        assert outcomes == [r.verdict.outcome.value for r in results.items]
        statuses = [json.loads(p) for p, _ in col.of("/status")]
        assert statuses[0]["event"] is None and statuses[0]["station"] == "line-7", "the state on connect"
        changes = [(s["event"]["component"], s["event"]["message"]) for s in statuses[1:]]
        assert ("line", "paused") in changes and ("line", "running") in changes
        assert changes.index(("line", "paused")) < changes.index(("line", "running"))
        assert [s["event"] for s in statuses[1:]] == [
            {"component": e.component, "state": e.state, "message": e.message, "t_wall": e.t_wall}
            for e in results.status
        ], "every status change, in order"
        assert station.floor.mqtt.acked == station.floor.mqtt.published >= n + len(statuses)
    finally:
        col.close()

    late = MqttCollector(broker.port, "station/line-7/#", client_id="late-joiner")  # sees only retained messages
    try:
        wait_for(lambda: late.of("/online") and late.of("/status"), 5, "retained status and online")
        assert late.of("/online") == [(b"offline", True)]
        assert all(r for _, r in late.of("/status")) and late.of("/result") == [], "status is retained, results are not"
    finally:
        late.close()
        broker.stop()


def test_broker_restart_mid_run_loses_nothing(make_config, tmp_path):
    broker = Mosquitto(tmp_path, persistence=True).start()
    col = MqttCollector(broker.port, "station/s1/result", client_id="qa-dashboard", persistent=True)
    try:
        cfg = make_config(
            name="s1", publish=mqtt_section(broker, tmp_path), trigger={"type": "timer", "parts_per_minute": 600}
        )
        station = Station(cfg, max_parts=40)
        with running(station) as results:
            wait_for(lambda: len(col.of("/result")) >= 8, 10, "first results")
            broker.stop()  # mid-run
            wait_for(lambda: not station.floor.mqtt.connected, 5, "publisher notices")
            during = station.counters.snapshot().verdicts
            time.sleep(1.2)
            assert station.counters.snapshot().verdicts >= during + 8, "the line keeps deciding"
            assert station.floor.mqtt.health()["state"] == "warning"
            broker.start()
            wait_parts(station, 40)
            wait_for(lambda: len(set(result_ids(col))) >= 40, 15, "every result after the restart")
    finally:
        col.close()
        broker.stop()

    decided = [r.trigger.part_id for r in results.items]
    got = result_ids(col)
    firsts = list(dict.fromkeys(got))
    assert firsts == decided, "nothing lost, order kept"
    dups = len(got) - len(firsts)
    assert dups <= cfg.publish.mqtt.max_inflight, (
        f"QoS 1 may repeat only what was in flight at the cut ({dups} repeats)"
    )
    assert any(s.component == "mqtt" and s.state == "warning" for s in results.status), "the outage is reported"
    assert station.floor.mqtt.health()["outbox_dropped"] == 0


def test_outbox_carries_messages_across_a_station_restart(make_config, tmp_path):
    broker = Mosquitto(tmp_path)  # not started: the broker is away during the first run
    cfg = make_config(
        name="s2", publish=mqtt_section(broker, tmp_path), trigger={"type": "timer", "parts_per_minute": 1200}
    )
    first = Station(cfg, max_parts=12)
    first.start()
    try:
        wait_parts(first, 12)
    finally:
        first.stop()
    assert first.floor.mqtt.published == 0

    broker.start()
    col = MqttCollector(broker.port, "station/s2/result")
    try:
        second = Station(cfg, max_parts=5)  # same database and outbox: a restarted station
        with running(second):
            wait_parts(second, 5)
            wait_for(lambda: len(col.of("/result")) >= 17, 10, "the stored 12 then the new 5")
    finally:
        col.close()
        broker.stop()
    assert result_ids(col) == list(range(1, 18)), "the first run's results first, then the second's, each once"


def test_last_will_says_offline_when_the_station_dies(tmp_path):
    broker = Mosquitto(tmp_path).start()
    col = MqttCollector(broker.port, "station/doomed/online")
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from station.bus import Bus
        from station.config import MqttConfig
        from station.publish.mqtt import MqttPublisher
        pub = MqttPublisher(MqttConfig(port={broker.port}, outbox_path={str(tmp_path / "o.db")!r}, keepalive_s=5),
        "doomed", Bus().subscribe("m"))
        pub.start()
        while not pub.connected:
            time.sleep(0.01)
        print("up", flush=True)
        time.sleep(60)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"up"
        wait_for(lambda: col.of("/online") == [(b"online", False)], 5, "online")
        proc.send_signal(signal.SIGKILL)  # no clean stop: the broker must publish the will
        proc.wait(5)
        wait_for(lambda: len(col.of("/online")) == 2, 5, "last will")
        assert col.of("/online")[-1] == (b"offline", False)
    finally:
        if proc.poll() is None:
            proc.kill()
        col.close()
        broker.stop()
