"""Per-frame cost of the part renderer and of the reference inspector, side by side with their targets.

Run: python bench_synthetic_reference.py  (one core: cv2.setNumThreads(1); numbers are medians over N frames)
"""

import sys
import time

import cv2
import numpy as np

from station.acquire.render import part_rng, render_part
from station.acquire.synthetic import iter_parts
from station.config import ReferenceInspectorConfig, SyntheticCameraConfig
from station.contracts import Frame
from station.inspection.reference import ReferenceInspector

RENDER_TARGET_MS, INSPECT_TARGET_MS = 10.0, 5.0
threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
cv2.setNumThreads(threads)
print(f"cv2 threads: {threads}")
# reference: the cheapest full-frame op we must do anyway (copy of a 1 MP frame) - shows machine speed
img = np.zeros((800, 1280), np.uint8)
t = []
for _ in range(200):
    t0 = time.perf_counter()
    img.copy()
    t.append(time.perf_counter() - t0)
print(f"reference: 1 MP copy median {np.median(t) * 1e3:.3f} ms")
for product in ("machined", "pcb"):
    cfg = SyntheticCameraConfig(product=product, defect_rate=0.5, seed=7)
    list(iter_parts(cfg, 0, 3))  # build the cached base
    ts, cs = [], []
    for pid in range(200):
        rng = part_rng(7, pid)
        c0 = time.thread_time()
        t0 = time.perf_counter()
        render_part(rng, cfg)
        ts.append(time.perf_counter() - t0)
        cs.append(time.thread_time() - c0)
    r = np.median(ts) * 1e3
    rc = np.median(cs) * 1e3
    insp = ReferenceInspector(ReferenceInspectorConfig())
    for _, p in iter_parts(cfg.model_copy(update={"defect_rate": 0.0}), 0, 20):
        insp.learn(Frame(0, "cam0", p.image, 0, {"defective": False}))
    frames = [Frame(pid, "cam0", p.image, 0) for pid, p in iter_parts(cfg, 1000, 100)]
    insp.warmup()
    ts, cs = [], []
    for f in frames * 2:
        c0 = time.thread_time()
        t0 = time.perf_counter()
        insp.inspect(f)
        ts.append(time.perf_counter() - t0)
        cs.append(time.thread_time() - c0)
    i = np.median(ts) * 1e3
    ic = np.median(cs) * 1e3
    print(
        f"{product:9s} render  wall median {r:6.2f} ms, CPU median {rc:6.2f} ms  (target {RENDER_TARGET_MS:.0f} ms, "
        f"CPU ratio {rc / RENDER_TARGET_MS:.2f})"
    )
    print(
        f"{product:9s} inspect wall median {i:6.2f} ms, CPU median {ic:6.2f} ms  (target {INSPECT_TARGET_MS:.0f} ms, "
        f"CPU ratio {ic / INSPECT_TARGET_MS:.2f})  wall p95 {np.percentile(ts, 95) * 1e3:.2f}  min "
        f"{min(ts) * 1e3:.2f} ms"
    )
