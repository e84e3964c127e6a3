"""Image health and model drift (station/health/): the figures and trends for the health panel, and relearning the
bands."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field

from ..store import audit
from .auth import OperatorSession, ViewerSession
from .state import StateDep

router = APIRouter()


class RelearnBody(BaseModel):
    """Why the image bands are learned again (audit trail)."""

    reason: str = Field(
        ..., min_length=1, max_length=200, description="What changed on purpose, e.g. 'lens replaced', 'new light bar'."
    )


@router.get(
    "/api/health/image", summary="Image health and model drift: bands, alarms, latest figures and trends per camera"
)
def image_health(state: StateDep, _: ViewerSession) -> dict[str, Any]:
    """``{"enabled": false}`` when ``health.enabled`` is off; else per camera its bands, active alarms and the last
    ``health.trend_points`` frames (sharpness, brightness, clipped share, shift in px), and the running model's drift
    figures."""
    health = state.station.image_health
    if health is None:
        return {"enabled": False}
    return health.snapshot()


@router.post("/api/health/relearn", summary="Learn the image bands again from the next frames (operator)")
def relearn(state: StateDep, session: OperatorSession, body: RelearnBody) -> dict[str, Any]:
    """After a deliberate change (lens, light, camera mount): active image alarms clear and the next
    ``health.setup_parts`` frames set the bands."""
    health = state.station.image_health
    if health is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT, "image health is off (set health.enabled: true in the station config)"
        )
    health.relearn()
    with state.db.use() as db:
        audit.record(db, session.user.username, "health_relearn", "health", reason=body.reason.strip())
    return {"relearning": True, "setup_parts": health.cfg.setup_parts}
