"""Benchmark of the onnx inspector against its references, in one run, on one ONNX file.

Prints figures side by side (not a test):

1. station per part (``OnnxInspector.inspect``: letterbox + run + decode) vs a raw ``session.run``
   on a ready tensor, same session, interleaved: overhead median (target <= 2 ms) and throughput
   ratio (target >= 95 %);
2. station vs Ultralytics ``YOLO(model.onnx).predict(frame)`` per part (target >= 2x faster);
3. p50/p99/max over ``--count`` parts, and the first part after an ``--idle`` pause with the
   keep-alive on vs off.

Default model: an UNTRAINED yolov8n exported by Ultralytics at 640 (weights do not matter for
speed), cached by tests/model_factory.py. Frame: 1 MP Mono8 (1024x1024) with a few bright shapes.

    python bench/bench_inference.py            # 2000 parts, 60 s idle pauses (~4 min)
    python bench/bench_inference.py --quick    # small counts, 5 s pauses
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("YOLO_OFFLINE", "1")

from station.config.inspect import OnnxInspectorConfig  # noqa: E402
from station.inspect.onnx_backend import OnnxInspector  # noqa: E402
from station.types import Frame  # noqa: E402


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of values."""
    return float(np.percentile(np.asarray(values), q))


def make_frame(w: int, h: int) -> np.ndarray:
    """A Mono8 frame: dark noisy background with a few bright squares/discs."""
    from tests.model_factory import draw_scene

    img, _ = draw_scene(np.random.default_rng(0), (h, w), 5, 20, 80)
    return img[:, :, 0].copy()


