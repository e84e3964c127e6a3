"""What the web app keeps between requests: its own database connection, live caches, limits."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

import sqlite_utils
from fastapi import Depends, Request

from ..config import WebConfig
from ..store.db import open_db
from .auth import LoginLimiter
from .live import LiveImages, RateMeter
from .metrics import build_registry

if TYPE_CHECKING:
    from models.service import ModelsService

    from ..app import Station

log = logging.getLogger(__name__)


@dataclass
class PauseInfo:
    """Who paused the line, when and why (shown on every screen)."""

    by: str
    reason: str
    t_wall: float


class WebDB:
    """One connection of the web app to the station database, used by one thread at a time.

    The station's own connection belongs to the thread that built it, and the
    recorder has its own; request handlers run in a thread pool, so they share
    this connection under a lock. ``synchronous=NORMAL`` is enough: the web
    writes only users, sessions, audit rows and acknowledgements.
    """

    def __init__(self, path: str) -> None:
        self._db = open_db(path, synchronous="NORMAL", migrate=False, check_same_thread=False)
        self._lock = threading.Lock()
        self._closed = False

    @contextlib.contextmanager
    def use(self) -> Iterator[sqlite_utils.Database]:
        """The connection, held exclusively for the ``with`` block."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the web app's database connection is closed")
            yield self._db

    def close(self) -> None:
        """Close the connection (app shutdown)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()


class WebState:
    """Everything the routes share; one per app."""

    def __init__(self, station: Station, cfg: WebConfig) -> None:
        self.station = station
        self.cfg = cfg
        self.db = WebDB(str(station.cfg.store.db_path))
        self.limiter = LoginLimiter(cfg.login_max_failures, cfg.login_window_s)
        self.live = LiveImages(cfg.live_fps, cfg.live_width, cfg.live_jpeg_quality)
        self.rate = RateMeter(window_s=60.0)
        self.pause: PauseInfo | None = None
        self.models: ModelsService | None = None  # made by the models routes on first use
        self.started_wall = time.time()
        self.sse_clients = 0
        self.sse_dropped = 0  # events missed by live clients (cumulative, also of clients gone)
        self._lock = threading.Lock()
        self._client_seq = 0
        self.metrics_registry = build_registry(self)  # /metrics: this app's own Prometheus registry

    def next_client_name(self) -> str:
        """A unique bus subscriber name for a new live client."""
        with self._lock:
            self._client_seq += 1
            return f"web-live-{self._client_seq}"

    def client_opened(self) -> bool:
        """Count a new live client; False (not counted) when ``web.max_live_clients`` are already connected."""
        with self._lock:
            if self.sse_clients >= self.cfg.max_live_clients:
                return False
            self.sse_clients += 1
            return True

    def client_closed(self, dropped: int) -> None:
        """Count a disconnected live client and the events it missed."""
        with self._lock:
            self.sse_clients -= 1
            self.sse_dropped += dropped

    def live_clients(self) -> tuple[int, int]:
        """(connected live clients, events missed by clients already gone)."""
        with self._lock:
            return self.sse_clients, self.sse_dropped

    def reject_outcomes(self) -> tuple[str, ...]:
        """The outcomes that fire the ejector on this station."""
        extra = ("UNCERTAIN",) if self.station.cfg.rules.uncertain_action == "reject" else ()
        return ("FAIL", "FAILSAFE", *extra)


def web_state(request: Request) -> WebState:
    """The app's :class:`WebState` (usable as a FastAPI dependency: ``state: StateDep``)."""
    state: WebState = request.app.state.web
    return state


StateDep = Annotated[WebState, Depends(web_state)]
