"""Learn an anomaly model from good images only, and export it to ONNX for the station.

Method (no labels, no pretrained weights, nothing downloaded): a small fully-convolutional
network is trained *from scratch* on this machine to segment **synthetic anomalies** pasted on
the good images (as DRAEM and CutPaste do): dark or bright strokes (cracks, scratches), soft-edged
dark or bright regions (stains, inactive areas, missing or extra material) and patches cut from
elsewhere in the same image (misplaced structure). Good images stay good in a quarter of each
batch. The network sees the whole (downscaled) frame, so what every good part has (busbars,
tracks, holes, texture) is learned as normal; its receptive field (~70 px at the working size)
gives it the context to tell a crack from a grain boundary.

Calibration: the good images are split (seeded) into a training part and a held-out part; the
threshold is the ``1 - target_frr`` quantile of the held-out image scores (times ``margin``), so
the station's false-reject rate on good parts is set, not guessed. The held-out score quantiles
are written into the model's metadata for the operator (uncertain band) and for drift checks.

Output: one ONNX file (input ``images`` (1, 1, H, W) float32 as made by
:func:`station.inspect.anomaly.preprocess`, output ``map`` (1, 1, H/4, W/4) probabilities), with
``metadata_props``: ``task: anomaly``, ``names``, ``imgsz``, ``stride``, ``channels: 1`` and
``anomaly`` (JSON: threshold, score quantiles, frame size, training figures). It is a model like
any other: registered by sha256, evaluated, shadowed, promoted and hot-swapped.

torch is imported here only: the station process never imports this module.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from station.inspect.anomaly import STRIDE, anomaly_meta, image_score_of, preprocess, work_size

log = logging.getLogger(__name__)

FORMAT = 1  # version of the anomaly metadata


class AnomalyLearnError(ValueError):
    """The images given cannot be learned from; the message names the file and the fix."""


@dataclass(frozen=True)
class LearnSettings:
    """How to learn (defaults: about 2-4 minutes for 200 images on 2 CPU cores)."""

    long_side: int = 256  # working size of the long side of the frame (pixels)
    steps: int = 1200
    batch: int = 16
    width: int = 16  # channels of the first layer
    lr: float = 3e-3
    holdout: float = 0.2  # share of the good images kept out of training to set the threshold
    target_frr: float = 0.01  # false-reject rate on good parts the threshold is set for
    margin: float = 1.1  # threshold = margin x the (1 - target_frr) quantile of held-out scores
    seed: int = 0
    threads: int = 2
    min_images: int = 8


@dataclass
class LearnResult:
    """What :func:`learn` made."""

    path: Path
    threshold: float
    n_train: int
    n_holdout: int
    seconds: float
    holdout_scores: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "threshold": self.threshold, "n_train": self.n_train,
                "n_holdout": self.n_holdout, "seconds": round(self.seconds, 1)}


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


class Synthesizer:
    """Synthetic anomalies on a preprocessed good image: returns (image, mask at full working size)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rng = self.rng
        y, m = x.copy(), np.zeros(x.shape, np.float32)
        kind = int(rng.integers(0, 4))
        if kind in (0, 3):
            y, m = self._strokes(y, m)
        if kind in (1, 3):
            y, m = self._region(y, m)
        if kind == 2:
            y, m = self._cutpaste(x, y, m)
        return y, m

    def _factor(self) -> float:
        rng = self.rng
        return float(rng.uniform(0.2, 0.75)) if rng.random() < 0.75 else float(rng.uniform(1.3, 1.9))

    def _strokes(self, y: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rng = self.rng
        h, w = y.shape
        line = np.zeros((h, w), np.uint8)
        for _ in range(int(rng.integers(1, 3))):
            pts = [rng.uniform(0, [w, h])]
            for _ in range(int(rng.integers(1, 5))):
                a, length = rng.uniform(0, 2 * math.pi), rng.uniform(5, max(w, h) / 3)
                pts.append(pts[-1] + length * np.array([math.cos(a), math.sin(a)]))
            cv2.polylines(line, [np.int32(pts)], False, 1, int(rng.integers(1, 3)))
        f = self._factor()
        y = np.where(line > 0, y * f if f < 1 else y + (f - 1) * 0.5, y).astype(np.float32)
        return y, np.maximum(m, line.astype(np.float32))

    def _region(self, y: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rng = self.rng
        h, w = y.shape
        cell = int(rng.integers(6, 32))
        noise = rng.standard_normal((max(2, h // cell), max(2, w // cell))).astype(np.float32)
        noise = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
        region = (noise > np.quantile(noise, rng.uniform(0.88, 0.995))).astype(np.float32)
        soft = cv2.GaussianBlur(region, (0, 0), 1.0)
        f = self._factor()
        y = (y * (1 + (f - 1) * soft) if f < 1 else y + (f - 1) * 0.5 * soft).astype(np.float32)
        return y, np.maximum(m, region)

    def _cutpaste(self, x: np.ndarray, y: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rng = self.rng
        h, w = y.shape
        ph, pw = int(rng.integers(6, max(7, h // 3))), int(rng.integers(6, max(7, w // 3)))
        y0, x0 = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
        y1, x1 = int(rng.integers(0, h - ph)), int(rng.integers(0, w - pw))
        patch = x[y0:y0 + ph, x0:x0 + pw]
        if rng.random() < 0.5:
            patch = patch[::-1]
        if rng.random() < 0.5:
            patch = patch * float(rng.uniform(0.7, 1.3))
        changed = np.abs(y[y1:y1 + ph, x1:x1 + pw] - patch) > 0.1
        y[y1:y1 + ph, x1:x1 + pw] = patch
        m[y1:y1 + ph, x1:x1 + pw] = np.maximum(m[y1:y1 + ph, x1:x1 + pw], changed.astype(np.float32))
        return y, m


# ---------------------------------------------------------------------------- network


def build_net(width: int = 16) -> Any:
    """The segmentation network: stride 4, dilated context, one logit per 4x4 block (+ sigmoid)."""
    import torch.nn as nn

    def block(cin: int, cout: int, stride: int = 1, dil: int = 1) -> Any:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, dil, dilation=dil, bias=False), nn.BatchNorm2d(cout),
                             nn.ReLU(inplace=True))

    c = width
    return nn.Sequential(
        block(1, c), block(c, c, 2), block(c, 2 * c), block(2 * c, 2 * c, 2), block(2 * c, 3 * c),
        block(3 * c, 3 * c, 1, 2), block(3 * c, 3 * c, 1, 4), block(3 * c, 3 * c, 1, 8),
        nn.Conv2d(3 * c, 1, 1), nn.Sigmoid(),
    )


def _train(net: Any, good: Sequence[np.ndarray], s: LearnSettings, progress: Callable[[int, float], None] | None,
           cancel: Callable[[], bool] | None) -> None:
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(s.seed)
    synth = Synthesizer(rng)
    opt = torch.optim.Adam(net.parameters(), s.lr / 3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, s.lr, total_steps=s.steps)
    h, w = good[0].shape
    out_size = (w // STRIDE, h // STRIDE)
    net.train()
    for step in range(s.steps):
        if cancel is not None and cancel():
            from .train import TrainingCancelled

            raise TrainingCancelled(f"anomaly learning cancelled at step {step}/{s.steps}")
        xs, ms = [], []
        for _ in range(s.batch):
            x = good[int(rng.integers(len(good)))]
            if rng.random() < 0.5:
                x = x[:, ::-1]
            if rng.random() < 0.5:
                x = x[::-1]
            x = np.ascontiguousarray(x)
            if rng.random() < 0.75:
                x, m = synth(x)
            else:
                m = np.zeros_like(x)
            xs.append(x)
            ms.append(cv2.resize(m, out_size, interpolation=cv2.INTER_AREA))
        xb = torch.from_numpy(np.stack(xs)[:, None])
        mb = torch.from_numpy(np.stack(ms)[:, None])
        p = net(xb).clamp(1e-6, 1 - 1e-6)
        weight = 1.0 + 2.0 * mb  # anomalies are rare pixels: weigh them up
        loss = F.binary_cross_entropy(p, mb, weight=weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None and (step % 50 == 0 or step == s.steps - 1):
            progress(step + 1, float(loss.detach()))
    net.eval()


def _scores(net: Any, images: Sequence[np.ndarray]) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(images), 16):
            maps = net(torch.from_numpy(np.stack(images[i:i + 16])[:, None]))[:, 0].numpy()
            out.extend(image_score_of(m) for m in maps)
    return np.asarray(out, np.float64)


def _export(net: Any, size: tuple[int, int], path: Path, meta: dict[str, str]) -> None:
    import onnx
    import torch

    w, h = size
    tmp = path.with_name(path.name + ".tmp")
    torch.onnx.export(net, (torch.zeros(1, 1, h, w),), str(tmp), input_names=["images"], output_names=["map"],
                      opset_version=17, dynamo=False)
    model = onnx.load(str(tmp))
    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(tmp))
    tmp.replace(path)


def learn(
    images: Sequence[np.ndarray],
    out: Path | str,
    settings: LearnSettings | None = None,
    *,
    progress: Callable[[int, float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
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
    torch.manual_seed(s.seed)
    torch.set_num_threads(s.threads)
    H, W = images[0].shape[:2]
    size = work_size((W, H), s.long_side)
    pre = [preprocess(im, size) for im in images]
    order = np.random.default_rng(s.seed).permutation(len(pre))
    n_hold = max(2, int(round(len(pre) * s.holdout)))
    hold = [pre[i] for i in order[:n_hold]]
    train = [pre[i] for i in order[n_hold:]]
    net = build_net(s.width)
    _train(net, train, s, progress, cancel)
    hold_scores = _scores(net, hold)
    q = float(np.quantile(hold_scores, 1.0 - s.target_frr))
    threshold = max(q * s.margin, 1e-3)
    quantiles = {str(k): float(np.quantile(hold_scores, k)) for k in (0.5, 0.9, 0.95, 0.99, 1.0)}
    info = {
        "format": FORMAT, "method": "synthetic-anomaly segmentation (from scratch)", "threshold": threshold,
        "target_frr": s.target_frr, "margin": s.margin, "frame_size": [W, H], "holdout_quantiles": quantiles,
        "n_train": len(train), "n_holdout": len(hold), "steps": s.steps, "width": s.width, "seed": s.seed,
        "source": source, "learned_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    _export(net, size, path, anomaly_meta(size, info))
    res = LearnResult(path, threshold, len(train), len(hold), time.monotonic() - t0, hold_scores.tolist())
    log.info("anomaly model learned from %d good images (%d held out) in %.0f s: threshold %.4f -> %s",
             len(train), len(hold), res.seconds, threshold, path)
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
    ap.add_argument("--steps", type=int, default=LearnSettings.steps)
    ap.add_argument("--long-side", type=int, default=LearnSettings.long_side)
    ap.add_argument("--target-frr", type=float, default=LearnSettings.target_frr)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    s = LearnSettings(steps=args.steps, long_side=args.long_side, target_frr=args.target_frr, seed=args.seed)
    try:
        res = learn_folder(args.folder, args.out, s, progress=lambda i, loss: log.info("step %d/%d loss %.4f", i, s.steps, loss))
    except AnomalyLearnError as exc:
        print(f"error: {exc}", flush=True)
        return 2
    print(json.dumps(res.as_dict()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
