"""The closed loop, measured: a flawed model on the line -> QA relabels its mistakes -> retrain -> evaluate -> promote.

On the synthetic line (machined flanges, 320x200 frames, defect classes ``missing`` and ``spot``, a
third of the parts carry a harmless ink mark):

1. The starting model is trained (models.jobs, as the web page does) on labels that never name the
   class ``missing`` (a class the labelling did not know yet): it lets those parts through.
2. The station runs it on live parts (every image kept). A programmatic QA reviewer - the synthetic
   ground truth stands in for the engineer's eye - reviews every recorded image with the SAME
   functions the review page calls (``labeling.confirm`` / ``delete_label`` / ``add_label`` /
   ``mark_image_good``): false positives deleted, missed defects added, right boxes confirmed.
3. The reviewed images become a dataset snapshot (``labeling.create_snapshot``), exported for
   Ultralytics (``labeling.export_yolo``); the current model's weights are fine-tuned on it through
   ``models.jobs.JobRunner``; the job exports ONNX, evaluates it against the current model on a
   frozen golden set (the production path) and registers it.
4. The registry's gate decides the promotion; the station hot-swaps to the promoted model and more
   parts run.
5. Escape and false-reject rates before and after, on an unseen synthetic test set (another seed,
   another part-id range) through the production path, side by side with the ratio; and the same
   two rates measured on the line itself (first parts vs parts after the swap).

    python bench/bench_closed_loop.py            # about 15 min on 2 CPU cores
    python bench/bench_closed_loop.py --quick    # a 3-minute smoke run of every step (figures meaningless)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from labeling.queue import iou

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("YOLO_OFFLINE", "1")

import labeling  # noqa: E402
import models.dataset  # noqa: E402
from models import registry  # noqa: E402
from models.dataset import GOLDEN_START, NAMES, VAL_START, TrainView, apply_view, label_lines, make_golden_set  # noqa: E402
from models.default_model import DefaultRecipe  # noqa: E402
from models.eval_compare import compare  # noqa: E402
from models.jobs import SUCCEEDED, JobRunner, JobSpec, JobState  # noqa: E402
from station.acquire.synthetic import iter_parts  # noqa: E402
from station.app import Station  # noqa: E402
from station.config import RulesConfig, SyntheticCameraConfig, parse_config  # noqa: E402
from station.store.db import open_db  # noqa: E402
from tests.station_configs import store_section  # noqa: E402

CAMERA = {
    "product": "machined",
    "width": 320,
    "height": 200,
    "defect_rate": 0.6,
    "defect_classes": ["missing", "spot"],
    "harmless_mark_rate": 0.3,
}
DROPPED = "missing"  # the class the starting model's labels never name
MIN_BOX_PX = float(
    getattr(models.dataset, "MIN_BOX_PX", 0.0)
)  # the labelling convention of models.dataset (small defects grown)
EXPORT_HW = (224, 320)  # the model input: 320x200 frames at scale 1
TRAIN_SEED, LINE_SEED, GOLDEN_SEED, TEST_SEED = 3, 11, 21, 31
HYP = {**DefaultRecipe().hyp, "close_mosaic": 3, "mosaic": 1.0}  # the default model's, with mosaic augmentation
FINETUNE_HYP = {**HYP, "lr0": 0.002, "close_mosaic": 5}


@dataclass(frozen=True)
class Plan:
    """How much of everything (full run vs --quick)."""

    n_train: int = 200
    n_val: int = 20
    crop: int = 192
    epochs: int = 12
    line_parts: int = 240
    after_parts: int = 120
    retrain_epochs: int = 20
    retrain_imgsz: int = 320
    n_golden: int = 100
    n_test: int = 300


QUICK = Plan(n_train=24, n_val=8, epochs=2, line_parts=30, after_parts=20, retrain_epochs=1, n_golden=30, n_test=40)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- 1. the flawed model


def grow(box: Any, width: int, height: int) -> tuple[float, float, float, float]:
    """A truth box grown to at least MIN_BOX_PX (the labelling convention of models.dataset and the golden sets)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    gx, gy = max(0.0, MIN_BOX_PX - (x2 - x1)) / 2, max(0.0, MIN_BOX_PX - (y2 - y1)) / 2
    return max(0.0, x1 - gx), max(0.0, y1 - gy), min(float(width), x2 + gx), min(float(height), y2 + gy)


