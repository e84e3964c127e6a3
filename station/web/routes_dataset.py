"""QA review of datasets: snapshots, their YOLO / COCO export, and the import of a dataset zip (role qa or admin).

The routes of the review pages' dataset tab (:mod:`.routes_review` has the queue and the editor,
and the rules both follow: the ``qa`` role for reads too, every change through :mod:`labeling`).
Export and import work in a temporary folder next to the image store, on a database connection
of their own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

import labeling
from labeling.importer import import_images, read_coco, read_yolo

from ..store.db import open_db
from .auth import QaSession
from .review_files import (
    Limits,
    UploadError,
    clean_message,
    new_work_dir,
    portable_data_yaml,
    prepare_coco,
    prepare_yolo,
    remove_tree,
    save_upload,
    unpack,
    zip_folder,
)
from .routes_review import MAX_ID, labeling_errors, ordered_classes
from .state import StateDep, WebState

log = logging.getLogger(__name__)
router = APIRouter(tags=["review"])

SnapshotId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="Dataset snapshot id.")]
ZIP_TYPES = ("application/zip", "application/x-zip-compressed", "application/octet-stream", "multipart/x-zip")


class SnapshotBody(BaseModel):
    """Freeze the current labels into a dataset snapshot."""

    name: str | None = Field(
        None, max_length=80, pattern=r"^[A-Za-z0-9 ._-]*$", description="Snapshot name (default snapshot-<UTC time>)."
    )
    only_reviewed: bool = Field(True, description="Only images a QA reviewer has reviewed (recommended).")
    since: float | None = Field(None, ge=0, le=1e11, description="Only parts triggered at or after this UNIX time.")
    until: float | None = Field(None, ge=0, le=1e11, description="Only parts triggered before this UNIX time.")
    class_names: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        None,
        max_length=1000,
        description="Class order (class index = position); default: the model's classes, then any other known class.",
    )


# -- snapshots and export ---------------------------------------------------------------------------
def _snapshot(s: labeling.Snapshot) -> dict[str, Any]:
    d = dataclasses.asdict(s)
    d["n_images"] = len(d.pop("image_ids"))
    return d


@router.get("/api/review/snapshots", summary="Dataset snapshots, newest first (qa)")
def snapshots(state: StateDep, session: QaSession) -> list[dict[str, Any]]:
    """Every snapshot: id, name, who and when, images, labels, classes, content sha256."""
    with state.db.use() as db:
        return [_snapshot(s) for s in reversed(labeling.list_snapshots(db))]


@router.post("/api/review/snapshots", status_code=201, summary="Create a dataset snapshot (qa)")
def create_snapshot(state: StateDep, session: QaSession, body: SnapshotBody | None = None) -> dict[str, Any]:
    """Freezes the current labels (only reviewed images by default); 422 when nothing matches."""
    body = body or SnapshotBody()
    with state.db.use() as db, labeling_errors():
        snap = labeling.create_snapshot(
            db,
            session.user.username,
            name=body.name or None,
            since=body.since,
            until=body.until,
            only_reviewed=body.only_reviewed,
            class_names=body.class_names if body.class_names is not None else ordered_classes(state, db),
        )
    return _snapshot(snap)


def _download(path: Path, media_type: str, filename: str, work: Path) -> FileResponse:
    return FileResponse(path, media_type=media_type, filename=filename, background=BackgroundTask(remove_tree, work))


@contextlib.contextmanager
def _export_errors(work: Path) -> Iterator[None]:
    """labeling's errors as HTTP answers (409 when image files of the snapshot are gone); the work folder goes on
    error."""
    try:
        with labeling_errors():
            try:
                yield
            except FileNotFoundError as exc:
                raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except BaseException:
        remove_tree(work)
        raise


@contextlib.contextmanager
def _own_db(state: WebState) -> Iterator[Any]:
    """A connection of its own for a long export or import, so other requests do not wait on the shared one."""
    db = open_db(state.station.cfg.store.db_path, migrate=False)
    try:
        yield db
    finally:
        db.close()


@router.get(
    "/api/review/snapshots/{snapshot_id}/yolo",
    summary="Download a snapshot as an Ultralytics YOLO dataset zip (qa)",
    response_class=FileResponse,
    responses={200: {"content": {"application/zip": {}}, "description": "data.yaml, images/, labels/, dataset.json"}},
)
def export_yolo(
    state: StateDep,
    session: QaSession,
    snapshot_id: SnapshotId,
    val_fraction: float = Query(0.2, ge=0, le=0.9, description="Fraction of parts in val (split by part)."),
    split: Literal["time", "group"] = Query(
        "time", description="time: newest parts in val; group: seeded random parts."
    ),
    seed: int = Query(0, ge=0, le=2**31 - 1, description="Seed of the group split."),
) -> FileResponse:
    """Built in a temporary folder next to the image store and streamed; data.yaml has no absolute path (unzip
    anywhere)."""
    work = new_work_dir(state.station.cfg.store.images_dir, "export-yolo-")
    arc = f"snapshot-{snapshot_id}-yolo"
    with _export_errors(work):
        with _own_db(state) as db:
            data_yaml = labeling.export_yolo(
                db, state.station.images, snapshot_id, work / arc, val_fraction, seed, split=split
            )
        portable_data_yaml(data_yaml)
        zipped = zip_folder(work / arc, work / f"{arc}.zip", arc)
    log.info("snapshot %d exported as YOLO for %s", snapshot_id, session.user.username)
    return _download(zipped, "application/zip", f"{arc}.zip", work)


@router.get(
    "/api/review/snapshots/{snapshot_id}/coco",
    summary="Download a snapshot as COCO JSON, or a zip with the images (qa)",
    response_class=FileResponse,
    responses={200: {"content": {"application/json": {}, "application/zip": {}}, "description": "COCO annotations"}},
)
def export_coco(
    state: StateDep,
    session: QaSession,
    snapshot_id: SnapshotId,
    images: bool = Query(False, description="true: a zip with annotations.json and images/ (what the import accepts)."),
) -> FileResponse:
    """COCO detection JSON (CVAT, Label Studio); category ids from 1 in snapshot class order."""
    work = new_work_dir(state.station.cfg.store.images_dir, "export-coco-")
    arc = f"snapshot-{snapshot_id}-coco"
    with _export_errors(work):
        with _own_db(state) as db:
            out = labeling.export_coco(
                db, state.station.images, snapshot_id, work / arc / "annotations.json", copy_images=images
            )
        if images:
            zipped = zip_folder(work / arc, work / f"{arc}.zip", arc)
            return _download(zipped, "application/zip", f"{arc}.zip", work)
    return _download(out, "application/json", f"{arc}.json", work)


# -- import -------------------------------------------------------------------------------------------
_IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "description": "The dataset zip as the raw request body.",
        "content": {
            t: {"schema": {"type": "string", "format": "binary"}}
            for t in ("application/zip", "application/octet-stream")
        },
    }
}


@router.post(
    "/api/review/import",
    summary="Import a YOLO or COCO dataset zip (qa)",
    openapi_extra=_IMPORT_BODY,
    responses={
        400: {"description": "unsafe zip entry"},
        413: {"description": "too large"},
        415: {"description": "not a zip"},
        422: {"description": "invalid dataset"},
        507: {"description": "not enough disk space"},
    },
)
async def import_dataset(
    request: Request,
    state: StateDep,
    session: QaSession,
    format: Literal["yolo", "coco"] = Query(
        ..., description="yolo: a zip with data.yaml, images/, labels/; coco: a zip with one JSON and its images."
    ),  # noqa: A002
    name: str | None = Query(
        None, max_length=80, pattern=r"^[A-Za-z0-9 ._-]*$", description="Dataset name for the audit trail."
    ),
) -> dict[str, Any]:
    """The zip is the request body (``Content-Type: application/zip``).

    Refused before anything is stored: 413 when larger than ``web.max_upload_mb`` (or unpacking
    to more than ``web.max_upload_unpacked_mb``), 415 when it is not a zip, 400 for an unsafe
    entry (absolute name, ``..``, link: zip slip), 422 when the dataset is invalid (the message
    names the file and line). Images already in the database get the imported boxes as their
    labels; new images are stored with a synthetic inspection (see :mod:`labeling.importer`).
    """
    cfg = state.cfg
    limits = Limits(int(cfg.max_upload_mb * 2**20), int(cfg.max_upload_unpacked_mb * 2**20), cfg.max_upload_files)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in ZIP_TYPES:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"send the dataset zip as the body with Content-Type application/zip, not {ctype or 'nothing'!r}",
        )
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limits.max_bytes:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"upload of {int(length) / 2**20:.1f} MB is larger than web.max_upload_mb ({cfg.max_upload_mb:g} MB)",
        )
    work = await run_in_threadpool(new_work_dir, state.station.cfg.store.images_dir, "import-")
    try:
        upload = work / "upload.zip"
        await save_upload(request.stream(), upload, limits)
        label = name or time.strftime("upload-%Y%m%d-%H%M%S", time.gmtime())
        result = await run_in_threadpool(
            _import_zip, state, upload, work / "unpacked", format, label, session.user.username
        )
    except UploadError as exc:
        raise HTTPException(exc.status, clean_message(str(exc), work)) from None
    finally:
        await run_in_threadpool(remove_tree, work)
    return result


def _import_zip(state: WebState, upload: Path, root: Path, fmt: str, name: str, user: str) -> dict[str, Any]:
    cfg = state.cfg
    limits = Limits(int(cfg.max_upload_mb * 2**20), int(cfg.max_upload_unpacked_mb * 2**20), cfg.max_upload_files)
    root.mkdir()
    files = unpack(upload, root, limits)
    try:
        if fmt == "yolo":
            _, items = read_yolo(prepare_yolo(files, root))
        else:
            coco_json, images_dir = prepare_coco(files, root)
            _, items = read_coco(coco_json, images_dir)
        with _own_db(state) as db:
            res = import_images(db, state.station.images, items, user, name=f"upload:{name}")
    except ValueError as exc:
        if isinstance(exc, UploadError):
            raise
        raise UploadError(422, f"the dataset was refused, nothing was imported: {exc}") from None
    log.info("import %s by %s: %d images (%d new), %d labels", name, user, res.n_images, res.n_new, res.n_labels)
    return {
        "name": f"upload:{name}",
        "format": fmt,
        "images": res.n_images,
        "new": res.n_new,
        "existing": res.n_existing,
        "labels": res.n_labels,
        "image_ids": list(res.image_ids[:1000]),
        "parts_created": len(res.part_ids),
    }
