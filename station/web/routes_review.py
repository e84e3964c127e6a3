"""QA review: the queue and the image editor (role qa or admin; datasets: :mod:`.routes_dataset`).

Every route here needs the ``qa`` role, reads included: review data (images,
labels, who changed what) is not for the anonymous line-side panel. Every
change goes through :mod:`labeling` (append-only labels, an audit row per
change, in one transaction). Images are named by their integer id only; the
file is found through the database and :meth:`ImageStore.open_path`, never
from a path the client sent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

import labeling

from ..store import audit, heatmaps, queries
from .auth import QaSession
from .pages import desk_page
from .review_files import (
    thumbnail_jpeg,
)
from .state import StateDep, WebState

log = logging.getLogger(__name__)
router = APIRouter(tags=["review"])

MAX_ID = 2**62  # larger integers overflow SQLite
ImageId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="Image id (integer, from the queue).")]
LabelId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="Label id (integer, from the image's labels).")]
Coord = Annotated[float, Field(allow_inf_nan=False, ge=-1e7, le=1e7)]
Reason = Annotated[str | None, Field(None, max_length=200, description="Why (kept in the audit trail).")]
_CONFLICT = ("no longer current", "deletion record", "deleted by the disk budget")


# -- request bodies ------------------------------------------------------------------------
class NewLabel(BaseModel):
    """A missed defect drawn by QA."""

    box: list[Coord] = Field(
        ..., min_length=4, max_length=4, description="x1, y1, x2, y2 in image pixels (x1 < x2, y1 < y2)."
    )
    class_name: str = Field(
        ..., min_length=1, max_length=64, description="One of the classes the image's detail lists."
    )
    reason: Reason


class LabelChange(BaseModel):
    """Move / resize and/or reclassify a label (at least one of box and class_name)."""

    box: list[Coord] | None = Field(None, min_length=4, max_length=4, description="New x1, y1, x2, y2 in image pixels.")
    class_name: str | None = Field(None, min_length=1, max_length=64, description="New class.")
    reason: Reason


class AnomalyLabel(BaseModel):
    """The defect class an anomaly box shows: a known class, or a new name."""

    class_name: str = Field(
        ..., min_length=1, max_length=64, description="A class of the image's detail, or a new class name."
    )
    reason: Reason


class ConfirmBody(BaseModel):
    """Confirm labels of one image (none given: every current label, and the image counts as reviewed)."""

    label_ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] | None = Field(
        None, max_length=1000, description="Labels to confirm."
    )


class GoodBody(BaseModel):
    """Mark an image good (no defect): every current label is deleted."""

    reason: Reason


class BulkBody(BaseModel):
    """Several images at once (all or nothing)."""

    image_ids: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(
        ..., min_length=1, max_length=500, description="Image ids."
    )
    reason: Reason


# -- helpers ---------------------------------------------------------------------------------
@contextlib.contextmanager
def labeling_errors() -> Iterator[None]:
    """labeling's errors as HTTP answers: 404 unknown, 409 changed meanwhile, 422 invalid input."""
    try:
        yield
    except KeyError:
        raise
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except sqlite3.IntegrityError as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"someone changed this image meanwhile ({exc}): reload it and retry"
        ) from None
    except ValueError as exc:
        msg = str(exc)
        code = status.HTTP_409_CONFLICT if any(k in msg for k in _CONFLICT) else status.HTTP_422_UNPROCESSABLE_CONTENT
        raise HTTPException(code, msg) from None


def ordered_classes(state: WebState, db: Any) -> list[str]:
    """The classes a reviewer may pick: the running model's, in its order (keys 1..9), then other known ones."""
    names = [str(n) for n in state.station.inspector.names]
    extra = [c for c in labeling.known_classes(db) if c not in names]
    return names + extra


def _label(lab: labeling.Label) -> dict[str, Any]:
    return lab.as_dict()


