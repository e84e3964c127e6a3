"""Import labelled images from a YOLO dataset or a COCO JSON file.

Two cases per image, told apart by the image file's content hash (sha256 of its bytes):

- **The image is already in the database** (e.g. a snapshot exported to CVAT, relabelled
  there, exported back): the imported boxes become its current labels. A current label that
  matches an imported box (same class, every edge within ``tol_px``) stays (a ``model`` one
  gets a ``source='import'`` copy superseding it: a human has now checked it); the others get
  a ``deleted`` row; unmatched imported boxes are added. The image is marked reviewed.
- **The image is new**: it is stored in the ImageStore (by content hash; PNG and JPEG files
  byte for byte, other formats re-encoded to PNG) and gets a *synthetic inspection*.

Synthetic inspections (the design choice): the schema needs an inspection row for every
image and label (foreign keys), so an imported image gets one with ``source='import'``,
``model_id='import'``, ``station='import:<name>'`` and a NEGATIVE ``part_id``. Line parts
have positive, monotonic ids, so imports can never collide with them nor move the next part
id (``MAX(part_id)``). The outcome is FAIL when the image has boxes, PASS when it has none.
Imported images share a part when their file names say so (``p<part>_<camera>_<id>``, as
:mod:`labeling.export` writes them), otherwise each image is its own part, so a re-export
still splits by part. Readers that count production (``labeling.stats``, the review queue)
leave ``source='import'`` rows out. Imported labels have ``source='import'`` and the image a
review by the importing user ('labeled' or, with no boxes, 'good').

Validation comes first: a bad file (unreadable image, label line with a wrong class index or
coordinates outside 0..1, COCO box outside its image, unknown category...) raises ValueError
naming the file and line / field, and nothing is written to the database.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import sqlite_utils
import yaml

from station.store import audit, imports
from station.store.images import ImageStore, StoredImage

from ._db import transaction
from .export import STEM_RE
from .labels import ClassBox, ImageInfo, Label, _insert, _review, current_labels, image_info

log = logging.getLogger(__name__)

IMG_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
_EPS = 1e-6


@dataclass(frozen=True, slots=True)
class ImportedImage:
    """One validated image to import (its bytes are read again when stored)."""

    path: Path
    boxes: tuple[ClassBox, ...]
    width: int
    height: int
    group: str  # images with the same group share a synthetic part
    camera_id: str
    t_wall: float | None = None


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What an import did."""

    n_images: int
    n_new: int
    n_existing: int
    n_labels: int
    image_ids: tuple[int, ...]
    part_ids: tuple[int, ...] = field(default_factory=tuple)  # synthetic parts created


# --------------------------------------------------------------------------- files


def _read_image(path: Path) -> tuple[bytes, int, int]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the image ({exc})") from None
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ValueError(f"{path}: not a readable image (OpenCV cannot decode it)")
    return data, int(img.shape[1]), int(img.shape[0])


def _store_file(images: ImageStore, path: Path) -> StoredImage:
    """Put the image file in the store: PNG/JPEG byte for byte, anything else re-encoded as PNG."""
    data, w, h = _read_image(path)
    suffix = path.suffix.lower()
    fmt = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg"}.get(suffix)
    if fmt is None:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:  # _read_image decoded it already
            raise ValueError(f"{path}: not a readable image (OpenCV cannot decode it)")
        ok, buf = cv2.imencode(".png", img)
        if not ok:
            raise ValueError(f"{path}: cannot re-encode the image as PNG")
        data, fmt = buf.tobytes(), "png"
    return images.put(data, fmt, w, h)


def _group_of(path: Path, dataset: str) -> tuple[str, str]:
    """(part group key, camera id) from an exported file name, else the file itself."""
    m = STEM_RE.match(path.stem)
    if m:
        return f"{dataset}:part:{m.group(1)}", m.group(2)
    return f"{dataset}:file:{path}", "import"


# --------------------------------------------------------------------------- YOLO


def _yolo_names(raw: Any, where: str) -> list[str]:
    if isinstance(raw, dict):
        try:
            idx = sorted(int(k) for k in raw)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: 'names' keys must be class indices 0..n-1") from None
        if idx != list(range(len(idx))):
            raise ValueError(f"{where}: 'names' keys must be 0..{len(idx) - 1} without gaps, got {idx}")
        return [str(raw[k] if k in raw else raw[str(k)]) for k in idx]
    if isinstance(raw, list) and raw:
        return [str(x) for x in raw]
    raise ValueError(f"{where}: 'names' is missing or empty: give the class names (a list or {{index: name}})")


