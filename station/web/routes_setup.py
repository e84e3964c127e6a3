"""The camera setup page and its API: calibration from uploaded board views, regions drawn on a reference image.

Roles: reading needs a login (``viewer`` for the regions the operator screen draws, ``qa`` for the
histories); calibrating, saving regions and rolling back need ``admin`` (they change what the line
rejects). Images come as uploads (base64 in JSON) or from the running line's last frame: never a path.
The work is in :mod:`calibration` and :mod:`station.camera_setup`; SQL in :mod:`station.store.camera_setup`.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Annotated, Any, Literal

import cv2
import numpy as np
from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from .. import camera_setup
from ..config.regions import CameraRegions
from ..store import camera_setup as store
from .auth import AdminSession, QaSession, ViewerSession, session_of
from .pages import denied, templates
from .state import StateDep, WebState

log = logging.getLogger(__name__)
router = APIRouter(tags=["setup"])

CameraId = Annotated[str, PathParam(pattern=r"^[\w.-]{1,64}$", description="Camera id from the station config.")]
Reason = Annotated[str, Field("", max_length=300, description="Why (kept with the version and in the audit trail).")]
Kind = Literal["calibration", "regions"]


def _camera(state: WebState, camera_id: str) -> str:
    ids = [c.id for c in state.station.cfg.cameras]
    if camera_id not in ids:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"camera {camera_id}: not a camera of this station (cameras: {', '.join(ids)})"
        )
    return camera_id


def _apply(state: WebState) -> None:
    """The line judges its next parts by what is now in force."""
    st = state.station
    with state.db.use() as db:
        setup = camera_setup.load(db, st.cfg.name, [c.id for c in st.cfg.cameras])
    st.set_camera_setup(setup)


class RegionsBody(BaseModel):
    """What was drawn on one camera's reference image."""

    regions: CameraRegions = Field(..., description="ROI, ignore zones and named regions (frame pixels).")
    reason: Reason


class View(BaseModel):
    """One uploaded board view."""

    name: str = Field(
        ..., min_length=1, max_length=120, pattern=r"^[\w .()-]+$", description="File name (shown in the report)."
    )
    data: str = Field(..., max_length=24_000_000, description="The image file (PNG, JPEG, BMP, TIFF), base64-encoded.")


class CalibrateBody(BaseModel):
    """Board views and the board: the first view (or ``plane_view``) lies on the inspection plane."""

    views: list[View] = Field(..., min_length=1, max_length=60, description="Board views (at most 60).")
    target: Literal["chessboard", "charuco"] = Field("chessboard", description="Board kind.")
    cols: int = Field(..., ge=2, le=100, description="Chessboard: inner corners across; ChArUco: squares across.")
    rows: int = Field(..., ge=2, le=100, description="Chessboard: inner corners down; ChArUco: squares down.")
    square_mm: float = Field(..., gt=0, le=1000, description="Square size in mm.")
    marker_mm: float | None = Field(None, gt=0, le=1000, description="ChArUco marker size in mm.")
    dictionary: str = Field("5x5_100", max_length=20, description="ChArUco ArUco dictionary.")
    plane_view: int = Field(
        0, ge=0, le=59, description="Index of the view with the board lying where parts pass (gives mm per pixel)."
    )
    reason: Reason


class RollbackBody(BaseModel):
    """An older version back in force."""

    version: int = Field(..., ge=1, le=2**31, description="Version to put back in force.")
    reason: Reason


# -- page ---------------------------------------------------------------------------------------
@router.get("/setup", include_in_schema=False)
def setup_page(request: Request, state: StateDep) -> Response:
    """Calibration and regions of each camera (admin)."""
    s = session_of(request)
    if s is None:
        return RedirectResponse("/login?next=/setup", status.HTTP_303_SEE_OTHER)
    if not s.user.has("admin"):
        return denied(request, s, area="camera setup", needed="admin", why="it changes what the line rejects")
    return templates.TemplateResponse(request, "setup.html", {"station": state.station.cfg.name})


# -- read ---------------------------------------------------------------------------------------
@router.get("/api/setup", summary="Calibration and regions in force per camera")
def setup_in_force(state: StateDep, _: ViewerSession) -> dict[str, Any]:
    """For each camera: the calibration and regions the line judges by (the operator screen draws the regions)."""
    st = state.station
    setup = st.decider.setup
    return {
        "cameras": [
            setup[c.id].as_dict() if c.id in setup else camera_setup.CameraSetup(c.id).as_dict() for c in st.cfg.cameras
        ]
    }


@router.get("/api/setup/{camera_id}/{kind}/history", summary="Versions of a camera's calibration or regions")
def setup_history(state: StateDep, _: QaSession, camera_id: CameraId, kind: Kind) -> dict[str, Any]:
    """Every version, newest first, and which is in force."""
    _camera(state, camera_id)
    with state.db.use() as db:
        cur = store.in_force(db, kind, state.station.cfg.name, camera_id)
        rows = store.history(db, kind, state.station.cfg.name, camera_id)
    return {"in_force": cur.version if cur else None, "versions": [r.as_dict() for r in rows]}


