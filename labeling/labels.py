"""The label model of an image and the QA operations that change it.

History model
-------------
``labels`` is append-only. Every kept image starts with one ``source='model'`` row per
detection of its (part, camera) - the database inserts these when the image and its
detections are recorded (migration ``m0005_labeling``). A QA operation never changes a
row; it *appends*:

- a moved / resized / reclassified box: a new ``active`` row that ``supersedes`` the old one;
- a false positive removed: a ``deleted`` row that ``supersedes`` the old one (same box, for the record);
- a confirmed box: a ``source='qa'`` copy that supersedes the model's row (the label is now
  human-verified; confirming a label that is already ``qa`` appends nothing);
- a missed defect: a new ``active`` row with ``supersedes`` NULL.

The *current* labels of an image are its ``active`` rows that nothing supersedes. A label is
superseded at most once (unique index), so the history of a box is a chain. Each operation
checks that the label it acts on is still current, so two reviewers editing the same box get
an error instead of a fork (reload and retry).

Every operation also appends a review row (``image_reviews``: who, when, verdict 'labeled'
when labels remain, 'good' when none remain): an image with zero labels *and* a review is a
reviewed negative, one with no review is unreviewed. Every change writes an audit row
(:mod:`station.store.audit`) in the same transaction.

Errors: an unknown image or label raises :class:`LookupError`; invalid input (box outside the
image, x1 >= x2, unknown class, label no longer current, image file deleted) raises
:class:`ValueError` with a message naming the field and the fix. Nothing is written on error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sqlite_utils

from station.store import audit
from station.store import labels as label_rows

from ._db import check_finite, transaction

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]
ReviewVerdict = Literal["labeled", "good"]


@dataclass(frozen=True, slots=True)
class Label:
    """One label row. ``confidence`` is the model's score for ``source='model'`` rows, else None."""

    id: int
    image_id: int
    class_name: str
    x1: float
    y1: float
    x2: float
    y2: float
    source: str
    status: str
    created_by: str
    created_at: float
    supersedes: int | None
    confidence: float | None = None

    @property
    def box(self) -> Box:
        """(x1, y1, x2, y2) in image pixels."""
        return (self.x1, self.y1, self.x2, self.y2)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class Review:
    """The latest QA verdict on an image."""

    image_id: int
    verdict: str
    reviewed_by: str
    reviewed_at: float


@dataclass(frozen=True, slots=True)
class ClassBox:
    """A class and its box, in image pixels (an imported box; a snapshot label adds its label id)."""

    class_name: str
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True, slots=True)
class ImageFacts:
    """What labeling knows of an image file: its part, camera, content hash, format and size."""

    part_id: int
    camera_id: str
    sha256: str
    format: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class ImageInfo(ImageFacts):
    """The image row a label belongs to."""

    id: int
    deleted: bool


# --------------------------------------------------------------------------- reading


def _label(r: Sequence[Any]) -> Label:
    return Label(
        int(r[0]),
        int(r[1]),
        str(r[2]),
        float(r[3]),
        float(r[4]),
        float(r[5]),
        float(r[6]),
        str(r[7]),
        str(r[8]),
        str(r[9]),
        float(r[10]),
        None if r[11] is None else int(r[11]),
        None if r[12] is None else float(r[12]),
    )


def image_info(db: sqlite_utils.Database, image_id: int) -> ImageInfo:
    """The image row ``image_id``; LookupError if there is none."""
    row = label_rows.image_row(db, image_id)
    if row is None:
        raise LookupError(f"image {image_id} does not exist")
    iid, part, cam, sha, fmt, w, h, deleted_at = row
    return ImageInfo(
        int(part), str(cam), str(sha), str(fmt), int(w), int(h), id=int(iid), deleted=deleted_at is not None
    )


def current_labels(db: sqlite_utils.Database, image_id: int) -> list[Label]:
    """The labels of ``image_id`` as they stand now (history resolved), in creation order."""
    return current_labels_many(db, [image_id]).get(int(image_id), [])


def current_labels_many(db: sqlite_utils.Database, image_ids: Iterable[int]) -> dict[int, list[Label]]:
    """:func:`current_labels` for many images at once: {image_id: labels} (images without labels absent)."""
    out: dict[int, list[Label]] = {}
    for r in label_rows.current_label_rows(db, image_ids):
        lab = _label(r)
        out.setdefault(lab.image_id, []).append(lab)
    return out


