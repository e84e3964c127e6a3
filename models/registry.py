"""The model registry: the ``models`` table of the station database, and a content-addressed model store.

A model is registered by the sha256 of its ONNX bytes; the file is copied to
``<store_dir>/<sha256>.onnx`` (and its training weights, when given, to ``<sha256>.pt``), so what the
registry names is exactly what runs. Task, class names and input size come from the file's own
metadata (:func:`station.inspection.model_meta.read_model_meta`), lineage (dataset snapshot, parent
sha, seed) from the lineage metadata written by :mod:`models.export` unless given explicitly.

Status: ``candidate`` -> ``current`` (exactly one) -> ``retired`` (was current once).

Promotion is gated: a candidate whose escape rate on a golden set is worse than the current
model's on the same golden set, or whose mAP50 there is more than 1 point (``MAP50_DROP``) below
the current model's (both recorded with :func:`record_evaluation`), is refused, unless
``override`` is given with a reason. Every promotion, refusal, override and rollback is appended to
the audit trail. Registering or promoting does not touch a running station: the caller hot-swaps
the promoted file (``Station.swap_model(record.path)``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from station import serialize
from station.inspection.model_meta import read_model_meta
from station.store import audit
from station.store import model_registry as model_rows
from station.store.db import write_transaction

from .export import read_lineage

log = logging.getLogger(__name__)

CANDIDATE, CURRENT, RETIRED = "candidate", "current", "retired"
PROMOTE_ACTIONS = ("model_promote", "model_promote_override", "model_rollback")
MAP50_DROP = 0.01  # a candidate (an INT8 or converted copy included) may lose at most 1 point of mAP50


class RegistryError(ValueError):
    """A registry operation cannot be done; the message says why and what to do."""


class PromotionRefused(RegistryError):
    """The promotion gate refused the candidate (it was audited)."""


@dataclass(frozen=True)
class ModelRecord:
    """One row of the ``models`` table."""

    id: int
    sha256: str
    path: Path
    task: str
    names: tuple[str, ...]
    imgsz: int | None
    input_hw: tuple[int, int] | None
    created_at: float
    parent_sha: str | None
    dataset_snapshot: str | None
    metrics: Mapping[str, Any]
    trained_by: str | None
    promoted_by: str | None
    promoted_at: float | None
    status: str
    weights_path: Path | None = None
    lineage: Mapping[str, Any] = field(default_factory=dict)

    @property
    def short(self) -> str:
        """The first 12 hex digits of the sha256."""
        return self.sha256[:12]

    def golden(self, golden_id: str) -> Mapping[str, Any] | None:
        """The recorded evaluation on golden set ``golden_id`` (None if never evaluated on it)."""
        return (self.metrics.get("golden") or {}).get(golden_id)


def _loads(v: Any, default: Any) -> Any:
    if v in (None, ""):
        return default
    try:
        return json.loads(v)
    except ValueError:
        return default


def _record(row: Mapping[str, Any]) -> ModelRecord:
    hw = _loads(row.get("input_hw"), None)
    return ModelRecord(
        id=int(row["id"]),
        sha256=row["sha256"],
        path=Path(row["path"]),
        task=row["task"],
        names=tuple(_loads(row["names"], [])),
        imgsz=row["imgsz"],
        input_hw=tuple(hw) if hw else None,
        created_at=float(row["created_at"]),
        parent_sha=row["parent_sha"],
        dataset_snapshot=row["dataset_snapshot"],
        metrics=_loads(row["metrics"], {}),
        trained_by=row["trained_by"],
        promoted_by=row["promoted_by"],
        promoted_at=row["promoted_at"],
        status=row["status"],
        weights_path=Path(row["weights_path"]) if row.get("weights_path") else None,
        lineage=_loads(row.get("lineage"), {}),
    )


def _copy_atomic(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + f".tmp{os.getpid()}")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


# --------------------------------------------------------------------------- register / read


def register(
    db: sqlite_utils.Database,
    onnx_path: Path | str,
    *,
    store_dir: Path | str,
    dataset_snapshot: str | None = None,
    parent_sha: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    trained_by: str | None = None,
    weights: Path | str | None = None,
) -> ModelRecord:
    """Register an Ultralytics ONNX export as a candidate; returns its record.

    The file is checked and hashed, copied to ``store_dir/<sha256>.onnx`` (``weights`` - its
    ``.pt`` - to ``<sha256>.pt``; by default the ``.pt`` with the same stem next to the ONNX file is
    taken when it exists). Registering the same bytes again returns the existing record (metrics
    given now are merged in).
    """
    src = Path(onnx_path)
    meta = read_model_meta(src)  # raises ModelLoadError naming the problem
    lineage = read_lineage(meta.raw)
    existing = [_record(r) for r in model_rows.models_with_sha(db, meta.sha256)]
    if existing:
        if metrics:
            return _merge_metrics(db, meta.sha256, dict(metrics))
        return existing[0]
    store = Path(store_dir).resolve()
    dst = store / f"{meta.sha256}.onnx"
    if not dst.exists():
        _copy_atomic(src, dst)
    wsrc = Path(weights) if weights is not None else src.with_suffix(".pt")
    wdst: Path | None = None
    if weights is not None and not wsrc.is_file():
        raise RegistryError(f"weights {wsrc} do not exist")
    if wsrc.is_file():
        wdst = store / f"{meta.sha256}.pt"
        if not wdst.exists():
            _copy_atomic(wsrc, wdst)
    row = {
        "sha256": meta.sha256,
        "path": str(dst),
        "task": meta.task,
        "names": serialize.dumps(list(meta.names)),
        "imgsz": int(max(meta.imgsz)),
        "input_hw": serialize.dumps(list(meta.imgsz)),
        "created_at": time.time(),
        "parent_sha": parent_sha or _str_or_none(lineage.get("parent_sha")),
        "dataset_snapshot": dataset_snapshot or _str_or_none(lineage.get("dataset_snapshot")),
        "metrics": serialize.dumps(dict(metrics or {}), canonical=True),
        "trained_by": trained_by,
        "status": CANDIDATE,
        "weights_path": str(wdst) if wdst else None,
        "lineage": serialize.dumps(lineage, canonical=True),
    }
    model_rows.insert_model(db, row)
    log.info("registered model %s (%s, %s) from %s", meta.sha256[:12], meta.task, list(meta.names), src)
    return get(db, meta.sha256)


def _str_or_none(v: Any) -> str | None:
    return None if v in (None, "", "None") else str(v)


def _merge_metrics(db: sqlite_utils.Database, sha: str, new: dict[str, Any]) -> ModelRecord:
    with write_transaction(db):
        m = _loads(model_rows.model_metrics(db, sha), {})
        golden = {**(m.get("golden") or {}), **(new.pop("golden", None) or {})}
        m.update(new)
        if golden:
            m["golden"] = golden
        model_rows.set_model_metrics(db, sha, serialize.dumps(m, canonical=True))
    return get(db, sha)


def record_evaluation(db: sqlite_utils.Database, sha: str, summary: Mapping[str, Any]) -> ModelRecord:
    """Store an evaluation summary (``EvalResult.summary()``) under ``metrics.golden[<golden_id>]``."""
    rec = get(db, sha)
    gid = summary.get("golden_id")
    if not gid:
        raise RegistryError("evaluation summary has no golden_id")
    if summary.get("model_sha") not in (None, "", rec.sha256):
        raise RegistryError(f"the evaluation is of model {str(summary.get('model_sha'))[:12]}, not {rec.short}")
    return _merge_metrics(db, rec.sha256, {"golden": {gid: {**dict(summary), "evaluated_at": time.time()}}})


def list_models(db: sqlite_utils.Database, status: str | None = None) -> list[ModelRecord]:
    """Registered models, newest first (optionally only one status)."""
    return [_record(r) for r in model_rows.models_newest_first(db, status)]


def get(db: sqlite_utils.Database, sha: str) -> ModelRecord:
    """The model with this sha256 (or a unique prefix of at least 8 hex digits)."""
    sha = sha.strip().lower()
    if len(sha) == 64:
        rows = model_rows.models_with_sha(db, sha)
    elif len(sha) >= 8:
        rows = model_rows.models_with_prefix(db, sha)
    else:
        raise RegistryError(f"model id {sha!r}: give the sha256 or a prefix of at least 8 hex digits")
    if not rows:
        raise RegistryError(f"no registered model {sha}; see `models list`")
    if len(rows) > 1:
        raise RegistryError(f"model prefix {sha} is ambiguous ({len(rows)} models); give more digits")
    return _record(rows[0])


def current(db: sqlite_utils.Database) -> ModelRecord | None:
    """The promoted model the line should run (None before the first promotion)."""
    row = model_rows.last_promoted(db, CURRENT)
    return _record(row) if row is not None else None


# --------------------------------------------------------------------------- promote / rollback


@dataclass(frozen=True)
class GateDecision:
    """What the promotion gate saw."""

    passed: bool
    golden_id: str | None
    candidate_escape: float | None
    current_escape: float | None
    message: str
    candidate_map50: float | None = None
    current_map50: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (stored in the audit trail)."""
        return {
            "passed": self.passed,
            "golden_id": self.golden_id,
            "candidate_escape_rate": self.candidate_escape,
            "current_escape_rate": self.current_escape,
            "candidate_mAP50": self.candidate_map50,
            "current_mAP50": self.current_map50,
            "message": self.message,
        }


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if f == f and abs(f) != float("inf") else None


