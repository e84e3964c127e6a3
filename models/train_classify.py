"""Fine-tuning an ImageNet-pretrained classify network in plain torch (``models train --model efficientnet-lite0``).

The second training backend next to Ultralytics (:func:`models.train.train` sends a classify dataset
with ``--model efficientnet-lite0``, or a parent checkpoint written here, to :func:`train_classify`).
It reports the same :class:`~models.train.Progress` events, stops on the same ``cancel`` event, and
returns the same :class:`~models.train.TrainResult`, so the job worker, the CLI and the web page run
it unchanged; :func:`models.export.export_onnx` exports its checkpoint to an ONNX file the station's
classify runtime loads like an Ultralytics one.

* **Input**: every image is prepared once as the station prepares a part
  (:class:`station.inspection.preprocess.InputTensor`: shortest-edge resize, center crop, 0-1 RGB),
  so training, the export parity check and the line see the same pixels.
* **Augmentation** (label-preserving for EL cells): horizontal and vertical flips, 90 degree
  rotations, small brightness and contrast jitter.
* **Loss**: cross-entropy weighted by inverse class frequency (class-balanced). With ``soft_labels`` the
  dataset's ``soft_labels.json`` images (e.g. ELPV's cells the experts were unsure of) join ``train`` with
  their class probabilities as targets (:func:`soft_cross_entropy`); ``val`` stays hard-labelled.
* **Optimiser**: AdamW, cosine learning rate from ``lr0`` to ``lr0 * lrf``; the stem and the first
  ``freeze`` blocks can stay frozen (ImageNet features, no backward through them: faster on a CPU).
* **Selection**: the epoch with the best balanced accuracy on ``val`` is kept (``best.pt``).

Seeded (torch, the sampler and the augmentation); CPU only.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .train import Progress, TrainingCancelled, TrainingError, TrainResult

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class FinetuneHyp(BaseModel):
    """Hyperparameters of the torch fine-tuning backend (``models train --hyp`` JSON)."""

    model_config = ConfigDict(extra="forbid")

    lr0: float = Field(1e-3, gt=0, description="AdamW learning rate at the start (after warm-up)")
    lrf: float = Field(0.05, gt=0, le=1, description="final learning rate as a fraction of lr0 (cosine schedule)")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay")
    warmup_epochs: float = Field(0.3, ge=0, description="linear warm-up of the learning rate, in epochs")
    freeze: int = Field(0, ge=0, le=16, description="stem and this many leading MBConv blocks stay frozen (0: none)")
    dropout: float = Field(0.2, ge=0, lt=1, description="dropout before the classifier")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="cross-entropy label smoothing")
    balanced: bool = Field(True, description="weight the loss by inverse class frequency (class-balanced)")
    flips: bool = Field(True, description="random horizontal and vertical flips")
    rot90: bool = Field(True, description="random 90 degree rotations (square inputs)")
    degrees: float = Field(0.0, ge=0, le=45, description="random rotation, +- this many degrees (edges: border pixels)")
    scale: float = Field(0.0, ge=0, lt=1, description="random zoom, 1 +- this")
    translate: float = Field(0.0, ge=0, lt=0.5, description="random shift, +- this fraction of the image side")
    brightness: float = Field(0.1, ge=0, le=1, description="random brightness offset, +- this (0-1 scale)")
    contrast: float = Field(0.1, ge=0, le=1, description="random contrast factor, 1 +- this")
    soft_labels: bool = Field(
        False,
        description="also train on the images listed in the dataset's soft_labels.json, with their class "
        "probabilities as targets (images whose label is uncertain; never in val or test)",
    )
    tta: bool = Field(
        False,
        description="export: the probabilities averaged over the image's 8 flips and 90 degree rotations inside "
        "the ONNX graph (8x the compute per part; for parts with no fixed orientation, e.g. solar cells)",
    )


def _prepared(paths: list[Path], imgsz: int) -> np.ndarray:
    """(N, 3, S, S) uint8 tensors, each image prepared as the station prepares a part."""
    from station.inspection.preprocess import InputTensor

    t = InputTensor((imgsz, imgsz), 3, batch=1)
    xs = []
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise TrainingError(f"cannot read image {p}")
        if img.ndim == 3 and img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        if img.dtype != np.uint8:
            img = cv2.convertScaleAbs(img, alpha=255.0 / max(float(img.max()), 1.0))
        t.center_crop(img)
        xs.append(np.rint(t.view(1)[0] * 255.0).astype(np.uint8))
    return np.stack(xs) if xs else np.zeros((0, 3, imgsz, imgsz), np.uint8)


def _images(root: Path, names: list[str], imgsz: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3, S, S) uint8 tensors prepared as the station prepares a part, and (N,) class ids."""
    paths, ys = [], []
    for cid, name in enumerate(names):
        for p in sorted((root / name).iterdir()):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(p)
                ys.append(cid)
    if not paths:
        raise TrainingError(f"no images under {root}/<class>/")
    return _prepared(paths, imgsz), np.asarray(ys, np.int64)