def label_history(db: sqlite_utils.Database, image_id: int) -> list[Label]:
    """Every label row ever written for ``image_id`` (superseded and deleted ones too), oldest first."""
    return [_label(r) for r in label_rows.label_rows_of_image(db, image_id)]


def get_label(db: sqlite_utils.Database, label_id: int) -> Label:
    """One label row by id; LookupError if there is none."""
    r = label_rows.label_row(db, label_id)
    if r is None:
        raise LookupError(f"label {label_id} does not exist")
    return _label(r)


def review_state(db: sqlite_utils.Database, image_id: int) -> Review | None:
    """The latest review of ``image_id``, or None if nobody reviewed it."""
    r = label_rows.latest_review_row(db, image_id)
    return Review(int(r[0]), str(r[1]), str(r[2]), float(r[3])) if r else None


def known_classes(db: sqlite_utils.Database) -> list[str]:
    """Class names the database knows: registered models' names, detections and labels (sorted)."""
    names = label_rows.used_class_names(db)
    for raw in label_rows.model_names_json(db):
        try:
            v = json.loads(raw or "[]")
        except ValueError:
            continue
        names.update(str(x) for x in (v.values() if isinstance(v, dict) else v))
    return sorted(names)


# --------------------------------------------------------------------------- validation


def check_class(class_name: object, classes: Sequence[str]) -> str:
    """``class_name`` if it is one of ``classes``, else ValueError naming the known classes."""
    if not isinstance(class_name, str) or not class_name.strip():
        raise ValueError(f"class_name must be a non-empty string, not {class_name!r}")
    if class_name not in classes:
        known = ", ".join(classes) if classes else "none yet"
        raise ValueError(
            f"class {class_name!r} is not a known class (known: {known}); add it to the class list (classes=...) first"
        )
    return class_name


def check_box(box: object, width: int, height: int) -> Box:
    """``box`` (x1, y1, x2, y2) as floats if it lies inside a ``width`` x ``height`` image with x1 < x2 and y1 < y2."""
    if not isinstance(box, (tuple, list)) or len(box) != 4:
        raise ValueError(f"box must be 4 numbers (x1, y1, x2, y2) in image pixels, not {box!r}")
    x1, y1, x2, y2 = (check_finite(n, v) for n, v in zip(("box.x1", "box.y1", "box.x2", "box.y2"), box))
    if not x1 < x2:
        raise ValueError(f"box x1 ({x1:g}) must be < x2 ({x2:g}): give the left edge first")
    if not y1 < y2:
        raise ValueError(f"box y1 ({y1:g}) must be < y2 ({y2:g}): give the top edge first")
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        raise ValueError(
            f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) must lie inside the {width}x{height} image "
            f"(0 <= x1 < x2 <= {width}, 0 <= y1 < y2 <= {height})"
        )
    return (x1, y1, x2, y2)


def clip_box(box: Sequence[float], width: int, height: int) -> Box | None:
    """``box`` clipped to the image; None if nothing of it remains."""
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = min(max(x1, 0.0), float(width)), min(max(x2, 0.0), float(width))
    y1, y2 = min(max(y1, 0.0), float(height)), min(max(y2, 0.0), float(height))
    if x2 <= x1 or y2 <= y1:
        return None
    return (x1, y1, x2, y2)


def _editable_image(db: sqlite_utils.Database, image_id: int) -> ImageInfo:
    img = image_info(db, image_id)
    if img.deleted:
        raise ValueError(
            f"image {image_id} (part {img.part_id}) was deleted by the disk budget: it can no longer be reviewed"
        )
    return img


def _current_label(db: sqlite_utils.Database, img: ImageInfo, label_id: int) -> Label:
    lab = get_label(db, label_id)
    if lab.image_id != img.id:
        raise ValueError(f"label {label_id} belongs to image {lab.image_id}, not image {img.id}")
    nxt = label_rows.successor(db, lab.id)
    if nxt is not None:
        raise ValueError(
            f"label {label_id} on image {img.id} is no longer current (replaced by label {nxt[0]}, {nxt[1]}): "
            "someone changed it meanwhile; reload the image and retry"
        )
    if lab.status != "active":
        raise ValueError(f"label {label_id} on image {img.id} is a deletion record, not a box; reload the image")
    return lab


def _classes(db: sqlite_utils.Database, classes: Sequence[str] | None) -> Sequence[str]:
    return known_classes(db) if classes is None else list(classes)


