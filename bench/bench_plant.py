"""The plant tier's ingest: rate into PostgreSQL and end-to-end lag, beside a plain executemany.

Starts the engines locally (NATS JetStream, PostgreSQL, SeaweedFS; station/plant/engines.py) in
a temporary folder and prints, in one run:

- **capacity**: ``--backlog`` results per station from 10 stations already in the JetStream stream,
  drained by ``plant ingest`` (one worker, batch ``--batch``): results/s into PostgreSQL, with
  de-duplication keys, partitions and rollups, commit then ack; side by side with a plain
  ``executemany`` INSERT of the same rows into the same (partitioned) table, same batch size,
  no keys, no rollups, no messaging: the ratio is what exactly-once and rollups cost.
- **lag at line rate**: ``--stations`` simulated stations (real uplinks: SQLite outbox, JPEG to
  S3, JetStream) at the synthetic line's rate (``--ppm``, default: the timer trigger's default)
  for ``--seconds``, after one warm-up part per station; lag = commit time in PostgreSQL - the
  part's trigger time (p50, p99, max).

Usage: python bench/bench_plant.py [--stations 10] [--ppm 120] [--seconds 20] [--backlog 1000] [--batch 500] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402

from station.config.camera import TimerTriggerConfig  # noqa: E402
from station.config.plant import PlantLinkConfig  # noqa: E402
from station.plant import wire  # noqa: E402
from station.plant.engines import Engines  # noqa: E402
from station.plant.ingest import Ingest, shift_function  # noqa: E402
from station.store import plant_db  # noqa: E402
from tests.fixtures_plant import OUTCOME_CYCLE, SimStation  # noqa: E402


def messages(stations: int, per_station: int, t0: float) -> list[wire.ResultMsg]:
    out = []
    for s in range(stations):
        for i in range(1, per_station + 1):
            o = OUTCOME_CYCLE[i % len(OUTCOME_CYCLE)].value
            out.append(
                wire.ResultMsg(
                    f"st-{s}",
                    i,
                    "line-1",
                    "p",
                    t0 + i * 0.5,
                    o,
                    i,
                    "m1",
                    12.5,
                    ("scratch",) if o == "FAIL" else (),
                    (f"images/{i:064x}.jpg",),
                )
            )
    return out


async def publish_all(url: str, prefix: str, msgs: list[wire.ResultMsg]) -> None:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream(timeout=30)
    await wire.ensure_stream(js, prefix)
    for k in range(0, len(msgs), 500):
        chunk = msgs[k : k + 500]
        await asyncio.gather(
            *(
                js.publish(
                    wire.results_subject(prefix, m.station),
                    m.to_json(),
                    headers={"Nats-Msg-Id": wire.msg_id(m.station, m.seq)},
                )
                for m in chunk
            )
        )
    await nc.close()


def rows(dsn: str) -> int:
    with psycopg.connect(dsn) as c:
        return plant_db.result_count(c)


def wait_rows(dsn: str, n: int, timeout: float) -> None:
    end = time.monotonic() + timeout
    while rows(dsn) < n:
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {n} rows (have {rows(dsn)})")
        time.sleep(0.05)


def capacity(e: Engines, stations: int, backlog: int, batch: int) -> dict[str, float]:
    msgs = messages(stations, backlog, time.time() - 3600)
    asyncio.run(publish_all(e.nats.url, "cap", msgs))
    dsn = e.pg.create_database("cap")
    ing = Ingest(dsn, e.nats.url, prefix="cap", batch=batch)
    t = time.perf_counter()
    ing.start()
    wait_rows(dsn, len(msgs), 600)
    ingest_s = time.perf_counter() - t
    ing.stop()
    # the reference: the same rows, plain executemany, same table layout, same batch size
    ref_dsn = e.pg.create_database("ref")
    shift_of = shift_function()
    with psycopg.connect(ref_dsn) as conn:
        plant_db.create_schema(conn)
        parts: set = set()
        t = time.perf_counter()
        for k in range(0, len(msgs), batch):
            plant_db.insert_plain(conn, msgs[k : k + batch], shift_of, parts)
        ref_s = time.perf_counter() - t
    n = len(msgs)
    return {
        "results": n,
        "ingest_per_s": n / ingest_s,
        "executemany_per_s": n / ref_s,
        "ratio": (n / ingest_s) / (n / ref_s),
    }


def lag(e: Engines, root: Path, stations: int, ppm: float, seconds: float, batch: int) -> dict[str, float]:
    dsn = e.pg.create_database("lag")
    ing = Ingest(dsn, e.nats.url, prefix="lag", batch=batch, keep_lag=True)
    ing.start()
    sts = [
        SimStation(
            f"st-{i}",
            PlantLinkConfig(
                nats_url=e.nats.url,
                s3_endpoint=e.s3.endpoint,
                s3_bucket="bench-lag",
                subject_prefix="lag",
                reconnect_min_s=0.1,
                outbox_path=root / f"st-{i}.db",
            ),
        ).start()
        for i in range(stations)
    ]
    period = 60.0 / ppm
    stop = threading.Event()

    def line(st: SimStation, offset: float) -> None:  # each station at the line's rate, phases spread
        nxt = time.monotonic() + offset
        while not stop.is_set():
            nxt += period
            st.send(1)
            stop.wait(max(0.0, nxt - time.monotonic()))

    threads = [threading.Thread(target=line, args=(st, i * period / stations), daemon=True) for i, st in enumerate(sts)]
    for st in sts:  # warm-up (connections, bucket, stream, first volume of the object store): not timed
        st.send(1)
    wait_rows(dsn, stations, 60)
    ing.stats.lag_ms.clear()
    for th in threads:
        th.start()
    time.sleep(seconds)
    stop.set()
    for th in threads:
        th.join()
    sent = sum(st.sent for st in sts)
    wait_rows(dsn, sent, 120)
    sent -= stations  # the warm-up parts
    for st in sts:
        st.stop()
    ing.stop()
    lags = sorted(ing.stats.lag_ms)
    return {
        "stations": stations,
        "parts_per_minute_each": ppm,
        "results": sent,
        "rate_per_s": sent / seconds,
        "lag_ms_p50": statistics.median(lags),
        "lag_ms_p99": lags[int(0.99 * (len(lags) - 1))],
        "lag_ms_max": lags[-1],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stations", type=int, default=10)
    ap.add_argument(
        "--ppm",
        type=float,
        default=TimerTriggerConfig().parts_per_minute,
        help="parts per minute per station (default: the synthetic line's)",
    )
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--backlog", type=int, default=1000, help="results per station for the capacity run")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-plant-"))
    os.chmod(root, 0o755)
    try:
        with Engines(root) as e:
            out = {
                "capacity": capacity(e, args.stations, args.backlog, args.batch),
                "lag": lag(e, root, args.stations, args.ppm, args.seconds, args.batch),
            }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        c, lg = out["capacity"], out["lag"]
        print(
            f"ingest {c['ingest_per_s']:.0f} results/s vs plain executemany {c['executemany_per_s']:.0f} rows/s: ratio "
            f"{c['ratio']:.2f} ({c['results']} results)"
        )
        print(
            f"{lg['stations']} stations x {lg['parts_per_minute_each']:g} parts/min: lag p50 {lg['lag_ms_p50']:.0f} "
            f"ms, p99 {lg['lag_ms_p99']:.0f} ms, max {lg['lag_ms_max']:.0f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
