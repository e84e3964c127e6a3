"""Anomaly boxes of no-labels inspectors turned into labelled defects.

A no-labels inspector (the ``anomaly`` backend) reports blobs of its heat map as detections of
class :data:`ANOMALY_CLASS`; like every detection of a kept image they become ``source='model'``
label rows. QA turns one into a defect of a real class - one the label store knows, or a new
name - so a supervised model can be trained from it. This is a reclassification through
:func:`labeling.labels.update_label` (a ``qa`` row superseding the anomaly row, an audit row
``reclass`` with the reason, a review row), only allowing a class name nobody used yet.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import sqlite_utils

from . import labels

ANOMALY_CLASS = "anomaly"
CLASS_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}")


def check_new_class_name(class_name: object) -> str:
    """``class_name`` stripped, if it can name a defect class; ValueError otherwise.

    1-64 characters: letters, digits, space, ``_``, ``.``, ``-``, starting with a letter or
    digit (names go into YOLO ``data.yaml`` and COCO files); not the anomaly class itself.
    """
    if not isinstance(class_name, str):
        raise ValueError(f"class_name must be a string, not {class_name!r}")
    name = class_name.strip()
    if not CLASS_NAME_RE.fullmatch(name):
        raise ValueError(
            f"class_name {class_name!r} is not a usable class name: 1-64 letters, digits, spaces, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    if name.lower() == ANOMALY_CLASS:
        raise ValueError(f"pick the defect class this anomaly shows, not {ANOMALY_CLASS!r} itself")
    return name


def label_anomaly(
    db: sqlite_utils.Database,
    user: str,
    image_id: int,
    label_id: int,
    class_name: str,
    *,
    classes: Sequence[str] | None = None,
    reason: str | None = None,
) -> labels.Label:
    """QA says the current anomaly label ``label_id`` of ``image_id`` is a defect of ``class_name``.

    ``class_name`` is one of ``classes`` (default: :func:`labels.known_classes`) or a new name
    (:func:`check_new_class_name`). Returns the new ``qa`` label. ValueError when the label is not
    an anomaly box or no longer current; LookupError for an unknown image or label.
    """
    name = check_new_class_name(class_name)
    lab = labels.get_label(db, label_id)
    if lab.image_id != int(image_id):
        raise ValueError(f"label {label_id} belongs to image {lab.image_id}, not image {image_id}")
    if lab.class_name != ANOMALY_CLASS:
        raise ValueError(
            f"label {label_id} is a {lab.class_name!r} box, not an {ANOMALY_CLASS!r} box: change its class instead"
        )
    known = list(labels.known_classes(db) if classes is None else classes)
    # update_label re-checks, in its transaction, that the label is still current
    return labels.update_label(
        db,
        user,
        image_id,
        label_id,
        class_name=name,
        classes=[*known, name],
        reason=reason or f"{ANOMALY_CLASS} labelled as {name}",
    )