@router.get("/api/setup/{camera_id}/reference.jpg", summary="The reference image to draw on: the camera's last frame")
def reference_image(state: StateDep, _: QaSession, camera_id: CameraId) -> Response:
    """The camera's frame of the last part, full size, else its newest stored image (``X-Frame-Width``/``-Height``);
    404 when neither."""
    _camera(state, camera_id)
    last = state.station.last_result
    frame = next((f for f in (last.frames if last else ()) if f.camera_id == camera_id), None)
    data: bytes | None
    if frame is not None:
        ok, buf = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:
            raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR, "the frame could not be encoded")
        data, media, (h, w) = buf.tobytes(), "image/jpeg", frame.image.shape[:2]
    else:
        with state.db.use() as db:
            stored = store.newest_image(db, camera_id)
        data = _stored_bytes(state, stored)
        if stored is None or data is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, f"no frame from {camera_id} yet: trigger a part, then reload"
            )
        media, w, h = "image/png" if stored[1] == "png" else "image/jpeg", stored[2], stored[3]
    return Response(
        data, media_type=media, headers={"X-Frame-Width": str(w), "X-Frame-Height": str(h), "Cache-Control": "no-store"}
    )


def _stored_bytes(state: WebState, stored: tuple[str, str, int, int] | None) -> bytes | None:
    """The file of a stored image (by its sha256, through the image store), or None when there is none or it is gone."""
    if stored is None:
        return None
    try:
        return state.station.images.open_path(stored[0], stored[1]).read_bytes()
    except FileNotFoundError:
        return None


# -- write (admin) ------------------------------------------------------------------------------
@router.post("/api/setup/{camera_id}/regions", summary="Save drawn regions as the camera's new version (admin)")
def save_regions(state: StateDep, session: AdminSession, camera_id: CameraId, body: RegionsBody) -> dict[str, Any]:
    """Stored versioned and audited; the line judges its next part by them."""
    _camera(state, camera_id)
    with state.db.use() as db:
        v = camera_setup.save_regions(
            db, state.station.cfg.name, camera_id, body.regions, user=session.user.username, reason=body.reason or None
        )
    _apply(state)
    log.info("regions of %s: version %d saved by %s", camera_id, v.version, session.user.username)
    return v.as_dict()


@router.post(
    "/api/setup/{camera_id}/{kind}/rollback",
    summary="Put an older calibration or regions version back in force (admin)",
)
def rollback(
    state: StateDep, session: AdminSession, camera_id: CameraId, kind: Kind, body: RollbackBody
) -> dict[str, Any]:
    """Audited; the line judges its next part by it."""
    _camera(state, camera_id)
    try:
        with state.db.use() as db:
            v = store.rollback(
                db,
                kind,
                state.station.cfg.name,
                camera_id,
                body.version,
                user=session.user.username,
                reason=body.reason or None,
            )
    except store.SetupError as e:
        raise HTTPException(status.HTTP_409_CONFLICT, str(e)) from None
    _apply(state)
    return v.as_dict()


def _decode(views: list[View]) -> list[tuple[str, np.ndarray]]:
    out = []
    for i, v in enumerate(views):
        try:
            raw = base64.b64decode(v.data, validate=True)
        except (binascii.Error, ValueError):
            raise HTTPException(422, f"views[{i}] ({v.name}): not base64") from None
        img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise HTTPException(422, f"views[{i}] ({v.name}): not an image OpenCV can read (PNG, JPEG, BMP, TIFF)")
        out.append((v.name, img))
    return out


@router.post("/api/setup/{camera_id}/calibration", summary="Calibrate from uploaded board views (admin)")
async def calibrate(state: StateDep, session: AdminSession, camera_id: CameraId, body: CalibrateBody) -> dict[str, Any]:
    """Intrinsics, distortion, mm per pixel; 422 with the reasons when refused; else the camera's new version, in
    force."""
    from calibration.camera import CalibrationRefused, Limits, calibrate_camera
    from calibration.records import record
    from calibration.targets import Target

    _camera(state, camera_id)
    try:
        target = Target(body.target, body.cols, body.rows, body.square_mm, body.marker_mm, body.dictionary)
    except ValueError as e:
        raise HTTPException(422, f"target: {e}") from None
    views = _decode(body.views)
    limits = Limits(**state.station.cfg.calibration.limits.model_dump())
    try:
        cal = await run_in_threadpool(calibrate_camera, views, target, limits, body.plane_view)
    except CalibrationRefused as e:
        raise HTTPException(
            422,
            {
                "message": "calibration refused",
                "reasons": e.reasons,
                "views": [{"name": v.name, "used": v.used, "reason": v.reason} for v in e.views],
            },
        ) from None

    def store_it() -> store.SetupVersion:
        with state.db.use() as db:
            return record(
                db, state.station.cfg.name, camera_id, cal, user=session.user.username, reason=body.reason or None
            )

    v = await run_in_threadpool(store_it)
    await run_in_threadpool(_apply, state)
    return v.as_dict()
