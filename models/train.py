"""Training with Ultralytics: progress through its callbacks, cancellable, the log kept in a file.

``train()`` runs in the calling process (it imports torch and ultralytics, lazily, inside the
function): the station runs it through :mod:`models.jobs`, in a subprocess, so torch never enters
the station process.

Nothing is downloaded: ``YOLO_OFFLINE=1`` is set before ultralytics is imported, a new model is
built from a ``.yaml`` (random weights), ``plots=False`` (no font download). Fine-tuning starts from
a parent's ``.pt`` weights; a parent given as ``.onnx`` is resolved to the ``.pt`` stored next to it
(same stem) - ONNX weights cannot be trained.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .efficientnet import ARCHS as TORCH_ARCHS  # no torch at import: it is imported inside the functions
from .export import imgsz_problem

log = logging.getLogger(__name__)

# Ultralytics train arguments of every run here: CPU, deterministic for a seed, no plots (no font download), weights
# in <project>/train (the test model factory trains with them too)
REPRODUCIBLE_CPU_TRAINING: Mapping[str, Any] = MappingProxyType(
    dict(device="cpu", plots=False, val=True, name="train", exist_ok=True, deterministic=True, amp=False)
)
DEFAULT_ARCH = "yolov8n.yaml"

# Ultralytics' validation metric keys -> short names used in progress and reports
METRIC_KEYS = {
    "metrics/precision(B)": "precision",
    "metrics/recall(B)": "recall",
    "metrics/mAP50(B)": "mAP50",
    "metrics/mAP50-95(B)": "mAP50-95",
    "metrics/accuracy_top1": "top1",  # classify
    "metrics/accuracy_top5": "top5",
}


@dataclass(frozen=True)
class TrainRun:
    """The settings of one training run, with the defaults of a real run (a test passes a tiny one).

    The base of a training job's spec (:class:`models.jobs.JobSpec`) and of the plant training host's
    (:class:`station.plant.train_host.TrainSpec`); :meth:`train_args` are the matching :func:`train` arguments.
    """

    model: str = DEFAULT_ARCH
    epochs: int = 50
    imgsz: int = 640
    batch: int = 16
    seed: int = 0

    def train_args(self) -> dict[str, Any]:
        """``model``, ``epochs``, ``imgsz``, ``batch`` and ``seed`` as keyword arguments of :func:`train`."""
        return {f.name: getattr(self, f.name) for f in fields(TrainRun)}


class TrainingCancelled(RuntimeError):
    """Training was cancelled on request (``cancel`` event set)."""


class TrainingError(RuntimeError):
    """Training could not run; the message names the input and the fix."""


@dataclass(frozen=True)
class Progress:
    """One progress report.

    ``phase``: ``start`` (before epoch 1), ``batch`` (during an epoch), ``epoch`` (an epoch finished and
    was validated), ``final`` (the best weights re-validated), ``done``. ``epoch`` counts finished epochs
    for ``epoch``/``final``, and the running epoch (1-based) for ``batch``. ``metrics`` uses the short
    names precision, recall, mAP50, mAP50-95 (validation split).
    """

    phase: str
    epoch: int
    epochs: int
    batch: int = 0
    batches: int = 0
    losses: Mapping[str, float] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0
    eta_s: float | None = None
    message: str = ""

    @property
    def fraction(self) -> float:
        """Rough fraction of the work done, 0..1."""
        if self.epochs <= 0:
            return 0.0
        if self.phase in ("final", "done"):
            return 1.0
        if self.phase == "batch" and self.batches:
            return min(1.0, ((self.epoch - 1) + self.batch / self.batches) / self.epochs)
        return min(1.0, self.epoch / self.epochs)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict (used for the job's progress file)."""
        d = asdict(self)
        d["losses"], d["metrics"] = dict(self.losses), dict(self.metrics)
        d["fraction"] = round(self.fraction, 4)
        return d

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Progress:
        """Inverse of :meth:`as_dict`."""
        keys = {f for f in Progress.__dataclass_fields__}
        return Progress(**{k: v for k, v in d.items() if k in keys})


