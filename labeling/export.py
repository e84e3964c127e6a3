"""Export a frozen snapshot as an Ultralytics YOLO dataset or as COCO JSON.

YOLO layout (what ``ultralytics.data.utils.check_det_dataset`` and training expect)::

    out_dir/data.yaml                     path (absolute), train, val, names {index: name}
    out_dir/images/{train,val}/<stem>.<png|jpg>
    out_dir/labels/{train,val}/<stem>.txt  one "class cx cy w h" line per box, normalised to 0..1
    out_dir/dataset.json                  lineage: "snapshot" = "labeling:<id>:<content sha256>" (what
                                          models.dataset.dataset_snapshot() records for a trained model),
                                          snapshot id, name, class names, split

``<stem>`` is ``p<part_id>_<camera>_<image_id>`` (the importer reads the part back from it).
Images reviewed as good get an empty label file: they are the negatives.

Split: always BY PART - every image of a part lands in the same split, so no part is in both.
``split="time"`` (default) orders parts by trigger time (then part id) and puts the latest
``val_fraction`` of them in val: the model is validated on parts newer than any it trained
on, as in production. ``split="group"`` instead takes a seeded random set of parts
(``seed``). With at least 2 parts and ``val_fraction > 0`` both splits get at least one
part; with ``val_fraction=0`` or a single part there is no val folder and ``val`` points at the
train images (logged as a warning: validation metrics then measure training data).

Exports are deterministic: the same snapshot and arguments write the same files.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import sqlite_utils
import yaml

from station import serialize
from station.store.images import ImageStore

from .labels import clip_box
from .queue import seeded_uniform
from .snapshot import SnapshotItem, get_snapshot, snapshot_items

log = logging.getLogger(__name__)

STEM_RE = re.compile(r"^p(-?\d+)_(.+)_(\d+)$")
MANIFEST = "dataset.json"  # the name models.dataset reads for lineage


def snapshot_ref(snapshot_id: int, sha: str) -> str:
    """The dataset reference a trained model records: ``labeling:<snapshot id>:<content sha256>``."""
    return f"labeling:{int(snapshot_id)}:{sha}"


Split = Literal["time", "group"]


def stem_for(item: SnapshotItem) -> str:
    """File stem of an exported image: ``p<part>_<camera>_<image id>`` (camera sanitised)."""
    cam = re.sub(r"[^A-Za-z0-9-]+", "-", item.camera_id).strip("-") or "cam"
    return f"p{item.part_id}_{cam}_{item.image_id}"


def split_parts(
    items: Sequence[SnapshotItem], val_fraction: float, seed: int = 0, split: Split = "time"
) -> tuple[set[int], set[int]]:
    """(train part ids, val part ids) as described in the module docstring."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), not {val_fraction}")
    if split not in ("time", "group"):
        raise ValueError(f"split must be 'time' or 'group', not {split!r}")
    first_t: dict[int, float] = {}
    for it in items:
        t = it.t_wall if it.t_wall is not None else 0.0
        first_t[it.part_id] = min(first_t.get(it.part_id, math.inf), t)
    if split == "time":
        parts = sorted(first_t, key=lambda p: (first_t[p], p))
    else:
        parts = sorted(
            first_t, key=lambda p: (-seeded_uniform(seed, p), p)
        )  # val = the highest draws, taken from the end
    n = len(parts)
    n_val = 0
    if val_fraction > 0 and n >= 2:
        n_val = min(max(1, round(val_fraction * n)), n - 1)
    val = set(parts[n - n_val :]) if n_val else set()
    return set(parts) - val, val


def _empty_dir(out_dir: Path) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise FileExistsError(f"{out_dir} is a file: give a folder for the dataset")
        if any(out_dir.iterdir()):
            raise FileExistsError(f"{out_dir} is not empty: export into a new folder (or delete this one first)")
    out_dir.mkdir(parents=True, exist_ok=True)


