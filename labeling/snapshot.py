"""Frozen dataset snapshots: the exact images and labels a model is trained on.

:func:`create_snapshot` resolves the current labels of the selected images once and stores
them in ``dataset_snapshot_items`` (append-only, like the snapshot row itself). Exports read
only the snapshot, so a later relabel never changes what a snapshot exports, and a trained
model can name its dataset (``models.dataset_snapshot``: the snapshot id; the content hash
confirms it).

Content hash (``Snapshot.sha``): sha256 of the canonical JSON of the class list and, per image,
the image file's sha256 with its label list (class, box rounded to 0.01 px), sorted. It does
not depend on database ids, times or part ids, so the same images with the same labels hash
the same in any database (e.g. after an export and an import elsewhere).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from station import serialize
from station.serialize import dumps
from station.store import audit, snapshots

from ._db import transaction
from .labels import ClassBox, ImageFacts, clip_box, current_labels_many

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SnapshotLabel(ClassBox):
    """One box of a snapshot image, in image pixels, and the label it was frozen from (0: none known)."""

    label_id: int


@dataclass(frozen=True, slots=True)
class SnapshotItem(ImageFacts):
    """One image of a snapshot with its frozen labels (empty for a reviewed-good image)."""

    image_id: int
    t_wall: float | None
    verdict: str | None
    labels: tuple[SnapshotLabel, ...]


def item_from_row(r: Mapping[str, Any], t_wall: float | None, labels: tuple[SnapshotLabel, ...]) -> SnapshotItem:
    """A snapshot image from its row (ids, camera, file facts, verdict), its time and its labels."""
    return SnapshotItem(
        int(r["part_id"]),
        str(r["camera_id"]),
        str(r["sha256"]),
        str(r["format"]),
        int(r["width"]),
        int(r["height"]),
        image_id=int(r["image_id"]),
        t_wall=t_wall,
        verdict=r["verdict"],
        labels=labels,
    )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A frozen dataset: ``image_ids`` in id order, ``class_names`` in class-index order."""

    id: int
    created_at: float
    image_ids: tuple[int, ...]
    class_names: tuple[str, ...]
    sha: str
    name: str = ""
    created_by: str = ""
    n_labels: int = 0
    params: dict[str, Any] | None = None

    def summary(self, sha_key: str = "sha256") -> dict[str, Any]:
        """What a listing shows: id, name, who made it and when, the content hash (under ``sha_key``), the numbers of
        images and labels, the classes."""
        return {
            "id": self.id,
            "name": self.name,
            "created_at": self.created_at,
            "created_by": self.created_by,
            sha_key: self.sha,
            "n_images": len(self.image_ids),
            "n_labels": self.n_labels,
            "class_names": list(self.class_names),
        }


def _round(v: float) -> float:
    return round(float(v), 2)


def content_sha(class_names: Sequence[str], items: Sequence[SnapshotItem]) -> str:
    """The content hash of a class list and snapshot items (see the module docstring)."""
    images = sorted(
        [
            it.sha256,
            sorted(
                [lab.class_name, _round(lab.x1), _round(lab.y1), _round(lab.x2), _round(lab.y2)] for lab in it.labels
            ),
        ]
        for it in items
    )
    doc = {"classes": list(class_names), "images": images}
    return hashlib.sha256(dumps(doc, canonical=True).encode()).hexdigest()


