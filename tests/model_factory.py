"""Make REAL tiny Ultralytics models for tests (and for the shipped default model's script).

Nothing is downloaded: models are trained from a ``.yaml`` (no pretrained weights) on a tiny
generated dataset of bright shapes on a dark, noisy background, then exported to ONNX by
Ultralytics itself. Results are cached on disk in a directory keyed by every parameter (and the
Ultralytics version), so a test session - or a later one - trains each model at most once.
A file lock makes concurrent test processes wait for one another instead of training twice.

Classes of the generated data: ``square`` (filled bright square) and ``disc`` (filled bright disc).
For classification the classes are ``disc``, ``good`` (background only) and ``square``.

Usage::

    from tests.model_factory import tiny_model, draw_scene
    onnx_path = tiny_model("detect", imgsz=64, epochs=1)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

log = logging.getLogger(__name__)

Task = Literal["detect", "segment", "classify"]
DET_NAMES = ("square", "disc")
# drawn in this order (class of the drawn shape, None = background only); Ultralytics names ImageFolder
# classes in sorted order, hence CLS_NAMES
_CLS_DRAW = (("good", None), ("square", 0), ("disc", 1))
CLS_NAMES = tuple(sorted(n for n, _ in _CLS_DRAW))  # ("disc", "good", "square")
_FACTORY_VERSION = 3  # bump when the data or the recipe changes: invalidates the cache
_BASE_YAML = {"detect": "yolov8n.yaml", "segment": "yolov8n-seg.yaml", "classify": "yolov8n-cls.yaml"}


@dataclass(frozen=True)
class Shape:
    """One drawn object: class index, kind and its box in pixels (x1, y1, x2, y2)."""

    cls: int
    box: tuple[float, float, float, float]
    polygon: tuple[tuple[float, float], ...]


def default_cache_dir() -> Path:
    """``$STATION_MODEL_CACHE`` or ``<repo>/.pytest_cache/station-models`` (cleared by ``pytest --cache-clear``)."""
    env = os.environ.get("STATION_MODEL_CACHE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / ".pytest_cache" / "station-models"


# --------------------------------------------------------------------------- drawing


def draw_scene(
    rng: np.random.Generator,
    size: tuple[int, int],
    n_objects: int,
    min_px: int,
    max_px: int,
    classes: tuple[int, ...] = (0, 1),
    background: int = 30,
    noise: float = 6.0,
) -> tuple[np.ndarray, list[Shape]]:
    """Draw a dark noisy BGR image of ``size`` (h, w) with non-overlapping bright squares/discs.

    Returns the image and the drawn shapes (class 0 = square, 1 = disc).
    """
    h, w = size
    img: np.ndarray = np.clip(rng.normal(background, noise, (h, w)), 0, 255).astype(np.uint8)
    img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    shapes: list[Shape] = []
    tries = 0
    while len(shapes) < n_objects and tries < 200:
        tries += 1
        s = int(rng.integers(min_px, max_px + 1))
        if s >= min(h, w) - 2:
            s = min(h, w) - 3
        x1 = int(rng.integers(1, w - s - 1))
        y1 = int(rng.integers(1, h - s - 1))
        box = (float(x1), float(y1), float(x1 + s), float(y1 + s))
        if any(_overlaps(box, o.box, margin=3) for o in shapes):
            continue
        cls = int(rng.choice(classes))
        value = int(rng.integers(190, 256))
        color = (value, value, value)
        poly: tuple[tuple[float, float], ...]
        if cls == 0:
            cv2.rectangle(img, (x1, y1), (x1 + s - 1, y1 + s - 1), color, -1)
            poly = ((x1, y1), (x1 + s, y1), (x1 + s, y1 + s), (x1, y1 + s))
        else:
            c = (x1 + s / 2, y1 + s / 2)
            r = s / 2
            cv2.circle(
                img, (int(round(c[0] * 16)), int(round(c[1] * 16))), int(round(r * 16)), color, -1, cv2.LINE_AA, 4
            )
            ang = np.linspace(0, 2 * np.pi, 24, endpoint=False)
            poly = tuple((float(c[0] + r * np.cos(a)), float(c[1] + r * np.sin(a))) for a in ang)
        shapes.append(Shape(cls, box, tuple((float(px), float(py)) for px, py in poly)))
    return img, shapes


def _overlaps(a: tuple[float, ...], b: tuple[float, ...], margin: float) -> bool:
    return not (a[2] + margin < b[0] or b[2] + margin < a[0] or a[3] + margin < b[1] or b[3] + margin < a[1])


def _write_yolo_dataset(root: Path, task: Task, n_train: int, n_val: int, imgsz: int, seed: int) -> Path:
    """Write a YOLO detect/segment dataset and its data.yaml; returns the yaml path."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img, shapes = draw_scene(rng, (imgsz, imgsz), int(rng.integers(1, 4)), max(6, imgsz // 8), imgsz // 3)
            cv2.imwrite(str(root / "images" / split / f"{i:04d}.png"), img)
            lines = []
            for s in shapes:
                if task == "segment":
                    pts = " ".join(f"{px / imgsz:.5f} {py / imgsz:.5f}" for px, py in s.polygon)
                    lines.append(f"{s.cls} {pts}")
                else:
                    x1, y1, x2, y2 = s.box
                    lines.append(
                        f"{s.cls} {(x1 + x2) / 2 / imgsz:.6f} {(y1 + y2) / 2 / imgsz:.6f} "
                        f"{(x2 - x1) / imgsz:.6f} {(y2 - y1) / imgsz:.6f}"
                    )
            (root / "labels" / split / f"{i:04d}.txt").write_text("\n".join(lines) + "\n")
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(DET_NAMES))
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return data