@dataclass(frozen=True)
class TrainResult:
    """What a finished training produced."""

    best_pt: Path
    last_pt: Path
    metrics: Mapping[str, float]  # validation metrics of best.pt (short names)
    log_path: Path
    epochs_done: int
    seconds: float
    args: Mapping[str, Any]


def data_task(data: Path | str) -> str:
    """The task a dataset trains: ``classify`` for a folder of class folders (``train/<class>/*.png``,
    e.g. :func:`models.elpv.import_classify_dataset`), ``detect`` for a YOLO ``data.yaml``."""
    p = Path(data)
    if p.is_dir():
        if not (p / "train").is_dir() or not (p / "val").is_dir():
            raise TrainingError(
                f"dataset folder {p} has no train/ and val/ class folders: a classify dataset is "
                "<root>/{train,val}/<class>/<image> (make one with `models import-elpv`)"
            )
        return "classify"
    if not p.is_file():
        raise TrainingError(f"dataset {p} does not exist: make one with `models dataset` or export labels first")
    return "detect"


def resolve_parent(model: str | Path) -> str:
    """The weights or yaml Ultralytics should start from, checking files exist.

    ``*.yaml`` (e.g. ``yolov8n.yaml``, ``yolo11n.yaml``) builds a new model; ``*.pt`` fine-tunes;
    ``*.onnx`` fine-tunes from the ``.pt`` with the same stem next to it.
    """
    s = str(model)
    p = Path(s)
    if s in TORCH_ARCHS:
        return s  # ImageNet-pretrained classify network fine-tuned in torch (models.train_classify)
    if p.suffix == ".yaml":
        return s  # Ultralytics resolves its own model yamls (yolov8n.yaml) from the package
    if p.suffix == ".onnx":
        pt = p.with_suffix(".pt")
        if not pt.is_file():
            raise TrainingError(
                f"parent {p} is an ONNX file and has no weights {pt.name} next to it; ONNX cannot be fine-tuned: "
                "give its .pt (kept by `models register --weights`), or train from a .yaml"
            )
        return str(pt)
    if p.suffix == ".pt":
        if not p.is_file():
            raise TrainingError(f"parent weights {p} do not exist")
        return s
    raise TrainingError(
        f"model {s!r}: expected a .yaml (new model), a .pt (fine-tune), an .onnx with its .pt next to it, "
        f"or a pretrained classify network ({', '.join(TORCH_ARCHS)})"
    )


def is_torch_backend(start: str) -> bool:
    """Whether ``start`` (from :func:`resolve_parent`) trains with :mod:`models.train_classify`, not Ultralytics."""
    if start in TORCH_ARCHS:
        return True
    from .efficientnet import is_checkpoint  # lazy: imports torch

    return Path(start).suffix == ".pt" and is_checkpoint(start)


