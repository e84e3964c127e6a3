"""A desired model per station: a pinned station keeps its model while its group rolls forward, follows the
group again when unpinned, and ``plant rollback`` writes a group's previous model back (the command line)."""

from __future__ import annotations

import hashlib
import json

import psycopg

from station.contracts import Outcome
from station.plant import cli
from station.plant.controller import Limits
from station.plant.desired import desired_now
from station.plant.ingest import Ingest
from tests.fixtures_plant import Plant, wait_until
from tests.integration.plant.test_rollout import LineStation, onnx_model


def test_a_pinned_station_keeps_its_model_while_its_group_rolls_forward(plant: Plant, tmp_path, capsys):
    v1, v2 = onnx_model(tmp_path / "v1.onnx", 1.0), onnx_model(tmp_path / "v2.onnx", 3.0)
    sha1, sha2 = (hashlib.sha256(p.read_bytes()).hexdigest() for p in (v1, v2))
    kv = ["--nats", plant.engines.nats.url, "--prefix", plant.prefix]
    ing = Ingest(plant.dsn, plant.engines.nats.url, prefix=plant.prefix, batch=200).start()
    pinned = LineStation(plant, "pin-1", "canary", lambda _m: Outcome.PASS).start()
    other = LineStation(plant, "pin-2", "canary", lambda _m: Outcome.PASS).start()
    conn = psycopg.connect(plant.dsn)
    try:
        ctl = plant.rollout(conn)
        limits = Limits(min_parts=20, max_reject_rate=0.2, max_failsafe_rate=0.01, max_latency_ms_p95=100, timeout_s=60)
        assert ctl.promote(v1, "v1", ["canary"], limits)["state"] == "done"
        wait_until(lambda: pinned.follower.version == other.follower.version == "v1", 20, "both on v1")

        assert cli.main(["pin", *kv, "--dsn", plant.dsn, "--station", "pin-1", "--model", sha1[:10]]) == 0
        assert json.loads(capsys.readouterr().out)["pinned"]["sha256"] == sha1
        wait_until(lambda: pinned.follower.pinned is not None, 20, "the station sees its pin")
        assert cli.main(["pin", *kv, "--dsn", plant.dsn, "--station", "pin-1", "--model", "deadbeef00"]) == 2

        done = ctl.promote(v2, "v2", ["canary"], limits)  # the group rolls forward, judged on pin-2 alone
        assert done["state"] == "done", done
        wait_until(lambda: other.follower.version == "v2", 20, "the unpinned station runs v2")
        assert pinned.follower.version == "v1" and pinned.model_id == sha1[:12] and pinned.follower.swaps == 1
        assert pinned.follower.report().pinned and not other.follower.report().pinned
        now = desired_now(plant.engines.nats.url, plant.prefix)
        assert now["groups"]["canary"]["sha256"] == sha2 and now["stations"] == {
            "pin-1": {"version": "v1", "key": f"models/{sha1}.onnx", "sha256": sha1}
        }

        assert cli.main(["unpin", *kv, "--station", "pin-1"]) == 0
        assert json.loads(capsys.readouterr().out)["unpinned"] is True
        wait_until(lambda: pinned.follower.version == "v2", 20, "unpinned: it follows its group to v2")
        assert not pinned.follower.report().pinned
        assert cli.main(["unpin", *kv, "--station", "pin-1"]) == 0
        assert json.loads(capsys.readouterr().out)["unpinned"] is False

        assert cli.main(["rollback", *kv, "--group", "canary"]) == 0
        assert json.loads(capsys.readouterr().out)["desired"]["sha256"] == sha1
        wait_until(lambda: pinned.follower.version == other.follower.version == "v1", 20, "the group rolled back")
        assert other.follower.swaps == pinned.follower.swaps == 3, (
            "v1, v2, v1 again: the pin held v1 through the rollout"
        )
    finally:
        conn.close()
        for st in (pinned, other):
            st.stop()
        ing.stop()
