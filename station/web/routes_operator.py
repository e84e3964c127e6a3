"""The operator screen and its API: live view, counters, rejects, alarms, pause/resume, trigger, model swap."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from models import registry

from ..store import alarms as alarm_rows
from ..store import audit, queries
from .auth import AdminSession, OperatorSession, ViewerSession, session_of
from .live import EventStream, counters_payload, safe_result_dict, status_payload
from .pages import templates
from .state import PauseInfo, StateDep

log = logging.getLogger(__name__)
router = APIRouter()


class PauseBody(BaseModel):
    """Why the line stops (shown on every screen and kept in the audit trail)."""

    reason: str = Field(
        ..., min_length=1, max_length=200, description="Why the line is paused, e.g. 'material change'."
    )


class ResumeBody(BaseModel):
    """Optional note when the line starts again."""

    reason: str = Field("", max_length=200, description="Optional note for the audit trail.")


class SwapBody(BaseModel):
    """A model from the registry (the ``models`` table), named by its sha256: never a path."""

    sha256: str = Field(..., pattern=r"^[0-9a-fA-F]{64}$", description="sha256 of a registered model file.")
    reason: str = Field("", max_length=200, description="Why the model changes (audit trail).")


# -- pages --------------------------------------------------------------------
@router.get("/", include_in_schema=False)
def operator_screen(request: Request, state: StateDep) -> Response:
    """The line-side operator screen (read-only without login when web.anonymous_view)."""
    if not state.cfg.anonymous_view and session_of(request) is None:
        return RedirectResponse("/login?next=/", status.HTTP_303_SEE_OTHER)
    return templates.TemplateResponse(request, "index.html", {"station": state.station.cfg.name})


# -- read-only live API ---------------------------------------------------------
@router.get("/api/status", summary="Station state for the screen header")
def get_status(state: StateDep, _: ViewerSession) -> dict[str, Any]:
    """Running, paused (by whom and why), model, trigger type, active alarms."""
    return status_payload(state)


@router.get("/api/counters", summary="Counters with yield and parts/min")
def get_counters(state: StateDep, _: ViewerSession) -> dict[str, Any]:
    """The station counters plus ``yield_pct``, ``parts_per_min`` (rolling 60 s) and ``rejects``."""
    return counters_payload(state)


@router.get("/api/result/last", summary="The last part's result")
def last_result(state: StateDep, _: ViewerSession) -> dict[str, Any]:
    """``{"result": ...}`` as sent on the event stream, or ``{"result": null}`` before the first part."""
    r = state.station.last_result
    return {"result": safe_result_dict(r) if r is not None else None}


@router.get("/api/rejects", summary="Recent rejected parts")
def rejects(state: StateDep, _: ViewerSession, limit: int = Query(20, ge=1, le=500)) -> list[dict[str, Any]]:
    """The newest recorded parts whose outcome fires the ejector: part id, time, outcome, reasons."""
    with state.db.use() as db:
        return queries.recent_rejects(db, state.reject_outcomes(), limit)


@router.get("/api/alarms", summary="Active alarms and the alarm log")
def alarms(state: StateDep, _: ViewerSession, limit: int = Query(30, ge=1, le=500)) -> dict[str, Any]:
    """``active``: components not ok now; ``log``: recorded alarms, unacknowledged first, newest first."""
    with state.db.use() as db:
        rows = alarm_rows.alarm_log(db, limit)
        unacked = alarm_rows.unacknowledged_count(db)
    return {"active": status_payload(state)["alarms"], "log": rows, "unacknowledged": unacked}


@router.get("/api/live/image", summary="JPEG of the last part's first frame")
def live_image(state: StateDep, _: ViewerSession, part_id: int | None = Query(None, ge=0, le=2**63 - 1)) -> Response:
    """The downscaled image of ``part_id`` if still cached, else of the newest part (``X-Part-Id`` says which).

    Encoded on demand, at most ``web.live_fps`` new images per second. 404 before the first image.
    """
    img = state.live.get(state.station.last_result, part_id)
    if img is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no image yet")
    exact = part_id is not None and img.part_id == part_id
    return Response(
        img.jpeg,
        media_type="image/jpeg",
        headers={
            "X-Part-Id": str(img.part_id),
            "X-Camera-Id": img.camera_id,
            "X-Frame-Width": str(img.frame_width),
            "X-Frame-Height": str(img.frame_height),
            "Cache-Control": "private, max-age=60" if exact else "no-store",
        },
    )


@router.get(
    "/api/live/heatmap",
    summary="Heat map of a live part (grayscale PNG)",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "0 normal, 128 at the threshold, 255 twice it or more"},
        404: {"description": "No heat map for this part (supervised model, or no longer cached)"},
    },
)
def live_heatmap(state: StateDep, _: ViewerSession, part_id: int = Query(..., ge=0, le=2**63 - 1)) -> Response:
    """The heat map of ``part_id``'s live image (as ``/api/live/image`` served it), at most 256 px a side.

    Covers the whole frame (stretch it over the image). 404 when the part's image is no longer
    cached or its inspector gave no heat map.
    """
    img = state.live.cached(part_id)
    if img is None or img.heatmap_png is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no heat map for part {part_id}")
    return Response(
        img.heatmap_png,
        media_type="image/png",
        headers={"X-Part-Id": str(part_id), "Cache-Control": "private, max-age=60"},
    )


@router.get("/api/events", summary="Server-Sent Events: results, status, counters")
def events(state: StateDep, session: ViewerSession) -> EventStream:
    """``text/event-stream`` with ``hello``, ``result``, ``status`` and ``counters`` events (see live.EventStream).

    503 when ``web.max_live_clients`` screens are already connected.
    """
    if not state.client_opened():
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"{state.cfg.max_live_clients} live screens already connected",
            headers={"Retry-After": "5"},
        )
    return EventStream(state, until_wall=session.expires_at if session is not None else None)


# -- writes (login + role + CSRF) ----------------------------------------------------
@router.post("/api/alarms/{alarm_id}/ack", summary="Acknowledge one alarm (operator)")
def ack_alarm(
    state: StateDep, session: OperatorSession, alarm_id: int = PathParam(..., ge=1, le=2**63 - 1)
) -> dict[str, Any]:
    """404 unknown alarm, 409 already acknowledged (the answer says by whom)."""
    user, now = session.user.username, time.time()
    with state.db.use() as db:
        row = alarm_rows.get_alarm(db, alarm_id)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no alarm {alarm_id}")
        if row["acknowledged_by"] is not None:
            raise HTTPException(
                status.HTTP_409_CONFLICT, f"alarm {alarm_id} was already acknowledged by {row['acknowledged_by']}"
            )
        alarm_rows.acknowledge(db, alarm_id, user, now)
        audit.record(db, user, "alarm_ack", "alarm", alarm_id, reason=f"{row['component']}: {row['message']}")
    return {"id": alarm_id, "acknowledged_by": user, "acknowledged_at": now}


@router.post("/api/alarms/ack-all", summary="Acknowledge every open alarm (operator)")
def ack_all(state: StateDep, session: OperatorSession) -> dict[str, Any]:
    """Acknowledges every alarm recorded so far; returns how many."""
    user, now = session.user.username, time.time()
    with state.db.use() as db:
        n = alarm_rows.acknowledge_all(db, user, now)
        if n:
            audit.record(db, user, "alarm_ack_all", "alarm", reason=f"{n} alarms")
    return {"acknowledged": n, "acknowledged_by": user, "acknowledged_at": now}


@router.post("/api/line/pause", summary="Pause the line (operator)")
def pause(state: StateDep, session: OperatorSession, body: PauseBody) -> dict[str, Any]:
    """Stop accepting triggers (parts in flight finish); the reason is shown on every screen."""
    reason = body.reason.strip()
    if not reason:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "reason must not be blank")
    state.pause = PauseInfo(session.user.username, reason, time.time())
    state.station.pause(True)
    with state.db.use() as db:
        audit.record(db, session.user.username, "pause", "line", state.station.cfg.name, reason=reason)
    return status_payload(state)


@router.post("/api/line/resume", summary="Resume the line (operator)")
def resume(state: StateDep, session: OperatorSession, body: ResumeBody | None = None) -> dict[str, Any]:
    """Accept triggers again."""
    state.station.pause(False)
    state.pause = None
    with state.db.use() as db:
        audit.record(
            db,
            session.user.username,
            "resume",
            "line",
            state.station.cfg.name,
            reason=(body.reason if body else "") or None,
        )
    return status_payload(state)


@router.post("/api/trigger", summary="Software trigger: inspect one part now (operator)")
def trigger(state: StateDep, session: OperatorSession) -> dict[str, Any]:
    """409 when the line is paused or not running."""
    t = state.station.trigger("api")
    if t is None:
        raise HTTPException(status.HTTP_409_CONFLICT, "the line is paused or not running: resume it first")
    return {"part_id": t.part_id, "seq": t.seq, "t_trigger_wall": t.t_trigger_wall}


@router.post("/api/model/swap", status_code=202, summary="Hot-swap the model (admin)")
def swap_model(state: StateDep, session: AdminSession, body: SwapBody) -> dict[str, Any]:
    """Load a registered model in the background and swap it in between two parts.

    The model is named by its sha256 in the registry; the path comes from the
    database, never from the client. 404 unknown model, 409 when this station
    cannot swap (not an onnx inspector). The outcome is reported as the
    ``model`` alarm component (and in the audit trail).
    """
    sha = body.sha256.lower()
    user = session.user.username
    with state.db.use() as db:
        try:
            model_path = registry.get(db, sha).path
        except registry.RegistryError:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no registered model with sha256 {sha}") from None
    before = state.station.inspector.model_id
    try:
        state.station.swap_model(model_path, user=user, reason=body.reason or None, sha256=sha)
    except ValueError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    with state.db.use() as db:
        audit.record(db, user, "model_swap_requested", "model", sha, before=before, reason=body.reason or None)
    return {"sha256": sha, "status": "loading", "current_model_id": before}
