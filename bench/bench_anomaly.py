"""Per-part cost of the anomaly inspector on ~1 MP Mono8 parts, side by side with the reference inspector.

Both learn from good parts of the synthetic line (1280x800 Mono8, the machined product by
default), then inspect the same parts (half of them defective); the median and p95 wall time per
part of each, and their ratio, are printed in one run. Target: anomaly <= 30 ms per part on 2 CPU
cores at the default setting (long side 256, 100 good parts learned).

Run: python bench/bench_anomaly.py [--parts 100] [--learn 100] [--product machined|pcb] [--long-side 256]
     [--features filters|pretrained] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from models.anomaly import FEATURES, LearnSettings, learn  # noqa: E402
from station.acquire.synthetic import iter_parts  # noqa: E402
from station.config import AnomalyInspectorConfig, ReferenceInspectorConfig, SyntheticCameraConfig  # noqa: E402
from station.contracts import Frame  # noqa: E402
from station.inspection.anomaly import AnomalyInspector  # noqa: E402
from station.inspection.reference import ReferenceInspector  # noqa: E402

TARGET_MS = 30.0


def timed(insp, frames: list[Frame]) -> list[float]:
    insp.warmup()
    out = []
    for f in frames:
        t0 = time.perf_counter()
        insp.inspect(f)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", type=int, default=100)
    ap.add_argument("--learn", type=int, default=100)
    ap.add_argument("--product", default="machined")
    ap.add_argument("--long-side", type=int, default=256)
    ap.add_argument(
        "--features", choices=FEATURES, default=LearnSettings.features, help="the anomaly learner's features"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    cam = SyntheticCameraConfig(product=args.product, width=1280, height=800, seed=11)
    good = [
        p.image
        for _, p in iter_parts(cam.model_copy(update={"defect_rate": 0.0, "harmless_mark_rate": 0.0}), 0, args.learn)
    ]
    frames = [
        Frame(pid, "cam0", p.image, 0)
        for pid, p in iter_parts(cam.model_copy(update={"defect_rate": 0.5}), 10_000, args.parts)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        res = learn(good, Path(tmp) / "a.onnx", LearnSettings(long_side=args.long_side, features=args.features))
        learn_s = time.monotonic() - t0
        anomaly = AnomalyInspector(AnomalyInspectorConfig(model=res.path))
        ref = ReferenceInspector(ReferenceInspectorConfig())
        for img in good[:20]:
            ref.learn(Frame(0, "cam0", img, 0, {"defective": False}))
        ta, tr = timed(anomaly, frames), timed(ref, frames)
    row = {
        "frame": "1280x800 Mono8",
        "product": args.product,
        "features": args.features,
        "parts": args.parts,
        "learned_from": len(good),
        "learn_s": round(learn_s, 1),
        "anomaly_ms_median": round(float(np.median(ta)), 2),
        "anomaly_ms_p95": round(float(np.percentile(ta, 95)), 2),
        "reference_ms_median": round(float(np.median(tr)), 2),
        "reference_ms_p95": round(float(np.percentile(tr, 95)), 2),
        "target_ms": TARGET_MS,
        "anomaly_vs_reference": round(float(np.median(ta) / np.median(tr)), 2),
    }
    if args.json:
        print(json.dumps(row))
    else:
        print(
            f"anomaly   median {row['anomaly_ms_median']:6.2f} ms  p95 {row['anomaly_ms_p95']:6.2f} ms  (target "
            f"{TARGET_MS:.0f} ms; "
            f"learned {len(good)} parts in {learn_s:.1f} s)"
        )
        print(f"reference median {row['reference_ms_median']:6.2f} ms  p95 {row['reference_ms_p95']:6.2f} ms")
        print(f"anomaly / reference: {row['anomaly_vs_reference']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
