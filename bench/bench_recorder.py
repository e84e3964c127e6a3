"""How many parts per second the recorder writes, with and without images.

Prints each figure next to its reference, as a ratio, in one run:

- rows without images  vs  raw sqlite3 executemany of the same rows (same WAL +
  synchronous=FULL settings, same batch size): the recorder's overhead.
- rows with one 1 MP PNG each (all kept)  vs  cv2.imencode of the same images
  alone: how close the recorder gets to the encode bound (encoding dominates).
- the cost of ``store.synchronous: FULL`` (the default: a committed batch
  survives a power cut) against NORMAL (loses the last batches on a power cut,
  see docs/storage.md): recorder rows/s side by side, at the configured batch
  size and at batch 1 (one fsync per part: the worst case).

Usage: python bench/bench_recorder.py [--rows 5000] [--images 80] [--batch 64] [--fmt png] [--sync-rows-batch1 1000]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from station.bus import Bus  # noqa: E402
from station.contracts import Defect, Frame, Outcome, PartResult, Trigger, Verdict  # noqa: E402
from station.counters import Counters  # noqa: E402
from station.store.db import open_db  # noqa: E402
from station.store.images import ImageStore  # noqa: E402
from station.store.part_rows import INSERT_INSPECTION  # noqa: E402
from station.store.recorder import Recorder  # noqa: E402


def part_image(rng: np.random.Generator, h: int = 1000, w: int = 1000) -> np.ndarray:
    """A mono 1 MP part-like image: lit background, a dark disc, sensor noise."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = 180.0 + 30.0 * (xx / w) - 20.0 * (yy / h)
    cy, cx = h / 2 + rng.uniform(-20, 20), w / 2 + rng.uniform(-20, 20)
    img[(yy - cy) ** 2 + (xx - cx) ** 2 < (0.35 * h) ** 2] = 70.0
    img += rng.normal(0.0, 2.0, (h, w))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_result(pid: int, image: np.ndarray | None) -> PartResult:
    defects = (Defect("scratch", 0.91, (10.0, 20.0, 60.0, 25.0), 1.2, "cam0", "reject", "conf"),)
    trig = Trigger(pid, pid, time.monotonic_ns(), t_trigger_wall=time.time())
    verdict = Verdict(
        pid,
        Outcome.FAIL,
        ("scratch (conf)",),
        defects,
        "model",
        "cfg",
        "cal",
        {"acquire": 1.0, "inspect": 8.0, "total": 10.0, "deadline_slack": 40.0},
    )
    frames = (Frame(pid, "cam0", image, 0, {}),) if image is not None else ()
    return PartResult(trig, verdict, frames)


def run_recorder(
    root: Path, results_iter, n: int, batch: int, fmt: str, queue_size: int, synchronous: str = "FULL"
) -> float:
    """Seconds for the recorder to commit ``n`` results fed by a publisher thread."""
    bus, counters = Bus(), Counters()
    sub = bus.subscribe("recorder", maxsize=queue_size)
    store = ImageStore(root / "img", fmt, keep_pass_every=1, disk_budget_mb=1e6)
    rec = Recorder(root / "s.db", store, counters, sub, batch_size=batch, synchronous=synchronous)
    rec.start()
    done = threading.Event()

    def publish() -> None:
        for r in results_iter:
            while sub.pending >= queue_size - 1:  # bench only: never let the bus drop
                time.sleep(0.0005)
            bus.publish(r)
        done.set()

    t0 = time.perf_counter()
    threading.Thread(target=publish, daemon=True).start()
    while rec.records_written < n:
        time.sleep(0.002)
    dt = time.perf_counter() - t0
    assert rec.stop() and sub.dropped == 0 and rec.records_written == n
    return dt


