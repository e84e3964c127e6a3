"""/metrics: the station's figures in the Prometheus text format (0.0.4), through ``prometheus_client``.

Each web app has its own :class:`~prometheus_client.CollectorRegistry` (not the process-wide
one: tests and the plant tier run several stations in one process) holding one
:class:`StationCollector`. The collector reads the station's counters, gauges and the
per-stage latency histograms (:mod:`station.timings`, fed on the verdict path) at scrape
time, so nothing on the hot path knows about Prometheus.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from ..store import queries
from ..timings import StageHistogram
from .live import counters_payload, settled_reconcile

if TYPE_CHECKING:
    from .state import WebState

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
TIMING_PARTS = 200  # timings quantiles are over this many most recent recorded parts
Samples = Iterable[tuple[dict[str, str], float]]


def _family(kind: str, name: str, help_: str, samples: Samples) -> Metric:
    """A counter or gauge family ``name`` with (labels, value) samples (all samples share one label set)."""
    rows = list(samples)
    labels = list(rows[0][0]) if rows else []
    fam = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(name, help_, labels=labels)
    for lab, value in rows:
        fam.add_metric([str(lab[k]) for k in labels], math.nan if value is None else float(value))
    return fam


def gauge(name: str, help_: str, samples: Samples) -> Metric:
    """A gauge family."""
    return _family("gauge", name, help_, samples)


def counter(name: str, help_: str, samples: Samples) -> Metric:
    """A counter family (``name`` ends in ``_total``, as the exposition writes it)."""
    return _family("counter", name, help_, samples)


def one(kind: str, name: str, help_: str, value: float) -> Metric:
    """A family with a single unlabelled sample."""
    return _family(kind, name, help_, [({}, value)])


def stage_histograms(hists: list[StageHistogram]) -> Metric:
    """``station_stage_duration_seconds``: per-stage latency since start, for ``histogram_quantile``."""
    fam = HistogramMetricFamily(
        "station_stage_duration_seconds",
        "Time of each stage per part since the station started (from the verdict's timings), seconds.",
        labels=["stage"],
    )
    for h in hists:
        buckets = [(floatToGoString(b / 1000.0), float(c)) for b, c in zip(h.bounds_ms, h.cumulative)]
        fam.add_metric([h.stage], buckets, h.sum_ms / 1000.0)
    return fam


class StationCollector(Collector):
    """Reads one web app's station at scrape time."""

    def __init__(self, state: WebState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        """Every family of the /metrics page."""
        yield from station_metrics(self.state)


def build_registry(state: WebState) -> CollectorRegistry:
    """A registry of its own for ``state``'s station."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StationCollector(state))
    return registry


def render_metrics(state: WebState) -> str:
    """The whole /metrics page."""
    return generate_latest(state.metrics_registry).decode("utf-8")


def timing_quantiles(rows: list[dict[str, Any]], qs: tuple[float, ...] = (0.5, 0.95)) -> dict[str, dict[float, float]]:
    """Per timing key, the quantiles over ``rows`` (each with a decoded ``timings`` dict)."""
    by_key: dict[str, list[float]] = {}
    for r in rows:
        for k, v in (r.get("timings") or {}).items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                by_key.setdefault(k, []).append(float(v))
    out: dict[str, dict[float, float]] = {}
    for k, vals in by_key.items():
        vals.sort()
        out[k] = {
            q: (statistics.median(vals) if q == 0.5 else vals[min(len(vals) - 1, int(q * len(vals)))]) for q in qs
        }
    return out


def station_metrics(state: WebState) -> Iterator[Metric]:
    """The families, read now."""
    st = state.station
    c = counters_payload(state)
    yield gauge(
        "station_info",
        "Station identity (value always 1).",
        [({"station": st.cfg.name, "model_id": str(st.inspector.model_id), "config_hash": st.config_hash}, 1)],
    )
    health = st.health()
    yield one("gauge", "station_running", "1 while the station runs.", 1 if health.get("running") else 0)
    yield one("gauge", "station_paused", "1 while the line is paused.", 1 if health.get("paused") else 0)
    for key, help_ in (
        ("triggers", "Parts triggered."),
        ("frames", "Parts whose frames reached the inspector."),
        ("dropped", "Parts dropped before inspection (FAILSAFE)."),
        ("verdicts", "Final verdicts."),
        ("rejects_scheduled", "Reject pulses scheduled."),
        ("rejects_fired", "Reject pulses fired."),
        ("records_written", "Parts written to the database."),
        ("records_dropped", "Parts the recorder could not keep."),
    ):
        yield one("counter", f"station_{key}_total", help_, int(c[key]))
    yield counter(
        "station_verdicts_by_outcome_total",
        "Final verdicts per outcome.",
        [({"outcome": o}, int(c[o])) for o in ("PASS", "FAIL", "UNCERTAIN", "FAILSAFE")],
    )
    yield one(
        "gauge",
        "station_yield_ratio",
        "PASS / verdicts since the counters started.",
        c["PASS"] / c["verdicts"] if c["verdicts"] else math.nan,
    )
    yield one(
        "gauge",
        "station_parts_per_minute",
        "Verdicts per minute over the last 60 s.",
        c["parts_per_min"] if c["parts_per_min"] is not None else math.nan,
    )
    yield one("gauge", "station_parts_in_flight", "Parts triggered without a verdict yet.", st.scheduler.in_flight)
    yield one("gauge", "station_records_pending", "Verdicts not yet committed to the database.", st.recorder.pending)
    yield one(
        "gauge",
        "station_records_spilled",
        "Verdicts held in the spill file while the database cannot be written (part of pending).",
        st.recorder.spilled,
    )
    yield one(
        "gauge",
        "station_rejects_pending",
        "Reject pulses scheduled that have not fired yet.",
        st.scheduler.pending_rejects,
    )
    problems = settled_reconcile(st)
    yield one(
        "gauge",
        "station_counters_reconciled",
        "1 when the counter invariants add up (see /health).",
        0 if problems else 1,
    )
    yield one("gauge", "station_alarms_active", "Components not ok.", len(health.get("alarms", [])))
    subs = [s for s in st.bus.subscriptions() if not s.name.startswith("web-live-")]
    yield counter(
        "station_bus_dropped_total",
        "Events a bus subscriber's full queue dropped.",
        [({"subscriber": s.name}, s.dropped) for s in subs],
    )
    clients, web_dropped = state.live_clients()
    web_dropped += sum(s.dropped for s in st.bus.subscriptions() if s.name.startswith("web-live-"))
    yield one(
        "counter", "station_web_events_dropped_total", "Live events missed by slow operator screens.", web_dropped
    )
    yield one("gauge", "station_web_live_clients", "Connected live screens.", clients)
    if st.image_health is not None:
        yield from image_health_metrics(st.image_health.snapshot())
    yield stage_histograms(st.stage_timings.snapshot())
    with state.db.use() as db:
        rows = queries.recent_inspections(db, TIMING_PARTS)
    qs = timing_quantiles(rows)
    yield gauge(
        "station_timing_p50_ms",
        f"Median stage time over the last {TIMING_PARTS} recorded parts, ms.",
        [({"stage": k}, v[0.5]) for k, v in sorted(qs.items())],
    )
    yield gauge(
        "station_timing_p95_ms",
        f"95th percentile stage time over the last {TIMING_PARTS} recorded parts, ms.",
        [({"stage": k}, v[0.95]) for k, v in sorted(qs.items())],
    )


def image_health_metrics(snap: dict[str, Any]) -> Iterator[Metric]:
    """Image health of each camera's last frame, its alarms, and the running model's drift (station/health/)."""
    cams = snap["cameras"]
    last = {c: v["last"] for c, v in cams.items() if v["last"] is not None}
    for key, name, help_ in (
        (
            "sharpness",
            "station_image_sharpness",
            "Sharpness of the camera's last frame (Brenner at 2 px over Brenner at 8 px; compare with its setup band).",
        ),
        ("brightness", "station_image_brightness", "Mean grey level of the camera's last frame, 0-255."),
        (
            "clipped",
            "station_image_clipped_ratio",
            "Share of clipped (black or white) pixels in the camera's last frame.",
        ),
    ):
        yield gauge(name, help_, [({"camera": c}, h[key]) for c, h in sorted(last.items())])
    yield gauge(
        "station_image_shift_px",
        "Distance of the part from its setup position in the camera's last frame, px.",
        [
            (
                {"camera": c},
                math.hypot(
                    h["shift_x"] - (cams[c]["bands"].get("shift_x") or {}).get("mean", 0.0),
                    h["shift_y"] - (cams[c]["bands"].get("shift_y") or {}).get("mean", 0.0),
                ),
            )
            for c, h in sorted(last.items())
        ],
    )
    yield gauge(
        "station_image_health_alarm",
        "1 while the camera's figure is out of its setup band (a drift alarm).",
        [
            ({"camera": c, "check": k}, 1 if k in v["alarms"] else 0)
            for c, v in sorted(cams.items())
            if not v["learning"]
            for k in ("sharpness", "brightness", "clipped", "position")
        ],
    )
    m = snap["model"]
    if m is not None and m["ready"]:
        yield gauge(
            "station_model_score_ks",
            "Kolmogorov-Smirnov distance of the model's recent image scores from its baseline (0 = same).",
            [({"model_id": m["model_id"]}, m["ks"])],
        )
        yield gauge(
            "station_model_detections_per_frame",
            "Mean detections per frame: the model's baseline and its recent window.",
            [
                ({"model_id": m["model_id"], "over": "baseline"}, m["baseline_detections_per_frame"]),
                (
                    {"model_id": m["model_id"], "over": "window"},
                    math.nan if m["window_detections_per_frame"] is None else m["window_detections_per_frame"],
                ),
            ],
        )
        yield gauge(
            "station_model_drift_alarm",
            "1 while the model's scores or detection counts drifted from its baseline.",
            [({"model_id": m["model_id"], "check": k}, 1 if k in m["alarms"] else 0) for k in ("scores", "detections")],
        )
