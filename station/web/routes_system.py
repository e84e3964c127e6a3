"""/health and /metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse

from .auth import ViewerSession, session_of
from .live import settled_reconcile
from .metrics import CONTENT_TYPE, render_metrics
from .state import StateDep

router = APIRouter()


@router.get("/health", summary="Health of every component and the counter reconciliation")
def health(state: StateDep, _: ViewerSession) -> JSONResponse:
    """``station.health()`` plus ``reconcile`` (counter invariants broken over ~75 ms) and ``ok``.

    HTTP 200 while the station runs, 503 when it is stopped. Anonymous when
    ``web.anonymous_view``.
    """
    st = state.station
    body: dict[str, Any] = st.health()
    body["reconcile"] = settled_reconcile(st)
    body["ok"] = bool(body.get("running")) and not body["reconcile"] and not body.get("alarms")
    return JSONResponse(body, status.HTTP_200_OK if body.get("running") else status.HTTP_503_SERVICE_UNAVAILABLE)


@router.get("/metrics", summary="Prometheus metrics")
def metrics(request: Request, state: StateDep) -> Response:
    """Counters, per-outcome verdicts, rates, queue drops and stage timings in Prometheus text format.

    Anonymous by default (``web.metrics_anonymous``) so a scraper needs no
    credentials: it exposes counts and timings only, no images, users or parts.
    """
    if not state.cfg.metrics_anonymous and session_of(request) is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "login required (web.metrics_anonymous is off)")
    return Response(render_metrics(state), media_type=CONTENT_TYPE)
