"""``plant web``: the plant dashboard (FastAPI), with the station's login, sessions, CSRF and roles.

Users and sessions live in a SQLite file of their own (the station's schema and
:mod:`station.web.auth`, so ``station user`` style management and the same
login page apply); the data comes from PostgreSQL (:mod:`station.store.plant_db`),
station state from the NATS status bucket, images from S3. Roles: every
logged-in user (``operator`` and above) reads the dashboard; writes (pin,
rollback, promote, dataset snapshots) need a plant role
(:mod:`station.plant.web_actions`).

Routes: ``/`` (the page), ``/api/plant/yield``, ``/api/plant/pareto``,
``/api/plant/stations``, ``/api/plant/parts``, ``/api/plant/image/{key}``,
plus the station's ``/login``, ``/api/login``, ``/api/me``, ``/api/logout``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from ..store import plant_db, plant_roles
from ..web import auth
from ..web.pages import templates
from ..web.routes_auth import router as auth_router
from ..web.security import SecurityMiddleware
from . import web_actions, wire
from .web_state import PlantDep, PlantWebState, Reader

STATIC = Path(__file__).parent / "static"
_IMAGE_KEY = re.compile(r"^images/[0-9a-f]{64}\.jpg$")
router = APIRouter()


def _range(days: float) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    return now - dt.timedelta(days=days), now + dt.timedelta(hours=1)


@router.get("/", include_in_schema=False)
def page(request: Request) -> Response:
    if auth.session_of(request) is None:
        return RedirectResponse("/login?next=/", status_code=303)
    return templates.TemplateResponse(request, "plant.html", {})


@router.get("/api/plant/yield", summary="Yield per line, station, shift or product (from the rollups)")
def yield_(
    state: PlantDep, _s: Reader, by: str = "line", days: float = Query(7.0, gt=0, le=3660)
) -> list[dict[str, Any]]:
    return state.query(plant_db.yield_by, by, *_range(days))


@router.get("/api/plant/pareto", summary="Defect Pareto, overall or for one line/station/shift/product")
def pareto(
    state: PlantDep, _s: Reader, by: str = "line", key: str | None = None, days: float = Query(7.0, gt=0, le=3660)
) -> list[dict[str, Any]]:
    return state.query(plant_db.pareto, by, key, *_range(days))


@router.get("/api/plant/parts", summary="The newest parts (drill down: each lists its image keys)")
def parts(
    state: PlantDep,
    _s: Reader,
    station: str | None = None,
    outcome: str | None = None,
    limit: int = Query(50, ge=1, le=1000),
) -> list[dict[str, Any]]:
    return state.query(plant_db.parts, station=station, outcome=outcome, limit=limit)


@router.get("/api/plant/stations", summary="Every station: last seen, model, outbox depth, alarms")
async def stations(state: PlantDep, _s: Reader) -> list[dict[str, Any]]:
    rows = await run_in_threadpool(state.query, plant_db.stations)
    status = await _status(state)
    for r in rows:
        r["status"] = status.pop(r["station_id"], None)
    rows += [
        {
            "station_id": k,
            "line": v.get("line", ""),
            "last_seen": None,
            "last_t": None,
            "model_id": v.get("model_id", ""),
            "status": v,
        }
        for k, v in status.items()
    ]
    return rows


async def _status(state: PlantWebState) -> dict[str, dict[str, Any]]:
    import nats
    import nats.errors

    try:
        nc = await asyncio.wait_for(
            nats.connect(state.nats_url, connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=1), 3
        )
    except (TimeoutError, OSError, nats.errors.Error):
        return {}  # NATS away: the table from PostgreSQL alone
    try:
        kv = await wire.status_bucket(nc.jetstream(timeout=2), state.prefix)
        out = {}
        try:
            keys = await kv.keys()
        except nats.js.errors.NoKeysError:
            return {}
        for k in keys:
            out[k] = json.loads((await kv.get(k)).value)
        return out
    finally:
        await nc.close()


@router.get("/api/plant/image/{key:path}", summary="A part's image from the object store")
def image(state: PlantDep, _s: Reader, key: str) -> Response:
    from botocore.exceptions import ClientError

    if not _IMAGE_KEY.match(key):
        raise HTTPException(422, "key must be images/<sha256>.jpg (from a part's images list)")
    try:
        body = state.s3.get_object(Bucket=state.bucket, Key=key)["Body"].read()
    except ClientError:
        raise HTTPException(404, f"no image {key} in bucket {state.bucket}") from None
    return Response(
        body, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"}
    )  # content-addressed: never changes


def create_plant_app(state: PlantWebState, *, bootstrap_admin: bool = True) -> FastAPI:
    """The dashboard app; with ``bootstrap_admin`` and no admin yet, user ``admin`` gets a random password printed once.

    A user ``admin`` created so is also the first ``plant_admin`` (it grants the others: ``plant role grant``).
    """
    if bootstrap_admin:
        with state.db.use() as db:
            if auth.ensure_admin(db) is not None and not plant_roles.has_role(db, "plant_admin"):
                plant_roles.grant(db, "admin", "plant_admin", granted_by="first start")
    app = FastAPI(title="Plant dashboard", version="1", docs_url=None, redoc_url=None)
    app.state.web = state
    app.add_middleware(SecurityMiddleware, state=state)  # type: ignore[arg-type]
    app.include_router(auth_router)
    app.include_router(router)
    app.include_router(web_actions.router)
    app.mount("/plant-static", StaticFiles(directory=STATIC), name="plant-static")
    app.mount(
        "/static", StaticFiles(directory=Path(__file__).parents[1] / "web" / "static"), name="static"
    )  # the login page's assets
    return app


def build_server(state: PlantWebState, host: str = "127.0.0.1", port: int = 8090) -> tuple[Any, Any]:
    """(uvicorn server, bound socket) for the dashboard; run with ``server.run(sockets=[sock])``."""
    import uvicorn

    from ..web.server import bind

    server = uvicorn.Server(
        uvicorn.Config(create_plant_app(state), host=host, port=port, log_level="warning", server_header=False)
    )
    return server, bind(host, port)
