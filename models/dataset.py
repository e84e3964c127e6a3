"""Training data from the synthetic line: rendered parts + their ground truth as YOLO labels.

The frames are exactly what the synthetic camera delivers (``station.acquire.render``), at full
resolution and Mono8, so a model trained on them sees at training time what the station feeds it
on the line. Ground-truth boxes become YOLO detect labels; parts without defects are kept as
negatives with an empty label file; harmless ink marks (class ``mark``) are not labelled - the
model must learn to ignore them.

Splits never share a part: part ids of a split come from its own id range
(train ``[0, ...)``, val ``[VAL_START, ...)``, test ``[TEST_START, ...)``), and part N of a line
with a given seed is always the same part, so a dataset is fully reproducible from its parameters
(written to ``dataset.json`` together with a content hash: the dataset snapshot id).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from station import serialize
from station.acquire.render import DEFECT_CLASSES, RenderedPart
from station.acquire.synthetic import iter_parts
from station.config.camera import SyntheticCameraConfig
from station.inspection.preprocess import letterbox_params

from .golden import GoldenSet, content_id, load_golden, sha256_file, write_manifest

log = logging.getLogger(__name__)

NAMES: tuple[str, ...] = DEFECT_CLASSES  # ("scratch", "spot", "missing"): class id = index
TRAIN_START = 0
VAL_START = 10_000_000
TEST_START = 20_000_000
GOLDEN_START = 30_000_000
MANIFEST = "dataset.json"
_FORMAT = 1
MIN_BOX_PX = 32.0
"""Labelling policy of synthetic data: a defect box is at least this many frame pixels wide and high,
centred on the defect (as a QA labeller draws a box around a hairline scratch or a pin-prick spot).
Besides matching how people label, it matters for training: Ultralytics' assigner only learns from
grid points inside a box, and a 3 px-high box of a horizontal scratch may contain none at stride 8."""


class DatasetError(ValueError):
    """A dataset cannot be written or used; the message names the folder and the fix."""


@dataclass(frozen=True)
class TrainView:
    """How training images are cut from the frames (None/None = the full frames, as the camera gives them).

    ``input_hw`` (h, w): resize each frame exactly as the station's letterbox into a model input of
    this size does (same scale, INTER_LINEAR), so the model trains at the pixel scale it will run at.
    ``crop``: then cut a ``crop`` x ``crop`` window: with probability ``focus`` (defective parts only)
    around one of the part's defects, placed at random so that the defect lies inside the window;
    otherwise around the frame centre (where the part is), shifted at random by up to ``jitter`` x
    the crop size in x and y. Small windows make a training step several times cheaper than a whole
    letterboxed frame, and defect-centred windows put a defect in almost every image; the model is
    fully convolutional and sees the same pixel scale on whole frames at inference. A defect box
    cut by the window is clipped and kept when at least ``min_visible`` of its area is inside, else
    dropped.
    """

    input_hw: tuple[int, int] | None = None
    crop: int | None = None
    jitter: float = 0.12
    min_visible: float = 0.4
    focus: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready parameters."""
        return {
            "input_hw": list(self.input_hw) if self.input_hw else None,
            "crop": self.crop,
            "jitter": self.jitter,
            "min_visible": self.min_visible,
            "focus": self.focus,
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any] | None) -> TrainView:
        """Inverse of :meth:`as_dict` (missing keys take their defaults)."""
        d = dict(d or {})
        hw = d.pop("input_hw", None)
        return TrainView(input_hw=tuple(hw) if hw else None, **d)


def yolo_label_lines(part: RenderedPart, width: int, height: int, min_box_px: float = MIN_BOX_PX) -> list[str]:
    """YOLO detect label lines ("cls cx cy w h", normalised) of a rendered part's defects (full frame)."""
    ids, boxes = _boxes(part, min_box_px)
    return label_lines(ids, boxes, width, height)


