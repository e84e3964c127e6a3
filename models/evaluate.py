"""Evaluate models on a frozen golden set THROUGH THE PRODUCTION PATH, compare them, tune thresholds.

Every golden image goes through :func:`station.pipeline.inspect_part` with the station's own
:class:`~station.inspection.onnx_backend.OnnxInspector` and :class:`~station.decide.Decider` - the code
the line runs - so a verdict here is the verdict the line would give.

Figures (all on the golden set):

- Detection quality, per class and overall: precision and recall at the operating point (detections
  at or above the class's ``reject_conf``), and AP50: average precision at IoU 0.5 over all
  detections the inspector emits at the evaluation ``conf`` (default 0.01), computed here with the
  all-point interpolation (PASCAL VOC 2010+: area under the monotone precision envelope of the
  precision/recall curve; detections in descending score order, each matched to the unmatched
  ground-truth box of its class with the highest IoU >= 0.5, otherwise a false positive).
  mAP50 = mean AP50 over classes that have ground truth. Numbers are close to, not identical with,
  Ultralytics' val (which uses conf 0.001 and a 101-point interpolation).
- Part decisions at the operating rules (:class:`~station.config.RulesConfig`): a part is *ejected*
  when its verdict is FAIL or FAILSAFE, or UNCERTAIN with ``uncertain_action: reject``.
  escape rate = defective parts not ejected / defective parts; false-reject rate = good parts
  ejected / good parts; per class: escape rate among parts that carry that class.
- A confusion table at the operating point (rows: truth class or background, columns: predicted
  class or background; IoU >= 0.5, class-agnostic matching) and the truth x outcome table.

Lowering ``conf`` below the line's value does not change a verdict as long as every rule's
``uncertain_conf`` is at least the line's ``conf``: NMS is greedy by score, so low-scoring boxes
never suppress higher ones, and the Decider ignores detections below ``uncertain_conf``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from station.camera_setup import CameraSetup, zero_thresholds
from station.config import CalibrationConfig, OnnxInspectorConfig, RulesConfig
from station.contracts import Detections, Frame, Outcome, Trigger
from station.decide import Decider
from station.inspection.base import Inspector
from station.inspection.model_meta import read_model_meta
from station.inspection.postprocess import box_iou
from station.pipeline import inspect_part

from .golden import GoldenSet, iter_images, load_golden

log = logging.getLogger(__name__)

EVAL_CONF = 0.01
IOU = 0.5
BACKGROUND = "background"


# --------------------------------------------------------------------------- geometry + AP


def average_precision(tp: np.ndarray, scores: np.ndarray, n_truth: int) -> float:
    """All-point interpolated AP from per-detection TP flags and scores (VOC 2010+)."""
    if n_truth == 0:
        return float("nan")
    if len(tp) == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    tp = tp[order].astype(np.float64)
    ctp = np.cumsum(tp)
    cfp = np.cumsum(1.0 - tp)
    recall = ctp / n_truth
    precision = ctp / np.maximum(ctp + cfp, 1e-12)
    mrec = np.concatenate([[0.0], recall, [recall[-1]]])
    mpre = np.concatenate([[1.0], precision, [0.0]])
    mpre = np.flip(np.maximum.accumulate(np.flip(mpre)))  # precision envelope
    idx = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def match_greedy(
    det_boxes: np.ndarray, det_scores: np.ndarray, gt_boxes: np.ndarray, iou: float = IOU
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy score-ordered matching of one class on one image.

    Returns (tp flags per detection, index of the matched truth per detection or -1).
    """
    tp = np.zeros(len(det_boxes), bool)
    which = np.full(len(det_boxes), -1, np.int64)
    if len(det_boxes) == 0 or len(gt_boxes) == 0:
        return tp, which
    ious = box_iou(det_boxes, gt_boxes)
    taken = np.zeros(len(gt_boxes), bool)
    for i in np.argsort(-det_scores, kind="stable"):
        cand = np.where(taken, -1.0, ious[i])
        j = int(np.argmax(cand))
        if cand[j] >= iou:
            tp[i], which[i], taken[j] = True, j, True
    return tp, which


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ImageResult:
    """One golden image through the production path."""

    stem: str
    truth_classes: np.ndarray  # (N,) int32
    truth_boxes: np.ndarray  # (N, 4) float32, frame px
    detections: Detections  # what the inspector emitted (score >= evaluation conf)
    eligible: np.ndarray  # (M,) bool: the rules would consider the detection (zones, area, enabled)
    outcome: str
    reasons: tuple[str, ...]
    ejected: bool
    ms: float  # inspect + decide

    @property
    def defective(self) -> bool:
        """True when the image has ground-truth defects."""
        return len(self.truth_classes) > 0