# --------------------------------------------------------------------------- writing


def _insert(
    db: sqlite_utils.Database,
    img: ImageInfo,
    class_name: str,
    box: Sequence[float],
    *,
    source: str,
    status: str,
    user: str,
    now: float,
    supersedes: int | None,
) -> Label:
    x1, y1, x2, y2 = (float(v) for v in box)
    new = Label(0, img.id, class_name, x1, y1, x2, y2, source, status, user, now, supersedes)
    columns = {k: v for k, v in new.as_dict().items() if k not in ("id", "confidence")}
    return dataclasses.replace(new, id=label_rows.insert_label(db, {"part_id": img.part_id, **columns}))


def _qa_row(
    db: sqlite_utils.Database,
    user: str,
    img: ImageInfo,
    now: float,
    action: str,
    class_name: str,
    box: Sequence[float],
    status: str = "active",
    *,
    replaces: Label | None = None,
    reason: str | None = None,
) -> Label:
    """Appends the QA's label row (superseding ``replaces``, if any) and the audit entry of ``action`` on it."""
    supersedes = None if replaces is None else replaces.id
    new = _insert(db, img, class_name, box, source="qa", status=status, user=user, now=now, supersedes=supersedes)
    object_id, before = (new.id, None) if replaces is None else (replaces.id, replaces.as_dict())
    audit.record(db, user, action, "label", object_id, before, new.as_dict(), reason, t_wall=now)
    return new


@contextlib.contextmanager
def _qa_edit(db: sqlite_utils.Database, user: str, image_id: int) -> Iterator[tuple[str, ImageInfo, float]]:
    """One QA edit of an image, in one transaction: yields the checked user, the editable image and the time; on
    success the image's review row closes it."""
    user = audit.check_user(user)
    now = time.time()
    with transaction(db):
        img = _editable_image(db, image_id)
        yield user, img, now
        _review(db, user, img, now)


def _review(
    db: sqlite_utils.Database, user: str, img: ImageInfo, now: float, verdict: ReviewVerdict | None = None
) -> Review:
    """Append a review row; the verdict follows from the labels left unless given."""
    if verdict is None:
        verdict = "labeled" if current_labels(db, img.id) else "good"
    label_rows.insert_review(db, img.id, verdict, user, now)
    return Review(img.id, verdict, user, now)


def _confirm_in_tx(
    db: sqlite_utils.Database, user: str, img: ImageInfo, label_ids: Iterable[int], now: float
) -> list[Label]:
    out = []
    for lid in dict.fromkeys(int(x) for x in label_ids):
        lab = _current_label(db, img, lid)
        if lab.source == "qa":
            audit.record(db, user, "confirm", "label", lab.id, lab.as_dict(), lab.as_dict(), t_wall=now)
            out.append(lab)
            continue
        box = clip_box(lab.box, img.width, img.height)
        if box is None:
            raise ValueError(
                f"label {lab.id} lies outside the {img.width}x{img.height} image and cannot be confirmed; delete it"
            )
        out.append(_qa_row(db, user, img, now, "confirm", lab.class_name, box, replaces=lab))
    return out


def confirm(db: sqlite_utils.Database, user: str, image_id: int, label_ids: Iterable[int]) -> list[Label]:
    """QA confirms these current labels of ``image_id`` are right; returns the confirmed (``qa``) labels.

    A model or imported label gets a ``qa`` copy superseding it (boxes clipped to the image);
    an already-``qa`` label stays as it is. The image is marked reviewed.
    """
    with _qa_edit(db, user, image_id) as (user, img, now):
        out = _confirm_in_tx(db, user, img, label_ids, now)
    return out


def delete_label(
    db: sqlite_utils.Database, user: str, image_id: int, label_id: int, reason: str | None = None
) -> Label:
    """QA removes a label (false positive); returns the appended ``deleted`` row."""
    with _qa_edit(db, user, image_id) as (user, img, now):
        lab = _current_label(db, img, label_id)
        gone = _qa_row(db, user, img, now, "delete", lab.class_name, lab.box, "deleted", replaces=lab, reason=reason)
    return gone