def image_detail(state: WebState, db: Any, image_id: int) -> dict[str, Any]:
    """Everything the editor shows for one image: the image, its part, current labels, history, audit, classes.

    ``heatmap``: the no-labels inspector's heat map of this image (url, size, image score), or None.
    """
    img = labeling.image_info(db, image_id)
    insp = queries.get_inspection(db, img.part_id) or {}
    review = labeling.review_state(db, image_id)
    heat = None if img.deleted else heatmaps.live_map_of(db, image_id)
    return {
        "image": {**dataclasses.asdict(img), "url": f"/api/review/images/{img.id}/file"},
        "heatmap": None
        if heat is None
        else {
            "url": f"/api/review/images/{img.id}/heatmap",
            "width": heat[1],
            "height": heat[2],
            "image_score": heat[3],
        },
        "anomaly_class": labeling.ANOMALY_CLASS,
        "inspection": {
            "part_id": img.part_id,
            "outcome": insp.get("outcome"),
            "reasons": insp.get("reasons") or [],
            "model_id": insp.get("model_id"),
            "t_wall": insp.get("t_trigger_wall") or insp.get("t_recorded_wall"),
            "max_score": insp.get("max_score"),
            "image_score": insp.get("image_score"),
            "source": insp.get("source"),
            "images": [
                {"id": i["id"], "camera_id": i["camera_id"], "deleted": i["deleted_at"] is not None}
                for i in insp.get("images", [])
            ],
        },
        "labels": [_label(lab) for lab in labeling.current_labels(db, image_id)],
        "review": dataclasses.asdict(review) if review else None,
        "history": [_label(lab) for lab in labeling.label_history(db, image_id)],
        "audit": [dataclasses.asdict(e) for e in audit.image_history(db, image_id)],
        "classes": ordered_classes(state, db),
    }


def _after_change(state: WebState, db: Any, image_id: int, changed: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(changed) and not isinstance(changed, type):
        changed = dataclasses.asdict(changed)
    elif isinstance(changed, list):
        changed = [dataclasses.asdict(c) for c in changed]
    return {"changed": changed, "detail": image_detail(state, db, image_id)}


def _class_edit(
    state: WebState, image_id: int, edit: Callable[..., labeling.Label], *args: Any, **kwargs: Any
) -> dict[str, Any]:
    """A label edit that names a class (``edit(db, *args, classes=..., **kwargs)``: the reviewer's classes, in
    :func:`ordered_classes` order), answered with the label and the refreshed image."""
    with state.db.use() as db, labeling_errors():
        lab = edit(db, *args, classes=ordered_classes(state, db), **kwargs)
        return _after_change(state, db, image_id, lab)


def review_page(request: Request, template: str, nav: str = "review", **values: str) -> Response:
    """A review page: login first (redirect), then role qa (403 page)."""
    return desk_page(request, template, nav=nav, area="QA review", **values)


# -- pages ------------------------------------------------------------------------------------
@router.get("/review", include_in_schema=False)
def queue_page(request: Request) -> Response:
    """The review queue with the thumbnail gallery."""
    return review_page(request, "review.html")


@router.get("/review/image/{image_id}", include_in_schema=False)
def editor_page(request: Request, image_id: ImageId) -> Response:
    """The editor of one image."""
    return review_page(request, "review_image.html", image_id=str(image_id))


@router.get("/review/dataset", include_in_schema=False)
def dataset_page(request: Request, state: StateDep) -> Response:
    """Snapshots, exports and imports."""
    return review_page(request, "review_dataset.html", nav="dataset", max_upload_mb=f"{state.cfg.max_upload_mb:g}")


# -- queue --------------------------------------------------------------------------------------
@router.get("/api/review/queue", summary="The review queue, most useful first (qa)")
def review_queue(
    state: StateDep,
    session: QaSession,
    outcome: Literal["PASS", "FAIL", "UNCERTAIN", "FAILSAFE"] | None = Query(None, description="Only this verdict."),
    class_name: str | None = Query(
        None, min_length=1, max_length=64, description="Only images with a current label of this class."
    ),
    min_conf: float | None = Query(None, ge=0, le=1, description="Part's max score at least this."),
    max_conf: float | None = Query(None, ge=0, le=1, description="Part's max score at most this."),
    since: float | None = Query(None, ge=0, le=1e11, description="Triggered at or after this UNIX time."),
    until: float | None = Query(None, ge=0, le=1e11, description="Triggered before this UNIX time."),
    model_id: str | None = Query(None, min_length=1, max_length=200, description="Only parts decided by this model."),
    reviewed: Literal["no", "yes", "all"] = Query(
        "no", description="no = not yet reviewed (default), yes = reviewed, all = both."
    ),
    limit: int = Query(48, ge=1, le=200, description="Page size."),
    offset: int = Query(0, ge=0, le=10_000_000, description="Items to skip."),
) -> dict[str, Any]:
    """One page of :func:`labeling.review_queue` (tiers: uncertain, disagreement, pass sample, fail, other),
    each item with its image size, current boxes (for the gallery overlay) and latest review verdict,
    plus the count per tier.
    """
    filters: dict[str, Any] = {
        "outcome": outcome,
        "class_name": class_name,
        "min_conf": min_conf,
        "max_conf": max_conf,
        "since": since,
        "until": until,
        "model_id": model_id,
        "reviewed": {"no": False, "yes": True, "all": None}[reviewed],
        "rules": state.station.cfg.rules,
    }
    with state.db.use() as db, labeling_errors():
        items = labeling.review_queue(db, limit=limit, offset=offset, **filters)
        counts = labeling.queue_counts(db, **filters)
        ids = [it.image_id for it in items]
        labels = labeling.current_labels_many(db, ids)
        sizes = queries.image_sizes(db, ids)
        verdicts = queries.review_verdicts(db, ids)
    out = []
    for it in items:
        w, h = sizes.get(it.image_id, (0, 0))
        out.append(
            {
                **dataclasses.asdict(it),
                "width": w,
                "height": h,
                "verdict": verdicts.get(it.image_id),
                "thumb": f"/api/review/images/{it.image_id}/thumb",
                "boxes": [
                    [lab.x1, lab.y1, lab.x2, lab.y2, lab.class_name, lab.source] for lab in labels.get(it.image_id, [])
                ],
            }
        )
    return {"items": out, "counts": counts, "total": sum(counts.values()), "offset": offset, "limit": limit}


@router.get("/api/review/facets", summary="Values for the queue filters (qa)")
def facets(state: StateDep, session: QaSession) -> dict[str, Any]:
    """Classes (model order first), model ids seen on the line, outcomes, and the time range of the recorded parts."""
    with state.db.use() as db:
        classes = ordered_classes(state, db)
        models = queries.line_models(db, limit=100)
        t = queries.line_time_range(db)
    return {
        "classes": classes,
        "models": models,
        "outcomes": ["UNCERTAIN", "FAIL", "FAILSAFE", "PASS"],
        "t_first": t[0],
        "t_last": t[1],
    }


# -- one image ----------------------------------------------------------------------------------
@router.get("/api/review/images/{image_id}", summary="One image with its part, labels, history and audit (qa)")
def get_image(state: StateDep, session: QaSession, image_id: ImageId) -> dict[str, Any]:
    """404 for an unknown image id."""
    with state.db.use() as db, labeling_errors():
        return image_detail(state, db, image_id)


def _image_file(state: WebState, image_id: int) -> tuple[Path, int, int, str]:
    """(file, width, height, format) of a kept image, found by id through the database; 404 otherwise."""
    with state.db.use() as db:
        found = queries.image_for(db, image_id)
        size = queries.image_sizes(db, [image_id]).get(image_id)
    if found is None or size is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"no kept image {image_id} (unknown, or deleted by the disk budget)"
        )
    sha, fmt = found
    try:
        path = state.station.images.open_path(sha, fmt)
    except FileNotFoundError:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"the file of image {image_id} is gone (deleted by the disk budget?)"
        ) from None
    return path, size[0], size[1], fmt