def _write_cls_dataset(root: Path, n_train: int, n_val: int, imgsz: int, seed: int) -> Path:
    """Write an ImageFolder classification dataset (good / square / disc); returns its root."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for name, shape_cls in _CLS_DRAW:
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(max(2, n // len(_CLS_DRAW))):
                k = 0 if shape_cls is None else 1
                img, _ = draw_scene(rng, (imgsz, imgsz), k, imgsz // 4, imgsz // 2, classes=(shape_cls or 0,))
                cv2.imwrite(str(d / f"{i:04d}.png"), img)
    return root


# --------------------------------------------------------------------------- training + export


@dataclass(frozen=True)
class Recipe:
    """Every parameter that changes the produced model (the cache key)."""

    task: str
    imgsz: int
    epochs: int
    n_train: int
    n_val: int
    seed: int
    export_imgsz: int
    nms: bool
    dynamic: bool
    batch: int = 16
    version: int = _FACTORY_VERSION

    def key(self) -> str:
        """Directory name of the trained weights: only the training parameters count."""
        import ultralytics

        train = {k: v for k, v in asdict(self).items() if k not in ("export_imgsz", "nms", "dynamic")}
        blob = json.dumps({**train, "ultralytics": ultralytics.__version__}, sort_keys=True)
        return f"{self.task}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"

    def export_name(self) -> str:
        """File name of one export of those weights."""
        return f"{self.task}_{self.export_imgsz}{'_nms' if self.nms else ''}{'_dynamic' if self.dynamic else ''}.onnx"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def tiny_model(
    task: Task,
    *,
    imgsz: int = 64,
    epochs: int = 1,
    n_train: int = 32,
    n_val: int = 8,
    seed: int = 0,
    export_imgsz: int | None = None,
    nms: bool = False,
    dynamic: bool = False,
    batch: int = 16,
    cache_dir: Path | None = None,
) -> Path:
    """Train (once, cached) a tiny real Ultralytics model and return its ONNX export.

    ``export_imgsz`` re-exports the trained weights at another input size (e.g. 640 for benchmarks);
    ``nms=True`` exports with Ultralytics' end-to-end NMS (output (1, 300, 6)); ``dynamic=True``
    exports a dynamic batch/height/width input.
    """
    recipe = Recipe(task, imgsz, epochs, n_train, n_val, seed, export_imgsz or imgsz, nms, dynamic, batch)
    root = (cache_dir or default_cache_dir()) / recipe.key()
    final = root / recipe.export_name()
    if final.exists():
        return final
    with _file_lock(root.with_suffix(".lock")):
        if final.exists():  # another process made it while we waited
            return final
        weights = _train(recipe, root)
        _export(weights, recipe, final)
    return final


def trained_weights(task: Task, **kw: object) -> Path:
    """The ``best.pt``/``last.pt`` behind :func:`tiny_model` with the same parameters (trains if needed)."""
    onnx_path = tiny_model(task, **kw)  # type: ignore[arg-type]
    pts = sorted(onnx_path.parent.glob("train/weights/*.pt"))
    return next((p for p in pts if p.name == "best.pt"), pts[0])


# Recipes the tests use (each trained once, then cached). Times are on 2 busy CPU cores.
DETECTING = dict(imgsz=64, epochs=40, n_train=128, n_val=16, seed=1)  # ~55 s; mAP50 ~0.6, recall ~0.9
SEGMENTING = dict(imgsz=64, epochs=30, n_train=64, n_val=8, seed=2, batch=8)  # ~45 s
CLASSIFYING = dict(imgsz=64, epochs=20, n_train=60, n_val=12, seed=3, batch=8)  # ~20 s


def detecting_model(export_imgsz: int | None = None, **kw: object) -> Path:
    """A detect model that really finds the squares and discs (more epochs on more images).

    40 epochs of 128 images at imgsz 64: mAP50 about 0.6, recall about 0.9 (square/disc are sometimes
    confused when tiny). ``export_imgsz`` re-exports the same weights at another input size.
    """
    return tiny_model("detect", **{**DETECTING, "export_imgsz": export_imgsz, **kw})  # type: ignore[arg-type]


def segmenting_model(**kw: object) -> Path:
    """A segment model trained long enough to produce masks on the generated shapes."""
    return tiny_model("segment", **{**SEGMENTING, **kw})  # type: ignore[arg-type]


def classifying_model(**kw: object) -> Path:
    """A classify model (good / square / disc) trained long enough to have confident probabilities."""
    return tiny_model("classify", **{**CLASSIFYING, **kw})  # type: ignore[arg-type]


def _train(recipe: Recipe, root: Path) -> Path:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO  # tests only: the station runtime never imports ultralytics

    from models.train import REPRODUCIBLE_CPU_TRAINING

    done_marker = root / "train" / "TRAINED"
    weights_dir = root / "train" / "weights"
    if done_marker.exists():
        return weights_dir / "best.pt" if (weights_dir / "best.pt").exists() else weights_dir / "last.pt"
    if (root / "train").exists():  # an interrupted run: its last.pt is under-trained
        shutil.rmtree(root / "train")
    data_dir = root / "data"
    if data_dir.exists():
        shutil.rmtree(data_dir)
    if recipe.task == "classify":
        data: Path = _write_cls_dataset(data_dir, recipe.n_train, recipe.n_val, recipe.imgsz, recipe.seed)
    else:
        data = _write_yolo_dataset(data_dir, recipe.task, recipe.n_train, recipe.n_val, recipe.imgsz, recipe.seed)  # type: ignore[arg-type]
    t0 = time.monotonic()
    model = YOLO(_BASE_YAML[recipe.task], task=recipe.task)
    model.train(
        data=str(data),
        epochs=recipe.epochs,
        imgsz=recipe.imgsz,
        batch=recipe.batch,
        workers=0,
        project=str(root),
        seed=recipe.seed,
        **REPRODUCIBLE_CPU_TRAINING,
        verbose=False,
        mosaic=0.0 if recipe.task != "classify" else 1.0,
        cache=False,
        pretrained=False,
        patience=0,
    )
    log.info("trained %s in %.1f s", recipe.key(), time.monotonic() - t0)
    done_marker.write_text(f"{time.monotonic() - t0:.1f} s\n")
    best = weights_dir / "best.pt"
    return best if best.exists() else weights_dir / "last.pt"


def _export(weights: Path, recipe: Recipe, final: Path) -> None:
    from ultralytics import YOLO

    model = YOLO(str(weights), task=recipe.task)
    out = model.export(
        format="onnx", imgsz=recipe.export_imgsz, simplify=False, nms=recipe.nms, dynamic=recipe.dynamic, device="cpu"
    )
    tmp = final.with_suffix(".tmp")
    shutil.copyfile(out, tmp)
    os.replace(tmp, final)


def untrained_model(task: Task, imgsz: int = 640, cache_dir: Path | None = None) -> Path:
    """Export an UNTRAINED model straight from its yaml (random weights): enough for speed benchmarks."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    root = (cache_dir or default_cache_dir()) / f"untrained-{task}-{imgsz}-v{_FACTORY_VERSION}"
    final = root / f"{task}_{imgsz}.onnx"
    if final.exists():
        return final
    with _file_lock(root.with_suffix(".lock")):
        if final.exists():
            return final
        root.mkdir(parents=True, exist_ok=True)
        model = YOLO(_BASE_YAML[task], task=task)
        pt = root / "model.pt"
        model.save(str(pt))
        out = YOLO(str(pt), task=task).export(format="onnx", imgsz=imgsz, simplify=False, device="cpu")
        tmp = final.with_suffix(".tmp")
        shutil.copyfile(out, tmp)
        os.replace(tmp, final)
    return final