def _floats(d: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in d.items():
        try:
            out[str(k)] = round(float(v), 5)
        except (TypeError, ValueError):
            continue
    return out


def _metrics(trainer: Any) -> dict[str, float]:
    raw = _floats(getattr(trainer, "metrics", None) or {})
    out = {METRIC_KEYS.get(k, k): v for k, v in raw.items() if not k.startswith("val/")}
    out.update({k.replace("/", "_"): v for k, v in raw.items() if k.startswith("val/")})
    return out


def _losses(trainer: Any) -> dict[str, float]:
    tloss = getattr(trainer, "tloss", None)
    if tloss is None:
        return {}
    try:
        items = trainer.label_loss_items(tloss, prefix="train")
    except Exception:  # noqa: BLE001 - loss naming differs across Ultralytics versions; progress must not break training
        return {}
    return {k.split("/", 1)[-1]: v for k, v in _floats(items).items()}


class _Reporter:
    """Ultralytics callbacks -> :class:`Progress`; raises :class:`TrainingCancelled` between batches."""

    def __init__(
        self, on_progress: Callable[[Progress], None] | None, cancel: threading.Event | None, batch_every_s: float
    ):
        self.on_progress = on_progress
        self.cancel = cancel
        self.batch_every_s = batch_every_s
        self.t0 = time.monotonic()
        self.batch = 0
        self.loop_done = False
        self.epochs_done = 0
        self.last_batch_report = 0.0
        self.final_metrics: dict[str, float] = {}

    def _emit(self, p: Progress) -> None:
        if self.on_progress is None:
            return
        try:
            self.on_progress(p)
        except Exception:  # noqa: BLE001 - a broken progress consumer must not kill a long training
            log.exception("progress callback failed")

    def _check_cancel(self, trainer: Any) -> None:
        if self.cancel is not None and self.cancel.is_set():
            trainer.stop = True
            raise TrainingCancelled(f"training cancelled during epoch {trainer.epoch + 1}/{trainer.epochs}")

    def _eta(self, frac: float) -> float | None:
        el = time.monotonic() - self.t0
        return el * (1 - frac) / frac if frac > 0.01 else None

    def on_train_start(self, trainer: Any) -> None:
        self._check_cancel(trainer)
        self._emit(
            Progress(
                "start", 0, int(trainer.epochs), batches=len(trainer.train_loader), elapsed_s=time.monotonic() - self.t0
            )
        )

    def on_train_epoch_start(self, trainer: Any) -> None:
        self.batch = 0
        self._check_cancel(trainer)

    def on_train_batch_end(self, trainer: Any) -> None:
        self.batch += 1
        self._check_cancel(trainer)
        now = time.monotonic()
        if now - self.last_batch_report >= self.batch_every_s:
            self.last_batch_report = now
            nb = len(trainer.train_loader)
            p = Progress(
                "batch",
                int(trainer.epoch) + 1,
                int(trainer.epochs),
                self.batch,
                nb,
                _losses(trainer),
                elapsed_s=now - self.t0,
            )
            self._emit(Progress(**{**asdict(p), "eta_s": self._eta(p.fraction)}))

    def on_fit_epoch_end(self, trainer: Any) -> None:
        now = time.monotonic()
        if self.loop_done:  # final_eval: best.pt validated again
            self.final_metrics = _metrics(trainer)
            self._emit(
                Progress(
                    "final",
                    self.epochs_done,
                    int(trainer.epochs),
                    metrics=self.final_metrics,
                    elapsed_s=now - self.t0,
                    eta_s=0.0,
                )
            )
            return
        self.epochs_done = int(trainer.epoch) + 1
        epochs = int(trainer.epochs)
        frac = self.epochs_done / max(epochs, 1)
        self._emit(
            Progress(
                "epoch",
                self.epochs_done,
                epochs,
                losses=_losses(trainer),
                metrics=_metrics(trainer),
                elapsed_s=now - self.t0,
                eta_s=self._eta(frac),
            )
        )
        if trainer.stop:
            self.loop_done = True
        else:
            self._check_cancel(trainer)


def train(
    data_yaml: Path | str,
    out_dir: Path | str,
    *,
    model: str | Path = DEFAULT_ARCH,
    epochs: int = 50,
    imgsz: int = 640,
    batch: int = 16,
    seed: int = 0,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
    workers: int = 0,
    patience: int = 0,
    hyp: Mapping[str, Any] | None = None,
    batch_every_s: float = 2.0,
) -> TrainResult:
    """Train a model on ``data_yaml``; weights and ``train.log`` go to ``out_dir``.

    ``data_yaml``: a YOLO ``data.yaml`` (detect/segment) or a classify dataset folder (see
    :func:`data_task`; then ``model`` must be a classify model, e.g. ``yolov8n-cls.yaml``).

    ``model``: a ``.yaml`` (new model, random weights), or a parent ``.pt`` / ``.onnx`` (with its
    ``.pt`` next to it) to fine-tune; for a classify dataset also ``efficientnet-lite0``, ``-lite1`` or
    ``-lite2`` (ImageNet weights, fine-tuned in torch by :mod:`models.train_classify`; ``hyp`` is then a
    :class:`~models.train_classify.FinetuneHyp`). ``on_progress`` gets a :class:`Progress` at start, every
    ``batch_every_s`` seconds during an epoch, after each epoch and for the final validation.
    Setting ``cancel`` stops at the next batch and raises :class:`TrainingCancelled`. ``hyp`` passes
    more Ultralytics train arguments (augmentation etc.); ``patience`` 0 = no early stopping.
    CPU only, deterministic for a given ``seed``.
    """
    data_yaml = Path(data_yaml)
    task = data_task(data_yaml)
    if epochs < 1 or batch < 1 or imgsz < 32:
        raise TrainingError(f"epochs >= 1, batch >= 1 and imgsz >= 32 are required (got {epochs}, {batch}, {imgsz})")
    if problem := imgsz_problem(imgsz):  # export needs it: refused now, not after hours of training
        raise TrainingError(problem)
    start = resolve_parent(model)
    if is_torch_backend(start):
        if task != "classify":
            raise TrainingError(f"model {model} is a classify network: give a classify dataset folder, not {data_yaml}")
        from .train_classify import train_classify

        return train_classify(data_yaml, out_dir, model=start, epochs=epochs, imgsz=imgsz, batch=batch, seed=seed,
                              on_progress=on_progress, cancel=cancel, hyp=hyp, batch_every_s=batch_every_s)  # fmt: skip
    if task == "classify" and str(model).endswith(".yaml") and "-cls" not in Path(str(model)).stem:
        raise TrainingError(
            f"model {model}: a classify dataset needs a classify model (e.g. yolov8n-cls.yaml, yolo11n-cls.yaml)"
        )
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "train.log"
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ.setdefault("YOLO_VERBOSE", "True")
    from ultralytics import YOLO  # lazy: training only
    from ultralytics.utils import LOGGER

    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    LOGGER.addHandler(handler)
    reporter = _Reporter(on_progress, cancel, batch_every_s)
    args: dict[str, Any] = dict(
        data=str(data_yaml.resolve()),
        epochs=int(epochs),
        imgsz=int(imgsz),
        batch=int(batch),
        workers=int(workers),
        project=str(out),
        seed=int(seed),
        **REPRODUCIBLE_CPU_TRAINING,
        patience=int(patience) if patience else 10_000,
        pretrained=not start.endswith(".yaml"),
        verbose=True,
    )
    args.update(dict(hyp or {}))
    t0 = time.monotonic()
    try:
        LOGGER.info(f"models.train: start={start} args={args}")
        yolo = YOLO(start, task=task)
        for event in ("on_train_start", "on_train_epoch_start", "on_train_batch_end", "on_fit_epoch_end"):
            yolo.add_callback(event, getattr(reporter, event))
        yolo.train(**args)
        trainer = yolo.trainer
        assert trainer is not None  # set by train()
        wdir = Path(trainer.save_dir) / "weights"
    except TrainingCancelled as e:
        LOGGER.info(f"models.train: {e}")
        raise
    finally:
        LOGGER.removeHandler(handler)
        handler.close()
    best, last = wdir / "best.pt", wdir / "last.pt"
    if not best.exists():
        best = last
    seconds = time.monotonic() - t0
    metrics = reporter.final_metrics or _metrics(trainer)
    if on_progress is not None:
        reporter._emit(
            Progress("done", reporter.epochs_done, int(epochs), metrics=metrics, elapsed_s=seconds, eta_s=0.0)
        )
    log.info("trained %s on %s: %d epochs in %.0f s, %s", start, data_yaml, reporter.epochs_done, seconds, metrics)
    return TrainResult(best, last, metrics, log_path, reporter.epochs_done, seconds, {**args, "model": start})
