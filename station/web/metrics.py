"""Prometheus text exposition (format 0.0.4), written by hand: no extra dependency."""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING, Any, Iterable

from ..store import queries
from .live import counters_payload, settled_reconcile

if TYPE_CHECKING:
    from .state import WebState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TIMING_PARTS = 200  # timings quantiles are over this many most recent recorded parts


def _esc(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "NaN"
    if isinstance(v, float) and math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if isinstance(v, float) else str(int(v))


class Exposition:
    """Builds the text: one HELP/TYPE header per metric family, then its samples."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_: str, samples: Iterable[tuple[dict[str, str], float]]) -> None:
        """Add metric ``name`` of ``kind`` (counter, gauge) with (labels, value) samples."""
        self.lines.append(f"# HELP {name} {help_}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lab = ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{lab}}} {_num(value)}" if lab else f"{name} {_num(value)}")

    def one(self, name: str, kind: str, help_: str, value: float) -> None:
        """A metric with a single unlabelled sample."""
        self.family(name, kind, help_, [({}, value)])

    def text(self) -> str:
        """The exposition, newline-terminated."""
        return "\n".join(self.lines) + "\n"


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
        out[k] = {q: (statistics.median(vals) if q == 0.5 else vals[min(len(vals) - 1, int(q * len(vals)))]) for q in qs}
    return out


def render_metrics(state: "WebState") -> str:
    """The whole /metrics page."""
    st = state.station
    c = counters_payload(state)
    e = Exposition()
    e.family("station_info", "gauge", "Station identity (value always 1).",
             [({"station": st.cfg.name, "model_id": str(st.inspector.model_id), "config_hash": st.config_hash}, 1)])
    health = st.health()
    e.one("station_running", "gauge", "1 while the station runs.", 1 if health.get("running") else 0)
    e.one("station_paused", "gauge", "1 while the line is paused.", 1 if health.get("paused") else 0)
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
        e.one(f"station_{key}_total", "counter", help_, int(c[key]))
    e.family("station_verdicts_by_outcome_total", "counter", "Final verdicts per outcome.",
             [({"outcome": o}, int(c[o])) for o in ("PASS", "FAIL", "UNCERTAIN", "FAILSAFE")])
    e.one("station_yield_ratio", "gauge", "PASS / verdicts since the counters started.",
          c["PASS"] / c["verdicts"] if c["verdicts"] else math.nan)
    e.one("station_parts_per_minute", "gauge", "Verdicts per minute over the last 60 s.",
          c["parts_per_min"] if c["parts_per_min"] is not None else math.nan)
    e.one("station_parts_in_flight", "gauge", "Parts triggered without a verdict yet.", st.scheduler.in_flight)
    e.one("station_records_pending", "gauge", "Verdicts not yet committed to the database.", st.recorder.pending)
    e.one("station_records_spilled", "gauge",
          "Verdicts held in the spill file while the database cannot be written (part of pending).", st.recorder.spilled)
    e.one("station_rejects_pending", "gauge", "Reject pulses scheduled that have not fired yet.", st.scheduler.pending_rejects)
    problems = settled_reconcile(st)
    e.one("station_counters_reconciled", "gauge", "1 when the counter invariants add up (see /health).", 0 if problems else 1)
    e.one("station_alarms_active", "gauge", "Components not ok.", len(health.get("alarms", [])))
    subs = [s for s in st.bus.subscriptions() if not s.name.startswith("web-live-")]
    e.family("station_bus_dropped_total", "counter", "Events a bus subscriber's full queue dropped.",
             [({"subscriber": s.name}, s.dropped) for s in subs])
    clients, web_dropped = state.live_clients()
    web_dropped += sum(s.dropped for s in st.bus.subscriptions() if s.name.startswith("web-live-"))
    e.one("station_web_events_dropped_total", "counter", "Live events missed by slow operator screens.", web_dropped)
    e.one("station_web_live_clients", "gauge", "Connected live screens.", clients)
    if st.image_health is not None:
        image_health_metrics(e, st.image_health.snapshot())
    with state.db.use() as db:
        rows = queries.recent_inspections(db, TIMING_PARTS)
    qs = timing_quantiles(rows)
    e.family("station_timing_p50_ms", "gauge", f"Median stage time over the last {TIMING_PARTS} recorded parts, ms.",
             [({"stage": k}, v[0.5]) for k, v in sorted(qs.items())])
    e.family("station_timing_p95_ms", "gauge", f"95th percentile stage time over the last {TIMING_PARTS} recorded parts, ms.",
             [({"stage": k}, v[0.95]) for k, v in sorted(qs.items())])
    return e.text()


def image_health_metrics(e: Exposition, snap: dict[str, Any]) -> None:
    """Image health of each camera's last frame, its alarms, and the running model's drift (station/health/)."""
    cams = snap["cameras"]
    last = {c: v["last"] for c, v in cams.items() if v["last"] is not None}
    for key, name, help_ in (
        ("sharpness", "station_image_sharpness", "Sharpness of the camera's last frame (Brenner at 2 px over Brenner at 8 px; compare with its setup band)."),
        ("brightness", "station_image_brightness", "Mean grey level of the camera's last frame, 0-255."),
        ("clipped", "station_image_clipped_ratio", "Share of clipped (black or white) pixels in the camera's last frame."),
    ):
        e.family(name, "gauge", help_, [({"camera": c}, h[key]) for c, h in sorted(last.items())])
    e.family("station_image_shift_px", "gauge", "Distance of the part from its setup position in the camera's last frame, px.",
             [({"camera": c}, math.hypot(h["shift_x"] - (cams[c]["bands"].get("shift_x") or {}).get("mean", 0.0),
                                         h["shift_y"] - (cams[c]["bands"].get("shift_y") or {}).get("mean", 0.0)))
              for c, h in sorted(last.items())])
    e.family("station_image_health_alarm", "gauge", "1 while the camera's figure is out of its setup band (a drift alarm).",
             [({"camera": c, "check": k}, 1 if k in v["alarms"] else 0) for c, v in sorted(cams.items()) if not v["learning"]
              for k in ("sharpness", "brightness", "clipped", "position")])
    m = snap["model"]
    if m is not None and m["ready"]:
        e.family("station_model_score_ks", "gauge", "Kolmogorov-Smirnov distance of the model's recent image scores from its baseline (0 = same).",
                 [({"model_id": m["model_id"]}, m["ks"])])
        e.family("station_model_detections_per_frame", "gauge", "Mean detections per frame: the model's baseline and its recent window.",
                 [({"model_id": m["model_id"], "over": "baseline"}, m["baseline_detections_per_frame"]),
                  ({"model_id": m["model_id"], "over": "window"}, math.nan if m["window_detections_per_frame"] is None else m["window_detections_per_frame"])])
        e.family("station_model_drift_alarm", "gauge", "1 while the model's scores or detection counts drifted from its baseline.",
                 [({"model_id": m["model_id"], "check": k}, 1 if k in m["alarms"] else 0) for k in ("scores", "detections")])