@dataclass(frozen=True)
class ClassMetrics:
    """Detection and decision figures of one class."""

    name: str
    n_truth: int  # ground-truth boxes
    n_parts: int  # parts carrying this class
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    ap50: float
    escape_rate: float  # parts carrying this class that were not ejected / n_parts
    escapes: int
    reject_conf: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {k: _num(v) for k, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class EvalResult:
    """A model on a golden set."""

    model_path: str
    model_sha: str
    model_id: str
    golden_id: str
    names: tuple[str, ...]
    rules: RulesConfig
    conf: float
    images: tuple[ImageResult, ...]
    per_class: Mapping[str, ClassMetrics]
    precision: float
    recall: float
    map50: float
    escape_rate: float
    false_reject_rate: float
    uncertain_rate: float
    n_defective: int
    n_good: int
    escapes: int
    false_rejects: int
    outcomes: Mapping[str, Mapping[str, int]]  # {"good"|"defective": {outcome: count}}
    confusion: np.ndarray  # (nc + 1, nc + 1): rows truth, cols predicted; last = background
    ms_per_part: float
    seconds: float

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures (no per-image data): what the registry stores."""
        return {
            "golden_id": self.golden_id,
            "model_sha": self.model_sha,
            "n_images": len(self.images),
            "n_defective": self.n_defective,
            "n_good": self.n_good,
            "precision": _num(self.precision),
            "recall": _num(self.recall),
            "mAP50": _num(self.map50),
            "escape_rate": _num(self.escape_rate),
            "false_reject_rate": _num(self.false_reject_rate),
            "uncertain_rate": _num(self.uncertain_rate),
            "escapes": self.escapes,
            "false_rejects": self.false_rejects,
            "per_class": {k: v.as_dict() for k, v in self.per_class.items()},
            "outcomes": {k: dict(v) for k, v in self.outcomes.items()},
            "confusion": {"labels": [*self.names, BACKGROUND], "rows_truth_cols_predicted": self.confusion.tolist()},
            "ms_per_part": _num(self.ms_per_part),
            "conf": self.conf,
            "rules": self.rules.model_dump(mode="json"),
        }

    def table(self) -> str:
        """A printable report."""
        from .eval_compare import format_table  # it imports this module

        return format_table([self])


def _num(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return None if np.isnan(f) else round(f, 5)
    if isinstance(v, np.integer):
        return int(v)
    return v


# --------------------------------------------------------------------------- running


def _eligibility_decider(
    rules: RulesConfig, calibration: CalibrationConfig, setup: Mapping[str, CameraSetup] | None = None
) -> Decider:
    """A Decider with every threshold at 0 (drawn regions' too): its ``judge`` says whether zones/area/enabled let a
    detection count."""
    zero = {"reject_conf": 0.0, "uncertain_conf": 0.0}
    r0 = rules.model_copy(
        update={
            "default": rules.default.model_copy(update=zero),
            "classes": {k: v.model_copy(update=zero) for k, v in rules.classes.items()},
        }
    )
    return Decider(r0, calibration, "eligibility", zero_thresholds(setup or {}))


def eligible(elig: Decider, det: Detections, camera_id: str) -> np.ndarray:
    """Which of ``det`` the zones, minimum areas and enabled classes let count (``elig`` from
    :func:`_eligibility_decider`): one bool per detection."""
    return np.array(
        [(d := elig.judge(det, j, camera_id)) is not None and d.action != "ignore" for j in range(len(det))], bool
    )


def ejected(outcome: str, rules: RulesConfig) -> bool:
    """Does a part with this outcome leave the line?"""
    return outcome in (Outcome.FAIL, Outcome.FAILSAFE) or (
        outcome == Outcome.UNCERTAIN and rules.uncertain_action == "reject"
    )


def open_inspector(model_path: Path | str, inspector_cfg: Any = None, conf: float = EVAL_CONF) -> Inspector:
    """The production inspector for ``model_path`` (onnx: keep-alive off, evaluation ``conf``; or an anomaly model)."""
    from station.inspection.loader import inspector_for_file

    return inspector_for_file(model_path, inspector_cfg, onnx_overrides={"keepalive_s": 0.0, "conf": float(conf)})


def evaluate(
    model_path: Path | str,
    golden: GoldenSet | Path | str,
    *,
    rules: RulesConfig | None = None,
    calibration: CalibrationConfig | None = None,
    inspector_cfg: OnnxInspectorConfig | None = None,
    conf: float = EVAL_CONF,
    camera_id: str = "cam0",
    setup: Mapping[str, CameraSetup] | None = None,
) -> EvalResult:
    """Run ``model_path`` on every image of ``golden`` through the production path and score it.

    ``rules``/``calibration``/``inspector_cfg`` default to the station defaults; pass the line's own
    to evaluate at its operating point (the inspector's ``model``, ``conf`` and ``keepalive_s`` are
    replaced). Class names must match the golden set's. ``setup``: the line's calibrations and drawn
    regions in force (:func:`station.camera_setup.load`), so the golden set is judged as the line judges.
    """
    gs = golden if isinstance(golden, GoldenSet) else load_golden(golden)
    rules = rules or RulesConfig()
    calibration = calibration or CalibrationConfig()
    meta = read_model_meta(model_path)
    anomaly = meta.task == "anomaly"
    if anomaly:  # class-agnostic: every labelled defect of the golden set is an anomaly to find
        gs = dataclasses.replace(
            gs,
            names=meta.names,
            items=tuple(
                [dataclasses.replace(it, class_ids=np.zeros_like(np.asarray(it.class_ids))) for it in gs.items]
            ),
        )
    if tuple(meta.names) != tuple(gs.names):
        raise ValueError(
            f"model {model_path} classes {list(meta.names)} differ from golden set {gs.root} classes {list(gs.names)}; "
            "evaluate on a golden set labelled with the model's classes"
        )
    t0 = time.monotonic()
    inspector = open_inspector(model_path, inspector_cfg, conf)
    try:
        decider = Decider(rules, calibration, "evaluate", setup)
        elig = _eligibility_decider(rules, calibration, setup)
        images = []
        for i, (item, img) in enumerate(iter_images(gs.items), 1):
            t_ns = time.monotonic_ns()
            trig = Trigger(part_id=i, seq=i, t_trigger_ns=t_ns, source="evaluate", t_trigger_wall=time.time())
            frame = Frame(part_id=i, camera_id=camera_id, image=img, t_exposure_ns=t_ns, meta={"golden": item.stem})
            res = inspect_part(inspector, decider, trig, [frame])
            det = res.detections[0] if res.detections else Detections.empty(tuple(meta.names), inspector.model_id)
            ok = eligible(elig, det, camera_id)
            h, w = img.shape[:2]
            ms = float(res.verdict.timings_ms.get("inspect", 0.0)) + float(res.verdict.timings_ms.get("decide", 0.0))
            images.append(
                ImageResult(
                    item.stem,
                    item.class_ids,
                    item.boxes_xyxy(w, h),
                    det,
                    ok,
                    str(res.verdict.outcome),
                    tuple(res.verdict.reasons),
                    ejected(res.verdict.outcome, rules),
                    ms,
                )
            )
    finally:
        inspector.close()
    return score(
        images,
        meta.names,
        rules,
        model_path=str(model_path),
        model_sha=meta.sha256,
        model_id=meta.model_id,
        golden_id=gs.golden_id,
        conf=conf,
        seconds=time.monotonic() - t0,
    )


def score(
    images: Sequence[ImageResult],
    names: Sequence[str],
    rules: RulesConfig,
    *,
    model_path: str = "",
    model_sha: str = "",
    model_id: str = "",
    golden_id: str = "",
    conf: float = EVAL_CONF,
    seconds: float = 0.0,
) -> EvalResult:
    """All figures from per-image results (see the module docstring for the definitions)."""
    names = tuple(names)
    nc = len(names)
    per_class: dict[str, ClassMetrics] = {}
    all_tp = all_fp = all_fn = 0
    aps = []
    for c, name in enumerate(names):
        thr = rules.for_class(name).reject_conf
        flags, scores = [], []
        op_tp = op_fp = n_truth = n_parts = escapes = 0
        for im in images:
            det = im.detections.model_rows()  # box figures judge the model's boxes (not a template check's)
            gt = im.truth_boxes[im.truth_classes == c]
            n_truth += len(gt)
            if len(gt):
                n_parts += 1
                escapes += not im.ejected
            sel = det.class_ids == c
            boxes, sc = det.boxes_xyxy[sel], det.scores[sel]
            tp, _ = match_greedy(boxes, sc, gt)
            flags.append(tp)
            scores.append(sc)
            op = sc >= thr
            tp_op, _ = match_greedy(boxes[op], sc[op], gt)
            op_tp += int(tp_op.sum())
            op_fp += int((~tp_op).sum())
        ap = average_precision(
            np.concatenate(flags) if flags else np.zeros(0, bool),
            np.concatenate(scores) if scores else np.zeros(0),
            n_truth,
        )
        if n_truth:
            aps.append(ap)
        fn = n_truth - op_tp
        all_tp, all_fp, all_fn = all_tp + op_tp, all_fp + op_fp, all_fn + fn
        per_class[name] = ClassMetrics(
            name,
            n_truth,
            n_parts,
            op_tp,
            op_fp,
            fn,
            op_tp / (op_tp + op_fp) if op_tp + op_fp else float("nan"),
            op_tp / n_truth if n_truth else float("nan"),
            ap,
            escapes / n_parts if n_parts else float("nan"),
            escapes,
            thr,
        )
    n_def = sum(1 for im in images if im.defective)
    n_good = len(images) - n_def
    escapes = sum(1 for im in images if im.defective and not im.ejected)
    false_rejects = sum(1 for im in images if not im.defective and im.ejected)
    outcomes: dict[str, dict[str, int]] = {"good": {}, "defective": {}}
    for im in images:
        row = outcomes["defective" if im.defective else "good"]
        row[im.outcome] = row.get(im.outcome, 0) + 1
    return EvalResult(
        model_path=model_path,
        model_sha=model_sha,
        model_id=model_id,
        golden_id=golden_id,
        names=names,
        rules=rules,
        conf=conf,
        images=tuple(images),
        per_class=per_class,
        precision=all_tp / (all_tp + all_fp) if all_tp + all_fp else float("nan"),
        recall=all_tp / (all_tp + all_fn) if all_tp + all_fn else float("nan"),
        map50=float(np.mean(aps)) if aps else float("nan"),
        escape_rate=escapes / n_def if n_def else float("nan"),
        false_reject_rate=false_rejects / n_good if n_good else float("nan"),
        uncertain_rate=sum(1 for im in images if im.outcome == Outcome.UNCERTAIN) / max(len(images), 1),
        n_defective=n_def,
        n_good=n_good,
        escapes=escapes,
        false_rejects=false_rejects,
        outcomes=outcomes,
        confusion=confusion_matrix(images, nc, rules, names),
        ms_per_part=float(np.mean([im.ms for im in images])) if images else float("nan"),
        seconds=seconds,
    )


def confusion_matrix(images: Sequence[ImageResult], nc: int, rules: RulesConfig, names: Sequence[str]) -> np.ndarray:
    """(nc + 1)^2 counts at the operating point: rows truth, cols predicted; index nc = background."""
    m = np.zeros((nc + 1, nc + 1), np.int64)
    thr = np.array([rules.for_class(n).reject_conf for n in names], np.float32)
    for im in images:
        det = im.detections.model_rows()
        keep = det.scores >= thr[np.clip(det.class_ids, 0, nc - 1)] if len(det) else np.zeros(0, bool)
        boxes, cls, sc = det.boxes_xyxy[keep], det.class_ids[keep], det.scores[keep]
        _, which = match_greedy(boxes, sc, im.truth_boxes)
        matched_truth = set()
        for k, j in enumerate(which):
            if j >= 0:
                m[int(im.truth_classes[j]), int(cls[k])] += 1
                matched_truth.add(int(j))
            else:
                m[nc, int(cls[k])] += 1
        for j, c in enumerate(im.truth_classes):
            if j not in matched_truth:
                m[int(c), nc] += 1
    return m


def redecide(
    result: EvalResult,
    rules: RulesConfig,
    calibration: CalibrationConfig | None = None,
    camera_id: str = "cam0",
    setup: Mapping[str, CameraSetup] | None = None,
) -> EvalResult:
    """The same detections decided again by the production Decider under other ``rules`` (no re-inference)."""
    decider = Decider(rules, calibration or CalibrationConfig(), "redecide", setup)
    elig = _eligibility_decider(rules, calibration or CalibrationConfig(), setup)
    out = []
    for i, im in enumerate(result.images, 1):
        trig = Trigger(part_id=i, seq=i, t_trigger_ns=time.monotonic_ns(), source="redecide")
        frame = Frame(part_id=i, camera_id=camera_id, image=np.zeros((2, 2), np.uint8), t_exposure_ns=trig.t_trigger_ns)
        v = decider.decide(trig, [frame], [im.detections], {})
        det = im.detections
        ok = eligible(elig, det, camera_id)
        out.append(
            dataclasses.replace(
                im, outcome=str(v.outcome), reasons=tuple(v.reasons), ejected=ejected(v.outcome, rules), eligible=ok
            )
        )
    return score(
        out,
        result.names,
        rules,
        model_path=result.model_path,
        model_sha=result.model_sha,
        model_id=result.model_id,
        golden_id=result.golden_id,
        conf=result.conf,
        seconds=result.seconds,
    )
