"""Soak: N parts through the real Station on the synthetic line (issue 12, section 3).

The camera cycles a pool of pre-rendered frames (good and defective parts of the
synthetic line, rendered once), so the renderer is not the bottleneck: the
trigger, acquisition thread, reference inspector, decider, reject scheduler,
watchdog and recorder (SQLite + sampled images) are the real ones. Web off.

Prints: parts, rate asked and achieved, the counters and whether they reconcile
exactly after stop (``Station.reconcile()`` plus every record accounted for),
RSS at 10 % and at 100 % of the parts and the growth between them (after
warm-up; target < 1 %), the largest depth seen of the frame queue, the camera
trigger queue, the recorder's queue and the parts in flight, the database and
image sizes, and every FAILSAFE counted per reason: learning (the reference
inspector's first ``--learn`` good parts: expected), overload (drop-new, "frame queue
full" / "trigger overrun": the CPU was taken, e.g. by other programs on a shared host)
and unexplained (anything else: a bug or a stall).

Usage: python bench/bench_soak.py [--parts 1000000] [--rate 60] [--json]
       [--width 640 --height 400] [--keep-pass-every 1000] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from station.acquire.synthetic import SyntheticCamera
from station.actuate.base import OUTPUTS
from station.actuate.simulated import SimulatedOutput
from station.app import Station
from station.config import SyntheticCameraConfig, parse_config
from station.contracts import Frame, Trigger

# drop-new FAILSAFE: the line had no room for a part because the CPU was taken (a shared host)
OVERLOAD_REASONS = ("frame queue full (drop-new)", "busy: trigger overrun")


class PoolCamera:
    """A :class:`~station.acquire.base.CameraDriver` that cycles pre-rendered frames (part id ``n`` gets frame ``n %
    pool``)."""

    def __init__(self, frames: list[Frame], camera_id: str = "cam0"):
        self.camera_id = camera_id
        self.frames = frames
        self.grabs = 0

    def open(self) -> None:
        """Nothing to open: the frames are in memory."""

    def grab(self, trigger: Trigger, timeout_s: float) -> Frame:
        """The pool frame of ``trigger``'s part, stamped now."""
        self.grabs += 1
        f = self.frames[trigger.part_id % len(self.frames)]
        return replace(f, part_id=trigger.part_id, t_exposure_ns=time.monotonic_ns())

    def close(self) -> None:
        """Nothing to release."""

    def health(self) -> dict[str, object]:
        """Always fine."""
        return {"state": "ok", "message": f"pool of {len(self.frames)} frames"}


def render_pool(cam_cfg: dict[str, Any], n: int) -> list[Frame]:
    """Render ``n`` parts of the synthetic line once (same ground truth as the synthetic camera)."""
    cam = SyntheticCamera(SyntheticCameraConfig(**{k: v for k, v in cam_cfg.items() if k != "type"}))
    cam.open()
    return [cam.grab(Trigger(i, i, time.monotonic_ns()), 1.0) for i in range(1, n + 1)]


def rss_bytes() -> int:
    """Resident set size of this process now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def dir_bytes(path: Path) -> int:
    """Total size of the files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def item_bytes(item: Any) -> int:
    """Bytes one history entry holds: the object, its own field values (ints; shared strings and bools not counted), a
    deque slot."""
    n = sys.getsizeof(item) + 8
    if hasattr(item, "__dict__"):
        n += sys.getsizeof(item.__dict__)
    for f in getattr(item, "__dataclass_fields__", {}) or getattr(item, "_fields", ()):
        v = getattr(item, f)
        if isinstance(v, int) and not isinstance(v, bool) and not -5 <= v <= 256:
            n += sys.getsizeof(v)
    return n


def reason_key(reasons_json: str) -> str:
    """The first reason of a FAILSAFE row, with its numbers replaced by N (one key per kind of reason)."""
    try:
        reasons = json.loads(reasons_json) or [""]
    except ValueError:
        reasons = [reasons_json]
    return re.sub(r"\d+(\.\d+)?", "N", str(reasons[0]))


