"""Experiment on ELPV: ImageNet-pretrained CNN features (models/pretrained.py) against the fixed filter bank.

Same protocol and scoring as bench/bench_anomaly_elpv.py (models/elpv.py split per cell type,
seed 0 = dev, seed 1 = held-back; image score = max of the 3x3-smoothed map), computed directly in
torch (no ONNX export) so the variants share one feature pass per cell type:

- ``filters``: today's method (fixed filter bank, standardised, nearest good cell at the same
  cell or a neighbour);
- ``pretrained_pcaK``: EfficientNet-Lite0 ImageNet features (stride 8 + stride 16 upsampled,
  models.pretrained.patch_features; ``_poolP`` with --pool P: each averaged over P x P cells first,
  PatchCore's "locally aware" patches) in their K
  leading principal components, nearest good patch at the same cell or a neighbour (what
  ``models.anomaly.learn(features="pretrained")`` exports);
- ``pretrained`` / ``pretrained_std`` (--full-dims): all 152 features, raw / standardised;
- ``pretrained_coreset`` (--coreset F): nearest patch in a greedy coreset of all good patches
  (PatchCore proper, position-free).

Run: python bench/exp_pretrained_elpv.py [--types mono poly] [--seeds 0 1] [--long-side 256]
     [--pca 32 ...] [--pool 1 3] [--full-dims] [--coreset 0.01] [--limit N]
Slow on 2 busy cores (features of every cell once per type, then each split): tens of minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from models.anomaly import LearnSettings, _feature_map, feature_net  # noqa: E402
from models.elpv import anomaly_split, auroc, cells  # noqa: E402
from models.pretrained import backbone, join_taps  # noqa: E402
from station.inspection.anomaly import image_score_of, preprocess, work_size  # noqa: E402


def features(net, pre: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([net(torch.from_numpy(pre[i : i + 16, None])) for i in range(0, len(pre), 16)])


def positional_maps(bank: torch.Tensor, test: torch.Tensor, nb: int = 1, chunk: int = 64) -> np.ndarray:
    """(Nt, gh, gw) distance of each test cell to the nearest bank cell at the same cell or up to nb away."""
    n, d, gh, gw = bank.shape
    b = bank.permute(2, 3, 0, 1).reshape(gh * gw, n, d).contiguous()  # (L, N, D)
    bt = b.transpose(1, 2).contiguous()
    bsq = (b * b).sum(-1)  # (L, N)
    out = []
    for t in test.split(chunk):
        tp = F.pad(t, (nb, nb, nb, nb), mode="replicate")
        best = torch.full((len(t), gh, gw), float("inf"))
        for dy in range(-nb, nb + 1):
            for dx in range(-nb, nb + 1):
                fs = (
                    tp[:, :, nb - dy : nb - dy + gh, nb - dx : nb - dx + gw]
                    .permute(2, 3, 0, 1)
                    .reshape(gh * gw, len(t), d)
                    .contiguous()
                )
                d2 = torch.baddbmm(bsq[:, None, :], fs, bt, alpha=-2)  # |b|^2 - 2 f.b
                dmin = (d2.min(-1).values + (fs * fs).sum(-1)).t().reshape(len(t), gh, gw)
                sh = torch.full_like(dmin, float("inf"))
                ys, xs = slice(max(0, -dy), gh - max(0, dy)), slice(max(0, -dx), gw - max(0, dx))
                yq, xq = slice(max(0, dy), gh - max(0, -dy)), slice(max(0, dx), gw - max(0, -dx))
                sh[:, ys, xs] = dmin[:, yq, xq]
                best = torch.minimum(best, sh)
        out.append(best.clamp_min(0).sqrt())
    return torch.cat(out).numpy()


def coreset(patches: torch.Tensor, frac: float, seed: int, proj_dim: int = 64) -> torch.Tensor:
    """Greedy k-center coreset (PatchCore) of (M, D) patches, on a random projection."""
    m = len(patches)
    k = max(1, int(m * frac))
    g = torch.Generator().manual_seed(seed)
    p = patches @ (torch.randn(patches.shape[1], proj_dim, generator=g) / proj_dim**0.5)
    idx = [int(torch.randint(m, (1,), generator=g))]
    dist = ((p - p[idx[0]]) ** 2).sum(1)
    for _ in range(k - 1):
        i = int(dist.argmax())
        idx.append(i)
        dist = torch.minimum(dist, ((p - p[i]) ** 2).sum(1))
    return patches[idx]


def coreset_maps(core: torch.Tensor, test: torch.Tensor) -> np.ndarray:
    n, d, gh, gw = test.shape
    csq = (core * core).sum(1)
    out = []
    for t in test.split(4):
        q = t.permute(0, 2, 3, 1).reshape(-1, d)
        d2 = (q * q).sum(1, keepdim=True) - 2 * q @ core.t() + csq[None]
        out.append(d2.min(1).values.clamp_min(0).sqrt().reshape(len(t), gh, gw))
    return torch.cat(out).numpy()


def run_type(cell_type: str, args: argparse.Namespace, all_cells: list) -> list[dict]:
    """Features of every cell of the type once, then each seed's split (the seeds only move good cells)."""
    splits = {seed: anomaly_split(cell_type, seed, all_cells) for seed in args.seeds}
    if args.limit:
        splits = {
            k: type(sp)(sp.learn[: args.limit], sp.good[: args.limit], sp.bad[: args.limit]) for k, sp in splits.items()
        }
    used = sorted({c.path for sp in splits.values() for c in sp.learn + sp.good + sp.bad})
    index = {p: i for i, p in enumerate(used)}
    by_path = {c.path: c for c in all_cells}
    imgs = [by_path[p].image() for p in used]
    h, w = imgs[0].shape[:2]
    size = work_size((w, h), args.long_side)
    pre = np.stack([preprocess(im, size) for im in imgs])
    t0 = time.monotonic()
    filt = features(feature_net(), pre)
    print(f"  {cell_type}: filter features of {len(pre)} cells {time.monotonic() - t0:.0f} s", flush=True)
    t0 = time.monotonic()
    net = backbone()
    with torch.no_grad():
        taps = [net(torch.from_numpy(pre[i : i + 16, None]) * 255.0) for i in range(0, len(pre), 16)]
        f8, f16 = torch.cat([t[0] for t in taps]), torch.cat([t[1] for t in taps])
        pf = join_taps(f8, f16)  # what patch_features gives (the shipped model)
        pooled = {p: join_taps(f8, f16, p) for p in args.pool if p > 1}
    print(f"  {cell_type}: pretrained features {time.monotonic() - t0:.0f} s", flush=True)
    rows = []
    for seed, sp in splits.items():
        li = [index[c.path] for c in sp.learn]
        ti = [index[c.path] for c in sp.good + sp.bad]
        ng = len(sp.good)
        res: dict = {"cell_type": cell_type, "seed": seed, "n_learn": len(li), "n_good": ng, "n_bad": len(sp.bad)}

        def score(maps: np.ndarray, ng: int = ng) -> float:
            s = np.array([image_score_of(m) for m in maps])
            return round(auroc(s[:ng], s[ng:]), 4)

        def standardised(f: torch.Tensor, li: list = li) -> torch.Tensor:
            m, sd = f[li].mean((0, 2, 3), keepdim=True), f[li].std((0, 2, 3), keepdim=True) + 1e-6
            return (f - m) / sd

        fb = standardised(filt)
        res["filters"] = score(positional_maps(fb[li], fb[ti]))
        print(f"  {cell_type} seed {seed}: filters {res['filters']}", flush=True)
        if args.full_dims:
            res["pretrained"] = score(positional_maps(pf[li], pf[ti]))
            pz = standardised(pf)
            res["pretrained_std"] = score(positional_maps(pz[li], pz[ti]))
        for k in args.pca:
            for p, fp in [(1, pf), *pooled.items()]:
                name = f"pretrained_pca{k}" + (f"_pool{p}" if p > 1 else "")
                mean, proj = _feature_map(fp[li].numpy(), LearnSettings(features="pretrained", dims=k))
                pc = torch.from_numpy(np.einsum("kd,ndhw->nkhw", proj, fp.numpy() - mean[None, :, None, None]))
                res[name] = score(positional_maps(pc[li], pc[ti]))
                print(f"  {cell_type} seed {seed}: {name} {res[name]}", flush=True)
        if args.coreset > 0:
            patches = pf[li].permute(0, 2, 3, 1).reshape(-1, pf.shape[1])
            core = coreset(patches, args.coreset, seed)
            res["pretrained_coreset"] = score(coreset_maps(core, pf[ti]))
            res["coreset_size"] = len(core)
        rows.append(res)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", nargs="+", default=["mono", "poly"])
    ap.add_argument("--long-side", type=int, default=256)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="splits: 0 = dev, 1 = held-back")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--pca", type=int, nargs="*", default=[32], help="pretrained features in k principal components")
    ap.add_argument("--full-dims", action="store_true", help="also all 152 pretrained features, raw and standardised")
    ap.add_argument(
        "--pool", type=int, nargs="*", default=[1], help="also the features averaged over p x p cells (3: PatchCore)"
    )
    ap.add_argument("--coreset", type=float, default=0.0, help="fraction of the good patches kept (0: skip)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    all_cells = cells()
    for t in args.types:
        for r in run_type(t, args, all_cells):
            print(json.dumps(r), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
