"""What the models page sees: registry records, jobs and evaluations as JSON, an evaluation's images.

Views for :class:`models.service.ModelsService` (no server paths in what they return), and the
:class:`ServiceError` every model-service call raises when a request cannot be done.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import sqlite_utils

from .eval_jobs import EvalError, Evaluations, eval_dict

if TYPE_CHECKING:
    from station.app import Station

    from .registry import ModelRecord


class ServiceError(RuntimeError):
    """A request cannot be done now; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Connection(Protocol):
    """A shared database connection, held for a ``with`` block (the web app's ``WebDB``)."""

    def use(self) -> contextlib.AbstractContextManager[sqlite_utils.Database]:
        """The connection, held exclusively for the ``with`` block."""


def running_sha12(station: Station) -> str | None:
    """The first 12 hex digits of the sha256 of the model on the line (onnx inspector), else None."""
    mid = station.inspector.model_id
    tail = mid.rsplit(":", 1)[-1] if ":" in mid else ""
    return tail if re.fullmatch(r"[0-9a-f]{12}", tail) else None


def _compact_eval(e: Mapping[str, Any]) -> dict[str, Any]:
    keys = (
        "escape_rate",
        "false_reject_rate",
        "uncertain_rate",
        "precision",
        "recall",
        "mAP50",
        "n_images",
        "n_defective",
        "n_good",
        "escapes",
        "false_rejects",
        "evaluated_at",
    )
    return {k: e.get(k) for k in keys}


def record_dict(rec: ModelRecord) -> dict[str, Any]:
    """A registry record for the page (no server paths)."""
    golden = rec.metrics.get("golden") or {}
    return {
        "sha256": rec.sha256,
        "short": rec.short,
        "task": rec.task,
        "names": list(rec.names),
        "imgsz": rec.imgsz,
        "input_hw": list(rec.input_hw) if rec.input_hw else None,
        "created_at": rec.created_at,
        "parent_sha": rec.parent_sha,
        "dataset_snapshot": rec.dataset_snapshot,
        "trained_by": rec.trained_by,
        "promoted_by": rec.promoted_by,
        "promoted_at": rec.promoted_at,
        "status": rec.status,
        "has_weights": bool(rec.weights_path and rec.weights_path.exists()),
        "train_metrics": dict(rec.metrics.get("train") or {}),
        "golden": {gid: _compact_eval(v) for gid, v in golden.items()},
    }


def evaluation_view(evals: Evaluations, eval_id: str) -> dict[str, Any]:
    """An evaluation: its state and, once done, the side-by-side figures and the images where the models disagree."""
    try:
        st = evals.get(eval_id)
    except LookupError as e:
        raise ServiceError(404, str(e)) from None
    out: dict[str, Any] = {"state": eval_dict(st)}
    if st.status == "running":
        return out
    try:
        res = evals.result(eval_id)
    except EvalError as e:
        out["error"] = str(e)
        return out
    if res.get("status") != "succeeded":
        out["error"] = res.get("error")
        return out
    cand, cur = res["candidate"], res.get("current")
    names = cand["names"]
    images = []
    for i, im in enumerate(cand["images"]):
        other = cur["images"][i] if cur else None
        if other is not None and other["outcome"] == im["outcome"]:
            continue
        if other is None and im["ejected"] == bool(im["truth"]):
            continue  # alone: show the mistakes
        images.append(
            {
                "index": i,
                "stem": im["stem"],
                "truth": sorted({names[t[0]] for t in im["truth"]}) or ["good"],
                "candidate": {"outcome": im["outcome"], "ejected": im["ejected"], "reasons": im["reasons"]},
                "current": {"outcome": other["outcome"], "ejected": other["ejected"], "reasons": other["reasons"]}
                if other
                else None,
                "candidate_right": im["ejected"] == bool(im["truth"]),
                "thumb": f"/api/models/evaluations/{eval_id}/images/{i}",
            }
        )
    out.update(
        {
            "names": names,
            "candidate": cand["summary"],
            "current": cur["summary"] if cur else None,
            "candidate_model_id": cand["model_id"],
            "current_model_id": cur["model_id"] if cur else None,
            "escape_not_worse": res["escape_not_worse"],
            "images": images,
            "seconds": res.get("seconds"),
        }
    )
    return out


