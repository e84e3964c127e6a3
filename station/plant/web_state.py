"""What the plant dashboard's routes share: the app state (PostgreSQL, the object store, NATS, the users
file) and the typed dependencies: ``PlantDep`` (the state), ``Reader`` (any logged-in user),
``PlantAdmin`` and ``QualityLead`` (the plant roles, :mod:`station.store.plant_roles`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Request

from ..config import WebConfig
from ..store import plant_db, plant_roles
from ..store.db import open_db
from ..web import auth
from ..web.auth import LoginLimiter
from ..web.state import WebDB

Reader = auth.OperatorSession  # every logged-in user reads the dashboard

T = TypeVar("T")


@dataclass(frozen=True)
class _Named:
    name: str


@dataclass(frozen=True)
class _Owner:
    """What the station's login routes read of ``state.station``: the name on the login page."""

    cfg: _Named


class PlantWebState:
    """What the routes share (the shape :mod:`station.web.routes_auth` expects: db, cfg, limiter, station)."""

    def __init__(self, *, dsn: str, users_db: Path, s3: Any, bucket: str, nats_url: str, prefix: str, cfg: WebConfig):
        self.cfg = cfg
        first = open_db(users_db)  # the station's schema (users, sessions, audit): migrated once here
        try:
            plant_roles.ensure_table(first)
        finally:
            first.close()
        self.db = WebDB(str(users_db))
        self.limiter = LoginLimiter(cfg.login_max_failures, cfg.login_window_s)
        self.station = _Owner(_Named("plant"))
        self.dsn = dsn
        self.s3 = s3
        self.bucket = bucket
        self.nats_url = nats_url
        self.prefix = prefix
        self._pg_lock = threading.Lock()
        self._pg: Any = None

    def query(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """``fn(conn, ...)`` on the one PostgreSQL connection of the app (autocommit reads, one request at a time)."""
        import psycopg

        with self._pg_lock:
            if self._pg is None or self._pg.closed:
                self._pg = psycopg.connect(self.dsn, autocommit=True)
                plant_db.create_schema(self._pg)  # an empty plant shows empty tables, not errors
            try:
                return fn(self._pg, *args, **kw)
            except ValueError as exc:
                raise HTTPException(422, str(exc)) from None

    def close(self) -> None:
        self.db.close()
        if self._pg is not None:
            self._pg.close()


def plant_state(request: Request) -> PlantWebState:
    """The app's :class:`PlantWebState` (a FastAPI dependency: ``state: PlantDep``)."""
    state: PlantWebState = request.app.state.web
    return state


PlantDep = Annotated[PlantWebState, Depends(plant_state)]


def plant_role(role: str) -> Callable[..., auth.Session]:
    """A route dependency: a logged-in user (CSRF checked on writes) holding plant role ``role`` or above."""
    if role not in plant_roles.PLANT_ROLES:
        raise ValueError(f"unknown plant role {role!r}")

    def dependency(state: PlantDep, s: auth.OperatorSession) -> auth.Session:
        with state.db.use() as db:
            have = plant_roles.role_of(db, s.user.username)
        if have is None or plant_roles.PLANT_ROLES.index(have) < plant_roles.PLANT_ROLES.index(role):
            raise HTTPException(403, f"needs plant role {role}; {s.user.username} has {have or 'none'}")
        return s

    dependency.required_role = role  # type: ignore[attr-defined]  # read by tests that audit every write route
    dependency.__name__ = f"require_plant_{role}"
    return dependency


PlantAdmin = Annotated[auth.Session, Depends(plant_role("plant_admin"))]
QualityLead = Annotated[auth.Session, Depends(plant_role("quality_lead"))]
