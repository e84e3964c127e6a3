"""The station's one JSON encoding: :func:`to_jsonable`, :func:`dumps`, and the JSON forms of the
stage contracts, shared by the recorder, replay, the web, the audit trail and the publishers."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from typing import Any

from .contracts import Defect, PartResult, StatusEvent, Verdict


def to_jsonable(v: Any) -> Any:
    """Dataclasses, mappings, sequences, numpy scalars/arrays, enums -> plain JSON values.

    Non-finite floats become None (JSON has no NaN); anything else unknown becomes its ``str``.
    """
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return fields_to_dict(v)
    if isinstance(v, dict) or hasattr(v, "items") and callable(v.items):
        return {str(k): to_jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [to_jsonable(x) for x in v]
    if isinstance(v, enum.Enum):
        return to_jsonable(v.value)
    if hasattr(v, "tolist") and callable(v.tolist):  # numpy array or scalar
        return to_jsonable(v.tolist())
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)  # paths, datetimes, ...


def fields_to_dict(v: Any) -> dict[str, Any]:
    """A dataclass as a JSON object, field by field (:func:`to_jsonable`): the ``as_dict`` of a record."""
    if not dataclasses.is_dataclass(v) or isinstance(v, type):
        raise TypeError(f"fields_to_dict takes a dataclass instance, not {type(v).__name__}")
    return {f.name: to_jsonable(getattr(v, f.name)) for f in dataclasses.fields(v)}


def dumps(v: Any, *, canonical: bool = False, indent: int | None = None) -> str:
    """JSON of anything :func:`to_jsonable` understands: compact, or ``indent``-ed for people.

    ``canonical=True``: keys sorted, compact: stable bytes for hashes and the audit trail.
    """
    seps = (",", ":") if indent is None else None
    return json.dumps(to_jsonable(v), separators=seps, indent=indent, sort_keys=canonical, allow_nan=False)


def defect_to_dict(d: Defect) -> dict[str, Any]:
    """A judged defect as JSON."""
    return {
        "class_name": d.class_name,
        "confidence": round(d.confidence, 4),
        "box_xyxy": [round(x, 1) for x in d.box_xyxy],
        "area_mm2": round(d.area_mm2, 4),
        "camera_id": d.camera_id,
        "action": d.action,
        "rule": d.rule,
    }


def verdict_to_dict(v: Verdict) -> dict[str, Any]:
    """A verdict as JSON (no images)."""
    return {
        "part_id": v.part_id,
        "outcome": v.outcome.value,
        "reasons": list(v.reasons),
        "defects": [defect_to_dict(d) for d in v.defects],
        "model_id": v.model_id,
        "config_hash": v.config_hash,
        "calibration_id": v.calibration_id,
        "timings_ms": {k: round(x, 3) for k, x in v.timings_ms.items()},
    }


def _score(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return round(f, 4) if math.isfinite(f) else None


def result_to_dict(r: PartResult) -> dict[str, Any]:
    """A part's result as JSON: verdict, trigger, per-frame facts and ground truth (if any).

    ``image_score``: the highest image score over the frames of a no-labels inspector (1.0 = at
    the threshold), else None; ``heatmap``: whether some frame has a heat map (``anomaly_map``).
    """
    d = verdict_to_dict(r.verdict)
    scores = [
        s for s in (_score(det.image_score) for det in r.detections if det.image_score is not None) if s is not None
    ]
    d["image_score"] = max(scores) if scores else None
    d["heatmap"] = any(det.anomaly_map is not None for det in r.detections)
    d["seq"] = r.trigger.seq
    d["t_trigger_wall"] = r.trigger.t_trigger_wall
    d["source"] = r.trigger.source
    d["frames"] = [
        {
            "camera_id": f.camera_id,
            "width": int(f.image.shape[1]),
            "height": int(f.image.shape[0]),
            **{k: to_jsonable(x) for k, x in f.meta.items()},
        }
        for f in r.frames
    ]
    return d


def event_to_dict(e: StatusEvent) -> dict[str, Any]:
    """A status event as JSON."""
    return {"component": e.component, "state": e.state, "message": e.message, "t_wall": e.t_wall}