def soak(
    parts: int,
    rate: float,
    *,
    width: int = 640,
    height: int = 400,
    pool: int = 64,
    learn: int = 10,
    keep_pass_every: int = 1000,
    data: Path | None = None,
    frame_queue: int = 4,
    progress: Any = None,
    realtime: int = 0,
) -> dict[str, Any]:
    """Run ``parts`` parts at ``rate`` parts/s through a Station; return the figures."""
    logger = logging.getLogger("station")
    level = logger.level
    logger.setLevel(logging.WARNING)  # the run's INFO lines; put back after
    try:
        return _soak(parts, rate, width, height, pool, learn, keep_pass_every, data, frame_queue, progress, realtime)
    finally:
        logger.setLevel(level)


def _soak(
    parts: int,
    rate: float,
    width: int,
    height: int,
    pool: int,
    learn: int,
    keep_pass_every: int,
    data: Path | None,
    frame_queue: int,
    progress: Any,
    realtime: int = 0,
) -> dict[str, Any]:
    tmp = Path(data) if data is not None else Path(tempfile.mkdtemp(prefix="bench-soak-"))
    tmp.mkdir(parents=True, exist_ok=True)
    cam_cfg = {"type": "synthetic", "id": "cam0", "width": width, "height": height, "defect_rate": 0.25, "seed": 7}
    frames = render_pool(cam_cfg, pool)
    cfg = parse_config(
        {
            "cameras": [cam_cfg],
            "trigger": {"type": "timer", "parts_per_minute": rate * 60},
            "inspector": {"type": "reference", "learn_parts": learn},
            "reject": {"travel_ms": 500, "safety_margin_ms": 100, "pulse_ms": 20},
            "pipeline": {"frame_queue": frame_queue, "realtime_priority": realtime},
            "store": {
                "db_path": str(tmp / "soak.db"),
                "images_dir": str(tmp / "img"),
                "keep_pass_every": keep_pass_every,
            },
            "web": {"enabled": False},
        }
    )
    cam = PoolCamera(frames)
    output = OUTPUTS.create(cfg.reject.output)  # the default simulated output, held here to read its edge history
    assert isinstance(output, SimulatedOutput)
    st = Station(cfg, max_parts=parts, cameras=[cam], output=output)
    # bounded histories that fill up during a soak (not leaks): the scheduler's fired rejects (reject timing
    # statistics) and the simulated output's edges; their fill is measured with RSS to tell them from a leak
    histories: dict[str, Callable[[], Sequence[Any]]] = {
        "scheduler.fired": lambda: st.scheduler.fired,
        "simulated output edges": output.edges,
    }
    bounds = {"scheduler.fired": st.scheduler.fired.maxlen or 0, "simulated output edges": output.cfg.max_edges}
    hist_len: dict[str, dict[str, int]] = {k: {} for k in histories}
    maxdepth = {"frame_queue": 0, "camera_queue": 0, "recorder_queue": 0, "in_flight": 0}
    rss: dict[str, int] = {}
    done = threading.Event()

    def monitor() -> None:  # 20 Hz: queue depths and RSS at 10 % / 100 % (no hook on the hot path)
        line, rec_q = st.pipeline, st.recorder.subscription.queue
        next_report = time.monotonic() + 60
        while not done.wait(0.05):
            maxdepth["frame_queue"] = max(maxdepth["frame_queue"], line.frames_waiting)
            maxdepth["camera_queue"] = max(maxdepth["camera_queue"], line.triggers_waiting(cam.camera_id))
            maxdepth["recorder_queue"] = max(maxdepth["recorder_queue"], rec_q.qsize())
            maxdepth["in_flight"] = max(maxdepth["in_flight"], st.scheduler.in_flight)
            n = cam.grabs
            for pct in (10, 50):
                if f"p{pct}" not in rss and n >= parts * pct / 100:
                    rss[f"p{pct}"] = rss_bytes()
                    for k, h in histories.items():
                        hist_len[k][f"p{pct}"] = len(h())
            if progress is not None and time.monotonic() >= next_report:
                next_report += 60
                progress(
                    f"{n}/{parts} parts, RSS {rss_bytes() / 2**20:.1f} MiB, {st.counters.snapshot().FAILSAFE} FAILSAFE"
                )

    rss["start"] = rss_bytes()
    mon = threading.Thread(target=monitor, name="soak-monitor", daemon=True)
    st.start()
    t0 = time.monotonic()
    mon.start()
    while not st.trigger_source_done():
        time.sleep(0.2)
    t_last = time.monotonic()
    time.sleep(cfg.reject.travel_ms / 1000 + 0.2)  # the last parts' pulses
    rss["p100"] = rss_bytes()
    hist_bytes = 0
    for k, h in histories.items():
        hist_len[k]["p100"] = len(h())
        hist_len[k]["maxlen"] = bounds[k]
        items = h()
        if items and "p10" in hist_len[k]:
            hist_bytes += (hist_len[k]["p100"] - hist_len[k]["p10"]) * item_bytes(items[-1])
    done.set()
    mon.join()
    st.stop()
    elapsed = t_last - t0
    problems = st.reconcile()
    snap = st.counters.snapshot()
    rec = st.recorder
    db_path = cfg.store.db_path
    con = sqlite3.connect(db_path)
    rows = con.execute("SELECT count(*) FROM inspections").fetchone()[0]
    fs_rows = con.execute(
        "SELECT reasons, count(*) FROM inspections WHERE outcome = 'FAILSAFE' GROUP BY reasons"
    ).fetchall()
    con.close()
    failsafe: Counter[str] = Counter()
    for reasons, n in fs_rows:
        failsafe[reason_key(reasons)] += n
    learning = sum(n for k, n in failsafe.items() if k.startswith("learning"))
    overload = sum(n for k, n in failsafe.items() if any(m in k for m in OVERLOAD_REASONS))
    unexplained = snap.FAILSAFE - learning - overload
    # exact: every part triggered has a verdict, and every verdict a row in the database
    if snap.triggers != parts:
        problems.append(f"triggers {snap.triggers} != parts asked {parts}")
    if rows != snap.verdicts or snap.records_written != rows or snap.records_dropped or rec.pending:
        problems.append(
            f"rows {rows}, verdicts {snap.verdicts}, records written {snap.records_written}, dropped "
            f"{snap.records_dropped}, pending {rec.pending}"
        )
    if sum(failsafe.values()) != snap.FAILSAFE:
        problems.append(f"FAILSAFE counter {snap.FAILSAFE} != FAILSAFE rows {sum(failsafe.values())}")
    db_bytes = sum(
        Path(str(db_path) + s).stat().st_size for s in ("", "-wal", "-shm") if Path(str(db_path) + s).exists()
    )
    growth = (rss["p100"] - rss["p10"]) / rss["p10"] if "p10" in rss else float("nan")
    out = {
        "parts": snap.triggers,
        "frame": f"{width}x{height}",
        "rate_asked": rate,
        "realtime_priority": realtime,
        "rate_achieved": round(snap.triggers / elapsed, 2) if elapsed > 0 else 0.0,
        "elapsed_s": round(elapsed, 1),
        "counters": {k: v for k, v in snap.as_dict().items() if k != "started_wall"},
        "db_rows": rows,
        "reconciled": not problems,
        "problems": problems,
        "rss_mib": {k: round(v / 2**20, 2) for k, v in rss.items()},
        "rss_growth_after_warmup": round(growth, 5),
        "bounded_histories": hist_len,
        "bounded_histories_growth_mib": round(hist_bytes / 2**20, 2),
        "rss_growth_after_warmup_less_histories": round(growth - hist_bytes / rss["p10"], 5)
        if "p10" in rss
        else float("nan"),
        "max_depth": maxdepth,
        "queue_limits": {
            "frame_queue": cfg.pipeline.frame_queue,
            "camera_queue": cfg.pipeline.frame_queue + 2,
            "recorder_queue": cfg.store.queue_size,
        },
        "db_mb": round(db_bytes / 1e6, 2),
        "images_mb": round(dir_bytes(cfg.store.images_dir) / 1e6, 2),
        "failsafe": dict(failsafe.most_common()),
        "failsafe_learning": learning,
        "failsafe_overload": overload,
        "failsafe_unexplained": unexplained,
        "watchdog_restarts": len(getattr(st.watchdog, "restarts", []) or []) if st.watchdog is not None else 0,
        "data": str(tmp),
    }
    if data is None:
        shutil.rmtree(tmp, ignore_errors=True)
        out["data"] = None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", type=int, default=1_000_000)
    ap.add_argument(
        "--rate",
        type=float,
        default=100.0,
        help="trigger rate, parts/s (default: what this shared 2-core machine holds at 640x400 under nice 19)",
    )
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=400)
    ap.add_argument("--pool", type=int, default=64, help="pre-rendered frames cycled by the camera")
    ap.add_argument("--learn", type=int, default=10)
    ap.add_argument(
        "--frame-queue", type=int, default=4, help="pipeline.frame_queue (default: the station's default, 4)"
    )
    ap.add_argument("--keep-pass-every", type=int, default=1000)
    ap.add_argument(
        "--realtime",
        type=int,
        default=0,
        help="pipeline.realtime_priority (SCHED_FIFO for the line's threads, needs root/CAP_SYS_NICE): "
        "the station's setting for a CPU shared with other busy programs (default 0: normal priority)",
    )
    ap.add_argument(
        "--data",
        type=Path,
        default=None,
        help="keep the database and images here (default: a temporary folder, removed)",
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args()
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    opts = vars(a)  # every option but --json is a keyword of soak()
    as_json = opts.pop("json")
    r = soak(**opts, progress=lambda m: print(m, file=sys.stderr, flush=True))
    if as_json:
        print(json.dumps(r))
        return
    c = r["counters"]
    print(
        f"parts {r['parts']} ({r['frame']} Mono8, reference inspector), rate {r['rate_achieved']:.1f}/s "
        f"(asked {r['rate_asked']:g}/s), {r['elapsed_s']:.0f} s"
    )
    print(
        f"verdicts {c['verdicts']}: PASS {c['PASS']} FAIL {c['FAIL']} UNCERTAIN {c['UNCERTAIN']} FAILSAFE "
        f"{c['FAILSAFE']}; "
        f"rejects {c['rejects_fired']}/{c['rejects_scheduled']}; records written {c['records_written']} dropped "
        f"{c['records_dropped']}; "
        f"rows {r['db_rows']}"
    )
    print(f"reconciled: {'exact' if r['reconciled'] else '; '.join(r['problems'])}")
    m = r["rss_mib"]
    print(
        f"RSS start {m['start']:.1f} MiB, at 10 % {m.get('p10', float('nan')):.1f} MiB, at 50 % "
        f"{m.get('p50', float('nan')):.1f} MiB, at 100 % {m['p100']:.1f} MiB: "
        f"growth after warm-up {100 * r['rss_growth_after_warmup']:.2f} %"
    )
    print(
        f"  of which bounded histories filling up: {r['bounded_histories_growth_mib']:.2f} MiB "
        f"{r['bounded_histories']}; "
        f"growth less these: {100 * r['rss_growth_after_warmup_less_histories']:.2f} %"
    )
    d, lim = r["max_depth"], r["queue_limits"]
    print(
        f"largest depth: frame queue {d['frame_queue']}/{lim['frame_queue']}, camera queue "
        f"{d['camera_queue']}/{lim['camera_queue']}, "
        f"recorder queue {d['recorder_queue']}/{lim['recorder_queue']}, parts in flight {d['in_flight']}"
    )
    print(f"database {r['db_mb']:.1f} MB, images {r['images_mb']:.1f} MB")
    print(
        f"FAILSAFE: {r['failsafe'] or 'none'} ({r['failsafe_learning']} learning, "
        f"{r['failsafe_overload']} overload (drop-new: no room, CPU taken), {r['failsafe_unexplained']} unexplained)"
    )


if __name__ == "__main__":
    main()