def _yolo_image_files(root: Path, entry: str, where: str) -> list[Path]:
    p = Path(entry)
    p = p if p.is_absolute() else root / p
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.suffix.lower() in IMG_SUFFIXES and f.is_file())
    if p.is_file() and p.suffix == ".txt":
        out = []
        for line in p.read_text().splitlines():
            line = line.strip()
            if line:
                f = Path(line)
                out.append(f if f.is_absolute() else (root / f))
        return out
    raise ValueError(f"{where}: split folder or list {p} does not exist")


def _label_path(img: Path) -> Path:
    parts = list(img.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return img.with_suffix(".txt")


def _parse_yolo_labels(label_file: Path, names: Sequence[str], w: int, h: int) -> tuple[ClassBox, ...]:
    if not label_file.is_file():
        return ()  # no label file = no defect (Ultralytics' convention)
    boxes = []
    for n, line in enumerate(label_file.read_text().splitlines(), 1):
        vals = line.split()
        if not vals:
            continue
        where = f"{label_file}:{n}"
        if len(vals) != 5:
            raise ValueError(
                f"{where}: expected 'class cx cy w h' (5 numbers), got {len(vals)} values; only detection boxes can be "
                "imported"
            )
        try:
            c = int(vals[0])
            cx, cy, bw, bh = (float(v) for v in vals[1:])
        except ValueError:
            raise ValueError(f"{where}: not numbers: {line.strip()!r}") from None
        if not 0 <= c < len(names):
            raise ValueError(f"{where}: class index {c} is not in names (0..{len(names) - 1})")
        if not all(np.isfinite([cx, cy, bw, bh])) or bw <= 0 or bh <= 0:
            raise ValueError(f"{where}: box width and height must be > 0: {line.strip()!r}")
        x1, y1, x2, y2 = cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2
        if x1 < -_EPS or y1 < -_EPS or x2 > 1 + _EPS or y2 > 1 + _EPS:
            raise ValueError(
                f"{where}: box {line.strip()!r} is not inside 0..1 (coordinates must be normalised to the image)"
            )
        boxes.append(ClassBox(names[c], max(0.0, x1) * w, max(0.0, y1) * h, min(1.0, x2) * w, min(1.0, y2) * h))
    return tuple(boxes)


def read_yolo(
    data_yaml: Path | str, splits: Sequence[str] = ("train", "val", "test")
) -> tuple[list[str], list[ImportedImage]]:
    """Validate a YOLO detection dataset: (class names, images with boxes in pixels). Nothing is written."""
    data_yaml = Path(data_yaml)
    where = str(data_yaml)
    try:
        data = yaml.safe_load(data_yaml.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{where}: cannot read the dataset YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping with path/train/val/names")
    names = _yolo_names(data.get("names"), where)
    root = Path(data.get("path") or data_yaml.parent)
    if not root.is_absolute():
        root = (data_yaml.parent / root).resolve()
    files: dict[Path, None] = {}
    for split in splits:
        entry = data.get(split)
        if not entry:
            continue
        for e in entry if isinstance(entry, list) else [entry]:
            for f in _yolo_image_files(root, str(e), f"{where} '{split}'"):
                files[f.resolve()] = None
    if not files:
        raise ValueError(f"{where}: no images found under {', '.join(splits)} (relative to path {root})")
    dataset = data_yaml.resolve().parent.name
    out = []
    for f in files:
        _, w, h = _read_image(f)
        group, cam = _group_of(f, dataset)
        out.append(ImportedImage(f, _parse_yolo_labels(_label_path(f), names, w, h), w, h, group, cam))
    return names, out


# --------------------------------------------------------------------------- COCO


def read_coco(coco_json: Path | str, images_dir: Path | str) -> tuple[list[str], list[ImportedImage]]:
    """Validate a COCO detection file whose images are in ``images_dir``. Nothing is written."""
    coco_json, images_dir = Path(coco_json), Path(images_dir)
    where = str(coco_json)
    try:
        doc = json.loads(coco_json.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{where}: cannot read the COCO JSON ({exc})") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise ValueError(f"{where}: '{key}' must be a list")
    cats: dict[int, str] = {}
    for i, c in enumerate(doc["categories"]):
        if not isinstance(c, dict) or "id" not in c or not c.get("name"):
            raise ValueError(f"{where}: categories[{i}] needs an id and a name")
        cats[int(c["id"])] = str(c["name"])
    by_image: dict[int, list[ClassBox]] = {}
    ims: dict[int, dict[str, Any]] = {}
    for i, im in enumerate(doc["images"]):
        if not isinstance(im, dict) or "id" not in im or not im.get("file_name"):
            raise ValueError(f"{where}: images[{i}] needs an id and a file_name")
        ims[int(im["id"])] = im
    sizes: dict[int, tuple[int, int, Path]] = {}
    for iid, im in ims.items():
        path = images_dir / str(im["file_name"])
        if not path.is_file():
            path = images_dir / Path(str(im["file_name"])).name
        if not path.is_file():
            raise ValueError(f"{where}: image {iid} file {im['file_name']!r} is not in {images_dir}")
        _, w, h = _read_image(path)
        if ("width" in im and int(im["width"]) != w) or ("height" in im and int(im["height"]) != h):
            raise ValueError(
                f"{where}: image {iid} ({path.name}) is {w}x{h} but the JSON says {im.get('width')}x{im.get('height')}"
            )
        sizes[iid] = (w, h, path)
    for i, a in enumerate(doc["annotations"]):
        field_ = f"{where}: annotations[{i}]"
        if not isinstance(a, dict) or "image_id" not in a or "category_id" not in a or "bbox" not in a:
            raise ValueError(f"{field_} needs image_id, category_id and bbox")
        iid, cid = int(a["image_id"]), int(a["category_id"])
        if iid not in sizes:
            raise ValueError(f"{field_}: image_id {iid} is not in 'images'")
        if cid not in cats:
            raise ValueError(f"{field_}: category_id {cid} is not in 'categories'")
        bbox = a["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise ValueError(f"{field_}: bbox must be [x, y, width, height]")
        x, y, bw, bh = (float(v) for v in bbox)
        w, h, _ = sizes[iid]
        if bw <= 0 or bh <= 0:
            raise ValueError(f"{field_}: bbox width and height must be > 0, got {bbox}")
        tol = 0.5
        if x < -tol or y < -tol or x + bw > w + tol or y + bh > h + tol:
            raise ValueError(f"{field_}: bbox {bbox} is not inside the {w}x{h} image")
        by_image.setdefault(iid, []).append(
            ClassBox(cats[cid], max(0.0, x), max(0.0, y), min(float(w), x + bw), min(float(h), y + bh))
        )
    dataset = coco_json.stem
    out = []
    for iid in ims:
        w, h, path = sizes[iid]
        im = ims[iid]
        if "part_id" in im and im["part_id"] is not None:
            group, cam = f"{dataset}:part:{int(im['part_id'])}", str(im.get("camera_id") or "import")
        else:
            group, cam = _group_of(path, dataset)
        t = im.get("t_wall")
        out.append(ImportedImage(path, tuple(by_image.get(iid, [])), w, h, group, cam, None if t is None else float(t)))
    names = [cats[k] for k in sorted(cats)]
    return names, out


# --------------------------------------------------------------------------- database


def _same(lab: Label, box: ClassBox, tol: float) -> bool:
    return lab.class_name == box.class_name and all(
        abs(a - b) <= tol for a, b in zip(lab.box, (box.x1, box.y1, box.x2, box.y2))
    )


def _add_box(db: sqlite_utils.Database, user: str, img: ImageInfo, b: ClassBox, now: float) -> Label:
    """An imported box as a new active label of ``img`` (the caller audits it)."""
    return _insert(
        db,
        img,
        b.class_name,
        (b.x1, b.y1, b.x2, b.y2),
        source="import",
        status="active",
        user=user,
        now=now,
        supersedes=None,
    )


def _supersede(
    db: sqlite_utils.Database, user: str, img: ImageInfo, lab: Label, status: str, action: str, now: float
) -> None:
    """Append an imported row with ``status`` over the current label ``lab`` (same class and box), audited."""
    new = _insert(
        db,
        img,
        lab.class_name,
        lab.box,
        source="import",
        status=status,
        user=user,
        now=now,
        supersedes=lab.id,
    )
    audit.record(db, user, action, "label", lab.id, lab.as_dict(), new.as_dict(), t_wall=now)


def _sync_existing(
    db: sqlite_utils.Database, user: str, img: ImageInfo, boxes: Sequence[ClassBox], now: float, tol: float
) -> int:
    """Make the imported boxes the current labels of an existing image; return the boxes now current."""
    current = current_labels(db, img.id)
    todo = list(boxes)
    for lab in current:
        k = next((i for i, b in enumerate(todo) if _same(lab, b, tol)), None)
        if k is None:
            _supersede(db, user, img, lab, "deleted", "import_delete", now)
            continue
        todo.pop(k)
        if lab.source == "model":
            _supersede(db, user, img, lab, "active", "import_confirm", now)
    for b in todo:
        new = _add_box(db, user, img, b, now)
        audit.record(db, user, "import_add", "label", new.id, None, new.as_dict(), t_wall=now)
    _review(db, user, img, now)
    return len(boxes)


def _new_part_ids(db: sqlite_utils.Database, n: int) -> list[int]:
    """``n`` unused negative part ids, ascending (import order), below every existing id."""
    low = imports.lowest_part_id(db)
    return list(range(low - n, low))


def import_images(
    db: sqlite_utils.Database,
    images: ImageStore,
    items: Sequence[ImportedImage],
    user: str,
    *,
    name: str,
    tol_px: float = 0.5,
) -> ImportResult:
    """Write validated images (from :func:`read_yolo` / :func:`read_coco`) in one transaction."""
    user = audit.check_user(user)
    stored = [_store_file(images, it.path) for it in items]  # files first: a crash leaves orphans, never dangling rows
    now = time.time()
    groups = list(dict.fromkeys(it.group for it in items))
    image_ids: list[int] = []
    n_new = n_existing = n_labels = 0
    with transaction(db):
        existing: dict[tuple[str, str], list[int]] = {}
        for s in stored:
            existing[(s.sha256, s.format)] = imports.kept_image_ids(db, s.sha256, s.format)
        new_groups = [
            g
            for g in groups
            if any(it.group == g and not existing[(s.sha256, s.format)] for it, s in zip(items, stored))
        ]
        part_of = dict(zip(new_groups, _new_part_ids(db, len(new_groups))))
        made_parts: set[int] = set()
        for it, s in zip(items, stored):
            ids = existing[(s.sha256, s.format)]
            if ids:
                for iid in ids:
                    n_labels += _sync_existing(db, user, image_info(db, iid), it.boxes, now, tol_px)
                    image_ids.append(iid)
                n_existing += 1
                continue
            pid = part_of[it.group]
            if pid not in made_parts:
                members = [(x, y) for x, y in zip(items, stored) if x.group == it.group]
                n_boxes = sum(len(x.boxes) for x, _ in members)
                imports.insert_imported_part(db, pid, it.t_wall, now, n_boxes, f"import:{name}", len(members))
                made_parts.add(pid)
            iid = imports.insert_imported_image(db, pid, it.camera_id, s)
            existing[(s.sha256, s.format)] = [iid]  # the same file twice in one import: one image
            img = image_info(db, iid)
            labs = [_add_box(db, user, img, b, now) for b in it.boxes]
            _review(db, user, img, now)
            audit.record(
                db,
                user,
                "import",
                "image",
                iid,
                None,
                {"file": str(it.path), "part_id": pid, "sha256": s.sha256, "labels": [lab.as_dict() for lab in labs]},
                name,
                t_wall=now,
            )
            image_ids.append(iid)
            n_new += 1
            n_labels += len(labs)
        audit.record(
            db,
            user,
            "import_dataset",
            "dataset",
            name,
            None,
            {"images": len(items), "new": n_new, "existing": n_existing, "labels": n_labels},
            t_wall=now,
        )
    log.info(
        "import %s: %d images (%d new, %d already known), %d labels", name, len(items), n_new, n_existing, n_labels
    )
    return ImportResult(len(items), n_new, n_existing, n_labels, tuple(image_ids), tuple(sorted(made_parts)))


def import_yolo(
    db: sqlite_utils.Database,
    images: ImageStore,
    data_yaml: Path | str,
    user: str,
    *,
    splits: Sequence[str] = ("train", "val", "test"),
) -> ImportResult:
    """Import a YOLO detection dataset (``data.yaml`` with path/train/val/names); see the module docstring."""
    _, items = read_yolo(data_yaml, splits)
    return import_images(db, images, items, user, name=str(Path(data_yaml).resolve()))


def import_coco(
    db: sqlite_utils.Database, images: ImageStore, coco_json: Path | str, images_dir: Path | str, user: str
) -> ImportResult:
    """Import a COCO detection file whose images are in ``images_dir``; see the module docstring."""
    _, items = read_coco(coco_json, images_dir)
    return import_images(db, images, items, user, name=str(Path(coco_json).resolve()))
