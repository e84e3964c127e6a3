"""Whole-station throughput and latency on the synthetic line (issue 2).

Prints, in one run:
* the parts/s the station sustains (no drop, no FAILSAFE other than learning) at
  increasing trigger rates, next to the raw reference inspector alone in a loop on
  the same frames (the reference figure) as a ratio;
* trigger-to-decision latency p50/p99/max at the highest sustained rate;
* reject timing error (actual - scheduled edge) p50/p99/max under that load.

Usage: python bench/bench_station.py [--seconds 8] [--rates 10,20,40,80] [--width 1280 --height 800]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from station.acquire.synthetic import SyntheticCamera
from station.app import Station
from station.config import ReferenceInspectorConfig, SyntheticCameraConfig, parse_config
from station.contracts import Outcome, Trigger
from station.inspection.reference import ReferenceInspector


def raw_inspector_rate(cam_cfg: SyntheticCameraConfig, learn: int, n: int) -> float:
    """Parts/s of the reference inspector alone on pre-rendered frames."""
    cam = SyntheticCamera(cam_cfg)
    cam.open()
    insp = ReferenceInspector(ReferenceInspectorConfig(learn_parts=learn))
    pid = 1
    while not insp.ready:
        insp.learn(cam.grab(Trigger(pid, pid, time.monotonic_ns()), 1.0))
        pid += 1
    frames = [cam.grab(Trigger(pid + i, pid + i, time.monotonic_ns()), 1.0) for i in range(50)]
    t0 = time.perf_counter()
    for i in range(n):
        insp.inspect(frames[i % len(frames)])
    return n / (time.perf_counter() - t0)


def run_at(rate: float, seconds: float, cam: dict, learn: int) -> dict:
    """Run the station at ``rate`` parts/s for ``seconds``; return its figures."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-station-"))
    n = int(rate * seconds)
    cfg = parse_config(
        {
            "cameras": [cam],
            "trigger": {"type": "timer", "parts_per_minute": rate * 60},
            "inspector": {"type": "reference", "learn_parts": learn},
            "reject": {"travel_ms": 500, "safety_margin_ms": 100, "pulse_ms": 20},
            "pipeline": {"frame_queue": 4},
            "store": {"db_path": str(tmp / "s.db"), "images_dir": str(tmp / "img"), "keep_pass_every": 25},
            "web": {"enabled": False},
        }
    )
    st = Station(cfg, max_parts=n)
    sub = st.bus.subscribe("bench", maxsize=n + 100)
    st.start()
    end = time.monotonic() + seconds * 3 + 10
    while time.monotonic() < end and not st.trigger_source_done():
        time.sleep(0.1)
    t_stop = time.monotonic()
    st.stop()
    results = []
    while sub.pending:
        results.append(sub.get())
    decided = [r for r in results if hasattr(r, "verdict")]
    learning = sum(1 for r in decided if r.verdict.reasons and r.verdict.reasons[0].startswith("learning"))
    failsafe = sum(1 for r in decided if r.verdict.outcome is Outcome.FAILSAFE) - learning
    lat = np.array([r.verdict.timings_ms["total"] for r in decided if "total" in r.verdict.timings_ms])
    err = np.array([f.error_ms for f in st.scheduler.fired])
    snap = st.counters.snapshot()
    return {
        "rate": rate,
        "parts": len(decided),
        "dropped": snap.dropped,
        "failsafe": failsafe,
        "lat": lat,
        "err": err,
        "elapsed": t_stop,
        "reconcile": st.reconcile(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rates", default="10,40,80,120,160")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=800)
    ap.add_argument("--learn", type=int, default=10)
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cam = {"type": "synthetic", "id": "cam0", "width": a.width, "height": a.height, "defect_rate": 0.2, "seed": 1}
    raw = raw_inspector_rate(SyntheticCameraConfig(**{k: v for k, v in cam.items() if k != "type"}), a.learn, 300)
    print(f"frame {a.width}x{a.height} Mono8, reference inspector")
    print(f"raw reference inspector alone (reference): {raw:7.1f} parts/s ({1000 / raw:.2f} ms/part)")
    print(
        f"{'rate/s':>7} {'parts':>6} {'dropped':>7} {'failsafe':>8} {'lat p50':>8} {'p99':>7} {'max':>7} "
        f"{'rej p50':>8} {'p99':>6} {'max':>6}  reconcile"
    )
    best = None
    for rate in (float(x) for x in a.rates.split(",")):
        r = run_at(rate, a.seconds, cam, a.learn)
        lat, err = r["lat"], r["err"]
        ok = r["dropped"] == 0 and r["failsafe"] == 0
        print(
            f"{rate:7.0f} {r['parts']:6d} {r['dropped']:7d} {r['failsafe']:8d} "
            f"{np.percentile(lat, 50):8.2f} {np.percentile(lat, 99):7.2f} {lat.max():7.2f} "
            f"{np.percentile(np.abs(err), 50):8.3f} {np.percentile(np.abs(err), 99):6.2f} {np.abs(err).max():6.2f}  "
            f"{'ok' if not r['reconcile'] else r['reconcile']}{'' if ok else '  (not sustained)'}"
        )
        if ok:
            best = r
    if best:
        print(
            f"sustained: {best['rate']:.0f} parts/s = {best['rate'] / raw:.2f} x the raw inspector's rate "
            f"(latency p50 {np.percentile(best['lat'], 50):.2f} ms, p99 {np.percentile(best['lat'], 99):.2f} ms; "
            f"reject error p99 {np.percentile(np.abs(best['err']), 99):.2f} ms)"
        )


if __name__ == "__main__":
    main()
