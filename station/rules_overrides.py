"""Per-class threshold overrides: tuned thresholds applied to the line without editing its YAML.

Threshold tuning (``models.eval_tuning.tune_thresholds``, from the web models page) proposes, per
class, the confidence at which a part is ejected. "Apply" appends a row to ``rules_overrides``
(append-only, with the user, the reason and where the numbers came from, plus an ``audit`` row)
and the station switches to the new rules between two parts (:meth:`station.app.Station.set_rules`).
At every start the newest row is laid over the configured ``rules`` again, so the change survives
a restart. Only ``reject_conf`` / ``uncertain_conf`` of named classes are overridden; everything
else (areas, zones, counts, ``uncertain_action``) stays as configured. A row with no classes
reverts to the configured rules.

Verdicts decided under an override carry ``config_hash`` = ``<config hash>+r<override id>``, so
every recorded verdict says which thresholds judged it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from station import serialize

from .config import ClassRule, RulesConfig
from .store import audit
from .store.db import write_transaction
from .store.rules_override_rows import append_override, newest_overrides

log = logging.getLogger(__name__)


class RulesOverrideError(ValueError):
    """An override cannot be applied; the message names the class or value."""


@dataclass(frozen=True)
class RulesOverride:
    """One row of ``rules_overrides``."""

    id: int
    t_wall: float
    user: str
    reason: str | None
    classes: Mapping[str, Mapping[str, float]]  # class -> {"reject_conf": x, "uncertain_conf": y}
    source: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return serialize.fields_to_dict(self)


def _check(classes: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, th in classes.items():
        if not isinstance(name, str) or not name or len(name) > 64:
            raise RulesOverrideError(f"class name {name!r}: give 1-64 characters")
        unknown = set(th) - {"reject_conf", "uncertain_conf"}
        if unknown:
            raise RulesOverrideError(
                f"class {name}: only reject_conf and uncertain_conf can be overridden, not {sorted(unknown)}"
            )
        vals = {}
        for k, v in th.items():
            f = float(v)
            if not 0.0 <= f <= 1.0:
                raise RulesOverrideError(f"class {name}: {k} must be in 0..1, got {v}")
            vals[k] = f
        out[name] = vals
    return out


def overlay(base: RulesConfig, classes: Mapping[str, Mapping[str, float]]) -> RulesConfig:
    """``base`` with the given per-class thresholds (validated: uncertain_conf <= reject_conf)."""
    merged: dict[str, ClassRule] = dict(base.classes)
    for name, th in _check(classes).items():
        old = base.for_class(name)
        try:
            merged[name] = ClassRule.model_validate({**old.model_dump(), **th})
        except ValueError as e:
            raise RulesOverrideError(f"class {name}: {e}") from None
    return base.model_copy(update={"classes": merged})


def thresholds_of(rules: RulesConfig, names: Any) -> dict[str, dict[str, float]]:
    """{class: {reject_conf, uncertain_conf}} of ``rules`` for each class in ``names``."""
    return {
        str(n): {
            "reject_conf": rules.for_class(str(n)).reject_conf,
            "uncertain_conf": rules.for_class(str(n)).uncertain_conf,
        }
        for n in names
    }


def latest(db: sqlite_utils.Database) -> RulesOverride | None:
    """The override in force (the newest row), or None when none was ever written."""
    found = newest_overrides(db, 1)
    return _override(found[0]) if found else None


def history(db: sqlite_utils.Database, limit: int = 50) -> list[RulesOverride]:
    """Overrides, newest first."""
    return [_override(r) for r in newest_overrides(db, limit)]


def _override(r: Mapping[str, Any]) -> RulesOverride:
    return RulesOverride(
        int(r["id"]),
        float(r["t_wall"]),
        str(r["user"]),
        r["reason"],
        json.loads(r["classes"] or "{}"),
        json.loads(r["source"] or "{}"),
    )


def record(
    db: sqlite_utils.Database,
    user: str,
    classes: Mapping[str, Mapping[str, float]],
    *,
    reason: str | None,
    source: Mapping[str, Any] | None = None,
    base: RulesConfig | None = None,
) -> RulesOverride:
    """Append an override (and its audit row) in one transaction; returns it.

    With ``base`` the merged rules are validated first (nothing is written when they are invalid).
    """
    checked = _check(classes)
    if base is not None:
        overlay(base, checked)
    before = latest(db)
    now = time.time()
    with write_transaction(db):
        oid = append_override(
            db,
            now,
            user,
            reason,
            serialize.dumps(checked, canonical=True),
            serialize.dumps(dict(source or {}), canonical=True),
        )
        audit.record(
            db,
            user,
            "rules_override" if checked else "rules_override_reset",
            "rules",
            oid,
            dict(before.classes) if before else {},
            checked,
            reason,
            t_wall=now,
        )
    log.info("rules override %d by %s: %s (%s)", oid, user, checked or "back to the configured rules", reason)
    return RulesOverride(oid, now, user, reason, checked, dict(source or {}))


def effective(db: sqlite_utils.Database, base: RulesConfig) -> tuple[RulesConfig, RulesOverride | None]:
    """The rules the line runs with: ``base`` plus the override in force (if any, and if it still fits ``base``)."""
    ov = latest(db)
    if ov is None or not ov.classes:
        return base, ov
    try:
        return overlay(base, ov.classes), ov
    except RulesOverrideError as e:
        log.error(
            "rules override %d no longer fits the configured rules (%s): ignored, running the configured rules",
            ov.id,
            e,
        )
        return base, None


def tagged_hash(config_hash: str, ov: RulesOverride | None) -> str:
    """The config hash verdicts carry under override ``ov``."""
    return config_hash if ov is None or not ov.classes else f"{config_hash}+r{ov.id}"
