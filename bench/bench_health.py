"""Cost of image health per frame at 1 MP, side by side with the inspector's per-part time on the same frames.

Run: python bench/bench_health.py [--frames 200] [--threads 1] [--json]

Three numbers per frame, medians (wall and CPU of this thread), same frames, same process:
* ``health``: ``HealthMonitor.observe`` for a frame whose inspector gives no alignment (ONNX/anomaly backends):
  the figures, the edge-profile shift, the bands and the model's score window: the worst case;
* ``health_aligned``: the same for the reference backend, whose alignment gives the position;
* ``inspect``: the reference inspector's ``inspect`` of the frame (the per-part time it sits beside).
The budget is 1 ms at 1 MP (issue 13); the ratio health / inspect says what share of a part it adds.
"""

from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np

from station.acquire.synthetic import iter_parts
from station.alarms import AlarmBoard
from station.config import ReferenceInspectorConfig, SyntheticCameraConfig
from station.config.health import HealthConfig
from station.contracts import Detections, Frame
from station.health import HealthMonitor
from station.inspection.reference import ReferenceInspector

BUDGET_MS = 1.0


def timed(fn, items) -> tuple[float, float]:
    """Median wall and CPU ms of ``fn(item)`` over ``items``."""
    wall, cpu = [], []
    for it in items:
        c0, t0 = time.thread_time(), time.perf_counter()
        fn(it)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    return float(np.median(wall) * 1e3), float(np.median(cpu) * 1e3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=200, help="frames timed per figure (default 200)")
    ap.add_argument(
        "--threads", type=int, default=1, help="cv2 threads (default 1: the inference worker's share of a station PC)"
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    a = ap.parse_args()
    cv2.setNumThreads(a.threads)
    cam = SyntheticCameraConfig(width=1280, height=800, defect_rate=0.3, seed=7)  # 1.02 MP
    insp = ReferenceInspector(ReferenceInspectorConfig())
    for _, p in iter_parts(cam.model_copy(update={"defect_rate": 0.0}), 0, insp.cfg.learn_parts):
        insp.learn(Frame(0, "cam0", p.image, 0))
    insp.warmup()
    frames = [Frame(pid, "cam0", p.image, 0) for pid, p in iter_parts(cam, 1000, min(a.frames, 100))]
    frames = (frames * (a.frames // len(frames) + 1))[: a.frames]
    dets = {f.part_id: insp.inspect(f) for f in frames}
    plain = Detections.empty(insp.names, "bench")
    report = AlarmBoard(lambda ev: None).report
    cfg = HealthConfig(setup_parts=20, model_baseline_parts=20, model_window_parts=50)
    mon = HealthMonitor(cfg, report)
    mon_al = HealthMonitor(cfg, report)
    for f in frames[:40]:  # past setup and baseline: time the steady state (bands checked, windows full)
        mon.observe(f.part_id, [f], [plain])
        mon_al.observe(f.part_id, [f], [dets[f.part_id]])
    h_wall, h_cpu = timed(lambda f: mon.observe(f.part_id, [f], [plain]), frames)
    ha_wall, ha_cpu = timed(lambda f: mon_al.observe(f.part_id, [f], [dets[f.part_id]]), frames)
    i_wall, i_cpu = timed(insp.inspect, frames)
    out = {
        "frame": "1280x800 mono8 (1.02 MP), synthetic machined parts",
        "cv2_threads": a.threads,
        "frames": len(frames),
        "health_ms": {"wall_median": round(h_wall, 3), "cpu_median": round(h_cpu, 3)},
        "health_aligned_ms": {"wall_median": round(ha_wall, 3), "cpu_median": round(ha_cpu, 3)},
        "inspect_ms": {"wall_median": round(i_wall, 3), "cpu_median": round(i_cpu, 3)},
        "budget_ms": BUDGET_MS,
        "health_over_budget_cpu": round(h_cpu / BUDGET_MS, 3),
        "health_over_inspect_cpu": round(h_cpu / i_cpu, 3),
        "health_aligned_over_inspect_cpu": round(ha_cpu / i_cpu, 3),
    }
    if a.json:
        print(json.dumps(out))
        return
    print(f"{out['frame']}, cv2 threads {a.threads}, {len(frames)} frames")
    print(
        f"health (profile shift) wall {h_wall:6.3f} ms  CPU {h_cpu:6.3f} ms  (budget {BUDGET_MS} ms: CPU ratio "
        f"{h_cpu / BUDGET_MS:.2f})"
    )
    print(f"health (aligned)       wall {ha_wall:6.3f} ms  CPU {ha_cpu:6.3f} ms")
    print(f"reference inspect      wall {i_wall:6.3f} ms  CPU {i_cpu:6.3f} ms")
    print(f"health / inspect (CPU): {h_cpu / i_cpu:.3f} (profile shift), {ha_cpu / i_cpu:.3f} (aligned)")


if __name__ == "__main__":
    main()
