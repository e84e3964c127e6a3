"""The shipped default model on unseen synthetic parts: quality, and speed of the station path vs Ultralytics.

Prints, in one run, on the same N frames (parts of a line seed and part-id range the model never
saw in training, 1280x800 Mono8 as the synthetic camera gives them):

1. precision / recall / mAP50 / escape rate / false-reject rate at the rules the product's model ships
   with (``models.default_model.RECIPES[product].shipped_rules()``: the embedded default's per-class
   bands for ``machined``, the pcb model's bands and belt zones for ``pcb``) and the inspector settings it ships
   with (``shipped_inspector``: for ``pcb`` its template check), through the
   station's production path (OnnxInspector + Decider via ``inspect_part``), and the same detection
   figures from Ultralytics' own predictor on the same frames (a cross-check of the station's
   pre/post-processing: the two columns should agree; with the pcb model's template check, which Ultralytics
   does not have, the Ultralytics column is the model alone, and ``--no-template-check`` makes the two agree);
2. milliseconds per part: station path (inspect + decide) vs ``YOLO(model.onnx).predict(frame)``,
   each side in blocks of 10 parts, the order alternating block by block, with the ratio.

    python bench/bench_default_model.py            # 300 parts
    python bench/bench_default_model.py --n 60     # quicker
    python bench/bench_default_model.py --n 1000 --config tuned.yaml   # the rules of a station config, e.g. the
                                                   # per-class thresholds `models tune` chose on another golden set
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("YOLO_OFFLINE", "1")

from models import SHIPPED_DIRS  # noqa: E402
from models.dataset import GOLDEN_START, make_golden_set  # noqa: E402
from models.default_model import RECIPES  # noqa: E402
from models.evaluate import ImageResult, _eligibility_decider, ejected, eligible, open_inspector, score  # noqa: E402
from models.golden import GoldenItem, iter_images  # noqa: E402
from station.config import CalibrationConfig, RulesConfig, SyntheticCameraConfig, load_config  # noqa: E402
from station.contracts import Detections, Frame, Trigger  # noqa: E402
from station.decide import Decider  # noqa: E402
from station.inspection.model_meta import read_model_meta  # noqa: E402
from station.pipeline import inspect_part  # noqa: E402


def _image_result(
    item: GoldenItem,
    truth_boxes: np.ndarray,
    det: Detections,
    outcome: str,
    ms: float,
    elig: Decider,
    rules: RulesConfig,
) -> ImageResult:
    """One golden image's result as the evaluation scores it (the same for both paths)."""
    return ImageResult(
        item.stem,
        item.class_ids,
        truth_boxes,
        det,
        eligible(elig, det, "cam0"),
        str(outcome),
        (),
        ejected(outcome, rules),
        ms,
    )