@router.get(
    "/api/review/images/{image_id}/thumb",
    summary="Downscaled JPEG of one image (qa)",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "JPEG thumbnail"}},
)
def thumbnail(
    state: StateDep,
    session: QaSession,
    image_id: ImageId,
    size: int = Query(320, ge=32, le=1024, description="Longer side in pixels."),
) -> Response:
    """The image downscaled on the server (never upscaled); may be cached by the browser (an image id's content never
    changes)."""
    path, w, h, _ = _image_file(state, image_id)
    try:
        jpeg = thumbnail_jpeg(path, size, w, h)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.get(
    "/api/review/images/{image_id}/file",
    summary="One image at full resolution (qa)",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}, "image/jpeg": {}}, "description": "The stored image file"}},
)
def image_file(state: StateDep, session: QaSession, image_id: ImageId) -> FileResponse:
    """The stored file itself (PNG or JPEG, as recorded)."""
    path, _, _, fmt = _image_file(state, image_id)
    return FileResponse(
        path,
        media_type="image/png" if fmt == "png" else "image/jpeg",
        headers={"Cache-Control": "private, max-age=3600"},
    )


@router.get(
    "/api/review/images/{image_id}/heatmap",
    summary="Heat map of one image: grayscale PNG (qa)",
    response_class=FileResponse,
    responses={
        200: {"content": {"image/png": {}}, "description": "0 normal, 128 at the threshold, 255 twice it or more"},
        404: {"description": "No heat map (supervised model), or deleted with its image"},
    },
)
def heatmap_file(state: StateDep, session: QaSession, image_id: ImageId) -> FileResponse:
    """The no-labels inspector's heat map of the image's frame (at most 256 px a side, stretch it over the image)."""
    with state.db.use() as db:
        heat = heatmaps.live_map_of(db, image_id)
    if heat is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"image {image_id} has no heat map (unknown image, supervised model, or deleted)"
        )
    try:
        path = state.station.images.open_map_path(heat[0])
    except FileNotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"the heat map file of image {image_id} is gone") from None
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


