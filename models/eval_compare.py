"""Candidate vs current model on one golden set, and the side-by-side report of evaluation figures.

:func:`compare` evaluates both models with :func:`models.evaluate.evaluate` (or takes results already
computed), lists the images on which their verdicts differ and applies the promotion gate (escape rate
not worse); :func:`format_table` prints the figures of one or more :class:`~models.evaluate.EvalResult`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from station.contracts import Outcome

from .evaluate import BACKGROUND, EvalResult, evaluate
from .golden import GoldenSet, load_golden


@dataclass(frozen=True)
class Disagreement:
    """An image on which the candidate and the current model decide differently."""

    stem: str
    truth: tuple[str, ...]
    candidate: str
    current: str
    candidate_right: bool


@dataclass(frozen=True)
class Comparison:
    """Candidate vs current model on the same golden set, at the same rules."""

    candidate: EvalResult
    current: EvalResult | None
    disagreements: tuple[Disagreement, ...]

    @property
    def escape_not_worse(self) -> bool:
        """The promotion gate: the candidate lets through no more defective parts than the current model."""
        if self.current is None:
            return True
        return self.candidate.escape_rate <= self.current.escape_rate + 1e-12

    def table(self) -> str:
        """Side-by-side report, then the disagreements."""
        cols = [self.candidate] + ([self.current] if self.current is not None else [])
        out = [format_table(cols, ["candidate", "current"][: len(cols)])]
        if self.current is not None:
            out.append(f"\nverdicts differ on {len(self.disagreements)} of {len(self.candidate.images)} images")
            if self.disagreements:
                out.append(f"  {'image':<24} {'truth':<22} {'candidate':<10} {'current':<10} right")
                for d in self.disagreements:
                    truth = ",".join(d.truth) or "good"
                    out.append(
                        f"  {d.stem:<24} {truth:<22} {d.candidate:<10} {d.current:<10} "
                        f"{'candidate' if d.candidate_right else 'current'}"
                    )
            out.append(f"gate (escape rate not worse): {'PASS' if self.escape_not_worse else 'FAIL'}")
        return "\n".join(out)

    def summary(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "candidate": self.candidate.summary(),
            "current": None if self.current is None else self.current.summary(),
            "escape_not_worse": self.escape_not_worse,
            "disagreements": [dataclasses.asdict(d) for d in self.disagreements],
        }


def compare(
    candidate: EvalResult | Path | str,
    current: EvalResult | Path | str | None,
    golden: GoldenSet | Path | str,
    **kw: Any,
) -> Comparison:
    """Evaluate (if paths are given) both models on ``golden`` and put them side by side."""
    gs = golden if isinstance(golden, GoldenSet) else load_golden(golden)
    cand = candidate if isinstance(candidate, EvalResult) else evaluate(candidate, gs, **kw)
    cur = current if isinstance(current, EvalResult) or current is None else evaluate(current, gs, **kw)
    dis: list[Disagreement] = []
    if cur is not None:
        if cur.golden_id != cand.golden_id:
            raise ValueError(
                f"results are on different golden sets ({cand.golden_id} vs {cur.golden_id}): not comparable"
            )
        for a, b in zip(cand.images, cur.images, strict=True):
            if a.outcome != b.outcome:
                truth = tuple(cand.names[int(c)] for c in a.truth_classes)
                dis.append(Disagreement(a.stem, truth, a.outcome, b.outcome, a.ejected == a.defective))
    return Comparison(cand, cur, tuple(dis))


def pct(v: float) -> str:
    """A rate as a percentage for the tables, ``-`` for none."""
    return "   -  " if v is None or np.isnan(v) else f"{100 * v:5.1f}%"


def f3(v: float) -> str:
    """A figure with three decimals for the tables, ``-`` for none."""
    return "  -  " if v is None or np.isnan(v) else f"{v:.3f}"


def format_table(results: Sequence[EvalResult], headers: Sequence[str] | None = None) -> str:
    """Figures of one or more results side by side (same golden set)."""
    named = headers is not None
    headers = list(headers or [r.model_id for r in results])
    w = max(14, *(len(h) + 2 for h in headers), *((len(r.model_id) + 2 for r in results) if named else ()))
    r0 = results[0]
    lines = [
        f"golden set {r0.golden_id}: {len(r0.images)} images, {r0.n_defective} defective, {r0.n_good} good; "
        f"eval conf {r0.conf}, eject = FAIL/FAILSAFE{' + UNCERTAIN' if r0.rules.uncertain_action == 'reject' else ''}"
    ]
    lines.append(f"{'':<28}" + "".join(f"{h:>{w}}" for h in headers))
    if named:
        lines.append(f"{'model':<28}" + "".join(f"{r.model_id:>{w}}" for r in results))

    def row(label: str, vals: Sequence[str]) -> None:
        lines.append(f"{label:<28}" + "".join(f"{v:>{w}}" for v in vals))

    row("escape rate", [f"{pct(r.escape_rate)} ({r.escapes})" for r in results])
    row("false-reject rate", [f"{pct(r.false_reject_rate)} ({r.false_rejects})" for r in results])
    row("uncertain rate", [pct(r.uncertain_rate) for r in results])
    row("precision @ reject_conf", [f3(r.precision) for r in results])
    row("recall @ reject_conf", [f3(r.recall) for r in results])
    row("mAP50", [f3(r.map50) for r in results])
    row("ms / part (inspect+decide)", [f"{r.ms_per_part:.1f}" for r in results])
    for name in r0.names:
        row(f"{name}: P / R", [f"{f3(r.per_class[name].precision)} / {f3(r.per_class[name].recall)}" for r in results])
        row(f"{name}: AP50", [f3(r.per_class[name].ap50) for r in results])
        row(
            f"{name}: escape",
            [f"{pct(r.per_class[name].escape_rate)} of {r.per_class[name].n_parts}" for r in results],
        )
    for r, h in zip(results, headers):
        lines.append(f"\n{h}: truth x outcome   " + "  ".join(f"{o}" for o in Outcome))
        for t in ("good", "defective"):
            lines.append(f"  {t:<12}" + "".join(f"{r.outcomes[t].get(o, 0):>{len(o) + 2}}" for o in Outcome))
        labels = [*r.names, BACKGROUND]
        lines.append(f"{h}: confusion at reject_conf (rows truth, cols predicted)")
        lines.append("  " + " " * 12 + "".join(f"{lab[:10]:>12}" for lab in labels))
        for i, lab in enumerate(labels):
            lines.append(f"  {lab[:10]:<12}" + "".join(f"{int(v):>12}" for v in r.confusion[i]))
    return "\n".join(lines)
