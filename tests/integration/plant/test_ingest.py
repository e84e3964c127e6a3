"""Three simulated stations into a real plant, with crashes: kill -9 of NATS mid-drain (restarted on
its file store), kill -9 of the ingest process (restarted: redelivery), a replayed outbox and raw
re-publishes (duplicates). Every (station, seq) must be stored exactly once, the rollups must equal
the raw counts, nothing may be lost."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psycopg

from station.plant import wire
from station.store import plant_db
from station.store.outbox import Outbox
from tests.fixtures_plant import Plant, SimStation, wait_until

REPO = Path(__file__).resolve().parents[3]
N = 240  # parts per station
# parts every 30 s from 23:00 UTC on the last day of a month: two monthly partitions, several hours and shifts
T0 = dt.datetime(2026, 11, 30, 23, 0, tzinfo=dt.UTC).timestamp()


def start_ingest(plant: Plant, log: Path) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "station.plant.cli",
        "ingest",
        "--dsn",
        plant.dsn,
        "--nats",
        plant.engines.nats.url,
        "--prefix",
        plant.prefix,
        "--batch",
        "50",
        "--ack-wait",
        "1.5",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(log, "ab"), env=env, cwd=REPO)


def rows(plant: Plant) -> int:
    with psycopg.connect(plant.dsn) as c:
        return plant_db.result_count(c)


async def republish_raw(url: str, prefix: str, outbox_copy: Path) -> int:
    """Re-send every result of an old outbox copy with fresh message ids: JetStream cannot de-duplicate them."""
    import nats

    ob = Outbox(outbox_copy, 10**6)
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        n = 0
        for e in ob.after(0, 10**6):
            meta, _ = wire.unpack(e.payload)
            msg = wire.ResultMsg.from_dict({**meta, "seq": e.seq})
            await js.publish(
                wire.results_subject(prefix, msg.station), msg.to_json(), headers={"Nats-Msg-Id": f"replay-{e.seq}"}
            )
            n += 1
        return n
    finally:
        await nc.close()
        ob.close()


def _idle(plant: Plant) -> bool:
    """The durable consumer has nothing pending and nothing unacknowledged."""

    async def info() -> bool:
        import nats

        nc = await nats.connect(plant.engines.nats.url)
        try:
            ci = await nc.jetstream().consumer_info(wire.stream_name(plant.prefix), "plant-ingest")
            return ci.num_pending == 0 and ci.num_ack_pending == 0
        finally:
            await nc.close()

    return asyncio.run(info())


def feed(stations: list[SimStation], n: int) -> None:
    for st in stations:
        base = st.sent
        for i in range(n):
            st.send(1, t_wall=T0 + 30 * (base + i))


def test_three_stations_crashes_and_replays_store_each_part_once(plant: Plant, tmp_path):
    log = tmp_path / "ingest.log"
    links = {
        name: plant.link(outbox_path=tmp_path / f"{name}.db", batch=32, outbox_max=10000)
        for name in ("st-1", "st-2", "st-3")
    }
    # st-1 fills its outbox while the plant is away; a copy of that outbox is replayed later
    offline = SimStation("st-1", links["st-1"].model_copy(update={"nats_url": "nats://127.0.0.1:9"})).start()
    feed([offline], 60)
    wait_until(lambda: offline.uplink.outbox_pending == 60, 10, "60 results stored offline")
    offline.stop()
    shutil.copy(tmp_path / "st-1.db", tmp_path / "st-1-replay.db")
    shutil.copy(tmp_path / "st-1.db", tmp_path / "st-1-raw.db")

    ingest = start_ingest(plant, log)
    stations = [SimStation(name, cfg).start() for name, cfg in links.items()]
    stations[0].sent = 60  # the same station, on with its outbox
    replay: SimStation | None = None
    try:
        feed(stations[:1], 40)
        feed(stations[1:], 100)
        wait_until(lambda: rows(plant) >= 100, 30, "ingest under way")

        plant.engines.nats.kill()  # kill -9 mid-drain; the stations keep storing
        feed(stations, 60)
        wait_until(lambda: all(not s.uplink.connected for s in stations), 10, "stations notice the outage")
        plant.engines.nats.start()  # same port, same file store: the stream and the durable consumer survive

        feed(stations[:1], N - 160)
        feed(stations[1:], N - 160)
        wait_until(lambda: rows(plant) >= 300, 30, "ingest resumed after the NATS restart")
        os.kill(ingest.pid, signal.SIGKILL)  # the ingest dies with a batch committed or not, unacknowledged
        ingest.wait(5)
        replay = SimStation(
            "st-1", links["st-1"].model_copy(update={"outbox_path": tmp_path / "st-1-replay.db"})
        ).start()
        wait_until(
            lambda: replay.uplink.outbox_pending == 0, 30, "the replayed outbox re-sent (JetStream drops its ids)"
        )
        assert asyncio.run(republish_raw(plant.engines.nats.url, plant.prefix, tmp_path / "st-1-raw.db")) == 60
        ingest = start_ingest(plant, log)
        wait_until(
            lambda: all(s.uplink.outbox_pending == 0 and s.sent == N for s in stations), 60, "every station drained"
        )
        wait_until(lambda: rows(plant) >= 3 * N, 60, f"{3 * N} rows")
        wait_until(lambda: _idle(plant), 30, "the ingest idle (redeliveries processed)")
    finally:
        for s in stations:
            s.stop()
        if replay is not None:
            replay.stop()
        if ingest.poll() is None:
            os.kill(ingest.pid, signal.SIGTERM)
        out, _ = ingest.communicate(timeout=30)

    stats = json.loads(out.decode().strip().splitlines()[-1])
    assert stats["duplicates"] >= 60, f"the raw re-publishes reached the database and were ignored there: {stats}"
    assert stats["rejected"] == 0
    with psycopg.connect(plant.dsn) as c:
        counts = plant_db.counts(c)
        per = plant_db.per_station(c)
        months = {r[0] for r in c.execute("SELECT tableoid::regclass::text FROM inspections")}
        parts = {
            s: sorted(p for (p,) in c.execute("SELECT part_id FROM inspections WHERE station_id = %s", (s,)))
            for s in links
        }
    assert per == {name: (N, 1, N) for name in links}, "every (station, seq) once, 1..N without a gap"
    assert all(parts[s] == list(range(1, N + 1)) for s in links), "nothing lost"
    assert counts["rows"] == counts["distinct"] == counts["keys"] == 3 * N
    assert counts["rollup_total"] == 3 * N and counts["rollup"] == counts["raw"], "the rollups equal the raw counts"
    assert counts["rollup_defects"] == counts["raw_defects"] and counts["raw_defects"]["scratch"] > 0
    assert months == {"inspections_2026_11", "inspections_2026_12"}, "partitioned by month"
    assert all(s.uplink.dropped == 0 for s in stations)