def gate(candidate: ModelRecord, cur: ModelRecord | None, golden_id: str | None = None) -> GateDecision:
    """The promotion gate on a golden set both were evaluated on: escape rate not worse, mAP50 at most 1 point lower."""
    if cur is None:
        return GateDecision(True, None, None, None, "no current model: the first promotion is not gated")
    cg, kg = candidate.metrics.get("golden") or {}, cur.metrics.get("golden") or {}
    common = [g for g in cg if g in kg]
    if golden_id is not None:
        common = [g for g in common if g == golden_id]
    if not common:
        on = f" {golden_id}" if golden_id else ""
        return GateDecision(
            False,
            golden_id,
            None,
            None,
            f"candidate {candidate.short} and current {cur.short} have no evaluation on a common golden set{on}: "
            f"run `models evaluate --candidate {candidate.short} --golden DIR --db ...` (it evaluates both)",
        )
    gid = max(common, key=lambda g: float(cg[g].get("evaluated_at", 0.0)))
    ce, ke = cg[gid].get("escape_rate"), kg[gid].get("escape_rate")
    if ce is None or ke is None:
        return GateDecision(False, gid, ce, ke, f"golden set {gid} has no defective images: escape rates are undefined")
    cm, km = _finite(cg[gid].get("mAP50")), _finite(kg[gid].get("mAP50"))
    if float(ce) > float(ke) + 1e-12:
        return GateDecision(
            False,
            gid,
            float(ce),
            float(ke),
            f"escape rate {ce:.4f} is worse than the current model's {ke:.4f} on golden set {gid}",
            cm,
            km,
        )
    if cm is not None and km is not None and cm < km - MAP50_DROP - 1e-12:
        return GateDecision(
            False,
            gid,
            float(ce),
            float(ke),
            f"mAP50 {cm:.4f} is more than {MAP50_DROP * 100:.0f} point below the "
            f"current model's {km:.4f} on golden set {gid} (escape rate {ce:.4f} vs {ke:.4f})",
            cm,
            km,
        )
    maps = f", mAP50 {cm:.4f} vs {km:.4f}" if cm is not None and km is not None else ""
    return GateDecision(
        True, gid, float(ce), float(ke), f"escape rate {ce:.4f} <= current {ke:.4f}{maps} on golden set {gid}", cm, km
    )