# -- label changes ------------------------------------------------------------------------------
@router.post("/api/review/images/{image_id}/labels", status_code=201, summary="Add a missed defect (qa)")
def add_label(state: StateDep, session: QaSession, image_id: ImageId, body: NewLabel) -> dict[str, Any]:
    """A new box; 422 when the box is outside the image or the class unknown. Returns the label and the refreshed
    image."""
    user = session.user.username
    return _class_edit(
        state, image_id, labeling.add_label, user, image_id, body.box, body.class_name, reason=body.reason
    )


@router.patch("/api/review/images/{image_id}/labels/{label_id}", summary="Move, resize or reclassify a label (qa)")
def change_label(
    state: StateDep, session: QaSession, image_id: ImageId, label_id: LabelId, body: LabelChange
) -> dict[str, Any]:
    """Appends a label that supersedes ``label_id``; 409 when someone changed it meanwhile (reload and retry)."""
    if body.box is None and body.class_name is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "give a new box and/or a new class_name")
    change = {"box": body.box, "class_name": body.class_name, "reason": body.reason}
    return _class_edit(state, image_id, labeling.update_label, session.user.username, image_id, label_id, **change)


@router.post(
    "/api/review/images/{image_id}/labels/{label_id}/as-defect", summary="Label an anomaly box as a defect class (qa)"
)
def anomaly_as_defect(
    state: StateDep, session: QaSession, image_id: ImageId, label_id: LabelId, body: AnomalyLabel
) -> dict[str, Any]:
    """The anomaly box ``label_id`` becomes a label of ``class_name`` (a known class or a new name), like a reclass.

    422 when the label is not an ``anomaly`` box or the name is unusable; 409 when it changed meanwhile.
    """
    user = session.user.username
    return _class_edit(
        state, image_id, labeling.label_anomaly, user, image_id, label_id, body.class_name, reason=body.reason
    )


@router.delete("/api/review/images/{image_id}/labels/{label_id}", summary="Delete a label: false positive (qa)")
def delete_label(
    state: StateDep,
    session: QaSession,
    image_id: ImageId,
    label_id: LabelId,
    reason: str | None = Query(None, max_length=200, description="Why (audit trail)."),
) -> dict[str, Any]:
    """Appends a ``deleted`` row superseding the label; 409 when it is no longer current."""
    with state.db.use() as db, labeling_errors():
        gone = labeling.delete_label(db, session.user.username, image_id, label_id, reason or "false positive")
        return _after_change(state, db, image_id, gone)


@router.post("/api/review/images/{image_id}/confirm", summary="Confirm labels of an image (qa)")
def confirm(state: StateDep, session: QaSession, image_id: ImageId, body: ConfirmBody | None = None) -> dict[str, Any]:
    """With ``label_ids``: those labels are right. Without: every current label is right and the image is reviewed."""
    user = session.user.username
    with state.db.use() as db, labeling_errors():
        if body is not None and body.label_ids:
            changed: Any = labeling.confirm(db, user, image_id, body.label_ids)
        else:
            changed = labeling.mark_reviewed(db, user, image_id)
        return _after_change(state, db, image_id, changed)


@router.post("/api/review/images/{image_id}/good", summary="Mark an image good: no defect (qa)")
def mark_good(state: StateDep, session: QaSession, image_id: ImageId, body: GoodBody | None = None) -> dict[str, Any]:
    """Every current label is deleted and a 'good' review recorded."""
    with state.db.use() as db, labeling_errors():
        review = labeling.mark_image_good(db, session.user.username, image_id, body.reason if body else None)
        return _after_change(state, db, image_id, review)


@router.post("/api/review/bulk/confirm", summary="Confirm every label of several images (qa)")
def bulk_confirm(request: Request, state: StateDep, session: QaSession, body: BulkBody) -> dict[str, Any]:
    """All or nothing: one unknown or deleted image refuses the whole request (404 / 409)."""
    with state.db.use() as db, labeling_errors():
        n = labeling.bulk_confirm(db, session.user.username, body.image_ids)
    return {"images": n}


@router.post("/api/review/bulk/good", summary="Mark several images good (qa)")
def bulk_good(state: StateDep, session: QaSession, body: BulkBody) -> dict[str, Any]:
    """All or nothing, like bulk confirm."""
    with state.db.use() as db, labeling_errors():
        n = labeling.bulk_mark_good(db, session.user.username, body.image_ids, body.reason)
    return {"images": n}