def raw_sqlite(root: Path, n: int, batch: int) -> float:
    """Seconds to insert ``n`` equivalent inspection + defect rows with plain executemany."""
    db = open_db(root / "raw.db")  # same schema and pragmas (WAL, synchronous=FULL)
    conn = db.conn
    rows = [
        (
            pid,
            pid,
            time.time(),
            None,
            time.time(),
            "FAIL",
            '["scratch (conf)"]',
            "model",
            "cfg",
            "cal",
            '{"acquire":1.0,"inspect":8.0,"total":10.0,"deadline_slack":40.0}',
            40.0,
            None,
            1,
            0.91,
            "timer",
            "",
            0,
            1,
            None,
        )
        for pid in range(1, n + 1)
    ]
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        chunk = rows[i : i + batch]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT_INSPECTION, chunk)
        conn.executemany(
            "INSERT INTO defects (part_id, camera_id, class_name, confidence, x1, y1, x2, y2, area_mm2, action, rule, "
            "model_id) "
            "VALUES (?, 'cam0', 'scratch', 0.91, 10, 20, 60, 25, 1.2, 'reject', 'conf', 'model')",
            [(r[0],) for r in chunk],
        )
        conn.execute("COMMIT")
    dt = time.perf_counter() - t0
    db.close()
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=5000, help="parts without images")
    ap.add_argument("--images", type=int, default=80, help="parts with one 1 MP image each")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--fmt", choices=["png", "jpg"], default="png")
    ap.add_argument("--sync-rows-batch1", type=int, default=1000, help="rows for the batch-1 FULL vs NORMAL run")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"sqlite {sqlite3.sqlite_version}, opencv {cv2.__version__}, batch {a.batch}, synchronous=FULL, WAL")

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        t_rec = run_recorder(
            root / "a", (make_result(p, None) for p in range(1, a.rows + 1)), a.rows, a.batch, a.fmt, 10_000
        )
        t_raw = raw_sqlite(root / "b", a.rows, a.batch)
    r_rec, r_raw = a.rows / t_rec, a.rows / t_raw
    print(
        f"{'no images':<28} recorder {r_rec:9.0f} rows/s | raw executemany {r_raw:9.0f} rows/s | ratio "
        f"{r_rec / r_raw:5.2f}"
    )

    # store.synchronous: FULL (default) vs NORMAL, same run, same disk
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parents[1]) as d:  # the repo's disk, not a tmpfs /tmp
        for batch, n in ((a.batch, a.rows), (1, a.sync_rows_batch1)):
            t = {}
            for sync in ("FULL", "NORMAL"):
                t[sync] = run_recorder(
                    Path(d) / f"{sync}{batch}",
                    (make_result(p, None) for p in range(1, n + 1)),
                    n,
                    batch,
                    a.fmt,
                    10_000,
                    sync,
                )
            full, normal = n / t["FULL"], n / t["NORMAL"]
            print(
                f"{f'synchronous, batch {batch}':<28} FULL     {full:9.0f} rows/s | NORMAL          {normal:9.0f} "
                f"rows/s | FULL/NORMAL {full / normal:5.2f}"
            )

    base = [part_image(rng) for _ in range(4)]

    def image_for(pid: int) -> np.ndarray:
        img = base[pid % len(base)].copy()
        cv2.putText(img, f"{pid:06d}", (20, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.5, 255, 3)  # unique content per part
        return img

    t0 = time.perf_counter()
    sizes = []
    for p in range(1, a.images + 1):
        ok, buf = cv2.imencode("." + a.fmt, image_for(p))
        sizes.append(len(buf))
    t_enc = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        t_rec_img = run_recorder(
            Path(d), (make_result(p, image_for(p)) for p in range(1, a.images + 1)), a.images, a.batch, a.fmt, 16
        )
    r_img, r_enc = a.images / t_rec_img, a.images / t_enc
    print(
        f"{'1 MP mono ' + a.fmt + f' ({np.mean(sizes) / 1024:.0f} KiB)':<28} recorder {r_img:9.1f} rows/s | "
        f"imencode only    {r_enc:9.1f} img/s  | ratio {r_img / r_enc:5.2f}"
    )


if __name__ == "__main__":
    main()
