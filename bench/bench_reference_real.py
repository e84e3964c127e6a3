"""The reference (golden-template) inspector on real AOI imagery, against a plain difference baseline.

Data (never part of the repo): scanned PCBs that fill the whole frame, in the
PKU/HRI ``PCB_DATASET`` naming, ``DATA_DIR/images/NN_<class>_MM.jpg`` (board
``NN``), and ``DATA_DIR/boxes.txt``, one line per annotated image:
``<stem> x0,y0,x1,y1 x0,y0,x1,y1 ...`` (full-resolution pixels, from the
dataset's Annotations/*.xml). Every image of one board is the same board with
different defects, pixel-aligned. The defect-free template of a test image is
rebuilt from the *other* images of its board: their per-pixel median, each
image's own annotated boxes (grown by 8 px) left out of the median, so no pixel
of the test image and no annotated defect enters its template.

Per test image: grey, downscaled to ~1 MP (template and test alike); the test
image then gets a random shift (+-4 px) and rotation (+-0.25 deg) (seeded), as
a fixtured part would; both are cropped by the same 12-px margin. The
reference inspector learns from the one template image (``learn_parts: 1``)
and inspects the test image; the baseline is ``absdiff(template, test) ->
threshold -> 3x3 open -> connected components`` on the same input (no
alignment), its threshold and minimum area tuned on the dev split. Also shown,
for scale: the baseline on the un-shifted test image (alignment for free).

Predicted boxes match ground-truth boxes greedily by score at IoU >= 0.33.
Printed: precision, recall, F1 at the score threshold that maximises F1 on the
dev split, and AP (all-point, score-ranked), for each split; and the
reference inspector's ``image_score`` and best detection score over good
parts (per test image: another capture of its board, that capture's
annotated defects covered by the template, shifted/rotated, with sensor
noise and a brightness change), to set the uncertain band. Also the
reference inspector at a label-free operating point: the score threshold
just above every detection on the dev split's good parts (what a station
without defect labels would set), row ``reference_goodpart_thr``.

Boards are split into dev and held-back test with a fixed seed; tune on
``--dev``, report ``--test``.

Usage: python bench/bench_reference_real.py DATA_DIR [--dev|--test] [--json] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from station.config import ReferenceInspectorConfig  # noqa: E402
from station.contracts import Frame  # noqa: E402
from station.inspection.reference import ReferenceInspector  # noqa: E402

IOU = 0.33
MEGAPIXELS = 1.0
MARGIN = 12  # crop margin at the bench scale (px)
MAX_SHIFT, MAX_ROT_DEG = 4.0, 0.25
NOISE = 2.0  # grey levels of sensor noise on every inspected image
# the AOI settings (chosen on the dev split; see --dev)
AOI_CFG = dict(learn_parts=1, scale=1.0, align_patches=16, box_margin_px=6, box_margin_frac=0.25)
BASELINE_THRESHOLDS = (20, 25, 30, 35, 40, 50, 60, 70, 80)
BASELINE_MIN_AREAS = (4, 9, 16, 25, 40)
BASELINE_MARGINS = (0, 3, 6, 9)  # the baseline may grow its boxes too (tuned on dev): a fair box comparison


@dataclass
class Case:
    board: str
    stem: str
    template: np.ndarray  # grey, bench scale, cropped
    test: np.ndarray  # grey, shifted/rotated, cropped
    aligned: np.ndarray  # grey, un-shifted, cropped
    good: np.ndarray  # another capture of the board, its defects covered by the template, shifted, noisy
    boxes: np.ndarray  # (n, 4) ground truth on ``test``
    boxes_aligned: np.ndarray  # (n, 4) on ``aligned``


@dataclass
class Scored:
    """Detections of one method over one split: (score, is_tp) and the number of ground-truth boxes."""

    hits: list[tuple[float, bool]] = field(default_factory=list)
    n_truth: int = 0


def read_boxes(path: Path) -> dict[str, np.ndarray]:
    out = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts:
            out[parts[0]] = np.array([[float(v) for v in p.split(",")] for p in parts[1:]], np.float64).reshape(-1, 4)
    return out


def warp_boxes(boxes: np.ndarray, M: np.ndarray) -> np.ndarray:
    out = []
    for x0, y0, x1, y1 in boxes:
        pts = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], np.float64) @ M.T
        out.append((pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()))
    return np.asarray(out, np.float64).reshape(-1, 4)


def _grey(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ValueError(f"{path}: not a readable image (replace the file or remove it from the data folder)")
    return img


def load_cases(data: Path, seed: int, mp: float = MEGAPIXELS) -> list[Case]:
    boxes = read_boxes(data / "boxes.txt")
    files = sorted((data / "images").glob("*.jpg"))
    boards: dict[str, list[Path]] = {}
    for f in files:
        boards.setdefault(f.stem.split("_")[0], []).append(f)
    cache = data / ".cache"
    cache.mkdir(exist_ok=True)
    cases = []
    for board, members in sorted(boards.items()):
        if len(members) < 3:
            continue  # fewer than two other images: no clean template
        greys = {f.stem: _grey(f) for f in members}
        for f in members:
            if f.stem not in boxes:
                continue
            cpath = cache / f"{f.stem}_template.png"
            if cpath.exists():
                tpl_full = _grey(cpath)
            else:
                stack, valid = [], []
                for g in members:
                    if g == f:
                        continue
                    img = greys[g.stem].astype(np.float32)
                    ok = np.ones(img.shape, bool)
                    for x0, y0, x1, y1 in boxes.get(g.stem, np.zeros((0, 4))):
                        ok[max(int(y0) - 8, 0) : int(y1) + 8, max(int(x0) - 8, 0) : int(x1) + 8] = False
                    stack.append(np.where(ok, img, np.nan))
                    valid.append(ok)
                tpl = np.nanmedian(np.stack(stack), axis=0)
                tpl = np.where(
                    np.isnan(tpl), np.median(np.stack([greys[g.stem] for g in members if g != f]), axis=0), tpl
                )
                tpl_full = np.clip(np.round(tpl), 0, 255).astype(np.uint8)
                cv2.imwrite(str(cpath), tpl_full)
            H, W = tpl_full.shape
            k = min(1.0, (mp * 1e6 / (W * H)) ** 0.5)
            size = (int(round(W * k)), int(round(H * k)))
            tpl = cv2.resize(tpl_full, size, interpolation=cv2.INTER_AREA)
            test = cv2.resize(greys[f.stem], size, interpolation=cv2.INTER_AREA)
            gt = boxes[f.stem] * np.array([size[0] / W, size[1] / H] * 2)
            rng = np.random.default_rng([seed, int(board), int(re.sub(r"\D", "", f.stem)[-2:])])
            crop = (slice(MARGIN, size[1] - MARGIN), slice(MARGIN, size[0] - MARGIN))
            off = np.array([MARGIN, MARGIN, MARGIN, MARGIN], np.float64)

            def jitter(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                ang = rng.uniform(-MAX_ROT_DEG, MAX_ROT_DEG)
                M: np.ndarray = cv2.getRotationMatrix2D((size[0] / 2, size[1] / 2), ang, 1.0)
                M[:, 2] += rng.uniform(-MAX_SHIFT, MAX_SHIFT, 2)
                return cv2.warpAffine(img, M, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101), M

            def sensor(img: np.ndarray) -> np.ndarray:  # another capture: gain and noise
                return np.clip(
                    img.astype(np.float32) * rng.uniform(0.95, 1.05) + rng.normal(0, NOISE, img.shape), 0, 255
                ).astype(np.uint8)

            # a good part: another capture of the board (its own texture and noise), its annotated defects covered by
            # the template
            others = [g for g in members if g != f and g.stem in boxes]
            other = others[0] if others else f
            g_full = greys[other.stem].copy()
            for x0, y0, x1, y1 in boxes.get(other.stem, np.zeros((0, 4))):
                sl_ = (slice(max(int(y0) - 8, 0), int(y1) + 8), slice(max(int(x0) - 8, 0), int(x1) + 8))
                g_full[sl_] = tpl_full[sl_]
            moved, M = jitter(test)
            moved, test = sensor(moved), sensor(test)
            good = sensor(jitter(cv2.resize(g_full, size, interpolation=cv2.INTER_AREA))[0])
            cases.append(
                Case(
                    board,
                    f.stem,
                    np.ascontiguousarray(tpl[crop]),
                    np.ascontiguousarray(moved[crop]),
                    np.ascontiguousarray(test[crop]),
                    np.ascontiguousarray(good[crop]),
                    warp_boxes(gt, M) - off,
                    gt - off,
                )
            )
    return cases


def split(cases: list[Case], seed: int) -> tuple[list[Case], list[Case]]:
    boards = sorted({c.board for c in cases})
    order = np.random.default_rng(seed).permutation(len(boards))
    dev = {boards[i] for i in order[: len(boards) // 2]}
    return [c for c in cases if c.board in dev], [c for c in cases if c.board not in dev]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter + 1e-9)


def match(pred: np.ndarray, scores: np.ndarray, truth: np.ndarray, out: Scored) -> None:
    used = np.zeros(len(truth), bool)
    for k in np.argsort(-scores, kind="stable"):
        best, bj = 0.0, -1
        for j in range(len(truth)):
            if not used[j]:
                v = iou(pred[k], truth[j])
                if v > best:
                    best, bj = v, j
        tp = best >= IOU
        if tp:
            used[bj] = True
        out.hits.append((float(scores[k]), tp))
    out.n_truth += len(truth)


def prf(s: Scored, thr: float) -> tuple[float, float, float]:
    tp = sum(1 for sc, t in s.hits if t and sc >= thr)
    fp = sum(1 for sc, t in s.hits if not t and sc >= thr)
    p = tp / max(tp + fp, 1)
    r = tp / max(s.n_truth, 1)
    return p, r, 2 * p * r / max(p + r, 1e-9)


def best_threshold(s: Scored) -> float:
    """The score threshold with the best F1 (lowest on ties), O(n log n)."""
    if not s.hits:
        return 0.0
    sc = np.array([h[0] for h in s.hits])
    tp = np.array([h[1] for h in s.hits], bool)
    order = np.argsort(-sc, kind="stable")
    sc, tp = sc[order], tp[order]
    ctp, n = np.cumsum(tp), np.arange(1, len(sc) + 1)
    last = np.r_[sc[1:] != sc[:-1], True]  # thresholds at each distinct score: everything >= it
    p, r = ctp / n, ctp / max(s.n_truth, 1)
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-9), 0.0)
    cand = np.nonzero(last)[0]
    best = f1[cand].max()
    return float(sc[cand[f1[cand] >= best - 1e-12]].min())


def ap(s: Scored) -> float:
    hits = sorted(s.hits, key=lambda h: -h[0])
    tp = np.cumsum([t for _, t in hits]) if hits else np.zeros(0)
    prec = tp / np.arange(1, len(hits) + 1) if hits else np.zeros(0)
    rec = tp / max(s.n_truth, 1)
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    idx = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


_BLOBS: dict[tuple[int, int, float], tuple[np.ndarray, np.ndarray]] = {}


def _baseline_blobs(template: np.ndarray, test: np.ndarray, thr: float) -> tuple[np.ndarray, np.ndarray]:
    """Blob stats (x, y, w, h, area) and scores of the baseline at one threshold (cached: the dev sweep reuses them)."""
    key = (id(template), id(test), thr)
    if key not in _BLOBS:
        d = cv2.absdiff(template, test)
        bad = cv2.morphologyEx((d > thr).astype(np.uint8) * 255, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        n, labels, stats, _ = cv2.connectedComponentsWithStats(bad, connectivity=8)
        sums = np.bincount(labels.ravel(), weights=d.ravel().astype(np.float64), minlength=n)
        area = stats[:, 4].astype(np.float64)
        _BLOBS[key] = (stats[1:], (area * (sums / np.maximum(area, 1)) / 255.0)[1:])
    return _BLOBS[key]


def baseline(
    template: np.ndarray, test: np.ndarray, thr: float, min_area: int, margin: int
) -> tuple[np.ndarray, np.ndarray]:
    """absdiff -> threshold -> 3x3 open -> connected components; score = blob area x mean difference / 255."""
    stats, scores = _baseline_blobs(template, test, thr)
    keep = stats[:, 4] >= min_area
    x, y, w, h = (stats[keep, i].astype(np.float64) for i in range(4))
    boxes = np.stack([x - margin, y - margin, x + w + margin, y + h + margin], 1)
    return boxes.reshape(-1, 4), scores[keep]


def run_reference(cases: list[Case], cfg: dict) -> tuple[Scored, list[float], list[float], list[float]]:
    s = Scored()
    good_img, good_det, ms = [], [], []
    for c in cases:
        insp = ReferenceInspector(ReferenceInspectorConfig(**cfg))
        insp.learn(Frame(0, "cam0", c.template, 0, {}))
        t0 = time.perf_counter()
        d = insp.inspect(Frame(1, "cam0", c.test, 0, {}))
        ms.append((time.perf_counter() - t0) * 1e3)
        match(d.boxes_xyxy.astype(np.float64), d.scores.astype(np.float64), c.boxes, s)
        g = insp.inspect(Frame(2, "cam0", c.good, 0, {}))
        good_img.append(float(g.image_score or 0.0))
        good_det.append(float(g.scores.max(initial=0.0)))
    return s, good_img, good_det, ms


def run_baseline(cases: list[Case], thr: float, min_area: int, margin: int, aligned: bool = False) -> Scored:
    s = Scored()
    for c in cases:
        b, sc = baseline(c.template, c.aligned if aligned else c.test, thr, min_area, margin)
        match(b, sc, c.boxes_aligned if aligned else c.boxes, s)
    return s


def tune_baseline(dev: list[Case], aligned: bool = False) -> tuple[float, int, int]:
    best, arg = -1.0, (0.0, 0, 0)
    for thr in BASELINE_THRESHOLDS:
        for a in BASELINE_MIN_AREAS:
            for m in BASELINE_MARGINS:
                s = run_baseline(dev, thr, a, m, aligned)
                f1 = prf(s, best_threshold(s))[2]
                if f1 > best:
                    best, arg = f1, (thr, a, m)
    return arg


def main() -> None:
    ap_ = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap_.add_argument("data", type=Path)
    g = ap_.add_mutually_exclusive_group()
    g.add_argument("--dev", action="store_true", help="report the dev split (and a small parameter sweep)")
    g.add_argument("--test", action="store_true", help="report the held-back split (default)")
    ap_.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    ap_.add_argument("--seed", type=int, default=0)
    ap_.add_argument(
        "--mp", type=float, default=MEGAPIXELS, help="downscale every image to about this many megapixels (default 1)"
    )
    ap_.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override an inspector config field"
    )
    args = ap_.parse_args()
    cv2.setNumThreads(1)
    cfg = dict(AOI_CFG)
    for kv in args.set:
        k, v = kv.split("=", 1)
        cfg[k] = json.loads(v)

    cases = load_cases(args.data, args.seed, args.mp)
    dev, test = split(cases, args.seed)
    split_name, report = ("dev", dev) if args.dev else ("test", test)

    # operating points from the dev split only
    dev_scored = run_reference(dev, cfg)
    ref_dev, dev_rest = dev_scored[0], dev_scored[1:]
    ref_thr = best_threshold(ref_dev)
    b_thr, b_area, b_mg = tune_baseline(dev)
    b_sthr = best_threshold(run_baseline(dev, b_thr, b_area, b_mg))
    o_thr, o_area, o_mg = tune_baseline(dev, aligned=True)
    o_sthr = best_threshold(run_baseline(dev, o_thr, o_area, o_mg, aligned=True))

    g_thr = float(np.nextafter(max(dev_rest[1], default=0.0), 1.0))  # above every dev good-part detection
    ref, good_img, good_det, ms = run_reference(report, cfg) if report is not dev else dev_scored
    base = run_baseline(report, b_thr, b_area, b_mg)
    oracle = run_baseline(report, o_thr, o_area, o_mg, aligned=True)
    rows = {
        "reference": (*prf(ref, ref_thr), ap(ref), ref_thr),
        "reference_goodpart_thr": (*prf(ref, g_thr), ap(ref), g_thr),
        "baseline": (*prf(base, b_sthr), ap(base), b_sthr),
        "baseline_prealigned": (*prf(oracle, o_sthr), ap(oracle), o_sthr),
    }
    q = lambda v, p: float(np.percentile(v, p)) if v else 0.0  # noqa: E731
    res: dict[str, Any] = {
        "split": split_name,
        "boards": sorted({c.board for c in report}),
        "images": len(report),
        "defects": ref.n_truth,
        "config": cfg,
        "baseline_params": {
            "threshold": b_thr,
            "min_area": b_area,
            "box_margin": b_mg,
            "prealigned": {"threshold": o_thr, "min_area": o_area, "box_margin": o_mg},
        },
        "methods": {
            k: dict(zip(("precision", "recall", "f1", "ap", "score_threshold"), map(float, v))) for k, v in rows.items()
        },
        "good_parts": {
            "n": len(good_img),
            "image_score_p50": q(good_img, 50),
            "image_score_p95": q(good_img, 95),
            "image_score_max": max(good_img, default=0.0),
            "best_detection_score_p50": q(good_det, 50),
            "best_detection_score_p95": q(good_det, 95),
            "best_detection_score_max": max(good_det, default=0.0),
        },
        "defect_scores": {
            "tp_p05": q([s for s, t in ref.hits if t], 5),
            "tp_p50": q([s for s, t in ref.hits if t], 50),
            "fp_p50": q([s for s, t in ref.hits if not t], 50),
            "fp_p95": q([s for s, t in ref.hits if not t], 95),
        },
        "inspect_ms_median": float(np.median(ms)) if ms else 0.0,
        "frame_size": list(report[0].test.shape[::-1]) if report else [],
    }
    if args.json:
        print(json.dumps(res, indent=1))
        return
    print(
        f"split {split_name}: boards {' '.join(res['boards'])}, {res['images']} images, {res['defects']} defects, "
        f"frames {res['frame_size'][0]}x{res['frame_size'][1]}, IoU >= {IOU}"
    )
    print(f"{'method':24s} {'P':>6s} {'R':>6s} {'F1':>6s} {'AP':>6s}  score thr (from dev)")
    for k, (p, r, f1, a, t) in rows.items():
        print(f"{k:24s} {p:6.3f} {r:6.3f} {f1:6.3f} {a:6.3f}  {t:.3f}")
    print(
        f"baseline: threshold {b_thr}, min area {b_area} px, box margin {b_mg} px (pre-aligned: {o_thr}, {o_area} px, "
        f"{o_mg} px), tuned on dev"
    )
    gp = res["good_parts"]
    print(
        f"good parts ({gp['n']}): image_score p50 {gp['image_score_p50']:.2f} p95 {gp['image_score_p95']:.2f} max "
        f"{gp['image_score_max']:.2f}; "
        f"best detection score p50 {gp['best_detection_score_p50']:.3f} p95 {gp['best_detection_score_p95']:.3f} max "
        f"{gp['best_detection_score_max']:.3f}"
    )
    ds = res["defect_scores"]
    print(
        f"detection scores: true p05 {ds['tp_p05']:.3f} p50 {ds['tp_p50']:.3f}; false p50 {ds['fp_p50']:.3f} p95 "
        f"{ds['fp_p95']:.3f}"
    )
    print(f"reference inspect median {res['inspect_ms_median']:.2f} ms per frame (1 cv2 thread)")


if __name__ == "__main__":
    main()