def timed(fn, n: int) -> list[float]:
    """Run fn n times; per-call wall times in ms."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, help="ONNX file (default: untrained yolov8n exported at --imgsz)")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--frame", default="1024x1024", help="WxH of the Mono8 frame")
    ap.add_argument("--count", type=int, default=2000, help="parts for the latency distribution")
    ap.add_argument("--pairs", type=int, default=300, help="interleaved station/raw pairs for the overhead")
    ap.add_argument("--ultra", type=int, default=100, help="parts through Ultralytics predict")
    ap.add_argument("--idle", type=float, default=60.0, help="idle pause (s) before the first-part measurement")
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = one per core)")
    ap.add_argument("--quick", action="store_true", help="small counts and a 5 s pause")
    args = ap.parse_args(argv)
    if args.quick:
        args.count, args.pairs, args.ultra, args.idle = 200, 100, 30, 5.0
    logging.basicConfig(level=logging.WARNING)

    if args.model is None:
        from tests.model_factory import untrained_model

        args.model = untrained_model("detect", imgsz=args.imgsz)
    w, h = (int(v) for v in args.frame.lower().split("x"))
    img = make_frame(w, h)
    frame = Frame(part_id=0, camera_id="bench", image=img, t_exposure_ns=0)
    print(f"model {args.model}  frame {w}x{h} Mono8  threads {args.threads or os.cpu_count()}  cpus {os.cpu_count()}")
    print(f"load average at start: {os.getloadavg()}")

    def cfg(keepalive: float) -> OnnxInspectorConfig:
        return OnnxInspectorConfig(model=args.model, intra_op_threads=args.threads, keepalive_s=keepalive, conf=0.25)

    insp = OnnxInspector(cfg(0.0))
    print(f"providers {insp.providers}, input {insp.input_hw}")

    # 1. station vs raw session.run, same session, interleaved -----------------------------
    insp.inspect(frame)
    tensor = insp._tensor.view(1).copy()  # a ready tensor for the raw runs
    sess, in_name = insp.session, insp.session.get_inputs()[0].name
    station_ms, raw_ms, code_ms = [], [], []
    for _ in range(args.pairs):
        t0 = time.perf_counter()
        tm = insp.inspect(frame).timings_ms
        t1 = time.perf_counter()
        code_ms.append(tm["preprocess"] + tm["postprocess"])
        sess.run(None, {in_name: tensor})
        t2 = time.perf_counter()
        station_ms.append((t1 - t0) * 1e3)
        raw_ms.append((t2 - t1) * 1e3)
    diffs = [s - r for s, r in zip(station_ms, raw_ms)]
    d = insp.inspect(frame).timings_ms
    print("\n1) station inspect() vs raw session.run (same session, interleaved, %d pairs)" % args.pairs)
    print(f"   raw session.run     median {statistics.median(raw_ms):8.2f} ms")
    print(f"   station inspect()   median {statistics.median(station_ms):8.2f} ms"
          f"   (preprocess {d['preprocess']:.2f}, infer {d['infer']:.2f}, postprocess {d['postprocess']:.2f})")
    print(f"   overhead median (paired)   {statistics.median(diffs):8.2f} ms   target <= 2 ms")
    print(f"   of which station code (preprocess + postprocess) median {statistics.median(code_ms):.2f} ms")
    print(f"   throughput ratio raw/station {sum(raw_ms) / sum(station_ms) * 100:6.1f} %   target >= 95 %")

    # 2. station vs Ultralytics predict -------------------------------------------------------
    from ultralytics import YOLO

    yolo = YOLO(str(args.model), task=insp.task)
    for _ in range(3):
        yolo.predict(img, imgsz=args.imgsz, conf=0.25, verbose=False)
    # Blocks, not strict interleaving: each onnxruntime session has its own spinning thread pool,
    # and a pool still spinning right after its run would slow the other session's next run.
    ultra_ms, st_ms, rw_ms = [], [], []
    ultra_out, st_out = [], []  # each call's own time outside its session.run, paired per call

    def ultra_call() -> None:
        t0 = time.perf_counter()
        res = yolo.predict(img, imgsz=args.imgsz, conf=0.25, verbose=False)
        ultra_out.append((time.perf_counter() - t0) * 1e3 - res[0].speed["inference"])

    def station_call() -> None:
        t0 = time.perf_counter()
        tm = insp.inspect(frame).timings_ms
        st_out.append((time.perf_counter() - t0) * 1e3 - tm["infer"])

    block = 10
    for _ in range(max(1, args.ultra // block)):
        ultra_ms += timed(ultra_call, block + 1)[1:]
        st_ms += timed(station_call, block + 1)[1:]
        rw_ms += timed(lambda: sess.run(None, {in_name: tensor}), block + 1)[1:]
    u, s, r = statistics.median(ultra_ms), statistics.median(st_ms), statistics.median(rw_ms)
    uo, so = statistics.median(ultra_out), statistics.median(st_out)
    print(f"\n2) station vs Ultralytics YOLO(onnx).predict, alternating blocks of {block} with raw runs, "
          f"{len(ultra_ms)} parts each (raw session.run median {r:.2f} ms)")
    print(f"   whole part: ultralytics median {u:8.2f} ms   station median {s:8.2f} ms   ratio {u / s:5.2f}x   target >= 2x")
    print(f"   outside the model run (wall - its own inference time, per call): ultralytics {uo:.2f} ms, "
          f"station {so:.2f} ms  -> ratio {uo / max(so, 1e-3):.1f}x")
    print("   (both run the same onnxruntime model; when inference dominates, the whole-part ratio tends to 1)")
    del yolo

    # 3. latency distribution and first part after an idle pause -------------------------------
    lat = timed(lambda: insp.inspect(frame), args.count)
    print(f"\n3) station latency over {args.count} parts: p50 {pct(lat, 50):.2f}  p99 {pct(lat, 99):.2f}  "
          f"max {max(lat):.2f} ms  (mean {statistics.fmean(lat):.2f})")
    insp.close()
    results = {}
    for label, keepalive in (("keep-alive off", 0.0), ("keep-alive on", min(5.0, args.idle / 3))):
        ins = OnnxInspector(cfg(keepalive))
        warm = timed(lambda: ins.inspect(frame), 30)
        time.sleep(args.idle)  # the bench idles on purpose; never done on the station's hot path
        t0 = time.perf_counter()
        ins.inspect(frame)
        first = (time.perf_counter() - t0) * 1e3
        second = timed(lambda: ins.inspect(frame), 1)[0]
        results[label] = (first, second, statistics.median(warm), ins.keepalive_runs)
        ins.close()
    print(f"   first part after {args.idle:.0f} s idle (ratio = first / warm median of the same inspector):")
    for label, (first, second, warm, runs) in results.items():
        print(f"     {label:15s} first {first:8.2f} ms   next {second:7.2f} ms   warm median {warm:7.2f} ms"
              f"   ratio {first / warm:5.2f}   ({runs} keep-alive runs)")
    print(f"\nload average at end: {os.getloadavg()}  (the machine is shared: figures move with the load)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
