"""Evaluate a classify model on a split of class folders THROUGH THE PRODUCTION PATH; choose its threshold.

A classify split is ``<split>/<class>/<image>`` (e.g. ``test/`` of :func:`models.elpv.import_classify_dataset`).
Every image goes through :func:`station.pipeline.inspect_part` with the station's own inspector
(:func:`models.evaluate.open_inspector`) and :class:`~station.decide.Decider`, so a verdict here is the
verdict the line would give at these rules.

Figures at the operating rules (``rules.good_classes`` name the good classes; every other class is a
defect class): a good image is right when its part is not ejected, a defect image when it is
(FAIL, FAILSAFE, or UNCERTAIN with ``uncertain_action: reject``, as :func:`models.evaluate.ejected`).
Per-class recall = right / images of the class; balanced accuracy = their mean (insensitive to the
share of defective images). The confusion table counts truth class x verdict; UNCERTAIN parts are the
ones the line sends to review.

:func:`choose_threshold` picks ``P(defective)`` (= 1 - the good classes' probability) that maximises
balanced accuracy on a *validation* split; report the result on a split never used for tuning.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from station.config import CalibrationConfig, ClassRule, OnnxInspectorConfig, RulesConfig
from station.contracts import Frame, Outcome, Trigger
from station.decide import Decider, check_rules_for_model
from station.inspection.model_meta import read_model_meta
from station.pipeline import inspect_part

from .evaluate import ejected, open_inspector

OUTCOMES = (Outcome.PASS, Outcome.UNCERTAIN, Outcome.FAIL, Outcome.FAILSAFE)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class ClassifySplitError(ValueError):
    """A classify split cannot be evaluated; the message names the folder and the fix."""


def load_split(folder: Path | str, names: Sequence[str]) -> list[tuple[Path, str]]:
    """``[(image, class name)]`` of ``folder/<class>/<image>``, sorted; every class folder must be a model class."""
    root = Path(folder)
    if not root.is_dir():
        raise ClassifySplitError(f"{root}: no such folder; give a split of class folders, e.g. <dataset>/test")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise ClassifySplitError(f"{root}: no class folders; a classify split is {root}/<class>/<image>")
    unknown = [c for c in classes if c not in names]
    if unknown:
        raise ClassifySplitError(f"{root}: class folders {unknown} are not classes of the model {list(names)}")
    items = [(p, c) for c in classes for p in sorted((root / c).iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not items:
        raise ClassifySplitError(f"{root}: no images in its class folders")
    return items


@dataclass(frozen=True)
class ClassifyResult:
    """A classify model on one split through the production path."""

    model_path: str
    model_sha: str
    split: str
    names: tuple[str, ...]
    good_classes: tuple[str, ...]
    files: tuple[str, ...]
    truth: tuple[str, ...]
    outcomes: tuple[str, ...]
    ejected: np.ndarray  # (n,) bool
    probs: np.ndarray  # (n, nc) float32, by class id (from the inspector's detections)
    seconds: float

    @property
    def p_defect(self) -> np.ndarray:
        """P(defective) per image: 1 - the summed probability of the good classes."""
        good = [self.names.index(c) for c in self.good_classes]
        return np.clip(1.0 - self.probs[:, good].sum(1), 0.0, 1.0)

    @property
    def is_defect(self) -> np.ndarray:
        """True for images of a defect class."""
        return np.array([t not in self.good_classes for t in self.truth], bool)

    def per_class_recall(self) -> dict[str, float]:
        """Per truth class: the share of its images the line handles right (good: kept, defect: ejected)."""
        out = {}
        truth = np.array(self.truth)
        for c in sorted(set(self.truth)):
            sel = truth == c
            right = ~self.ejected[sel] if c in self.good_classes else self.ejected[sel]
            out[c] = float(right.mean())
        return out

    @property
    def balanced_accuracy(self) -> float:
        """Mean per-class recall."""
        r = self.per_class_recall()
        return float(np.mean(list(r.values())))

    @property
    def accuracy(self) -> float:
        """Share of all images the line handles right (good kept, defective ejected); depends on the class mix."""
        right = np.where(self.is_defect, self.ejected, ~self.ejected)
        return float(right.mean()) if len(right) else 0.0

    def confusion(self) -> dict[str, dict[str, int]]:
        """Truth class -> verdict -> count."""
        out: dict[str, dict[str, int]] = {}
        for t, o in zip(self.truth, self.outcomes):
            row = out.setdefault(t, {str(k): 0 for k in OUTCOMES})
            row[o] += 1
        return out

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures."""
        truth = np.array(self.truth)
        return {
            "model": self.model_path,
            "model_sha": self.model_sha,
            "split": self.split,
            "n": len(self.truth),
            "n_per_class": {c: int((truth == c).sum()) for c in sorted(set(self.truth))},
            "balanced_accuracy": round(self.balanced_accuracy, 4),
            "accuracy": round(self.accuracy, 4),
            "per_class_recall": {k: round(v, 4) for k, v in self.per_class_recall().items()},
            "confusion": self.confusion(),
            "review_rate": round(float(np.mean([o == Outcome.UNCERTAIN for o in self.outcomes])), 4),
            "seconds": round(self.seconds, 1),
        }

    def table(self) -> str:
        """Human-readable figures."""
        s = self.summary()
        lines = [
            f"classify model {Path(self.model_path).name} ({self.model_sha[:12]}) on {self.split}: {s['n']} images",
            f"balanced accuracy  {100 * s['balanced_accuracy']:.1f} %   (good classes: {', '.join(self.good_classes)})",
        ]
        lines += [
            f"recall {c:<12} {100 * r:.1f} %  (n={s['n_per_class'][c]})" for c, r in s["per_class_recall"].items()
        ]
        lines.append(f"{'truth / verdict':<16}" + "".join(f"{str(o):>11}" for o in OUTCOMES))
        for c, row in s["confusion"].items():
            lines.append(f"{c:<16}" + "".join(f"{row[str(o)]:>11}" for o in OUTCOMES))
        lines.append(f"sent to review (UNCERTAIN): {100 * s['review_rate']:.1f} %")
        return "\n".join(lines)