def _boxes(part: RenderedPart, min_box_px: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Class ids and boxes (xyxy, frame px) of a part's defects, grown to ``min_box_px`` and clipped to the frame."""
    ids = np.array([NAMES.index(t.class_name) for t in part.truth], np.int32)
    boxes = np.array([t.box_xyxy for t in part.truth], np.float64).reshape(-1, 4)
    if min_box_px > 0 and len(boxes):
        h, w = part.image.shape[:2]
        for lo, hi, limit in ((0, 2, w), (1, 3, h)):
            size = boxes[:, hi] - boxes[:, lo]
            grow = np.clip(min_box_px - size, 0, None) / 2
            boxes[:, lo] = np.clip(boxes[:, lo] - grow, 0, limit)
            boxes[:, hi] = np.clip(boxes[:, hi] + grow, 0, limit)
    return ids, boxes


def apply_view(
    image: np.ndarray, ids: np.ndarray, boxes: np.ndarray, view: TrainView, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Resize/crop a frame and its boxes (xyxy, frame px) by ``view``; returns (image, ids, boxes, n_dropped)."""
    if view.input_hw is not None:
        lb = letterbox_params(image.shape[:2], view.input_hw)
        if (lb.new_w, lb.new_h) != (image.shape[1], image.shape[0]):
            image = cv2.resize(image, (lb.new_w, lb.new_h), interpolation=cv2.INTER_LINEAR)
            boxes = boxes * np.array([lb.gain_x, lb.gain_y, lb.gain_x, lb.gain_y])
    dropped = 0
    if view.crop is not None:
        h, w = image.shape[:2]
        c = int(view.crop)
        if c > h or c > w:
            raise DatasetError(f"crop {c} is larger than the (resized) frame {w}x{h}; use a smaller crop")
        focused = len(boxes) > 0 and rng.random() < view.focus
        if focused:
            bx1, by1, bx2, by2 = boxes[int(rng.integers(0, len(boxes)))]
            # window origin so that the box lies inside (when it fits), at a random place
            lo_x, hi_x = bx2 - c, bx1
            lo_y, hi_y = by2 - c, by1
            if lo_x > hi_x:
                lo_x = hi_x = (bx1 + bx2 - c) / 2
            if lo_y > hi_y:
                lo_y = hi_y = (by1 + by2 - c) / 2
            x0f, y0f = rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)
        else:
            jx, jy = view.jitter * c, view.jitter * c
            x0f = (w - c) / 2 + rng.uniform(-jx, jx)
            y0f = (h - c) / 2 + rng.uniform(-jy, jy)
        x0 = int(round(min(max(x0f, 0), w - c)))
        y0 = int(round(min(max(y0f, 0), h - c)))
        image = image[y0 : y0 + c, x0 : x0 + c]
        if len(boxes):
            area = np.prod(boxes[:, 2:] - boxes[:, :2], 1)
            cb = boxes - np.array([x0, y0, x0, y0])
            cb = np.clip(cb, 0, c)
            vis = np.prod(np.clip(cb[:, 2:] - cb[:, :2], 0, None), 1) / np.maximum(area, 1e-9)
            keep = vis >= view.min_visible
            dropped = int((~keep).sum())
            ids, boxes = ids[keep], cb[keep]
    return np.ascontiguousarray(image), ids, boxes, dropped


def label_lines(ids: np.ndarray, boxes: np.ndarray, width: int, height: int) -> list[str]:
    """YOLO detect label lines for boxes (xyxy px) in a ``width`` x ``height`` image."""
    lines = []
    for c, (x1, y1, x2, y2) in zip(ids, boxes):
        x1, x2 = max(0.0, x1), min(float(width), x2)
        y1, y2 = max(0.0, y1), min(float(height), y2)
        if x2 <= x1 or y2 <= y1:
            continue
        lines.append(
            f"{int(c)} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} {(x2 - x1) / width:.6f} "
            f"{(y2 - y1) / height:.6f}"
        )
    return lines


def _write_split(
    root: Path,
    split: str,
    cfg: SyntheticCameraConfig,
    start_id: int,
    n: int,
    view: TrainView,
    min_box_px: float,
    on_image: Callable[[int], None] | None,
) -> dict[str, int]:
    img_dir, lab_dir = root / "images" / split, root / "labels" / split
    img_dir.mkdir(parents=True, exist_ok=True)
    lab_dir.mkdir(parents=True, exist_ok=True)
    counts = {"images": 0, "defective": 0, "dropped_boxes": 0, **{f"boxes_{c}": 0 for c in NAMES}}
    seed = 0 if cfg.seed is None else cfg.seed
    for part_id, part in iter_parts(cfg, start_id, n):
        stem = f"{split}_{part_id:08d}"
        ids, boxes = _boxes(part, min_box_px)
        crop_rng = np.random.default_rng([seed, part_id, 7])  # the window of part N never depends on other parts
        image, ids, boxes, dropped = apply_view(part.image, ids, boxes, view, crop_rng)
        if not cv2.imwrite(str(img_dir / f"{stem}.png"), image):
            raise DatasetError(f"{img_dir}: cannot write {stem}.png (disk full or not writable?)")
        lines = label_lines(ids, boxes, image.shape[1], image.shape[0])
        (lab_dir / f"{stem}.txt").write_text("".join(f"{ln}\n" for ln in lines))
        counts["images"] += 1
        counts["defective"] += bool(lines)
        counts["dropped_boxes"] += dropped
        for ln in lines:
            counts[f"boxes_{NAMES[int(ln.split()[0])]}"] += 1
        if on_image is not None:
            on_image(1)
    return counts


def _params(
    n_train: int, n_val: int, n_test: int, seed: int, cfg: SyntheticCameraConfig, view: TrainView, min_box_px: float
) -> dict[str, Any]:
    return {
        "view": view.as_dict(),
        "min_box_px": float(min_box_px),
        "format": _FORMAT,
        "generator": "synthetic",
        "seed": int(seed),
        "splits": {
            "train": {"start_id": TRAIN_START, "n": int(n_train)},
            "val": {"start_id": VAL_START, "n": int(n_val)},
            "test": {"start_id": TEST_START, "n": int(n_test)},
        },
        "camera": cfg.model_dump(mode="json"),
        "names": list(NAMES),
    }


def make_synthetic_dataset(
    out_dir: Path | str,
    n_train: int,
    n_val: int,
    seed: int,
    camera_cfg: SyntheticCameraConfig | None = None,
    *,
    n_test: int = 0,
    view: TrainView | None = None,
    min_box_px: float = MIN_BOX_PX,
    on_image: Callable[[int], None] | None = None,
) -> Path:
    """Render a YOLO detect dataset of the synthetic line into ``out_dir``; returns its ``data.yaml``.

    ``camera_cfg`` sets the product, frame size, defect rate and the rest (its ``seed`` is replaced
    by ``seed``). ``view`` resizes/crops the frames for cheaper training (:class:`TrainView`; default:
    full frames). Boxes are grown to ``min_box_px`` (:data:`MIN_BOX_PX`, frame pixels). Re-running
    with the same parameters on an existing dataset returns it unchanged (after checking it is
    complete); different parameters on a non-empty folder is an error.
    ``on_image(1)`` is called after each image (progress).
    """
    if n_train < 1 or n_val < 1 or n_test < 0:
        raise DatasetError(f"need n_train >= 1 and n_val >= 1 and n_test >= 0 (got {n_train}, {n_val}, {n_test})")
    if max(n_train, n_val, n_test) >= VAL_START - TRAIN_START:
        raise DatasetError(f"a split may hold at most {VAL_START - 1} parts (its part-id range)")
    root = Path(out_dir)
    cfg = (camera_cfg or SyntheticCameraConfig()).model_copy(update={"seed": int(seed)})
    view = view or TrainView()
    params = _params(n_train, n_val, n_test, seed, cfg, view, min_box_px)
    data_yaml = root / "data.yaml"
    existing = _existing(root, params)
    if existing is not None:
        return existing
    if root.exists() and any(root.iterdir()):
        raise DatasetError(
            f"{root} is not empty and holds no dataset made with these parameters; choose an empty folder or delete it"
        )
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    counts = {
        "train": _write_split(root, "train", cfg, TRAIN_START, n_train, view, min_box_px, on_image),
        "val": _write_split(root, "val", cfg, VAL_START, n_val, view, min_box_px, on_image),
    }
    if n_test:
        counts["test"] = _write_split(root, "test", cfg, TEST_START, n_test, view, min_box_px, on_image)
    names = "".join(f"  {i}: {n}\n" for i, n in enumerate(NAMES))
    test_line = "test: images/test\n" if n_test else ""
    data_yaml.write_text(f"path: {root.resolve()}\ntrain: images/train\nval: images/val\n{test_line}names:\n{names}")
    files = {
        str(p.relative_to(root)): sha256_file(p)
        for sub in ("images", "labels")
        for p in sorted((root / sub).rglob("*"))
        if p.is_file()
    }
    manifest = {
        **params,
        "snapshot": f"synthetic-{content_id(files)}",
        "counts": counts,
        "render_s": round(time.monotonic() - t0, 1),
    }
    (root / MANIFEST).write_text(serialize.dumps(manifest, indent=1, canonical=True) + "\n")
    log.info("dataset %s: %s in %.1f s", root, counts, time.monotonic() - t0)
    return data_yaml


def _existing(root: Path, params: Mapping[str, Any]) -> Path | None:
    mpath = root / MANIFEST
    if not mpath.is_file():
        return None
    try:
        manifest = json.loads(mpath.read_text())
    except ValueError:
        return None
    if {k: manifest.get(k) for k in params} != dict(params):
        return None
    for split, spec in params["splits"].items():
        n = spec["n"]
        if n and len(list((root / "images" / split).glob("*.png"))) != n:
            return None
    log.info("dataset %s already made with these parameters: reused", root)
    return root / "data.yaml"


def read_manifest(data_yaml: Path | str) -> dict[str, Any]:
    """The ``dataset.json`` next to a data.yaml, or in a classify dataset folder ({} when the dataset was not made
    here)."""
    p = (Path(data_yaml) if Path(data_yaml).is_dir() else Path(data_yaml).parent) / MANIFEST
    if not p.is_file():
        return {}
    return json.loads(p.read_text())


def dataset_snapshot(data_yaml: Path | str) -> str:
    """The snapshot id of a dataset: from its manifest, else a content hash of its files."""
    m = read_manifest(data_yaml)
    if m.get("snapshot"):
        return str(m["snapshot"])
    root = Path(data_yaml) if Path(data_yaml).is_dir() else Path(data_yaml).parent
    files = {
        str(p.relative_to(root)): sha256_file(p)
        for sub in (("train", "val", "test") if Path(data_yaml).is_dir() else ("images", "labels"))
        for p in sorted((root / sub).rglob("*"))
        if p.is_file()
    }
    if not files:
        raise DatasetError(f"{data_yaml}: no images/ or labels/ next to it; cannot take a snapshot id")
    return f"files-{content_id(files)}"


def make_golden_set(
    out_dir: Path | str,
    n: int,
    seed: int,
    camera_cfg: SyntheticCameraConfig | None = None,
    *,
    start_id: int = GOLDEN_START,
    min_box_px: float = MIN_BOX_PX,
) -> GoldenSet:
    """Render and freeze a golden set of ``n`` synthetic parts (ids ``start_id..``), never seen in training.

    Full frames, labelled with the same box policy as the training data (``min_box_px``).

    An existing golden set at ``out_dir`` made with the same parameters is loaded (and verified)
    instead; a golden set is never overwritten.
    """
    out = Path(out_dir)
    cfg = (camera_cfg or SyntheticCameraConfig()).model_copy(update={"seed": int(seed)})
    source = {
        "generator": "synthetic",
        "seed": int(seed),
        "start_id": int(start_id),
        "n": int(n),
        "camera": cfg.model_dump(mode="json"),
        "min_box_px": float(min_box_px),
    }
    if (out / "golden.json").exists():
        gs = load_golden(out)
        if dict(gs.source) != source:
            raise DatasetError(
                f"{out} already holds a different golden set (source {dict(gs.source)}); choose another folder"
            )
        return gs
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "images").mkdir(parents=True)
    (tmp / "labels").mkdir(parents=True)
    for part_id, part in iter_parts(cfg, start_id, n):
        stem = f"golden_{part_id:08d}"
        cv2.imwrite(str(tmp / "images" / f"{stem}.png"), part.image)
        lines = yolo_label_lines(part, cfg.width, cfg.height, min_box_px)
        (tmp / "labels" / f"{stem}.txt").write_text("".join(f"{ln}\n" for ln in lines))
    write_manifest(tmp, NAMES, source)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out)
    return load_golden(out)