def create_snapshot(
    db: sqlite_utils.Database,
    user: str,
    *,
    name: str | None = None,
    since: float | None = None,
    until: float | None = None,
    only_reviewed: bool = True,
    class_names: Sequence[str] | None = None,
) -> Snapshot:
    """Freeze the current labels of the selected images into a new snapshot.

    Selection: every image whose file is kept, triggered in [``since``, ``until``) (UNIX
    seconds), and - with ``only_reviewed`` - reviewed by QA (imported images count as reviewed).
    Boxes are clipped to their image; a box entirely outside it is dropped (logged).
    ``class_names`` fixes the class order (class index = position; pass the deployed model's
    names to keep indices stable across snapshots); by default it is the sorted set of classes
    present. Raises ValueError when nothing matches, when no class is known, or when a label's
    class is not in ``class_names``.
    """
    user = audit.check_user(user)
    now = time.time()
    with transaction(db):
        sel = snapshots.snapshot_candidates(db, since, until, only_reviewed)
        if not sel:
            what = "reviewed " if only_reviewed else ""
            raise ValueError(
                f"no {what}images with a kept file match (since={since}, until={until}); "
                + ("review some images first or pass only_reviewed=False" if only_reviewed else "widen the time range")
            )
        labels = current_labels_many(db, [r["image_id"] for r in sel])
        items: list[SnapshotItem] = []
        for r in sel:
            labs = []
            for lab in labels.get(int(r["image_id"]), []):
                box = clip_box(lab.box, r["width"], r["height"])
                if box is None:
                    log.warning("snapshot: label %d lies outside image %d; left out", lab.id, r["image_id"])
                    continue
                labs.append(SnapshotLabel(lab.class_name, *box, label_id=lab.id))
            items.append(item_from_row(r, None if r["t_wall"] is None else float(r["t_wall"]), tuple(labs)))
        present = sorted({lab.class_name for it in items for lab in it.labels})
        if class_names is None:
            classes = present
        else:
            classes = [str(c) for c in class_names]
            if len(set(classes)) != len(classes):
                raise ValueError(f"class_names has duplicates: {classes}")
            unknown = [c for c in present if c not in classes]
            if unknown:
                raise ValueError(
                    f"labels use classes not in class_names: {', '.join(unknown)}; add them to class_names"
                )
        if not classes:
            raise ValueError("the selected images have no labels and no class_names were given: pass class_names")
        sha = content_sha(classes, items)
        n_labels = sum(len(it.labels) for it in items)
        params = {"since": since, "until": until, "only_reviewed": bool(only_reviewed)}
        name = name or time.strftime("snapshot-%Y%m%d-%H%M%S", time.gmtime(now))
        sid = snapshots.insert_snapshot(
            db,
            {
                "name": name,
                "created_at": now,
                "created_by": user,
                "params": dumps(params, canonical=True),
                "class_names": dumps(classes),
                "content_sha256": sha,
                "n_images": len(items),
                "n_labels": n_labels,
            },
            [
                {
                    "image_id": it.image_id,
                    "part_id": it.part_id,
                    "camera_id": it.camera_id,
                    "sha256": it.sha256,
                    "format": it.format,
                    "width": it.width,
                    "height": it.height,
                    "t_wall": it.t_wall,
                    "verdict": it.verdict,
                    "labels": serialize.dumps(
                        [[lab.label_id, lab.class_name, lab.x1, lab.y1, lab.x2, lab.y2] for lab in it.labels]
                    ),
                }
                for it in items
            ],
        )
        snap = Snapshot(sid, now, tuple(it.image_id for it in items), tuple(classes), sha, name, user, n_labels, params)
        audit.record(
            db,
            user,
            "create",
            "dataset_snapshot",
            sid,
            None,
            {"name": name, "sha": sha, "n_images": len(items), "n_labels": n_labels, "class_names": classes, **params},
            t_wall=now,
        )
    log.info("snapshot %d %r: %d images, %d labels, sha %s", sid, name, len(items), n_labels, sha[:12])
    return snap


def get_snapshot(db: sqlite_utils.Database, snapshot_id: int) -> Snapshot:
    """A snapshot by id; LookupError if there is none."""
    r = snapshots.snapshot_row(db, snapshot_id)
    if r is None:
        raise LookupError(
            f"dataset snapshot {snapshot_id} does not exist; list them with `python -m labeling snapshots`"
        )
    sid = int(r["id"])
    return Snapshot(
        sid,
        float(r["created_at"]),
        snapshots.snapshot_image_ids(db, sid),
        tuple(json.loads(r["class_names"])),
        str(r["content_sha256"]),
        str(r["name"]),
        str(r["created_by"]),
        int(r["n_labels"]),
        json.loads(r["params"]),
    )


def list_snapshots(db: sqlite_utils.Database) -> list[Snapshot]:
    """Every snapshot, oldest first."""
    return [get_snapshot(db, sid) for sid in snapshots.snapshot_ids(db)]


def snapshot_items(db: sqlite_utils.Database, snapshot_id: int) -> list[SnapshotItem]:
    """The frozen images and labels of a snapshot, in image id order."""
    get_snapshot(db, snapshot_id)  # LookupError if unknown
    out = []
    for r in snapshots.snapshot_item_rows(db, snapshot_id):
        labs = tuple(
            SnapshotLabel(str(x[1]), float(x[2]), float(x[3]), float(x[4]), float(x[5]), label_id=int(x[0]))
            for x in json.loads(r["labels"])
        )
        out.append(item_from_row(r, r["t_wall"], labs))
    return out
