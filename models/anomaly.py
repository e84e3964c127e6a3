"""Learn an anomaly model from good images only, and export it to ONNX for the station.

Method: **patch distance to the good parts, position by position** (PatchCore/PaDiM-like, with
features that need no training and nothing downloaded). Each working-size image (long side 256 by
default, brightness-normalised by :func:`station.inspection.anomaly.preprocess`) is described on a
grid of 8x8-pixel cells, by default by ImageNet-pretrained CNN features (``features: pretrained``,
below); with ``features: filters`` by 14 fixed filter responses at three scales (Gaussian sigma 1, 2, 4):
the smoothed intensity, the gradient magnitude, the two eigenvalues of the Hessian (ridges and
valleys: cracks, scratches, tracks) and the local standard deviation (texture) at two scales;
and by the same 14 on the contrast-normalised image (``(x - local mean) / local std`` over sigma
8), so a faint crack on a smooth surface weighs as much as a strong edge in heavy texture.
Learning keeps every good image's cell features, per cell, standardised by their spread (the
*bank*). A new image's anomaly map is, per cell, the distance to the nearest good feature at that
cell or one of its 8 neighbours (a part may sit a cell off). Nothing is trained: learning 200
images takes seconds, and a new good variant (another supplier's busbar layout) is learned by
adding its images.

Calibration: each learning image is scored against the bank *without itself* (leave-one-out), and
the threshold is ``margin`` x the ``1 - target_frr`` quantile of those scores, so the station's
false-reject rate on good parts is set, not guessed. The quantiles are written into the model's
metadata for the operator (uncertain band) and for drift checks.

Output: one ONNX file (input ``images`` (1, 1, H, W) float32 as made by
:func:`station.inspection.anomaly.preprocess`, output ``map`` (1, 1, H/8, W/8) distances), with
``metadata_props``: ``task: anomaly``, ``names``, ``imgsz``, ``stride``, ``channels: 1`` and
``anomaly`` (JSON: threshold, score quantiles, frame size, method). It is a model like any other:
registered by sha256, evaluated, shadowed, promoted and hot-swapped. The export is checked
against the learner's own computation on a learning image (parity) before it is written.

``features: pretrained`` (``LearnSettings.features``, the default: better on real surfaces and
faster per part) replaces the filter bank with features of a CNN pretrained on ImageNet and
shipped with the station (EfficientNet-Lite0 blocks 0-10, :mod:`models.pretrained`, 1.3 MB,
Apache 2.0): patch features as in PatchCore (stride 8 and stride 16 upsampled, concatenated: 152
channels; without PatchCore's 3x3 averaging, which blurred thin cracks on real solar cells),
compared in Euclidean distance in their 32 leading principal components over the good patches
(the bank stays the size of the filter bank's). Same bank, neighbourhood, calibration, graph and
station inspector.

A measured alternative, a small CNN trained from scratch to segment synthetic anomalies (DRAEM /
CutPaste style), scored lower on real solar cells (poly AUROC 0.80 vs 0.85) and took minutes
instead of seconds to learn, so it was not kept (docs/no_labels.md).

torch is imported here only (to build and export the graph): the station process never imports
this module.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from station import serialize
from station.inspection.anomaly import STRIDE, anomaly_meta, image_score_of, preprocess, work_size

log = logging.getLogger(__name__)

FORMAT = 3  # version of the anomaly metadata
SIGMAS = (1.0, 2.0, 4.0)  # scales of the filter bank (working pixels)
STD_SIGMAS = (2.0, 4.0)  # scales of the local standard deviation
CN_SIGMA, CN_EPS = 8.0, 0.025  # contrast normalisation: (x - local mean) / (local std + eps), local = Gaussian sigma 8
MIN_SHORT_SIDE = 64  # working size: the sigma-8 filters need room
MAX_BANK = 600  # at most this many good images per cell (a random subset beyond)
FEATURES = ("filters", "pretrained")  # LearnSettings.features
PRETRAINED_DIMS = 32  # principal components kept of the 152 pretrained features (bank size, speed)


class AnomalyLearnError(ValueError):
    """The images given cannot be learned from; the message names the file and the fix."""


@dataclass(frozen=True)
class LearnSettings:
    """How to learn."""

    long_side: int = 256  # working size of the long side of the frame (pixels)
    target_frr: float = 0.01  # false-reject rate on good parts the threshold is set for
    margin: float = 1.1  # threshold = margin x the (1 - target_frr) quantile of leave-one-out scores
    neighbourhood: int = 1  # compare each cell with the good cells up to this many cells away
    seed: int = 0
    threads: int = 2
    min_images: int = 8
    features: str = "pretrained"  # "pretrained": ImageNet CNN (models/pretrained.py); "filters": fixed filter bank
    dims: int = PRETRAINED_DIMS  # pretrained features: compared in this many principal components of the good patches


@dataclass
class LearnResult:
    """What :func:`learn` made."""

    path: Path
    threshold: float
    n_images: int
    seconds: float
    loo_scores: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "threshold": self.threshold,
            "n_images": self.n_images,
            "seconds": round(self.seconds, 1),
        }


# ---------------------------------------------------------------------------- data


def load_good_images(folder: Path | str, *, min_images: int = 8) -> list[np.ndarray]:
    """Every image of ``folder`` as Mono8; AnomalyLearnError naming the file and the fix."""
    from station.acquire.base import CameraError
    from station.acquire.folder import list_images, read_image

    try:
        files = list_images(Path(folder))
    except CameraError as exc:
        raise AnomalyLearnError(f"anomaly learning: {exc}") from None
    if len(files) < min_images:
        raise AnomalyLearnError(
            f"anomaly learning: {folder} has {len(files)} image(s); at least {min_images} good images are needed "
            "(50-200 recommended): add more good parts to the folder"
        )
    images: list[np.ndarray] = []
    for f in files:
        try:
            img = read_image(f, grayscale=True)
        except CameraError as exc:
            raise AnomalyLearnError(f"anomaly learning: {exc}; remove or replace {f}") from None
        if images and img.shape != images[0].shape:
            raise AnomalyLearnError(
                f"anomaly learning: {f} is {img.shape[1]}x{img.shape[0]} but {files[0].name} is "
                f"{images[0].shape[1]}x{images[0].shape[0]}: all good images must come from the same camera view "
                "(same size); move the odd ones out"
            )
        images.append(img)
    return images


# ---------------------------------------------------------------------------- the graph (torch, exported to ONNX)


def _gauss(sigma: float) -> np.ndarray:
    r = int(math.ceil(3 * sigma))
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-x * x / (2 * sigma * sigma))
    return (k / k.sum()).astype(np.float32)


def _derivative_kernels() -> np.ndarray:
    """(5, 1, 3, 3): d/dx, d/dy, d2/dx2, d2/dy2, d2/dxdy (OpenCV's 3x3 Sobel kernels, / 8 or / 4)."""
    smooth, d1, d2 = np.array([1, 2, 1]) / 4.0, np.array([-1, 0, 1]) / 2.0, np.array([1, -2, 1], np.float64)
    ks = [np.outer(smooth, d1), np.outer(d1, smooth), np.outer(smooth, d2), np.outer(d2, smooth), np.outer(d1, d1)]
    return np.stack(ks)[:, None].astype(np.float32)


def feature_net() -> Any:
    """The fixed filter bank: (1, 1, H, W) -> (1, 28, H/8, W/8) cell features (see the module docstring)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Features(nn.Module):
        deriv: torch.Tensor  # buffers, registered below (nn.Module's __getattr__ is typed Tensor | Module)

        def __init__(self) -> None:
            super().__init__()
            self.sigmas = sorted(set(SIGMAS) | set(STD_SIGMAS) | {CN_SIGMA})
            for s in self.sigmas:
                self.register_buffer(f"g{int(s * 10)}", torch.from_numpy(_gauss(s)))
            self.register_buffer("deriv", torch.from_numpy(_derivative_kernels()))

        def blur(self, x: Any, sigma: float) -> Any:
            k = getattr(self, f"g{int(sigma * 10)}")
            r = (k.shape[0] - 1) // 2
            x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
            return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))

        def hand(self, x: Any) -> list[Any]:
            feats = []
            for s in SIGMAS:
                b = self.blur(x, s)
                gx, gy, dxx, dyy, dxy = F.conv2d(F.pad(b, (1, 1, 1, 1), mode="replicate"), self.deriv).split(1, 1)
                tr = dxx + dyy
                det = torch.sqrt((dxx - dyy) ** 2 + 4 * dxy * dxy + 1e-12)
                feats += [b, torch.sqrt(gx * gx + gy * gy + 1e-12), (tr + det) * 0.5, (tr - det) * 0.5]
            for s in STD_SIGMAS:
                m = self.blur(x, s)
                feats.append(torch.sqrt(torch.relu(self.blur(x * x, s) - m * m) + 1e-12))
            return feats

        def forward(self, x: Any) -> Any:
            # the same filters on the contrast-normalised image: line structure counts, the texture's own contrast less
            r = x - self.blur(x, CN_SIGMA)
            j = r / (torch.sqrt(self.blur(r * r, CN_SIGMA) + 1e-12) + CN_EPS)
            return F.avg_pool2d(torch.cat(self.hand(x) + self.hand(j), 1), STRIDE)

    return Features().eval()


def distance_net(features: Any, bank: np.ndarray, mean: np.ndarray, proj: np.ndarray, nb: int) -> Any:
    """Features + the good parts' bank: (1, 1, H, W) -> (1, 1, H/8, W/8) distance to the nearest good cell.

    Features are compared as ``proj @ (f - mean)`` (``proj`` (k, D): a per-channel scale for the
    filter bank, principal components for pretrained features). ``bank`` (N, k, gh, gw): the good
    images' features, already mapped; each cell of a new image is compared with the bank at the
    same cell and its neighbours up to ``nb`` cells away (the test features are shifted, never the
    bank, so the graph holds the bank once).
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    n, d, gh, gw = bank.shape
    b = np.ascontiguousarray(bank.transpose(2, 3, 0, 1).reshape(gh * gw, n, d))

    class Distance(nn.Module):
        bank: torch.Tensor  # buffers, registered below
        bank_sq: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.features = features
            self.register_buffer("bank", torch.from_numpy(b))
            self.register_buffer("bank_sq", torch.from_numpy((b * b).sum(-1)))
            self.register_buffer("mean", torch.from_numpy(mean.astype(np.float32)).view(1, -1, 1, 1))
            self.register_buffer("proj", torch.from_numpy(proj.astype(np.float32))[:, :, None, None])

        def forward(self, x: Any) -> Any:
            f = F.conv2d(self.features(x) - self.mean, cast(torch.Tensor, self.proj))
            fp = F.pad(f, (nb, nb, nb, nb), mode="replicate")
            best: torch.Tensor | None = None
            for dy in range(-nb, nb + 1):
                for dx in range(-nb, nb + 1):
                    fs = (
                        fp[:, :, nb - dy : nb - dy + gh, nb - dx : nb - dx + gw].reshape(d, gh * gw).t()
                    )  # f(q - s) at bank cell q
                    d2 = (
                        self.bank_sq
                        - 2 * torch.bmm(self.bank, fs.unsqueeze(-1)).squeeze(-1)
                        + (fs * fs).sum(-1, keepdim=True)
                    )
                    dmin = d2.min(-1).values.view(1, 1, gh, gw)
                    shifted = F.pad(dmin, (nb, nb, nb, nb), value=1e9)[
                        :, :, nb + dy : nb + dy + gh, nb + dx : nb + dx + gw
                    ]
                    best = shifted if best is None else torch.minimum(best, shifted)
            assert best is not None  # nb >= 0: the loops ran
            return torch.sqrt(torch.clamp(best, min=0.0))

    return Distance().eval()


def _loo_maps(std_feats: np.ndarray, nb: int) -> np.ndarray:
    """(N, gh, gw) distance maps of each learning image against the bank without itself."""
    n, d, gh, gw = std_feats.shape
    b = std_feats.transpose(2, 3, 0, 1).reshape(gh * gw, n, d)  # (L, N, D)
    bsq = (b * b).sum(-1)  # (L, N)
    fp = np.pad(std_feats, ((0, 0), (0, 0), (nb, nb), (nb, nb)), mode="edge")
    best = np.full((n, gh, gw), np.inf, np.float32)
    eye = np.eye(n, dtype=bool)
    for dy in range(-nb, nb + 1):
        for dx in range(-nb, nb + 1):
            fs = (
                fp[:, :, nb - dy : nb - dy + gh, nb - dx : nb - dx + gw].transpose(2, 3, 0, 1).reshape(gh * gw, n, d)
            )  # (L, N, D)
            d2 = (
                bsq[:, None, :] - 2 * np.matmul(fs, b.transpose(0, 2, 1)) + (fs * fs).sum(-1)[:, :, None]
            )  # (L, Ntest, Nbank)
            d2[:, eye] = np.inf  # not against itself
            dmin = d2.min(-1).T.reshape(n, gh, gw)
            shifted = np.full((n, gh, gw), np.inf, np.float32)
            ys, xs = slice(max(0, -dy), gh - max(0, dy)), slice(max(0, -dx), gw - max(0, dx))
            yq, xq = slice(max(0, dy), gh - max(0, -dy)), slice(max(0, dx), gw - max(0, -dx))
            shifted[:, ys, xs] = dmin[:, yq, xq]
            best = np.minimum(best, shifted)
    return np.sqrt(np.maximum(best, 0.0))


def _export(net: Any, size: tuple[int, int], path: Path, meta: dict[str, str]) -> None:
    import onnx
    import torch

    w, h = size
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings():
        # the pretrained backbone's padding is computed from the input's shape: constant in this graph, which is
        # exported for one working size only (the inspector refuses frames of another size)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            net,
            (torch.zeros(1, 1, h, w),),
            str(tmp),
            input_names=["images"],
            output_names=["map"],
            opset_version=17,
            dynamo=False,
        )
    model = onnx.load(str(tmp))
    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(tmp))
    tmp.replace(path)