def add_label(
    db: sqlite_utils.Database,
    user: str,
    image_id: int,
    box: Sequence[float],
    class_name: str,
    *,
    classes: Sequence[str] | None = None,
    reason: str | None = None,
) -> Label:
    """QA adds a missed defect: ``box`` (x1, y1, x2, y2) in image pixels, ``class_name`` one of ``classes``.

    ``classes`` defaults to :func:`known_classes` (pass the model's class list to allow a class
    the database has not seen yet).
    """
    with _qa_edit(db, user, image_id) as (user, img, now):
        cls = check_class(class_name, _classes(db, classes))
        b = check_box(box, img.width, img.height)
        new = _qa_row(db, user, img, now, "add", cls, b, reason=reason)
    return new


def update_label(
    db: sqlite_utils.Database,
    user: str,
    image_id: int,
    label_id: int,
    *,
    box: Sequence[float] | None = None,
    class_name: str | None = None,
    classes: Sequence[str] | None = None,
    reason: str | None = None,
) -> Label:
    """QA moves / resizes (``box``) and/or reclassifies (``class_name``) a label; returns the new row."""
    if box is None and class_name is None:
        raise ValueError("update_label needs a new box and/or a new class_name")
    with _qa_edit(db, user, image_id) as (user, img, now):
        lab = _current_label(db, img, label_id)
        cls = lab.class_name if class_name is None else check_class(class_name, _classes(db, classes))
        b = lab.box if box is None else check_box(box, img.width, img.height)
        if box is None and clip_box(b, img.width, img.height) != b:
            raise ValueError(
                f"label {lab.id}'s box lies partly outside the image: give a corrected box with the new class"
            )
        action = (
            "reclass"
            if box is None
            else ("move" if class_name is None or class_name == lab.class_name else "move+reclass")
        )
        new = _qa_row(db, user, img, now, action, cls, b, replaces=lab, reason=reason)
    return new


def _mark_good_in_tx(db: sqlite_utils.Database, user: str, img: ImageInfo, now: float, reason: str | None) -> Review:
    before = current_labels(db, img.id)
    for lab in before:
        _qa_row(
            db,
            user,
            img,
            now,
            "delete",
            lab.class_name,
            lab.box,
            "deleted",
            replaces=lab,
            reason=reason or "image marked good",
        )
    prev = review_state(db, img.id)
    review = _review(db, user, img, now, "good")
    audit.record(
        db,
        user,
        "mark_good",
        "image",
        img.id,
        {"labels": [lab.as_dict() for lab in before], "review": prev},
        {"labels": [], "review": review},
        reason,
        t_wall=now,
    )
    return review


def mark_image_good(db: sqlite_utils.Database, user: str, image_id: int, reason: str | None = None) -> Review:
    """QA says the image shows no defect: every current label is deleted and a 'good' review recorded."""
    user = audit.check_user(user)
    now = time.time()
    with transaction(db):
        img = _editable_image(db, image_id)
        review = _mark_good_in_tx(db, user, img, now, reason)
    return review


def mark_reviewed(db: sqlite_utils.Database, user: str, image_id: int) -> Review:
    """QA accepts the image's labels as they are: every current label is confirmed and the review recorded."""
    user = audit.check_user(user)
    now = time.time()
    with transaction(db):
        img = _editable_image(db, image_id)
        _confirm_in_tx(db, user, img, [lab.id for lab in current_labels(db, img.id)], now)
        review = _review(db, user, img, now)
    return review


def _unique_ids(image_ids: Iterable[int]) -> list[int]:
    ids = list(dict.fromkeys(int(i) for i in image_ids))
    if not ids:
        raise ValueError("no image ids given")
    return ids


def bulk_confirm(db: sqlite_utils.Database, user: str, image_ids: Iterable[int]) -> int:
    """Confirm every current label of each image (all or nothing, one transaction); return the number of images."""
    user = audit.check_user(user)
    ids = _unique_ids(image_ids)
    now = time.time()
    with transaction(db):
        for iid in ids:
            img = _editable_image(db, iid)
            _confirm_in_tx(db, user, img, [lab.id for lab in current_labels(db, iid)], now)
            _review(db, user, img, now)
    return len(ids)


def bulk_mark_good(db: sqlite_utils.Database, user: str, image_ids: Iterable[int], reason: str | None = None) -> int:
    """:func:`mark_image_good` for each image (all or nothing, one transaction); return the number of images."""
    user = audit.check_user(user)
    ids = _unique_ids(image_ids)
    now = time.time()
    with transaction(db):
        for iid in ids:
            _mark_good_in_tx(db, user, _editable_image(db, iid), now, reason)
    return len(ids)