def evaluate_classify(
    model_path: Path | str,
    split_dir: Path | str,
    *,
    rules: RulesConfig,
    calibration: CalibrationConfig | None = None,
    inspector_cfg: OnnxInspectorConfig | None = None,
    camera_id: str = "cam0",
) -> ClassifyResult:
    """Run a classify model on every image of ``split_dir`` through the production path, at ``rules``."""
    meta = read_model_meta(model_path)
    if meta.task != "classify":
        raise ValueError(f"model {model_path} is a {meta.task} model; evaluate it on a golden set (images/ + labels/)")
    check_rules_for_model(rules, meta.task, meta.names)
    items = load_split(split_dir, meta.names)
    t0 = time.monotonic()
    inspector = open_inspector(model_path, inspector_cfg, conf=0.0)
    decider = Decider(rules, calibration or CalibrationConfig(), "evaluate")
    probs = np.zeros((len(items), len(meta.names)), np.float32)
    outcomes, out_ej = [], []
    try:
        for i, (path, _truth) in enumerate(items):
            img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if img is None or img.dtype != np.uint8:
                raise ClassifySplitError(f"{path}: not a readable 8-bit image")
            t_ns = time.monotonic_ns()
            trig = Trigger(part_id=i + 1, seq=i + 1, t_trigger_ns=t_ns, source="evaluate", t_trigger_wall=time.time())
            res = inspect_part(inspector, decider, trig, [Frame(i + 1, camera_id, img, t_ns, {"file": path.name})])
            for det in res.detections[:1]:
                probs[i, det.class_ids] = det.scores
            outcomes.append(str(res.verdict.outcome))
            out_ej.append(ejected(res.verdict.outcome, rules))
    finally:
        inspector.close()
    return ClassifyResult(
        str(model_path),
        meta.sha256,
        str(split_dir),
        tuple(meta.names),
        tuple(rules.good_classes),
        tuple(str(p) for p, _ in items),
        tuple(t for _, t in items),
        tuple(outcomes),
        np.array(out_ej, bool),
        probs,
        time.monotonic() - t0,
    )


def choose_threshold(p_defect: np.ndarray, is_defect: np.ndarray) -> tuple[float, float]:
    """The ``P(defective)`` threshold (reject at or above) with the best balanced accuracy; returns (threshold, BA).

    Candidates lie halfway between neighbouring distinct scores (a threshold on an exact score of
    the tuning split would over-fit it); among equal balanced accuracies the lowest threshold wins
    (fewer escapes).
    """
    p, d = np.asarray(p_defect, np.float64), np.asarray(is_defect, bool)
    if d.all() or not d.any():
        raise ValueError("choosing a threshold needs good and defective images")
    u = np.unique(p)
    cands = np.concatenate([[0.0], (u[:-1] + u[1:]) / 2, [1.0]]) if len(u) > 1 else np.array([u[0]])
    best_t, best_ba = 0.5, -1.0
    for t in cands:
        ej = p >= t
        ba = (ej[d].mean() + (~ej[~d]).mean()) / 2
        if ba > best_ba + 1e-12:
            best_t, best_ba = float(t), float(ba)
    return best_t, best_ba


def classify_rules(
    base: RulesConfig, defect_classes: Sequence[str], reject_conf: float, band: float = 0.0
) -> RulesConfig:
    """``base`` with each defect class rejecting at ``reject_conf`` and UNCERTAIN (review) from ``reject_conf -
    band``."""
    rule = ClassRule(reject_conf=float(reject_conf), uncertain_conf=max(0.0, float(reject_conf) - float(band)))
    return base.model_copy(update={"classes": {**base.classes, **{c: rule for c in defect_classes}}})
