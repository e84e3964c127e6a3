"""Quality statistics for QA (role qa or admin): defects by class over time, false-positive rate,
yield per hour and per shift, defect Pareto. The numbers come from :mod:`labeling.stats`."""

from __future__ import annotations

import logging
from typing import Any, Literal, TypedDict

from fastapi import APIRouter, HTTPException, Query, Request, Response, status

import labeling

from .auth import QaSession
from .routes_review import review_page
from .state import StateDep

log = logging.getLogger(__name__)


class _Window(TypedDict):
    since: float | None
    until: float | None


router = APIRouter(tags=["stats"])


@router.get("/review/stats", include_in_schema=False)
def stats_page(request: Request) -> Response:
    """Charts and tables of the statistics below."""
    return review_page(request, "stats.html", nav="stats")


@router.get("/api/review/stats", summary="Quality statistics (qa)")
def stats(
    state: StateDep,
    session: QaSession,
    since: float | None = Query(
        None, ge=0, le=1e11, description="Parts triggered at or after this UNIX time (default: all)."
    ),
    until: float | None = Query(None, ge=0, le=1e11, description="Parts triggered before this UNIX time."),
    bucket: Literal["hour", "day"] = Query("hour", description="Time bucket of the defects-over-time series."),
    tz: str | None = Query(
        None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_+\-/]+$",
        description="IANA time zone for hours and shifts, e.g. Europe/Berlin (default: the station's).",
    ),
) -> dict[str, Any]:
    """``defects_over_time`` (detections that rejected or made a part uncertain, per class and bucket),
    ``false_positives`` (model boxes QA deleted / reclassified / moved / confirmed on reviewed images, and
    boxes QA added), ``yield_by_hour``, ``yield_by_shift`` (shifts A 06-14, B 14-22, C 22-06),
    ``pareto_model`` (line detections) and ``pareto_labels`` (current labels of reviewed images).
    422 for an unknown time zone.
    """
    window: _Window = {"since": since, "until": until}
    try:
        with state.db.use() as db:
            return {
                "since": since,
                "until": until,
                "bucket": bucket,
                "tz": tz,
                "defects_over_time": labeling.defects_by_class_over_time(db, bucket, tz=tz, **window),
                "false_positives": labeling.false_positive_rate(db, **window),
                "yield_by_hour": labeling.yield_by_hour(db, tz=tz, **window),
                "yield_by_shift": labeling.yield_by_shift(db, tz=tz, **window),
                "pareto_model": labeling.defect_pareto(db, source="model", **window),
                "pareto_labels": labeling.defect_pareto(db, source="labels", **window),
            }
    except ValueError as exc:  # an unknown time zone, named in the message
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