def write_flawed_dataset(root: Path, cam: SyntheticCameraConfig, plan: Plan) -> Path:
    """A YOLO dataset of crops around the part whose labels leave out every ``missing`` defect (the flaw)."""
    view = TrainView(None, plan.crop)
    for split, start, n in (("train", 0, plan.n_train), ("val", VAL_START, plan.n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for pid, part in iter_parts(cam, start, n):
            h, w = part.image.shape[:2]
            objs = [(NAMES.index(t.class_name), grow(t.box_xyxy, w, h)) for t in part.truth if t.class_name != DROPPED]
            ids = np.array([c for c, _ in objs], np.int32)
            boxes = np.array([b for _, b in objs], np.float64).reshape(-1, 4)
            img, ids, boxes, _ = apply_view(part.image, ids, boxes, view, np.random.default_rng([TRAIN_SEED, pid, 7]))
            cv2.imwrite(str(root / "images" / split / f"{split}_{pid:08d}.png"), img)
            lines = label_lines(ids, boxes, img.shape[1], img.shape[0])
            (root / "labels" / split / f"{split}_{pid:08d}.txt").write_text("".join(f"{ln}\n" for ln in lines))
    names = "".join(f"  {i}: {n}\n" for i, n in enumerate(NAMES))
    (root / "data.yaml").write_text(f"path: {root.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}")
    (root / "dataset.json").write_text(
        json.dumps({"snapshot": f"bench-flawed-no-{DROPPED}-s{TRAIN_SEED}-n{plan.n_train}"})
    )
    return root / "data.yaml"


def run_job(runner: JobRunner, spec: JobSpec, what: str) -> JobState:
    """Start a job and print one line per finished epoch; raise if it did not succeed."""

    def on_event(st: JobState, ev: Any) -> None:
        if ev.get("event") == "progress" and ev.get("phase") == "epoch":
            m = ev.get("metrics") or {}
            log(
                f"  {what}: epoch {ev['epoch']}/{ev['epochs']} {ev['elapsed_s']:.0f} s, box loss "
                f"{ev['losses'].get('box_loss', 0):.3f}, "
                f"val P {m.get('precision', 0):.2f} R {m.get('recall', 0):.2f} mAP50 {m.get('mAP50', 0):.3f}"
            )
        elif ev.get("event") == "phase":
            log(f"  {what}: {ev.get('phase')}")

    st = runner.start(spec, on_event)
    runner.wait(st.job_id)
    if st.status != SUCCEEDED:
        raise SystemExit(f"{what} {st.status}: {st.error}\n{st.log_path.read_text()[-3000:]}")
    return st


def train_job(runner: JobRunner, what: str, **spec: Any) -> JobState:
    """A training job of this bench (batch 16, seed 0, exported at EXPORT_HW) run to its end by :func:`run_job`."""
    return run_job(runner, JobSpec(batch=16, seed=0, export_imgsz=EXPORT_HW, **spec), what)


# --------------------------------------------------------------------------- 2. the line


def line_config(work: Path, model: Path, seed: int) -> Any:
    return parse_config(
        {
            "name": "closed-loop",
            "cameras": [{"type": "synthetic", "id": "cam0", **CAMERA, "seed": seed}],
            "trigger": {"type": "software"},
            "inspector": {"type": "onnx", "model": str(model), "keepalive_s": 0},
            "reject": {"travel_ms": 3000, "safety_margin_ms": 200, "pulse_ms": 10},
            "store": store_section(work / "station", keep_pass_every=1, image_format="png"),
            "web": {"enabled": False},
        }
    )


def run_parts(st: Station, n: int) -> None:
    """Trigger ``n`` parts one after another (each waits for its verdict), then wait for the records."""
    for _ in range(n):
        before = st.counters.snapshot().verdicts
        if st.trigger("bench") is None:
            raise SystemExit("the line refused a trigger")
        t_end = time.monotonic() + 20
        while st.counters.snapshot().verdicts <= before:
            if time.monotonic() > t_end:
                raise SystemExit("no verdict within 20 s")
            time.sleep(0.002)
    t_end = time.monotonic() + 30
    while (lambda c: c.records_written + c.records_dropped < c.verdicts)(st.counters.snapshot()):
        if time.monotonic() > t_end:
            raise SystemExit("records not written within 30 s")
        time.sleep(0.05)


def line_rates(db: Any, first: int, last: int, reject_uncertain: bool) -> dict[str, Any]:
    """Escape / false-reject rates of recorded parts ``first..last`` against their synthetic ground truth."""
    ej = ("FAIL", "FAILSAFE", "UNCERTAIN") if reject_uncertain else ("FAIL", "FAILSAFE")
    rows = db.execute(
        "SELECT outcome, ground_truth FROM inspections WHERE part_id BETWEEN ? AND ?", [first, last]
    ).fetchall()
    d = g = esc = fr = 0
    for outcome, gt in rows:
        defective = any(json.loads(gt or "{}").values())
        if defective:
            d += 1
            esc += outcome not in ej
        else:
            g += 1
            fr += outcome in ej
    return {
        "n": len(rows),
        "defective": d,
        "good": g,
        "escapes": esc,
        "false_rejects": fr,
        "escape_rate": esc / d if d else float("nan"),
        "false_reject_rate": fr / g if g else float("nan"),
    }


# --------------------------------------------------------------------------- 3. QA review


def review(db: Any, user: str) -> dict[str, int]:
    """Review every recorded image against its ground truth with the review page's functions; returns what was done."""
    counts = {"images": 0, "confirmed": 0, "deleted": 0, "added": 0, "good": 0, "mistaken_images": 0}
    rows = db.execute(
        "SELECT i.id, i.camera_id, p.ground_truth FROM images i JOIN inspections p ON p.part_id = i.part_id "
        "WHERE i.deleted_at IS NULL ORDER BY i.id"
    ).fetchall()
    sizes = dict((r[0], (r[1], r[2])) for r in db.execute("SELECT id, width, height FROM images"))
    for image_id, cam, gt in rows:
        w, h = sizes[image_id]
        truth = [(t["class_name"], grow(t["box_xyxy"], w, h)) for t in json.loads(gt or "{}").get(cam, [])]
        counts["images"] += 1
        current = labeling.current_labels(db, image_id)
        used: set[int] = set()
        keep, wrong = [], []
        for lab in current:
            j = next(
                (
                    k
                    for k, (c, b) in enumerate(truth)
                    if k not in used and c == lab.class_name and iou(lab.box, b) >= 0.5
                ),
                None,
            )
            if j is None:
                wrong.append(lab)
            else:
                used.add(j)
                keep.append(lab.id)
        missed = [t for k, t in enumerate(truth) if k not in used]
        counts["mistaken_images"] += bool(wrong or missed)
        if not truth:
            labeling.mark_image_good(
                db, user, image_id, reason="no defect" + (f": {len(wrong)} false positive(s)" if wrong else "")
            )
            counts["good"] += 1
            counts["deleted"] += len(wrong)
            continue
        for lab in wrong:
            labeling.delete_label(db, user, image_id, lab.id, reason="false positive")
            counts["deleted"] += 1
        if keep:
            labeling.confirm(db, user, image_id, keep)
            counts["confirmed"] += len(keep)
        for c, b in missed:
            labeling.add_label(db, user, image_id, b, c, classes=NAMES, reason="missed defect")
            counts["added"] += 1
    return counts


# --------------------------------------------------------------------------- report


def pct(v: float) -> str:
    return "   -  " if v != v else f"{100 * v:5.1f}%"


def ratio(after: float, before: float) -> str:
    if before != before or after != after:
        return "-"
    if before == 0:
        return "same" if after == 0 else "inf"
    return f"{after / before:.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="tiny counts: a smoke run of every step (the figures mean nothing)"
    )
    ap.add_argument(
        "--work", type=Path, default=None, help="working folder (default: a new temporary one, removed unless --keep)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the working folder")
    args = ap.parse_args()
    plan = QUICK if args.quick else Plan()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-closed-loop-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    cam = SyntheticCameraConfig.model_validate(CAMERA)
    rules = RulesConfig()
    timings: dict[str, float] = {}
    t_all = time.monotonic()
    log(
        f"closed loop on the synthetic line ({CAMERA['width']}x{CAMERA['height']}, defects {CAMERA['defect_classes']}, "
        f"{CAMERA['harmless_mark_rate']:.0%} harmless marks; the starting model never saw a '{DROPPED}' label), work "
        f"folder {work}"
        f"{' (QUICK: figures meaningless)' if args.quick else ''}"
    )

    # 1. the flawed starting model
    t = time.monotonic()
    data = write_flawed_dataset(work / "flawed-data", cam.model_copy(update={"seed": TRAIN_SEED}), plan)
    runner = JobRunner(work / "jobs")
    flawed = train_job(
        runner,
        "flawed model",
        data_yaml=str(data),
        epochs=plan.epochs,
        imgsz=plan.crop,
        hyp=HYP,
        lineage={"flaw": f"labels never name {DROPPED}"},
        trained_by="bench: flawed labels",
    )
    flawed_onnx = Path(flawed.result["onnx"])  # type: ignore[index]
    timings["train flawed model"] = time.monotonic() - t

    # 2. the line runs it
    t = time.monotonic()
    cfg = line_config(work, flawed_onnx, LINE_SEED)
    db_path = Path(cfg.store.db_path)
    store = db_path.parent / "models"
    st = Station(cfg)
    db = open_db(db_path, migrate=False)
    current = registry.ensure_current(db, flawed_onnx, store_dir=store, user="bench")
    st.start()
    try:
        run_parts(st, plan.line_parts)
        before_line = line_rates(db, 1, plan.line_parts, rules.uncertain_action == "reject")
        timings[f"line: {plan.line_parts} parts"] = time.monotonic() - t
        log(f"line, flawed model: {before_line}")

        # 3. QA review -> snapshot -> export
        t = time.monotonic()
        counts = review(db, "qa-bench")
        snap = labeling.create_snapshot(db, "qa-bench", name="closed-loop", class_names=list(NAMES))
        export = labeling.export_yolo(db, st.images, snap.id, work / "snapshot-export", val_fraction=0.15, seed=0)
        timings["QA review + snapshot + export"] = time.monotonic() - t
        log(f"QA review: {counts}; snapshot {snap.id} ({len(snap.image_ids)} images, {snap.n_labels} boxes)")

        # 4. retrain through the job runner: fine-tune the current model, evaluate against it on the golden set,
        # register
        t = time.monotonic()
        golden = make_golden_set(work / "golden", plan.n_golden, GOLDEN_SEED, cam, start_id=GOLDEN_START)
        retrained = train_job(
            runner,
            "retrain",
            data_yaml=str(export),
            model=str(current.weights_path),
            epochs=plan.retrain_epochs,
            imgsz=plan.retrain_imgsz,
            hyp=FINETUNE_HYP,
            golden=str(golden.root),
            current_model=str(current.path),
            rules=rules.model_dump(mode="json"),
            db=str(db_path),
            store_dir=str(store),
            trained_by="bench: QA loop",
        )
        new_sha = retrained.result["registered"]["sha256"]  # type: ignore[index]
        timings["retrain + evaluate + register"] = time.monotonic() - t

        # 5. the gate, the promotion and the hot swap
        t = time.monotonic()
        cand = registry.get(db, new_sha)
        decision = registry.gate(cand, registry.current(db))
        log(f"gate: {decision.message}")
        promoted = False
        try:
            registry.promote(db, new_sha, "bench-admin", reason="closed loop")
            promoted = True
        except registry.PromotionRefused as e:
            log(f"promotion refused: {e}")
        if promoted:
            done = threading.Event()
            errors: list[Any] = []

            def swapped(err: Exception | None) -> None:
                errors.append(err)
                done.set()

            st.swap_model(cand.path, swapped)
            done.wait(60)
            if errors and errors[0] is not None:
                raise SystemExit(f"hot swap failed: {errors[0]}")
            log(f"the line now runs {st.inspector.model_id}")
            run_parts(st, plan.after_parts)
            after_line = line_rates(
                db, plan.line_parts + 1, plan.line_parts + plan.after_parts, rules.uncertain_action == "reject"
            )
            log(f"line, retrained model: {after_line}")
        else:
            after_line = None
        timings["promote + swap + line after"] = time.monotonic() - t
    finally:
        st.stop()
        db.close()

    # 6. both models on an unseen test set, through the production path
    t = time.monotonic()
    test = make_golden_set(work / "test", plan.n_test, TEST_SEED, cam, start_id=GOLDEN_START + 5_000_000)
    comp = compare(cand.path, current.path, test, rules=rules)
    timings["evaluate on the unseen test set"] = time.monotonic() - t
    total = time.monotonic() - t_all
    b, a = comp.current, comp.candidate
    assert b is not None

    print()
    print(
        f"CLOSED LOOP on an unseen synthetic test set: {len(a.images)} parts (seed {TEST_SEED}, ids from "
        f"{GOLDEN_START + 5_000_000}), "
        f"{a.n_defective} defective, {a.n_good} good; {CAMERA['harmless_mark_rate']:.0%} carry a harmless mark"
    )
    print(
        f"starting model: trained {plan.epochs} epochs on {plan.n_train} parts whose labels never name '{DROPPED}' "
        "defects"
    )
    print(
        f"loop: {plan.line_parts} line parts reviewed ({counts['mistaken_images']} images with mistakes: "
        f"{counts['deleted']} false "
        f"positives deleted, {counts['added']} missed defects added, {counts['confirmed']} boxes confirmed, "
        f"{counts['good']} marked good), "
        f"fine-tuned {plan.retrain_epochs} epochs"
    )
    print(f"{'':34}{'flawed (before)':>18}{'retrained (after)':>20}{'after/before':>14}")
    rows = [
        ("escape rate", b.escape_rate, a.escape_rate, f"({b.escapes})", f"({a.escapes})"),
        ("false-reject rate", b.false_reject_rate, a.false_reject_rate, f"({b.false_rejects})", f"({a.false_rejects})"),
        ("uncertain rate", b.uncertain_rate, a.uncertain_rate, "", ""),
    ]
    for label, vb, va, nb, na in rows:
        print(f"{label:34}{pct(vb) + ' ' + nb:>18}{pct(va) + ' ' + na:>20}{ratio(va, vb):>14}")
    for k in ("precision", "recall", "map50"):
        vb, va = getattr(b, k), getattr(a, k)
        print(f"{k + ' @ reject_conf' if k != 'map50' else 'mAP50':34}{vb:>18.3f}{va:>20.3f}{ratio(va, vb):>14}")
    for name in NAMES:
        pb, pa = b.per_class[name], a.per_class[name]
        if pb.n_parts:
            print(
                f"{name + ': escape':34}{pct(pb.escape_rate) + f' of {pb.n_parts}':>18}"
                f"{pct(pa.escape_rate) + f' of {pa.n_parts}':>20}"
                f"{ratio(pa.escape_rate, pb.escape_rate):>14}"
            )
    fp_b, fp_a = int(b.confusion[-1, :-1].sum()), int(a.confusion[-1, :-1].sum())
    print(f"{'boxes on defect-free areas':34}{fp_b:>18}{fp_a:>20}{ratio(fp_a, fp_b):>14}")
    if after_line is not None:
        print(
            f"on the line: escape {pct(before_line['escape_rate'])} -> {pct(after_line['escape_rate'])}, false reject "
            f"{pct(before_line['false_reject_rate'])} -> {pct(after_line['false_reject_rate'])} "
            f"(parts 1-{plan.line_parts} flawed, {plan.line_parts + 1}-{plan.line_parts + plan.after_parts} retrained)"
        )
    print(f"gate: {'promoted' if promoted else 'REFUSED'} ({decision.message})")
    print(
        "time: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
        + f"; total {total:.0f} s ({total / 60:.1f} min)"
    )
    if not args.keep and args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