def promote(
    db: sqlite_utils.Database,
    sha: str,
    user: str,
    reason: str | None = None,
    override: bool = False,
    *,
    golden_id: str | None = None,
) -> ModelRecord:
    """Make ``sha`` the current model if it passes the gate (see :func:`gate`).

    A refusal raises :class:`PromotionRefused` and is audited. ``override=True`` promotes despite
    the gate and needs a ``reason``; it is audited as ``model_promote_override``.
    """
    if override and not (reason and reason.strip()):
        raise RegistryError("override needs a reason (it is kept in the audit trail)")
    cand = get(db, sha)
    cur = current(db)
    if cur is not None and cur.sha256 == cand.sha256:
        raise RegistryError(f"model {cand.short} is already the current model")
    if cur is not None and cur.task != cand.task:
        raise RegistryError(
            f"candidate task {cand.task} differs from the current model's {cur.task}: the station's rules and "
            "outputs are made for one task; change the station configuration instead"
        )
    decision = gate(cand, cur, golden_id)
    before = {"sha": cur.sha256 if cur else None}
    after = {"sha": cand.sha256, "gate": decision.as_dict()}
    if not decision.passed and not override:
        with write_transaction(db):
            audit.record(db, user, "model_promote_refused", "model", cand.sha256, before, after, reason)
        raise PromotionRefused(
            f"promotion of {cand.short} refused: {decision.message}; promote with override and a reason to force it"
        )
    action = "model_promote" if decision.passed else "model_promote_override"
    _make_current(db, cand, user, action, before, after, reason)
    log.info("%s: %s by %s (%s)", action, cand.short, user, decision.message)
    return get(db, cand.sha256)


