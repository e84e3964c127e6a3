"""Frozen golden sets: images + YOLO labels + a manifest of every file's sha256.

A golden set is the fixed exam every candidate model and the current model sit before a promotion.
It must not drift: :func:`load_golden` re-hashes every file and refuses a set whose files changed,
appeared or vanished since it was frozen. Its id (``golden_id``) is derived from the manifest, so
two evaluations on the same id saw exactly the same images and labels.

Layout (the same as one split of a YOLO dataset)::

    <root>/golden.json          manifest: names, files {relpath: sha256}, source
    <root>/images/<stem>.png    frames (Mono8 or BGR), any size
    <root>/labels/<stem>.txt    YOLO detect labels "cls cx cy w h" (normalised); empty file = good part
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from station import serialize

log = logging.getLogger(__name__)

MANIFEST = "golden.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class GoldenSetError(ValueError):
    """A golden set cannot be used as it is; the message names the file and the fix."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(chunk)
            if not b:
                return h.hexdigest()
            h.update(b)


def content_id(files: Mapping[str, str]) -> str:
    """A short id of a set of files: sha256 over the sorted (relpath, sha256) pairs (16 hex digits)."""
    blob = "\n".join(f"{k}\t{files[k]}" for k in sorted(files))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class GoldenItem:
    """One image of a golden set and its ground truth (normalised YOLO boxes)."""

    stem: str
    image_path: Path
    class_ids: np.ndarray  # (N,) int32
    boxes_cxcywh: np.ndarray  # (N, 4) float64, normalised 0..1

    @property
    def defective(self) -> bool:
        """True when the image has at least one labelled defect."""
        return len(self.class_ids) > 0

    def boxes_xyxy(self, width: int, height: int) -> np.ndarray:
        """Ground-truth boxes in pixels of a ``width`` x ``height`` frame, (N, 4) float32."""
        b = self.boxes_cxcywh
        if len(b) == 0:
            return np.zeros((0, 4), np.float32)
        cx, cy, w, h = b[:, 0] * width, b[:, 1] * height, b[:, 2] * width, b[:, 3] * height
        return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1).astype(np.float32)


