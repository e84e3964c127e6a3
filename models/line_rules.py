"""The line's per-class thresholds from the web: tune them on an evaluation, apply them, reset them, show them.

Part of the model lifecycle the web models page drives (:class:`models.service.ModelsService` holds one).
A threshold override (:mod:`station.rules_overrides`, audited) is applied to the running line at once
(:meth:`station.app.Station.set_rules`, between two parts) and again at every start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from station import rules_overrides

from .eval_jobs import Evaluations
from .service_views import Connection, ServiceError, eval_result, rounded, running_sha12

if TYPE_CHECKING:
    from station.app import Station

log = logging.getLogger(__name__)


class LineRules:
    """Threshold tuning and overrides of ``station``'s line, from the evaluations in ``evals``."""

    def __init__(self, station: Station, db: Connection, evals: Evaluations):
        self.station = station
        self.db = db
        self.evals = evals
        self._lock = threading.Lock()

    def tune(self, eval_id: str, side: str, target: float) -> dict[str, Any]:
        """Per-class thresholds for ``target`` escape rate on the evaluated golden set, and the false rejects they
        cost."""
        from .eval_tuning import tune_thresholds

        result, raw = eval_result(self.evals, eval_id, side)
        t = tune_thresholds(
            result, target, calibration=self.station.decider.calibration, setup=self.station.decider.setup
        )
        names = list(result.names)
        run12 = running_sha12(self.station)
        before = rules_overrides.thresholds_of(result.rules, names)
        after = rules_overrides.thresholds_of(t.rules, names)
        return {
            "eval_id": eval_id,
            "model": side,
            "model_sha": result.model_sha,
            "model_id": result.model_id,
            "golden_id": result.golden_id,
            "target_escape_rate": target,
            "achieved": t.achieved,
            "floor_escape_rate": t.floor_escape_rate,
            "before": {
                "escape_rate": rounded(result.escape_rate),
                "false_reject_rate": rounded(result.false_reject_rate),
                "thresholds": before,
            },
            "after": {
                "escape_rate": rounded(t.escape_rate),
                "false_reject_rate": rounded(t.false_reject_rate),
                "thresholds": after,
            },
            "eject_at": {k: round(v, 4) for k, v in t.thresholds.items()},
            "per_class_escape": {k: rounded(v.escape_rate) for k, v in t.result.per_class.items()},
            "running_on_line": bool(run12 and result.model_sha.startswith(run12)),
        }

    def apply_tuning(self, eval_id: str, side: str, target: float, reason: str, user: str) -> dict[str, Any]:
        """Write the tuned thresholds as the line's rules override (audited) and switch the line to them now."""
        proposal = self.tune(eval_id, side, target)
        if not proposal["running_on_line"]:
            raise ServiceError(
                409,
                f"model {proposal['model_id']} is not the model on the line ({self.station.inspector.model_id}): "
                "thresholds belong to a model; promote it first, then tune",
            )
        classes = proposal["after"]["thresholds"]
        source = {
            k: proposal[k] for k in ("eval_id", "model", "model_sha", "golden_id", "target_escape_rate", "achieved")
        }
        source.update(
            {
                "escape_rate": proposal["after"]["escape_rate"],
                "false_reject_rate": proposal["after"]["false_reject_rate"],
            }
        )
        return self._set_override(classes, reason, user, source)

    def reset(self, reason: str, user: str) -> dict[str, Any]:
        """Back to the configured rules (an audited row with no classes)."""
        with self.db.use() as db:
            ov = rules_overrides.latest(db)
        if ov is None or not ov.classes:
            raise ServiceError(409, "no threshold override is in force: the line runs its configured rules")
        return self._set_override({}, reason, user, {"reset_of": ov.id})

    def _set_override(
        self, classes: Mapping[str, Mapping[str, float]], reason: str, user: str, source: Mapping[str, Any]
    ) -> dict[str, Any]:
        base = self.station.cfg.rules
        with self._lock:
            with self.db.use() as db:
                try:
                    ov = rules_overrides.record(db, user, classes, reason=reason, source=source, base=base)
                except rules_overrides.RulesOverrideError as e:
                    raise ServiceError(422, str(e)) from None
                rules, eff = rules_overrides.effective(db, base)
            self.station.set_rules(rules, rules_overrides.tagged_hash(self.station.config_hash, eff))
        log.info("line rules now %s (override %d by %s)", "overridden" if classes else "as configured", ov.id, user)
        return self.view()

    def view(self) -> dict[str, Any]:
        """Configured and effective per-class thresholds, the override in force and the history."""
        names = [str(n) for n in self.station.inspector.names]
        with self.db.use() as db:
            ov = rules_overrides.latest(db)
            hist = rules_overrides.history(db)
        return {
            "configured": rules_overrides.thresholds_of(self.station.cfg.rules, names),
            "effective": rules_overrides.thresholds_of(self.station.decider.rules, names),
            "config_hash": self.station.decider.config_hash,
            "override": ov.as_dict() if ov and ov.classes else None,
            "history": [h.as_dict() for h in hist],
        }