def evaluation_jpeg(evals: Evaluations, eval_id: str, index: int, max_width: int = 360) -> bytes:
    """JPEG of golden image ``index`` with the truth (green, solid), candidate (orange) and current (blue) boxes at
    reject_conf."""
    import cv2
    import numpy as np

    res = _succeeded(evals, eval_id, "has no images ({})")
    spec = evals.spec(eval_id)
    cand = res["candidate"]
    if not 0 <= index < len(cand["images"]):
        raise ServiceError(404, f"evaluation {eval_id} has {len(cand['images'])} images (0..{len(cand['images']) - 1})")
    stem = cand["images"][index]["stem"]
    root = Path(spec["golden_root"])
    files = [p for p in (root / "images").glob(f"{stem}.*") if p.is_file()]
    img = cv2.imread(str(files[0]), cv2.IMREAD_COLOR) if files else None
    if img is None:
        raise ServiceError(410, f"golden image {stem} is gone from its golden set")
    from station.config import RulesConfig

    rules = RulesConfig.model_validate(cand["summary"]["rules"])
    names = cand["names"]
    scale = min(1.0, max_width / img.shape[1])
    if scale < 1.0:
        img = cv2.resize(
            img, (int(round(img.shape[1] * scale)), int(round(img.shape[0] * scale))), interpolation=cv2.INTER_AREA
        )
    lw = max(1, int(round(2 * max(scale, 0.5))))

    def box(b: Any, color: tuple[int, int, int], pad: int) -> None:
        x1, y1, x2, y2 = (int(round(v * scale)) for v in b)
        cv2.rectangle(img, (x1 - pad, y1 - pad), (x2 + pad, y2 + pad), color, lw)

    for t in cand["images"][index]["truth"]:
        box(t[1:5], (80, 220, 80), 2 * lw)
    for side, color in (("current", (255, 160, 60)), ("candidate", (40, 150, 255))):
        r = res.get(side)
        if not r:
            continue
        for d in r["images"][index]["dets"]:
            c = int(d[0])
            if 0 <= c < len(names) and d[1] >= rules.for_class(names[c]).uncertain_conf:
                box(d[2:6], color, 0)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(img), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ServiceError(500, "JPEG encoding failed")
    return bytes(buf)


def _succeeded(evals: Evaluations, eval_id: str, failed: str) -> dict[str, Any]:
    """The result.json of a succeeded evaluation; 404 unknown, 409 running or ``failed`` (formatted with its error)."""
    try:
        res = evals.result(eval_id)
    except LookupError as e:
        raise ServiceError(404, str(e)) from None
    except EvalError as e:
        raise ServiceError(409, str(e)) from None
    if res.get("status") != "succeeded":
        raise ServiceError(409, f"evaluation {eval_id} " + failed.format(res.get("error")))
    return res


def eval_result(evals: Evaluations, eval_id: str, side: str) -> tuple[Any, dict[str, Any]]:
    """The EvalResult of one model (``candidate``/``current``) of a finished evaluation, and its JSON."""
    from .eval_worker import result_from_json

    res = _succeeded(evals, eval_id, "failed: {}")
    r = res.get(side)
    if not r:
        raise ServiceError(409, f"evaluation {eval_id} has no {side} model")
    return result_from_json(r), r


def rounded(v: Any) -> Any:
    """``v`` as a float rounded to 5 digits, None when it is not a number (or NaN)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if f != f else round(f, 5)


def job_dict(st: Any) -> dict[str, Any]:
    """A training job's state for the page (no server paths)."""
    d = st.as_dict()
    res = d.get("result") or {}
    d["result"] = (
        {
            "sha256": res.get("sha256"),
            "registered": bool(res.get("registered")),
            "train": {k: (res.get("train") or {}).get(k) for k in ("metrics", "epochs", "seconds")}
            if res.get("train")
            else None,
            "comparison": res.get("comparison"),
        }
        if res
        else None
    )
    for k in ("job_dir", "log_path", "pid", "meta"):
        d.pop(k, None)
    return d