def soft_targets(data: Path, names: list[str]) -> tuple[list[Path], np.ndarray]:
    """The images of ``<data>/soft_labels.json`` and their (N, C) class-probability targets.

    Format ``{"format": 1, "targets": {"<path relative to data>": {"<class>": p, ...}}}``: every class of
    the dataset named, probabilities in [0, 1] summing to 1, files inside ``data``.
    """
    from .elpv import SOFT_LABELS

    f = data / SOFT_LABELS
    if not f.is_file():
        raise TrainingError(f"soft_labels is on but {f} does not exist (models import-elpv writes it)")
    try:
        targets = json.loads(f.read_text())["targets"]
    except (ValueError, KeyError, TypeError) as e:
        raise TrainingError(f"{f}: not a soft-label file ({e}); expected {{'format': 1, 'targets': {{...}}}}") from e
    root, paths, rows = data.resolve(), [], []
    for rel, probs in sorted(targets.items()):
        p = (data / rel).resolve()
        if not p.is_relative_to(root) or not p.is_file():
            raise TrainingError(f"{f}: {rel!r} is not an image inside {data}")
        if not isinstance(probs, dict) or sorted(probs) != sorted(names):
            raise TrainingError(f"{f}: {rel!r} must give a probability for each class {names}, got {probs!r}")
        row = [float(probs[n]) for n in names]
        if min(row) < 0 or abs(sum(row) - 1.0) > 1e-3:
            raise TrainingError(f"{f}: {rel!r} probabilities {row} must lie in [0, 1] and sum to 1")
        paths.append(p)
        rows.append(row)
    return paths, np.asarray(rows, np.float32).reshape(-1, len(names))


def soft_cross_entropy(logits: Any, targets: Any, weight: Any | None = None, label_smoothing: float = 0.0) -> Any:
    """Cross-entropy against class-probability ``targets`` (B, C), class-weighted and label-smoothed.

    Normalised by the batch's total target weight, so for one-hot targets it is exactly
    ``F.cross_entropy(logits, class_ids, weight=weight, label_smoothing=label_smoothing)``.
    """
    n = logits.shape[1]
    w = logits.new_ones(n) if weight is None else weight
    smoothed = targets * (1.0 - label_smoothing) + label_smoothing / n
    logp = logits.log_softmax(1)
    return -(smoothed * w * logp).sum() / (targets * w).sum()


def class_names(data: Path) -> list[str]:
    """Class folder names of ``train/`` in sorted order (class id = index, as Ultralytics does)."""
    names = sorted(p.name for p in (data / "train").iterdir() if p.is_dir())
    if len(names) < 2:
        raise TrainingError(f"{data / 'train'} needs at least two class folders, found {names}")
    missing = [n for n in names if not (data / "val" / n).is_dir()]
    if missing:
        raise TrainingError(f"{data / 'val'} lacks the class folders {missing}")
    return names


