"""Per-class reject thresholds that reach an escape-rate target on a golden set at the least false-reject cost.

:func:`tune_thresholds` works on an :class:`~models.evaluate.EvalResult` (no model run) and checks the
thresholds it proposes by re-deciding the golden set with the production Decider
(:func:`models.evaluate.redecide`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from station.camera_setup import CameraSetup
from station.config import CalibrationConfig, ClassRule, OnnxInspectorConfig, RulesConfig

from .eval_compare import pct
from .evaluate import EvalResult, redecide


@dataclass(frozen=True)
class Tuning:
    """Per-class reject thresholds that meet an escape-rate target, and what they cost."""

    thresholds: Mapping[str, float]  # class -> the confidence at or above which it ejects a part
    rules: RulesConfig  # the operating rules with those thresholds (checked with the Decider)
    target_escape_rate: float
    escape_rate: float
    false_reject_rate: float
    achieved: bool
    floor_escape_rate: float  # the best any threshold can do: defective parts with no detection at all
    result: EvalResult  # the golden set re-decided with ``rules``

    def table(self) -> str:
        """Printable."""
        lines = [
            f"target escape rate {pct(self.target_escape_rate)}: {'met' if self.achieved else 'NOT met'} "
            f"(lowest reachable {pct(self.floor_escape_rate)})"
        ]
        for k, v in self.thresholds.items():
            lines.append(f"  {k:<12} " + (f"eject at conf >= {v:.3f}" if v < 1.0 else "never ejects (1.0)"))
        lines.append(f"  escape rate {pct(self.escape_rate)}, false-reject rate {pct(self.false_reject_rate)}")
        return "\n".join(lines)


def _part_scores(result: EvalResult) -> np.ndarray:
    """(parts, classes) max eligible score per class (0 when none)."""
    nc = len(result.names)
    s = np.zeros((len(result.images), nc), np.float64)
    for i, im in enumerate(result.images):
        det = im.detections
        for j in range(len(det)):
            if im.eligible[j]:
                c = int(det.class_ids[j])
                if 0 <= c < nc:
                    s[i, c] = max(s[i, c], float(det.scores[j]))
    return s


def tune_thresholds(
    result: EvalResult,
    target_escape_rate: float,
    *,
    calibration: CalibrationConfig | None = None,
    min_conf: float | None = None,
    setup: Mapping[str, CameraSetup] | None = None,
) -> Tuning:
    """Per-class eject thresholds reaching ``target_escape_rate`` on the golden set at the least false-reject cost.

    Greedy (not guaranteed optimal): start with nothing ejecting; repeatedly lower the one class
    threshold whose next step removes the most escapes per added false reject, until the target
    is met; then raise each threshold back as far as the target allows, and finally set it halfway
    between the highest good-part score it spares and the weakest defect it must catch (the same
    rates on this golden set, a margin on both sides for parts it never saw: raised to the edge,
    thresholds tuned on 600 parts let 1.0-1.3 % of 1,000 others escape where halfway let 0.2 %,
    models/README.md). Only detections the rules
    would consider (zones, areas, enabled classes) count, and no threshold goes below ``min_conf``
    (default: the line inspector's default ``conf``, 0.1 - the line never sees lower scores; pass the
    line's own ``inspector.conf``). Assumes ``max_count`` 0. Thresholds are rounded down to 4
    decimals. The returned ``rules`` keep the uncertain band where possible and are checked by
    re-deciding the golden set with the production Decider (the reported rates come from that).
    """
    if not 0.0 <= target_escape_rate <= 1.0:
        raise ValueError(f"target_escape_rate must be in 0..1, got {target_escape_rate}")
    names = result.names
    nc = len(names)
    min_conf = max(result.conf, OnnxInspectorConfig().conf if min_conf is None else min_conf)
    s = _part_scores(result)
    defective = np.array([im.defective for im in result.images], bool)
    n_def = int(defective.sum())
    never = 1.0 + 1e-9
    t = np.full(nc, never)
    cand = [np.unique(s[:, c][s[:, c] >= min_conf])[::-1] for c in range(nc)]  # descending

    def rates(th: np.ndarray) -> tuple[int, int]:
        ej = (s >= th[None, :]).any(1)
        return int((defective & ~ej).sum()), int((~defective & ej).sum())

    target_escapes = int(np.floor(target_escape_rate * n_def + 1e-9))
    esc, fr = rates(t)
    while esc > target_escapes:
        best = None
        for c in range(nc):
            lower = cand[c][cand[c] < t[c]]
            for v in lower:  # the next step that removes at least one escape
                th = t.copy()
                th[c] = v
                e2, f2 = rates(th)
                if e2 < esc:
                    gain = (esc - e2) / (f2 - fr + 0.5)
                    if best is None or gain > best[0]:
                        best = (gain, c, v, e2, f2)
                    break
        if best is None:
            break
        _, c, v, esc, fr = best
        t[c] = v
    for c in range(nc):  # give back what is not needed
        for v in sorted(set(cand[c][cand[c] > t[c]]) | {never}):
            th = t.copy()
            th[c] = v
            e2, f2 = rates(th)
            if e2 <= max(esc, target_escapes):
                t, esc, fr = th, e2, f2
            else:
                break
    t = _with_margin(t, s[~defective], min_conf)
    floor = float(rates(np.full(nc, min_conf))[0]) / n_def if n_def else 0.0
    thresholds = {names[c]: float(min(np.floor(t[c] * 1e4) / 1e4, 1.0)) for c in range(nc)}
    rules = _rules_with(result.rules, thresholds)
    checked = redecide(result, rules, calibration, setup=setup)
    return Tuning(
        thresholds=thresholds,
        rules=rules,
        target_escape_rate=target_escape_rate,
        escape_rate=checked.escape_rate,
        false_reject_rate=checked.false_reject_rate,
        achieved=bool(checked.escape_rate <= target_escape_rate + 1e-12) if n_def else True,
        floor_escape_rate=floor,
        result=checked,
    )


def _with_margin(t: np.ndarray, good_scores: np.ndarray, min_conf: float) -> np.ndarray:
    """Each ejecting threshold lowered to halfway between the highest good-part score below it (or ``min_conf``)
    and itself: no part changes side on the golden set (no good score lies in between)."""
    out = t.copy()
    for c in range(len(t)):
        if t[c] > 1.0:  # never ejects
            continue
        col = good_scores[:, c]
        spared = col[(col < t[c]) & (col >= min_conf)]
        low = float(spared.max()) if spared.size else min_conf
        out[c] = max(min_conf, (low + float(t[c])) / 2)
    return out


def _rules_with(rules: RulesConfig, eject: Mapping[str, float]) -> RulesConfig:
    """Rules under which class c ejects a part exactly when a (counted) detection scores >= eject[c]."""
    classes: dict[str, ClassRule] = dict(rules.classes)
    for name, e in eject.items():
        old = rules.for_class(name)
        if rules.uncertain_action == "reject":  # UNCERTAIN ejects too: the band's floor is the eject threshold
            new = old.model_copy(update={"uncertain_conf": e, "reject_conf": max(e, old.reject_conf)})
        else:
            new = old.model_copy(update={"reject_conf": e, "uncertain_conf": min(e, old.uncertain_conf)})
        classes[name] = ClassRule.model_validate(new.model_dump())
    return rules.model_copy(update={"classes": classes})