# --------------------------------------------------------------------------- anomaly models (models/anomaly.py)

ANOMALY_CAMERA = {"type": "synthetic", "id": "cam0", "product": "pcb", "width": 640, "height": 400, "seed": 51}


def synthetic_good_frames(n: int, camera: dict | None = None, first: int = 0) -> list[np.ndarray]:
    """``n`` defect-free Mono8 frames of the synthetic line (the camera's own renderer)."""
    from station.acquire.synthetic import iter_parts
    from station.config import SyntheticCameraConfig

    cfg = SyntheticCameraConfig.model_validate(
        {**(camera or ANOMALY_CAMERA), "defect_rate": 0.0, "harmless_mark_rate": 0.0}
    )
    return [p.image for _, p in iter_parts(cfg, first, n)]


def anomaly_model(
    *, n_good: int = 24, long_side: int = 256, seed: int = 0, camera: dict | None = None, cache_dir: Path | None = None
) -> Path:
    """Learn (once, cached) a real anomaly model from good frames of the synthetic line; returns its ONNX file.

    The tests that use it check the station's paths (line, replay, swap, shadow, evaluation) and the
    inspector's contract; its accuracy on real parts is tests/unit/test_anomaly.py on ELPV cells.
    """
    from models.anomaly import FORMAT, LearnSettings, learn

    cam = camera or ANOMALY_CAMERA
    blob = json.dumps(
        {
            "n_good": n_good,
            "long_side": long_side,
            "seed": seed,
            "camera": cam,
            "v": _FACTORY_VERSION,
            "format": FORMAT,
            "features": LearnSettings.features,
        },
        sort_keys=True,
    )
    root = (cache_dir or default_cache_dir()) / f"anomaly-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"
    final = root / "anomaly.onnx"
    if final.exists():
        return final
    with _file_lock(root.with_suffix(".lock")):
        if not final.exists():
            learn(
                synthetic_good_frames(n_good, cam, first=1000 * seed),
                final,
                LearnSettings(long_side=long_side, seed=seed),
            )
    return final