def augment(x: Any, hyp: FinetuneHyp, gen: Any) -> Any:
    """Label-preserving augmentation of a (B, 3, S, S) float 0-1 batch, per sample, from ``gen``."""
    import torch

    b = x.shape[0]
    if hyp.flips:
        fh = torch.rand(b, generator=gen) < 0.5
        fv = torch.rand(b, generator=gen) < 0.5
        x = torch.where(fh[:, None, None, None], x.flip(3), x)
        x = torch.where(fv[:, None, None, None], x.flip(2), x)
    if hyp.rot90 and x.shape[2] == x.shape[3]:
        k = torch.randint(0, 4, (b,), generator=gen)
        x = torch.stack([torch.rot90(x[i], int(k[i]), (1, 2)) for i in range(b)])
    if hyp.degrees or hyp.scale or hyp.translate:
        x = _affine(x, hyp, gen)
    if hyp.brightness or hyp.contrast:
        c = 1.0 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * hyp.contrast
        o = (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * hyp.brightness
        m = x.mean((1, 2, 3), keepdim=True)
        x = ((x - m) * c + m + o).clamp(0.0, 1.0)
    return x


def _affine(x: Any, hyp: FinetuneHyp, gen: Any) -> Any:
    """A small random rotation, zoom and shift per sample (one bilinear resampling; a part slightly askew)."""
    import torch
    import torch.nn.functional as F

    b = x.shape[0]
    a = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(hyp.degrees)
    z = 1.0 + (torch.rand(b, generator=gen) * 2 - 1) * hyp.scale
    t = (torch.rand(b, 2, generator=gen) * 2 - 1) * (2 * hyp.translate)  # grid units: the side is 2 long
    cos, sin = torch.cos(a) / z, torch.sin(a) / z
    theta = torch.stack([torch.stack([cos, -sin, t[:, 0]], 1), torch.stack([sin, cos, t[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def balanced_accuracy(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> float:
    """Mean per-class recall (classes absent from ``truth`` are skipped)."""
    recalls = [float((pred[truth == c] == c).mean()) for c in range(n_classes) if (truth == c).any()]
    return float(np.mean(recalls)) if recalls else 0.0


def train_classify(
    data: Path | str,
    out_dir: Path | str,
    *,
    model: str | Path,
    epochs: int,
    imgsz: int,
    batch: int,
    seed: int = 0,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
    hyp: Mapping[str, Any] | None = None,
    batch_every_s: float = 2.0,
) -> TrainResult:
    """Fine-tune ``model`` (an arch of :data:`models.efficientnet.ARCHS`: ImageNet weights, or a checkpoint
    written here) on the classify dataset ``data`` (``train/``, ``val/`` class folders); see the module doc."""
    import torch

    from . import efficientnet as eff

    h = FinetuneHyp.model_validate(dict(hyp or {}))
    data, out = Path(data), Path(out_dir).resolve()
    wdir = out / "train" / "weights"
    wdir.mkdir(parents=True, exist_ok=True)
    log_path = out / "train.log"
    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    t0 = time.monotonic()

    def emit(p: Progress) -> None:
        if on_progress is None:
            return
        try:
            on_progress(p)
        except Exception:  # noqa: BLE001 - a broken progress consumer must not kill a long training
            log.exception("progress callback failed")

    def check_cancel(epoch: int) -> None:
        if cancel is not None and cancel.is_set():
            raise TrainingCancelled(f"training cancelled during epoch {epoch}/{epochs}")

    try:
        torch.manual_seed(seed)
        names = class_names(data)
        if str(model) in eff.ARCHS:
            arch = str(model)
            net = eff.pretrained(len(names), h.dropout, arch)
            start = f"{model} (ImageNet: {eff.arch_spec(arch).weights_file})"
        else:
            net, ck = eff.load_model(model, h.dropout)
            if list(ck["names"]) != names:
                raise TrainingError(f"parent {model} has classes {ck['names']}, the dataset {names}")
            arch, start = eff.checkpoint_arch(ck), str(model)
        xtr, ytr = _images(data / "train", names, imgsz)
        ttr = np.eye(len(names), dtype=np.float32)[ytr]
        if h.soft_labels:
            soft_paths, tsoft = soft_targets(data, names)
            xtr, ttr = np.concatenate([xtr, _prepared(soft_paths, imgsz)]), np.concatenate([ttr, tsoft])
        xva, yva = _images(data / "val", names, imgsz)
        log.info("models.train (torch): start=%s train=%d (%d soft) val=%d imgsz=%d hyp=%s", start, len(ttr),
                 len(ttr) - len(ytr), len(yva), imgsz, h)  # fmt: skip
        frozen = [net._conv_stem, net._bn0, *net._blocks[: h.freeze]] if h.freeze else []
        for m in frozen:
            m.requires_grad_(False)
        params = [p for p in net.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=h.lr0, weight_decay=h.weight_decay)
        counts = ttr.sum(0, dtype=np.float64)  # soft images count by their probabilities
        weight = torch.tensor(counts.sum() / (len(names) * np.maximum(counts, 1)), dtype=torch.float32)
        gen = torch.Generator().manual_seed(seed)
        nb = max(1, math.ceil(len(ttr) / batch))
        total, warm = epochs * nb, h.warmup_epochs * nb
        net = net.to(memory_format=torch.channels_last)
        xtr_t, ttr_t = torch.from_numpy(xtr), torch.from_numpy(ttr)
        emit(Progress("start", 0, epochs, batches=nb, elapsed_s=time.monotonic() - t0))
        best_ba, best_metrics, step, last_report = -1.0, {}, 0, 0.0
        for epoch in range(1, epochs + 1):
            net.train()
            for m in frozen:
                m.eval()  # frozen batch norms keep their ImageNet statistics
            order = torch.randperm(len(ttr), generator=gen)
            loss_sum = 0.0
            for bi in range(nb):
                check_cancel(epoch)
                idx = order[bi * batch : (bi + 1) * batch]
                x = augment(xtr_t[idx].float() / 255.0, h, gen).contiguous(memory_format=torch.channels_last)
                lr = h.lr0 * (
                    (step + 1) / warm
                    if step < warm
                    else h.lrf + (1 - h.lrf) * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(total - warm, 1)))
                )
                for g in opt.param_groups:
                    g["lr"] = lr
                loss = soft_cross_entropy(
                    net(eff.normalise(x)), ttr_t[idx], weight if h.balanced else None, h.label_smoothing
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                loss_sum += float(loss.detach())
                now = time.monotonic()
                if now - last_report >= batch_every_s:
                    last_report = now
                    p = Progress("batch", epoch, epochs, bi + 1, nb, {"loss": round(loss_sum / (bi + 1), 5)})
                    frac, el = p.fraction, now - t0
                    emit(
                        Progress(
                            "batch",
                            epoch,
                            epochs,
                            bi + 1,
                            nb,
                            p.losses,
                            elapsed_s=el,
                            eta_s=el * (1 - frac) / frac if frac > 0.01 else None,
                        )
                    )
            metrics = _validate(net, xva, yva, len(names), batch)
            losses = {"loss": round(loss_sum / nb, 5)}
            eff.save_checkpoint(
                wdir / "last.pt", net, names, imgsz, arch, epoch=epoch, metrics=metrics, hyp=h.model_dump()
            )
            if metrics["balanced_accuracy"] > best_ba:
                best_ba, best_metrics = metrics["balanced_accuracy"], metrics
                eff.save_checkpoint(
                    wdir / "best.pt", net, names, imgsz, arch, epoch=epoch, metrics=metrics, hyp=h.model_dump()
                )
            el = time.monotonic() - t0
            log.info("epoch %d/%d: %s %s (%.0f s)", epoch, epochs, losses, metrics, el)
            emit(Progress("epoch", epoch, epochs, losses=losses, metrics=metrics, elapsed_s=el,
                          eta_s=el * (epochs - epoch) / epoch))  # fmt: skip
            if epoch < epochs:
                check_cancel(epoch + 1)
        seconds = time.monotonic() - t0
        emit(Progress("final", epochs, epochs, metrics=best_metrics, elapsed_s=seconds, eta_s=0.0))
        emit(Progress("done", epochs, epochs, metrics=best_metrics, elapsed_s=seconds, eta_s=0.0))
    except TrainingCancelled as e:
        log.info("models.train (torch): %s", e)
        raise
    finally:
        log.removeHandler(handler)
        handler.close()
    args = {"model": start, "data": str(data), "epochs": epochs, "imgsz": imgsz, "batch": batch, "seed": seed,
            "backend": "torch", "train_images": len(ttr), "soft_images": len(ttr) - len(ytr),
            **h.model_dump()}  # fmt: skip
    return TrainResult(wdir / "best.pt", wdir / "last.pt", best_metrics, log_path, epochs, seconds, args)


def _validate(net: Any, x: np.ndarray, y: np.ndarray, n_classes: int, batch: int) -> dict[str, float]:
    """top-1, balanced accuracy and loss on the validation images (no augmentation)."""
    import torch
    import torch.nn.functional as F

    from .efficientnet import normalise

    net.eval()
    logits = []
    with torch.no_grad():
        for i in range(0, len(y), batch):
            xb = torch.from_numpy(x[i : i + batch]).float().div(255.0).contiguous(memory_format=torch.channels_last)
            logits.append(net(normalise(xb)))
    lg = torch.cat(logits)
    pred = lg.argmax(1).numpy()
    return {
        "top1": round(float((pred == y).mean()), 5),
        "balanced_accuracy": round(balanced_accuracy(pred, y, n_classes), 5),
        "val_loss": round(float(F.cross_entropy(lg, torch.from_numpy(y))), 5),
    }