@dataclass(frozen=True)
class GoldenSet:
    """A loaded (and verified) golden set."""

    root: Path
    names: tuple[str, ...]
    items: tuple[GoldenItem, ...]
    golden_id: str
    source: Mapping[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def n_defective(self) -> int:
        """Images with at least one labelled defect."""
        return sum(1 for it in self.items if it.defective)


def parse_label_file(path: Path, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Read a YOLO detect label file: (class_ids (N,), boxes (N, 4) normalised cx, cy, w, h).

    Raises :class:`GoldenSetError` naming the file and line when a line is malformed.
    """
    ids: list[int] = []
    boxes: list[list[float]] = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5:
            raise GoldenSetError(
                f"{path}:{lineno}: expected 5 numbers 'class cx cy w h' (detect labels), got {len(parts)}: "
                f"{line[:80]!r}"
            )
        try:
            c = int(parts[0])
            vals = [float(v) for v in parts[1:]]
        except ValueError:
            raise GoldenSetError(f"{path}:{lineno}: not numbers: {line[:80]!r}") from None
        if not 0 <= c < n_classes:
            raise GoldenSetError(f"{path}:{lineno}: class {c} is outside 0..{n_classes - 1} of the set's names")
        ids.append(c)
        boxes.append(vals)
    return np.asarray(ids, np.int32), np.asarray(boxes, np.float64).reshape(-1, 4)


def write_manifest(root: Path, names: Sequence[str], source: Mapping[str, Any] | None = None) -> str:
    """Hash every image and label under ``root`` and write ``golden.json``; returns the golden id."""
    root = Path(root)
    files: dict[str, str] = {}
    for sub in ("images", "labels"):
        for p in sorted((root / sub).glob("*")):
            if p.is_file():
                files[f"{sub}/{p.name}"] = sha256_file(p)
    gid = content_id(files)
    manifest = {
        "format": 1,
        "golden_id": gid,
        "names": list(names),
        "created_at": time.time(),
        "source": dict(source or {}),
        "files": files,
    }
    (root / MANIFEST).write_text(serialize.dumps(manifest, indent=1, canonical=True) + "\n")
    return gid


def load_golden(root: Path | str, *, verify: bool = True) -> GoldenSet:
    """Load a frozen golden set; with ``verify`` every file's sha256 is checked against the manifest."""
    root = Path(root)
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise GoldenSetError(
            f"{root} is not a golden set: {MANIFEST} missing; freeze one with `models golden` "
            "(or models.golden.freeze_split / models.dataset.make_golden_set)"
        )
    try:
        manifest = json.loads(mpath.read_text())
        names = tuple(str(n) for n in manifest["names"])
        files: dict[str, str] = dict(manifest["files"])
    except (ValueError, KeyError, TypeError) as e:
        raise GoldenSetError(f"{mpath}: unreadable manifest ({e}); re-freeze the golden set") from None
    if verify:
        _verify(root, files)
    items: list[GoldenItem] = []
    for rel in sorted(files):
        if not rel.startswith("images/"):
            continue
        img = root / rel
        stem = img.stem
        lab_rel = f"labels/{stem}.txt"
        if lab_rel not in files:
            raise GoldenSetError(f"{root}: image {rel} has no label file {lab_rel} (an empty file means a good part)")
        ids, boxes = parse_label_file(root / lab_rel, len(names))
        items.append(GoldenItem(stem, img, ids, boxes))
    if not items:
        raise GoldenSetError(f"{root}: the golden set has no images")
    gid = content_id(files)
    if manifest.get("golden_id") not in (None, gid):
        raise GoldenSetError(
            f"{mpath}: golden_id {manifest.get('golden_id')} does not match its file list ({gid}); re-freeze it"
        )
    return GoldenSet(root, names, tuple(items), gid, manifest.get("source") or {})


def _verify(root: Path, files: Mapping[str, str]) -> None:
    present = {f"{sub}/{p.name}" for sub in ("images", "labels") for p in (root / sub).glob("*") if p.is_file()}
    missing = sorted(set(files) - present)
    extra = sorted(present - set(files))
    changed = [rel for rel in sorted(set(files) & present) if sha256_file(root / rel) != files[rel]]
    if missing or extra or changed:
        parts = []
        for what, lst in (("missing", missing), ("added", extra), ("changed", changed)):
            if lst:
                parts.append(f"{len(lst)} {what} ({', '.join(lst[:3])}{' ...' if len(lst) > 3 else ''})")
        raise GoldenSetError(
            f"golden set {root} is not the one that was frozen: {'; '.join(parts)}. A golden set must not change; "
            "restore it or freeze a new one (which gets a new golden_id)"
        )


def _split_dirs(data_yaml: Path, split: str) -> tuple[Path, Path, tuple[str, ...]]:
    """Images and labels folders of ``split`` in a YOLO data.yaml, and its class names."""
    try:
        data = yaml.safe_load(Path(data_yaml).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise GoldenSetError(f"{data_yaml}: cannot read the dataset yaml: {e}") from None
    if split not in data:
        raise GoldenSetError(
            f"{data_yaml}: no '{split}' split (has: {', '.join(k for k in data if k in ('train', 'val', 'test'))})"
        )
    base = Path(data.get("path") or Path(data_yaml).parent)
    if not base.is_absolute():
        base = Path(data_yaml).parent / base
    images = base / str(data[split])
    # Ultralytics' rule: the last "/images/" of an image path becomes "/labels/"
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    head = str(images).rstrip(os.sep) + os.sep
    pieces = head.rsplit(sa, 1)
    if len(pieces) != 2:
        raise GoldenSetError(
            f"{data_yaml}: split '{split}' ({images}) is not under an 'images' folder, so its labels cannot be found"
        )
    labels = Path(sb.join(pieces))
    names = data["names"]
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names)]
    return images, labels, tuple(str(n) for n in names)


def freeze_split(
    data_yaml: Path | str, split: str, out_dir: Path | str, source: Mapping[str, Any] | None = None
) -> GoldenSet:
    """Copy one split of a YOLO dataset into a new frozen golden set at ``out_dir``."""
    images, labels, names = _split_dirs(Path(data_yaml), split)
    out = Path(out_dir)
    if (out / MANIFEST).exists():
        raise GoldenSetError(
            f"{out} already holds a golden set; a golden set is never overwritten: choose another folder"
        )
    imgs = sorted(p for p in images.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not imgs:
        raise GoldenSetError(f"{images}: no images in split '{split}' of {data_yaml}")
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    for p in imgs:
        shutil.copyfile(p, out / "images" / p.name)
        lab = labels / f"{p.stem}.txt"
        if lab.exists():
            shutil.copyfile(lab, out / "labels" / lab.name)
        else:
            (out / "labels" / f"{p.stem}.txt").write_text("")
    src = {"data_yaml": str(data_yaml), "split": split, **dict(source or {})}
    write_manifest(out, names, src)
    return load_golden(out)


def iter_images(items: Iterable[GoldenItem]) -> Iterable[tuple[GoldenItem, np.ndarray]]:
    """Yield (item, image) with the image as the camera would give it: Mono8 (H, W) or BGR (H, W, 3)."""
    import cv2

    for it in items:
        img = cv2.imread(str(it.image_path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise GoldenSetError(f"{it.image_path}: not a readable image")
        if img.dtype != np.uint8:
            raise GoldenSetError(f"{it.image_path}: {img.dtype} image; golden images must be 8-bit")
        if img.ndim == 3 and img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        yield it, img