def _make_current(
    db: sqlite_utils.Database, rec: ModelRecord, user: str, action: str, before: Any, after: Any, reason: str | None
) -> None:
    now = time.time()
    with write_transaction(db):
        model_rows.make_current(db, rec.sha256, user, now, current=CURRENT, retired=RETIRED)
        audit.record(db, user, action, "model", rec.sha256, before, after, reason)


def history(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Promotions, overrides, refusals and rollbacks from the audit trail, oldest first."""
    out = model_rows.model_changes(db)
    for d in out:
        d["before"], d["after"] = _loads(d["before"], d["before"]), _loads(d["after"], d["after"])
    return out


def rollback(
    db: sqlite_utils.Database, sha: str | None = None, user: str = "unknown", reason: str | None = None
) -> ModelRecord:
    """Make a model that ran before current again (default: the one the last change replaced). Audited; not gated."""
    cur = current(db)
    if sha is None:
        changes = [h for h in history(db) if h["action"] in PROMOTE_ACTIONS]
        prev = changes[-1]["before"].get("sha") if changes and isinstance(changes[-1]["before"], dict) else None
        if not prev:
            raise RegistryError("nothing to roll back to: no model was current before the present one")
        sha = prev
    target = get(db, sha)
    if cur is not None and target.sha256 == cur.sha256:
        raise RegistryError(f"model {target.short} is already the current model")
    if target.status != RETIRED:
        raise RegistryError(
            f"model {target.short} is a {target.status}, it never ran as the current model: rollback only returns to a "
            "previous model; promote a candidate instead"
        )
    _make_current(
        db, target, user, "model_rollback", {"sha": cur.sha256 if cur else None}, {"sha": target.sha256}, reason
    )
    log.info("rollback to %s by %s", target.short, user)
    return get(db, target.sha256)


def ensure_current(
    db: sqlite_utils.Database, onnx_path: Path | str, *, store_dir: Path | str, user: str = "system"
) -> ModelRecord:
    """Register ``onnx_path`` (e.g. the shipped default) and make it current when no model is current yet."""
    cur = current(db)
    if cur is not None:
        return cur
    rec = register(db, onnx_path, store_dir=store_dir, trained_by="shipped")
    _make_current(
        db,
        rec,
        user,
        "model_promote",
        {"sha": None},
        {"sha": rec.sha256, "gate": gate(rec, None).as_dict()},
        "first model: the station's starting model",
    )
    return get(db, rec.sha256)