BLOCK = 10  # parts per timing block of one side


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--product", choices=sorted(SHIPPED_DIRS), default="machined", help="the synthetic line's product to test on"
    )
    ap.add_argument("--model", type=Path, default=None, help="default: the product's shipped model")
    ap.add_argument("--n", type=int, default=300, help="unseen parts")
    ap.add_argument(
        "--seed", type=int, default=99, help="line seed of the parts (training used 2024, the card's test 777)"
    )
    ap.add_argument("--defect-rate", type=float, default=0.5)
    ap.add_argument("--mark-rate", type=float, default=0.1)
    ap.add_argument(
        "--station-model",
        type=Path,
        default=None,
        help="what the station runs (default --model), e.g. its INT8 copy from `models quantize` once the gate passed "
        "it",
    )
    ap.add_argument(
        "--runtime", choices=["auto", "onnxruntime", "openvino"], default="auto", help="the station's inspector.runtime"
    )
    ap.add_argument(
        "--config",
        type=Path,
        default=None,
        help="a station config whose rules and calibration decide (e.g. per-class thresholds from `models tune` on "
        "another golden set); default: the rules the product's model ships with",
    )
    ap.add_argument(
        "--no-template-check",
        action="store_true",
        help="the model alone, without the template check its recipe ships with (pcb)",
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout (the table goes to stderr)")
    args = ap.parse_args()
    json_out = sys.stdout
    if args.json:
        sys.stdout = sys.stderr

    if args.model is None:
        args.model = SHIPPED_DIRS[args.product] / "model.onnx"
    meta = read_model_meta(args.model)
    from station.config.inspection import OnnxInspectorConfig

    # the inspector settings the line runs: the config's, else those the product's model ships with
    icfg = RECIPES[args.product].shipped_inspector(SHIPPED_DIRS[args.product])
    if args.config is not None:
        cfg = load_config(args.config)
        rules, calib = cfg.rules, cfg.calibration
        icfg = cfg.inspector if isinstance(cfg.inspector, OnnxInspectorConfig) else OnnxInspectorConfig()
    else:
        rules, calib = RECIPES[args.product].shipped_rules(), CalibrationConfig()
    icfg = icfg.model_copy(update={"runtime": args.runtime})
    if args.no_template_check:
        icfg = icfg.model_copy(update={"template_check": None})
    cam = SyntheticCameraConfig(product=args.product, defect_rate=args.defect_rate, harmless_mark_rate=args.mark_rate)
    tmp = Path(tempfile.mkdtemp(prefix="bench-default-"))
    t0 = time.monotonic()
    golden = make_golden_set(tmp / "parts", args.n, args.seed, cam, start_id=GOLDEN_START + 2_000_000)
    frames = list(iter_images(golden.items))
    print(
        f"model {meta.model_id}: {meta.task} {list(meta.names)} input {list(meta.imgsz)}; "
        f"{len(frames)} unseen parts (seed {args.seed}, {golden.n_defective} defective) rendered in "
        f"{time.monotonic() - t0:.1f} s"
    )

    from ultralytics import YOLO  # the reference only

    yolo = YOLO(str(args.model), task="detect")
    # production inspector, evaluation conf 0.01
    inspector = open_inspector(args.station_model or args.model, icfg)
    decider = Decider(rules, calib, "bench")
    elig = _eligibility_decider(rules, calib)
    bgr = [cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img for _, img in frames]
    for k in range(3):  # warm both
        yolo.predict(bgr[k % len(bgr)], imgsz=list(meta.imgsz), conf=0.01, iou=0.5, verbose=False, device="cpu")
    n = len(frames)
    st_ms, ul_ms = [0.0] * n, [0.0] * n
    st_res: list[ImageResult | None] = [None] * n
    ul_res: list[ImageResult | None] = [None] * n

    def run_station(i: int) -> None:
        item, img = frames[i]
        h, w = img.shape[:2]
        t_ns = time.monotonic_ns()
        trig = Trigger(part_id=i + 1, seq=i + 1, t_trigger_ns=t_ns, source="bench")
        a = time.perf_counter()
        res = inspect_part(inspector, decider, trig, [Frame(i + 1, "cam0", img, t_ns)])
        st_ms[i] = (time.perf_counter() - a) * 1e3
        st_res[i] = _image_result(
            item, item.boxes_xyxy(w, h), res.detections[0], res.verdict.outcome, st_ms[i], elig, rules
        )

    def run_ultralytics(i: int) -> None:
        item, img = frames[i]
        h, w = img.shape[:2]
        a = time.perf_counter()
        preds = yolo.predict(bgr[i], imgsz=list(meta.imgsz), conf=0.01, iou=0.5, verbose=False, device="cpu")
        ul_ms[i] = (time.perf_counter() - a) * 1e3
        pred: Any = list(preds)[0]  # a list of Results (predict's annotation also allows a stream and tensors)
        b = pred.boxes
        udet = Detections(
            b.xyxy.numpy().astype(np.float32),
            b.conf.numpy().astype(np.float32),
            b.cls.numpy().astype(np.int32),
            meta.names,
            "ultralytics",
        )
        # Ultralytics has no rules: the part is ejected by the same Decider on its detections
        t_ns = time.monotonic_ns()
        trig = Trigger(part_id=i + 1, seq=i + 1, t_trigger_ns=t_ns, source="bench")
        v = decider.decide(trig, [Frame(i + 1, "cam0", img, t_ns)], [udet], {})
        ul_res[i] = _image_result(item, item.boxes_xyxy(w, h), udet, v.outcome, ul_ms[i], elig, rules)

    # each side in blocks of BLOCK parts, the order alternating block by block: interleaving part by part
    # would time each runtime right after the other's (onnxruntime's threads spin on after a run)
    for k, start in enumerate(range(0, n, BLOCK)):
        block = range(start, min(n, start + BLOCK))
        sides = (run_station, run_ultralytics) if k % 2 == 0 else (run_ultralytics, run_station)
        for side in sides:
            for i in block:
                side(i)
    inspector.close()
    s = score([r for r in st_res if r], meta.names, rules, model_id="station path", golden_id=golden.golden_id)
    u = score([r for r in ul_res if r], meta.names, rules, model_id="ultralytics", golden_id=golden.golden_id)

    def pct(v: float) -> str:
        return "-" if v != v else f"{100 * v:.1f}%"

    print(f"\n{'':<28}{'station path':>16}{'ultralytics':>16}")
    rows = [
        ("precision @ reject_conf", f"{s.precision:.3f}", f"{u.precision:.3f}"),
        ("recall @ reject_conf", f"{s.recall:.3f}", f"{u.recall:.3f}"),
        ("mAP50", f"{s.map50:.3f}", f"{u.map50:.3f}"),
        ("escape rate", f"{pct(s.escape_rate)} ({s.escapes})", f"{pct(u.escape_rate)} ({u.escapes})"),
        (
            "false-reject rate",
            f"{pct(s.false_reject_rate)} ({s.false_rejects})",
            f"{pct(u.false_reject_rate)} ({u.false_rejects})",
        ),
    ]
    for name in meta.names:
        rows.append(
            (
                f"{name}: P / R",
                f"{s.per_class[name].precision:.3f} / {s.per_class[name].recall:.3f}",
                f"{u.per_class[name].precision:.3f} / {u.per_class[name].recall:.3f}",
            )
        )
    med_s, med_u = statistics.median(st_ms), statistics.median(ul_ms)
    rows += [
        ("ms / part, median", f"{med_s:.1f}", f"{med_u:.1f}"),
        ("ms / part, p95", f"{np.percentile(st_ms, 95):.1f}", f"{np.percentile(ul_ms, 95):.1f}"),
    ]
    for label, station_cell, ultra_cell in rows:
        print(f"{label:<28}{station_cell:>16}{ultra_cell:>16}")
    print(f"\nspeed ratio (ultralytics / station, median): {med_u / med_s:.2f}x")
    print(
        "(station: Mono8 frame in, verdict out; ultralytics: BGR frame in, detections out - the grey->BGR copy is not "
        "timed)"
    )
    if args.json:
        import json

        json_out.write(
            json.dumps(
                {
                    "escape_rate": s.escape_rate,
                    "false_reject_rate": s.false_reject_rate,
                    "mAP50": s.map50,
                    "n_parts": len(st_res),
                    "product": args.product,
                    "per_class_recall": {n: s.per_class[n].recall for n in meta.names},
                    "speed_ratio_vs_ultralytics": med_u / med_s,
                    "station_ms_median": med_s,
                    "ultralytics_ms_median": med_u,
                    "station_model": str(args.station_model or args.model),
                    "rules": "shipped" if args.config is None else str(args.config),
                    "template_check": icfg.template_check is not None,
                    "station_runs_on": getattr(inspector, "providers", None),
                    "ultralytics": {"escape_rate": u.escape_rate, "mAP50": u.map50},
                },
                default=float,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
