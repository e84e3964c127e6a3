"""Anomaly detection on real solar cells (ELPV), learned from good cells only: image AUROC per cell type.

Protocol (models/elpv.py): per cell type, learn from half of the functional cells (probability 0,
seeded), test on the other half against the cells with probability 1. The learned model runs
through the station's own AnomalyInspector (onnxruntime, as on the line); its image score ranks
the cells. Printed side by side, in one run: the plain baseline (per-pixel mean/std template,
99.5th percentile |z|) on the same split, and the false-reject / escape rates at the model's own
learned threshold (set from the learning cells' leave-one-out scores for a 1 % false-reject target).

Run: python bench/bench_anomaly_elpv.py [--types mono poly] [--long-side 256] [--features filters|pretrained] [--json]
     [--limit N] (fewer cells per set, for a quick look)  [--seed S]
Needs: pip install elpv-dataset torch (the test extra; torch only builds and exports the graph).
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
from models.elpv import anomaly_split, auroc, cells, zscore_template_scores  # noqa: E402
from station.config import AnomalyInspectorConfig  # noqa: E402
from station.contracts import Frame  # noqa: E402
from station.inspection.anomaly import AnomalyInspector  # noqa: E402


def run_type(cell_type: str, args: argparse.Namespace, all_cells: list, workdir: Path) -> dict:
    sp = anomaly_split(cell_type, args.seed, all_cells)
    learn_c, good_c, bad_c = sp.learn, sp.good, sp.bad
    if args.limit:
        learn_c, good_c, bad_c = learn_c[: args.limit], good_c[: args.limit], bad_c[: args.limit]
    learn_imgs = [c.image() for c in learn_c]
    good_imgs, bad_imgs = [c.image() for c in good_c], [c.image() for c in bad_c]
    s = LearnSettings(long_side=args.long_side, seed=args.seed, features=args.features)
    res = learn(learn_imgs, workdir / f"elpv_{cell_type}.onnx", s, source=f"elpv {cell_type}")
    insp = AnomalyInspector(AnomalyInspectorConfig(model=res.path))
    insp.warmup()

    def scores(imgs: list) -> tuple[np.ndarray, list[float]]:
        out, ms = [], []
        for i, img in enumerate(imgs):
            t0 = time.perf_counter()
            d = insp.inspect(Frame(i, "cam0", img, 0))
            ms.append((time.perf_counter() - t0) * 1e3)
            out.append(d.image_score)
        return np.asarray(out), ms

    sg, ms_g = scores(good_imgs)
    sb, ms_b = scores(bad_imgs)
    zg, zb = zscore_template_scores(learn_imgs, good_imgs), zscore_template_scores(learn_imgs, bad_imgs)
    return {
        "cell_type": cell_type,
        "n_learn": len(learn_imgs),
        "n_good": len(good_imgs),
        "n_bad": len(bad_imgs),
        "auroc": round(auroc(sg, sb), 4),
        "baseline_zscore_auroc": round(auroc(zg, zb), 4),
        "false_reject_rate_at_threshold": round(float((sg >= 1.0).mean()), 4),
        "escape_rate_at_threshold": round(float((sb < 1.0).mean()), 4),
        "learn_s": round(res.seconds, 1),
        "threshold": round(res.threshold, 4),
        "inspect_ms_median": round(float(np.median(ms_g + ms_b)), 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", nargs="+", default=["mono", "poly"])
    ap.add_argument("--long-side", type=int, default=LearnSettings.long_side)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--features", choices=FEATURES, default=LearnSettings.features, help="the learner's features")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    all_cells = cells()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for t in args.types:
            rows.append(run_type(t, args, all_cells, Path(tmp)))
            if not args.json:
                r = rows[-1]
                print(
                    f"{t:5s} AUROC {r['auroc']:.3f} (baseline z-score {r['baseline_zscore_auroc']:.3f}, target 0.90)  "
                    f"at the learned threshold: false rejects {r['false_reject_rate_at_threshold']:.1%}, escapes "
                    f"{r['escape_rate_at_threshold']:.1%}  [learn {r['n_learn']} cells in {r['learn_s']:.0f} s; test "
                    f"{r['n_good']} good, "
                    f"{r['n_bad']} bad; {r['inspect_ms_median']:.1f} ms/cell]",
                    flush=True,
                )
    if args.json:
        print(
            json.dumps(
                {
                    "bench": "anomaly_elpv",
                    "features": args.features,
                    "long_side": args.long_side,
                    "seed": args.seed,
                    "types": rows,
                }
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