def _sources(images: ImageStore, items: Sequence[SnapshotItem]) -> dict[int, Path]:
    """The store file of every item; one FileNotFoundError listing all missing files."""
    found: dict[int, Path] = {}
    missing = []
    for it in items:
        try:
            found[it.image_id] = images.open_path(it.sha256, it.format)
        except FileNotFoundError:
            missing.append(f"image {it.image_id} (part {it.part_id}, {it.sha256[:12]}.{it.format})")
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} image file(s) of the snapshot are no longer in {images.root} (deleted by the disk "
            "budget?): "
            + ", ".join(missing[:10])
            + (" ..." if len(missing) > 10 else "")
            + "; export snapshots soon after taking them, or raise store.disk_budget_mb"
        )
    return found


def _place(src: Path, dst: Path, link: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if link:
        try:
            os.link(src, dst)
            return
        except OSError:  # another file system, or links not allowed: copy instead
            pass
    shutil.copyfile(src, dst)


def yolo_line(class_index: int, box: Sequence[float], width: int, height: int) -> str | None:
    """``"c cx cy w h"`` normalised to the image, or None if the box has no area inside it."""
    b = clip_box(box, width, height)
    if b is None:
        return None
    x1, y1, x2, y2 = b
    cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
    w, h = (x2 - x1) / width, (y2 - y1) / height
    return f"{class_index} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}"


def export_yolo(
    db: sqlite_utils.Database,
    images: ImageStore,
    snapshot_id: int,
    out_dir: Path | str,
    val_fraction: float = 0.2,
    seed: int = 0,
    *,
    split: Split = "time",
    link: bool = True,
) -> Path:
    """Write snapshot ``snapshot_id`` as a YOLO detection dataset in ``out_dir`` (new or empty); return data.yaml.

    Images are hard-linked from the image store when possible (``link``), else copied.
    Raises FileExistsError for a non-empty ``out_dir`` and FileNotFoundError (listing them)
    when image files of the snapshot are gone; nothing is written in either case.
    """
    snap = get_snapshot(db, snapshot_id)
    items = snapshot_items(db, snapshot_id)
    split_parts(items, val_fraction, seed, split)  # bad arguments are reported before missing files
    src = _sources(images, items)
    lineage = {
        "snapshot": snapshot_ref(snap.id, snap.sha),
        "snapshot_id": snap.id,
        "name": snap.name,
        "sha256": snap.sha,
    }
    title = f"Dataset snapshot {snap.id} {snap.name!r}, content sha256 {snap.sha}"
    return write_yolo(items, snap.class_names, src, out_dir, val_fraction, seed, split=split, link=link, title=title,
                      lineage=lineage)  # fmt: skip


def write_yolo(
    items: Sequence[SnapshotItem],
    class_names: Sequence[str],
    src: Mapping[int, Path],
    out_dir: Path | str,
    val_fraction: float = 0.2,
    seed: int = 0,
    *,
    split: Split = "time",
    link: bool = True,
    title: str,
    lineage: Mapping[str, Any],
) -> Path:
    """Write frozen ``items`` (image files ``src[image_id]``) as a YOLO dataset in ``out_dir``; return data.yaml.

    The layout of :func:`export_yolo`; ``lineage`` opens the ``dataset.json`` manifest (its
    ``snapshot`` is what a model trained on it records) and ``title`` the data.yaml header.
    Shared by a station's snapshots and the plant's snapshots across stations
    (:mod:`station.plant.datasets`).
    """
    train_parts, val_parts = split_parts(items, val_fraction, seed, split)
    if not val_parts:
        log.warning(
            "%s: no val split (val_fraction=%g, %d part(s)): val points at the train images",
            title,
            val_fraction,
            len(train_parts),
        )
    out = Path(out_dir).resolve()
    _empty_dir(out)
    index = {name: i for i, name in enumerate(class_names)}
    listing: dict[str, list[str]] = {"train": [], "val": []}
    n_boxes = 0
    for it in items:
        sub = "val" if it.part_id in val_parts else "train"
        stem = stem_for(it)
        _place(src[it.image_id], out / "images" / sub / f"{stem}.{it.format}", link)
        lines = []
        for lab in it.labels:
            line = yolo_line(index[lab.class_name], (lab.x1, lab.y1, lab.x2, lab.y2), it.width, it.height)
            if line is not None:
                lines.append(line)
        n_boxes += len(lines)
        label_file = out / "labels" / sub / f"{stem}.txt"
        label_file.parent.mkdir(parents=True, exist_ok=True)
        label_file.write_text("".join(f"{ln}\n" for ln in lines))
        listing[sub].append(stem)
    data = {
        "path": str(out),
        "train": "images/train",
        "val": "images/val" if val_parts else "images/train",
        "names": {i: n for i, n in enumerate(class_names)},
    }
    header = (
        f"# {title}\n"
        f"# {len(items)} images ({len(listing['train'])} train, {len(listing['val'])} val), {n_boxes} boxes; "
        f"split by part ({split}, val_fraction={val_fraction:g}, seed={seed})\n"
    )
    data_yaml = out / "data.yaml"
    data_yaml.write_text(header + yaml.safe_dump(data, sort_keys=False))
    manifest = {
        **lineage,
        "class_names": list(class_names),
        "split": split,
        "val_fraction": val_fraction,
        "seed": seed,
        "train_parts": sorted(train_parts),
        "val_parts": sorted(val_parts),
        "train": listing["train"],
        "val": listing["val"],
    }
    (out / MANIFEST).write_text(serialize.dumps(manifest, indent=1) + "\n")
    log.info(
        "exported %s to %s: %d train / %d val images, %d boxes",
        title,
        out,
        len(listing["train"]),
        len(listing["val"]),
        n_boxes,
    )
    return data_yaml


def export_coco(
    db: sqlite_utils.Database,
    images: ImageStore,
    snapshot_id: int,
    out_path: Path | str,
    *,
    copy_images: bool = True,
    link: bool = True,
) -> Path:
    """Write snapshot ``snapshot_id`` as COCO JSON (for CVAT / Label Studio); return the JSON path.

    ``images`` get ``file_name`` ``<stem>.<fmt>`` and are placed in ``images/`` next to the JSON
    (unless ``copy_images`` is False); boxes are ``bbox [x, y, w, h]`` in pixels with ``area``
    w*h; category ids start at 1 in snapshot class order. Images also carry ``part_id``,
    ``camera_id`` and ``t_wall`` (extra keys COCO readers ignore; the importer uses them).
    Refuses to overwrite an existing file.
    """
    snap = get_snapshot(db, snapshot_id)
    items = snapshot_items(db, snapshot_id)
    out = Path(out_path).resolve()
    if out.exists():
        raise FileExistsError(f"{out} exists: give a new file name (or delete it first)")
    src = _sources(images, items) if copy_images else {}
    cat_id = {name: i + 1 for i, name in enumerate(snap.class_names)}
    coco_images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    for it in items:
        file_name = f"{stem_for(it)}.{it.format}"
        coco_images.append(
            {
                "id": it.image_id,
                "file_name": file_name,
                "width": it.width,
                "height": it.height,
                "part_id": it.part_id,
                "camera_id": it.camera_id,
                "t_wall": it.t_wall,
            }
        )
        if copy_images:
            _place(src[it.image_id], out.parent / "images" / file_name, link)
        for lab in it.labels:
            b = clip_box((lab.x1, lab.y1, lab.x2, lab.y2), it.width, it.height)
            if b is None:
                continue
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": it.image_id,
                    "category_id": cat_id[lab.class_name],
                    "bbox": [b[0], b[1], w, h],
                    "area": w * h,
                    "iscrowd": 0,
                    "segmentation": [],
                }
            )
    doc = {
        "info": {
            "description": f"dataset snapshot {snap.id} {snap.name}",
            "version": snap.sha,
            "date_created": dt.datetime.fromtimestamp(snap.created_at, dt.UTC).isoformat(),
        },
        "licenses": [],
        "images": coco_images,
        "annotations": anns,
        "categories": [{"id": cat_id[n], "name": n, "supercategory": "defect"} for n in snap.class_names],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(serialize.dumps(doc, indent=1))
    os.replace(tmp, out)
    log.info("exported snapshot %d to %s: %d images, %d annotations", snap.id, out, len(coco_images), len(anns))
    return out