def _parity(path: Path, net: Any, x: np.ndarray) -> float:
    """Largest |ONNX - torch| over the map of ``x``, relative to the map's largest value (``x`` must not be in the
    bank)."""
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"images": x[None, None]})[0]
    with torch.no_grad():
        want = net(torch.from_numpy(x[None, None])).numpy()
    return float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-6))


METHODS = {
    "filters": "patch distance to good parts (fixed filter bank, no training)",
    "pretrained": "patch distance to good parts (EfficientNet-Lite0 ImageNet features, PCA)",
}


def _feature_net(kind: str) -> Any:
    """The feature module of ``LearnSettings.features``: (N, 1, H, W) -> (N, D, H/8, W/8)."""
    if kind == "filters":
        return feature_net()
    if kind == "pretrained":
        from .pretrained import patch_features

        return patch_features()
    raise AnomalyLearnError(f"anomaly learning: unknown features {kind!r}: use one of {', '.join(FEATURES)}")


def _feature_map(raw: np.ndarray, s: LearnSettings) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), proj (k, D)) so that features are compared as ``proj @ (f - mean)``.

    The filter bank: each channel scaled by its spread over the good images (they have unrelated
    units). Pretrained features: Euclidean as in PatchCore, in the ``dims`` leading principal
    components of the good patches (they keep the distances that matter and shrink the bank).
    """
    d = raw.shape[1]
    mean = raw.mean(axis=(0, 2, 3)).astype(np.float32)
    if s.features == "filters":
        return mean, np.diag(1.0 / (raw.std(axis=(0, 2, 3)) + 1e-6)).astype(np.float32)
    cov = np.zeros((d, d))
    for i in range(0, len(raw), 32):  # in chunks: all patches at once would be gigabytes
        x = (raw[i : i + 32] - mean[None, :, None, None]).transpose(0, 2, 3, 1).reshape(-1, d)
        cov += (x.T @ x).astype(np.float64)
    _, vecs = np.linalg.eigh(cov)
    k = min(s.dims, d) if s.dims > 0 else d
    return mean, np.ascontiguousarray(vecs[:, ::-1][:, :k].T).astype(np.float32)


def learn(
    images: Sequence[np.ndarray],
    out: Path | str,
    settings: LearnSettings | None = None,
    *,
    source: str = "",
) -> LearnResult:
    """Learn from good Mono8 ``images`` (all one size) and write the ONNX model to ``out``."""
    import torch

    s = settings or LearnSettings()
    if len(images) < s.min_images:
        raise AnomalyLearnError(f"anomaly learning needs at least {s.min_images} good images, got {len(images)}")
    shapes = {im.shape[:2] for im in images}
    if len(shapes) != 1:
        raise AnomalyLearnError(f"anomaly learning: good images of several sizes {sorted(shapes)}: use one camera view")
    t0 = time.monotonic()
    torch.set_num_threads(s.threads)
    H, W = images[0].shape[:2]
    size = work_size((W, H), s.long_side)
    if min(size) < MIN_SHORT_SIDE:
        raise AnomalyLearnError(
            f"anomaly learning: a {W}x{H} frame at long side {s.long_side} is {size[0]}x{size[1]}, under "
            f"{MIN_SHORT_SIDE} px on its "
            f"short side: raise long_side to at least {int(s.long_side * MIN_SHORT_SIDE / min(size)) + 8}"
        )
    if len(images) > MAX_BANK:
        keep = np.sort(np.random.default_rng(s.seed).choice(len(images), MAX_BANK, replace=False))
        images = [images[i] for i in keep]
    pre = np.stack([preprocess(im, size) for im in images])
    feats_net = _feature_net(s.features)
    with torch.no_grad():
        raw = np.concatenate(
            [feats_net(torch.from_numpy(pre[i : i + 32, None])).numpy() for i in range(0, len(pre), 32)]
        )
    mean, proj = _feature_map(raw, s)
    std_feats = np.einsum("kd,ndhw->nkhw", proj, raw - mean[None, :, None, None]).astype(np.float32)
    loo = np.array([image_score_of(m) for m in _loo_maps(std_feats, s.neighbourhood)])
    threshold = max(float(np.quantile(loo, 1.0 - s.target_frr)) * s.margin, 1e-3)
    info = {
        "format": FORMAT,
        "method": METHODS[s.features],
        "features": s.features,
        "threshold": threshold,
        "target_frr": s.target_frr,
        "margin": s.margin,
        "frame_size": [W, H],
        "neighbourhood": s.neighbourhood,
        "dims": int(proj.shape[0]),
        "loo_quantiles": {str(k): float(np.quantile(loo, k)) for k in (0.5, 0.9, 0.95, 0.99, 1.0)},
        "n_images": len(pre),
        "source": source,
        "learned_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    net = distance_net(feats_net, std_feats, mean, proj, s.neighbourhood)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".export.onnx")
    _export(net, size, tmp, anomaly_meta(size, info))
    err = _parity(tmp, net, np.ascontiguousarray(pre[0][::-1, ::-1]))  # not in the bank: distances well above 0
    if err > 1e-2:  # float32 rounding is ~0.1-0.2 %; an export bug is tens of %
        tmp.unlink(missing_ok=True)
        raise AnomalyLearnError(
            f"anomaly learning: the exported model differs from the learner by {err:.2%} (export bug); nothing written"
        )
    tmp.replace(path)
    res = LearnResult(path, threshold, len(pre), time.monotonic() - t0, loo.tolist())
    log.info(
        "anomaly model learned from %d good images in %.1f s: threshold %.4f (parity %.1e) -> %s",
        len(pre),
        res.seconds,
        threshold,
        err,
        path,
    )
    return res


def learn_folder(folder: Path | str, out: Path | str, settings: LearnSettings | None = None, **kw: Any) -> LearnResult:
    """:func:`learn` from every image of ``folder`` (errors name the file and the fix)."""
    s = settings or LearnSettings()
    return learn(load_good_images(folder, min_images=s.min_images), out, s, source=str(folder), **kw)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m models.anomaly FOLDER OUT.onnx``: the learner the station starts in a subprocess."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m models.anomaly", description=__doc__.splitlines()[0])
    ap.add_argument("folder", help="folder of good images (one camera view, one size)")
    ap.add_argument("out", help="ONNX model to write")
    ap.add_argument("--long-side", type=int, default=LearnSettings.long_side)
    ap.add_argument("--target-frr", type=float, default=LearnSettings.target_frr)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--features", choices=FEATURES, default=LearnSettings.features)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    s = LearnSettings(long_side=args.long_side, target_frr=args.target_frr, seed=args.seed, features=args.features)
    try:
        res = learn_folder(args.folder, args.out, s)
    except AnomalyLearnError as exc:
        print(f"error: {exc}", flush=True)
        return 2
    print(serialize.dumps(res.as_dict()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
