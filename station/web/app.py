"""``create_app(station)``: the FastAPI app of one station."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from ..config import WebConfig
from . import auth
from .routes_auth import router as auth_router
from .routes_dataset import router as dataset_router
from .routes_health import router as health_router
from .routes_models import router as models_router
from .routes_operator import router as operator_router
from .routes_review import router as review_router
from .routes_setup import router as setup_router
from .routes_stats import router as stats_router
from .routes_system import router as system_router
from .security import SecurityMiddleware
from .state import WebState

if TYPE_CHECKING:
    from ..app import Station

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
VENDOR = Path(__file__).parent / "vendor"  # third-party browser libraries, as published (vendor/*/README.md)


def create_app(station: Station, web_cfg: WebConfig | None = None, *, bootstrap_admin: bool = True) -> FastAPI:
    """The web app serving ``station``: operator screen, REST API, live events, /health, /metrics.

    ``web_cfg`` defaults to ``station.cfg.web``. The app opens its own
    connection to the station database (closed at shutdown). With
    ``bootstrap_admin`` and no admin user yet, user ``admin`` is created with a
    random password printed once on stdout.
    """
    cfg = web_cfg or station.cfg.web
    state = WebState(station, cfg)
    if bootstrap_admin:
        with state.db.use() as db:
            auth.ensure_admin(db)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            state.db.close()

    app = FastAPI(
        title=f"Inspection station {station.cfg.name}",
        version="1",
        docs_url=None,  # Swagger UI would load scripts from a CDN; /openapi.json stays
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.web = state
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(OverflowError, _out_of_range)
    app.add_middleware(SecurityMiddleware, state=state)
    app.include_router(auth_router)
    app.include_router(operator_router)
    app.include_router(system_router)
    app.include_router(review_router)
    app.include_router(dataset_router)
    app.include_router(stats_router)
    app.include_router(models_router)
    app.include_router(setup_router)
    app.include_router(health_router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/vendor", StaticFiles(directory=VENDOR), name="vendor")
    return app


async def _out_of_range(request: Request, exc: Exception) -> JSONResponse:
    """422 for an integer parameter beyond SQLite's 64-bit range (sqlite3 raises OverflowError), not a 500."""
    log.info("%s %s: number out of range (%s)", request.method, request.url.path, exc)
    return JSONResponse(
        {"detail": f"a number in the request is out of range ({exc}): ids are 64-bit integers"}, status_code=422
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 naming each bad field, without echoing the submitted values (they may be passwords)."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in errors]
    return JSONResponse({"detail": detail}, status_code=422)
