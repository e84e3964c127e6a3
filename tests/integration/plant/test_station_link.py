"""A real Station with a `plant:` section: its results reach PostgreSQL through the uplink and the
ingest; with the plant unreachable it runs exactly as without one, storing for later."""

from __future__ import annotations

import psycopg

from station.app import Station
from station.config import config_hash
from station.plant import wire
from station.plant.engines import free_port
from station.plant.ingest import Ingest
from tests.fixtures_floor import running, wait_for
from tests.fixtures_plant import Plant, wait_until


def test_station_results_and_images_reach_the_plant(make_config, plant: Plant, tmp_path):
    ing = Ingest(plant.dsn, plant.engines.nats.url, prefix=plant.prefix).start()
    link = plant.link(outbox_path=str(tmp_path / "plant.db"), line="line-9", product="cell", images="rejects")
    station = Station(make_config(name="st-real", plant=link.model_dump(mode="json")), max_parts=30)
    with running(station) as results:
        wait_for(station.trigger_source_done, 30, "30 triggers")
        wait_until(
            lambda: (
                station.uplink.outbox_pending == 0 and station.uplink.published >= station.counters.snapshot().verdicts
            ),
            30,
            "all sent",
        )
    decided = {r.trigger.seq: r for r in results.items}
    wait_until(lambda: ing.stats.written >= len(decided), 30, "all ingested")
    ing.stop()
    with psycopg.connect(plant.dsn) as c:
        got = c.execute(
            "SELECT part_id, outcome, line, product, images FROM inspections WHERE station_id = 'st-real' ORDER BY seq"
        ).fetchall()
    assert [(p, o) for p, o, *_ in got] == [(r.verdict.part_id, r.verdict.outcome.value) for r in results.items]
    assert {(ln, pr) for _, _, ln, pr, _ in got} == {("line-9", "cell")}
    rejected = [imgs for _, o, _, _, imgs in got if o != "PASS"]
    assert (
        rejected and all(len(i) == 1 for i in rejected) and all(not imgs for _, o, _, _, imgs in got if o == "PASS")
    ), "images: rejects only"
    s3 = wire.s3_client(plant.engines.s3.endpoint, "k", "s")
    body = s3.get_object(Bucket=plant.bucket, Key=rejected[0][0])["Body"].read()
    assert body[:2] == b"\xff\xd8"


def test_station_runs_as_before_with_the_plant_unreachable(make_config, plant: Plant, tmp_path):
    link = plant.link(
        nats_url=f"nats://127.0.0.1:{free_port()}",
        s3_endpoint=f"http://127.0.0.1:{free_port()}",
        outbox_path=str(tmp_path / "plant.db"),
    )
    station = Station(make_config(name="st-alone", plant=link.model_dump(mode="json")), max_parts=30)
    station.start()
    try:
        wait_for(station.trigger_source_done, 30, "30 triggers")
        wait_until(
            lambda: station.uplink.outbox_pending == station.counters.snapshot().verdicts, 10, "results kept for later"
        )
        health = station.health()["components"]["plant-link"]
        assert health["state"] == "warning" and "not connected" in health["message"]
    finally:
        station.stop()
    snap = station.counters.snapshot()
    assert snap.verdicts >= 25 and station.uplink.dropped == 0
    assert station.config_hash == config_hash(make_config(name="st-alone")), (
        "the plant link changes no verdict: same config hash"
    )


def test_station_follows_a_rollout_shadow_first_through_its_hot_swap_and_refuses_a_broken_model(
    make_config, plant: Plant, tmp_path
):
    from station.plant.controller import Limits
    from tests.model_factory import detecting_model, tiny_model

    model_a, model_b = tiny_model("detect"), detecting_model()
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(model_b.read_bytes()[:100])
    link = plant.link(
        outbox_path=str(tmp_path / "plant.db"),
        group="canary",
        follow_models=True,
        models_dir=str(tmp_path / "models"),
        images="none",
        shadow_parts=4,
    )
    cfg = make_config(
        name="st-onnx",
        inspector={"type": "onnx", "model": str(model_a), "keepalive_s": 0},
        plant=link.model_dump(mode="json"),
        trigger={"type": "timer", "parts_per_minute": 600},
    )
    ing = Ingest(plant.dsn, plant.engines.nats.url, prefix=plant.prefix).start()
    station = Station(cfg)
    station.start()
    conn = psycopg.connect(plant.dsn)
    try:
        id_a = station.inspector.model_id
        ctl = plant.rollout(conn)
        loose = Limits(min_parts=5, max_reject_rate=1.0, max_failsafe_rate=1.0, max_latency_ms_p95=10_000, timeout_s=60)
        assert ctl.promote(model_b, "b", ["canary"], loose)["state"] == "done"
        id_b = station.inspector.model_id
        assert id_b != id_a, "swapped through Station.swap_model"
        assert station.follower.last_shadow["recorded"] >= 4, "shadow mode first"
        res = ctl.promote(broken, "broken", ["canary"], loose)
        assert res["state"] == "rolled_back" and "shadow mode refused it" in res["reason"], res
        assert station.inspector.model_id == id_b, "the last good model keeps running"
    finally:
        conn.close()
        station.stop()
        ing.stop()
    with psycopg.connect(plant.dsn) as c:
        models = {m for (m,) in c.execute("SELECT DISTINCT model_id FROM inspections WHERE station_id = 'st-onnx'")}
    assert {id_a, id_b} <= models
