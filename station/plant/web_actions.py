"""The plant dashboard's writes: pin, unpin, rollback, promote (``plant_admin``), dataset snapshots (``quality_lead``).

Training runs on the training host (``plant train``, a GPU server), not in the web server.

Reading the dashboard needs any login; writing needs a **plant role** granted on the dashboard's
users file (:mod:`station.store.plant_roles`, ``plant role grant USER ROLE``): a station role,
even ``admin``, is not enough. The login, session and CSRF checks are the station's own
(:func:`station.web.auth.require`), and each write leaves a row in the users file's audit trail.
Every route is thin: it calls the code the ``plant`` command line calls.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from ..store import audit, plant_labels, plant_models
from ..web import auth
from . import datasets
from .controller import Limits, RolloutController
from .desired import desired_now, pin_station, rollback, unpin_station
from .web_state import PlantAdmin, PlantDep, PlantWebState, QualityLead, Reader

log = logging.getLogger(__name__)
router = APIRouter()
_NAME = r"^[A-Za-z0-9_.-]{1,64}$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PinBody(_Body):
    """Pin one station to a registered model."""

    station: str = Field(..., pattern=_NAME, description="Station name.")
    model: str = Field(..., min_length=8, max_length=64, description="sha256 of a registered model (8+ hex digits).")


class UnpinBody(_Body):
    """Let a pinned station follow its group again."""

    station: str = Field(..., pattern=_NAME, description="Station name.")


class RollbackBody(_Body):
    """Roll a group back to its previous desired model."""

    group: str = Field(..., pattern=_NAME, description="Station group.")


class PromoteBody(_Body):
    """Roll a registered model out, group by group (the first is the canary)."""

    model: str = Field(..., min_length=8, max_length=64, description="sha256 of a registered model (8+ hex digits).")
    groups: list[str] = Field(..., min_length=1, max_length=32, description="Station groups in rollout order.")
    min_parts: int = Field(200, ge=1, description="Parts per group under the new model before judging it.")
    max_reject_rate: float = Field(0.05, ge=0, le=1, description="Largest reject rate (not PASS) allowed.")
    max_failsafe_rate: float = Field(0.005, ge=0, le=1, description="Largest FAILSAFE rate allowed.")
    max_latency_ms: float = Field(200.0, gt=0, description="Largest p95 latency allowed, ms.")
    timeout_s: float = Field(3600.0, gt=0, description="Seconds a group may take to show min_parts parts.")


class SnapshotBody(_Body):
    """Freeze a dataset snapshot from the plant's QA labels."""

    stations: list[str] = Field(..., min_length=1, max_length=256, description="Station names.")
    name: str = Field(..., min_length=1, max_length=128, description="A name for people (the id is the content hash).")
    since: dt.datetime | None = Field(None, description="Labels reviewed from this time (ISO 8601, with zone).")
    until: dt.datetime | None = Field(None, description="Labels reviewed before this time (ISO 8601, with zone).")


def _record(state: PlantWebState, s: auth.Session, action: str, object_type: str, object_id: str, after: Any) -> None:
    with state.db.use() as db:
        audit.record(db, s.user.username, action, object_type, object_id, after=after)


def _nats(fn: Callable[[], Any]) -> Any:
    """Run a desired-bucket call; NATS unreachable is a 503, a refused value a 422."""
    import nats.errors

    try:
        return fn()
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        raise HTTPException(503, f"NATS unreachable: {exc}") from None


@router.get("/api/plant/desired", summary="Each group's desired model and each station's pin")
def desired(state: PlantDep, _s: Reader) -> dict[str, Any]:
    now: dict[str, Any] = _nats(lambda: desired_now(state.nats_url, state.prefix))
    return now


@router.get("/api/plant/models", summary="The central model registry, with lineage")
def models(state: PlantDep, _s: Reader) -> list[dict[str, Any]]:
    return state.query(plant_models.models)


@router.post("/api/plant/pin", summary="Pin a station to a registered model (plant_admin)")
def pin(state: PlantDep, body: PinBody, s: PlantAdmin) -> dict[str, Any]:
    model = _nats(
        lambda: state.query(lambda conn: pin_station(conn, state.nats_url, state.prefix, body.station, body.model))
    )
    _record(state, s, "plant.pin", "station", body.station, dataclasses.asdict(model))
    return {"station": body.station, "pinned": dataclasses.asdict(model)}


@router.post("/api/plant/unpin", summary="A pinned station follows its group again (plant_admin)")
def unpin(state: PlantDep, body: UnpinBody, s: PlantAdmin) -> dict[str, Any]:
    had = _nats(lambda: unpin_station(state.nats_url, state.prefix, body.station))
    _record(state, s, "plant.unpin", "station", body.station, {"had_pin": had})
    return {"station": body.station, "unpinned": had}


@router.post("/api/plant/rollback", summary="Write a group's previous desired model back (plant_admin)")
def rollback_(state: PlantDep, body: RollbackBody, s: PlantAdmin) -> dict[str, Any]:
    now = _nats(lambda: rollback(state.nats_url, state.prefix, body.group))
    after = None if now is None else dataclasses.asdict(now)
    _record(state, s, "plant.rollback", "group", body.group, after)
    return {"group": body.group, "desired": after}


@router.post(
    "/api/plant/promote", status_code=202, summary="Start a staged rollout of a registered model (plant_admin)"
)
def promote(state: PlantDep, body: PromoteBody, s: PlantAdmin) -> dict[str, Any]:
    import psycopg

    m = state.query(plant_models.find_model, body.model)  # 422 before anything starts
    limits = Limits(body.min_parts, body.max_reject_rate, body.max_failsafe_rate, body.max_latency_ms, body.timeout_s)

    def run() -> None:  # a rollout takes minutes to hours: its own thread and connection; the record is in rollouts
        try:
            with psycopg.connect(state.dsn) as conn:
                res = RolloutController(
                    conn, state.nats_url, state.s3, state.bucket, prefix=state.prefix
                ).promote_registered(m["sha256"], body.groups, limits)
            log.info("rollout of %s from the dashboard: %s", m["sha256"][:12], res["state"])
        except (OSError, ValueError, psycopg.Error) as exc:
            log.error("rollout of %s from the dashboard failed: %s", m["sha256"][:12], exc)

    threading.Thread(target=run, name=f"plant-promote-{m['sha256'][:12]}", daemon=True).start()
    _record(state, s, "plant.promote", "model", m["sha256"], {"groups": body.groups, **dataclasses.asdict(limits)})
    return {"model": m["sha256"], "version": m["version"], "groups": body.groups, "state": "started"}


@router.get("/api/plant/snapshots", summary="Dataset snapshots across stations, newest first")
def snapshots(state: PlantDep, _s: Reader) -> list[dict[str, Any]]:
    return state.query(plant_labels.snapshots)


@router.post("/api/plant/snapshot", summary="Freeze a dataset snapshot across stations (quality_lead)")
def snapshot(state: PlantDep, body: SnapshotBody, s: QualityLead) -> dict[str, Any]:
    row = state.query(
        lambda conn: datasets.snapshot(
            conn,
            state.s3,
            state.bucket,
            body.stations,
            body.name,
            since=body.since,
            until=body.until,
            created_by=s.user.username,
        )
    )
    _record(state, s, "plant.snapshot", "dataset_snapshot", row["id"], {"stations": row["stations"], "name": body.name})
    return row
