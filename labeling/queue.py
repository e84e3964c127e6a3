"""The review queue: which kept images a QA reviewer should label first.

Candidates are images whose file is still kept (``images.deleted_at IS NULL``) of line
inspections (imported datasets, ``inspections.source = 'import'``, are never queued), after
the filters. They are ranked in tiers, most useful to label first:

0. ``uncertain`` - UNCERTAIN parts. Within the tier, by the distance between the model's
   confidence and the reject threshold, smallest first: for each detection the rules marked
   ``uncertain``, ``|confidence - reject_conf(class)|`` (per-class thresholds from ``rules``,
   default :class:`~station.config.RulesConfig` = 0.5); the part's ``max_score`` when it has
   no such detection. A score right at the threshold is the one the model is least sure of.
1. ``disagreement`` - parts where another source of truth disagrees with the model, by
   disagreement score, largest first (see :func:`disagreement`): the synthetic line's ground
   truth (``inspections.ground_truth``) and, when the table exists, a shadow model's verdict
   (``shadow_results(part_id, outcome)``; the latest row per part counts).
2. ``pass_sample`` - a deterministic random sample of PASS parts, to catch escapes: a PASS
   image is in the sample when ``u(seed, part_id) < pass_sample_fraction``, where ``u`` is a
   uniform number in [0, 1) hashed from the seed and the part id (all cameras of a part are
   sampled together; the same seed gives the same sample and order, so pages are stable as
   long as no new rows arrive). Ordered by ``u``.
3. ``fail`` - FAIL parts by ``max_score``, lowest first (low-confidence rejects are the likely
   false positives).
4. ``other`` - FAILSAFE parts (newest first) and the PASS images outside the sample (by ``u``).

Ties break on image id. ``score`` in :class:`QueueItem` is the within-tier sort key (lower
first) and ``why`` says in words why the item is where it is.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from station.config.rules import RulesConfig
from station.contracts import Outcome
from station.store import review_queue as queue_rows

from .labels import current_labels_many

log = logging.getLogger(__name__)

TIERS = ("uncertain", "disagreement", "pass_sample", "fail", "other")
_PASS, _FAIL, _UNCERTAIN = Outcome.PASS.value, Outcome.FAIL.value, Outcome.UNCERTAIN.value
MATCH_IOU = 0.5


@dataclass(frozen=True, slots=True)
class QueueItem:
    """One image to review, with where and why it sits in the queue."""

    image_id: int
    part_id: int
    camera_id: str
    outcome: str
    max_score: float | None
    model_id: str
    t_wall: float | None
    tier: str
    score: float
    why: str
    disagreement: float
    reviewed: bool
    n_labels: int
    classes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class QueueQuery:
    """What the queue holds and how it is ranked: the keyword arguments of :func:`review_queue`
    and :func:`queue_counts` (one definition for both).

    Filters: ``outcome`` (PASS/FAIL/UNCERTAIN/FAILSAFE), ``class_name`` (a current label of that
    class), ``min_conf``/``max_conf`` (on the part's max score, 0 when it has no detection),
    ``since`` (inclusive) / ``until`` (exclusive) UNIX seconds of the trigger, ``model_id``,
    ``reviewed`` (False: not yet reviewed, True: reviewed, None: both). Ranking: ``rules`` gives
    the per-class reject thresholds (default :class:`~station.config.RulesConfig`); ``seed`` and
    ``pass_sample_fraction`` the PASS sample.
    """

    outcome: Outcome | str | None = None
    class_name: str | None = None
    min_conf: float | None = None
    max_conf: float | None = None
    since: float | None = None
    until: float | None = None
    model_id: str | None = None
    reviewed: bool | None = False
    seed: int = 0
    rules: RulesConfig | None = None
    pass_sample_fraction: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.pass_sample_fraction <= 1.0:
            raise ValueError(f"pass_sample_fraction must be in [0, 1], not {self.pass_sample_fraction}")


def seeded_uniform(seed: int, part_id: int) -> float:
    """A uniform number in [0, 1) from (seed, part_id): the same inputs always give the same number."""
    h = hashlib.sha256(f"{int(seed)}:{int(part_id)}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_boxes(
    truth: Sequence[tuple[str, Sequence[float]]],
    found: Sequence[tuple[str, Sequence[float]]],
    min_iou: float = MATCH_IOU,
) -> tuple[int, int, int]:
    """Greedy same-class matching by IoU: (matched, missed truth, unmatched found)."""
    pairs = sorted(
        ((iou(t[1], f[1]), ti, fi) for ti, t in enumerate(truth) for fi, f in enumerate(found) if t[0] == f[0]),
        reverse=True,
    )
    used_t: set[int] = set()
    used_f: set[int] = set()
    for v, ti, fi in pairs:
        if v < min_iou:
            break
        if ti in used_t or fi in used_f:
            continue
        used_t.add(ti)
        used_f.add(fi)
    return len(used_t), len(truth) - len(used_t), len(found) - len(used_f)


def disagreement(
    found: Sequence[tuple[str, Sequence[float]]],
    truth: Sequence[tuple[str, Sequence[float]]] | None,
    outcome: str,
    shadow_outcome: str | None,
) -> tuple[float, str]:
    """How much other evidence disagrees with the model on one image: (score in [0, 1], reason).

    ``found``: the model's detections on this image that counted (class, box); ``truth``: the
    ground-truth defects of this image (None when unknown); ``shadow_outcome``: a shadow
    model's verdict for the part (None when unknown). Scores:

    - 1.0 ``escape``: ground truth has a defect, the model found none on this image;
    - 0.8 ``overkill``: ground truth is clean, the model found a defect;
    - 0.5 x (missed + spurious) / (truth + found) ``boxes``: both saw defects but the boxes or
      classes do not match (greedy same-class IoU >= 0.5);
    - 0.9 ``shadow``: the shadow model rejects where the station passed, or the reverse.

    The largest applies; 0.0 means nothing disagrees.
    """
    score, reason = 0.0, ""
    if truth is not None:
        if truth and not found:
            score, reason = 1.0, f"escape: ground truth has {len(truth)} defect(s), the model found none"
        elif found and not truth:
            score, reason = 0.8, f"overkill: ground truth is clean, the model found {len(found)} defect(s)"
        elif truth and found:
            _, missed, extra = match_boxes(truth, found)
            if missed or extra:
                score = 0.5 * (missed + extra) / (len(truth) + len(found))
                reason = f"boxes: {missed} ground-truth defect(s) missed, {extra} detection(s) unmatched"
    if shadow_outcome is not None:
        station_rejects = outcome != Outcome.PASS.value
        shadow_rejects = shadow_outcome != Outcome.PASS.value
        if station_rejects != shadow_rejects and score < 0.9:
            score, reason = 0.9, f"shadow: the shadow model says {shadow_outcome}, the station said {outcome}"
    return score, reason


def _truth_for(raw: str | None, camera_id: str) -> list[tuple[str, tuple[float, ...]]] | None:
    if not raw:
        return None
    try:
        truth = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(truth, Mapping) or camera_id not in truth:
        return None
    out = []
    for t in truth[camera_id] or []:
        if isinstance(t, Mapping) and "class_name" in t and "box_xyxy" in t:
            out.append((str(t["class_name"]), tuple(float(v) for v in t["box_xyxy"])))
    return out


def _rank(
    c: dict[str, Any],
    dets: list[dict[str, Any]],
    part_dets: list[dict[str, Any]],
    shadow: str | None,
    rules: RulesConfig,
    seed: int,
    pass_sample_fraction: float,
) -> tuple[int, float, str, float]:
    """(tier index, score, why, disagreement) of one candidate."""
    outcome = c["outcome"]
    dis, dis_why = 0.0, ""
    if c["ground_truth"] or shadow is not None:
        found = [(str(d["class_name"]), (d["x1"], d["y1"], d["x2"], d["y2"])) for d in dets if d["action"] != "ignore"]
        dis, dis_why = disagreement(found, _truth_for(c["ground_truth"], c["camera_id"]), outcome, shadow)
    if outcome == _UNCERTAIN:
        dists = [
            (abs(float(d["confidence"]) - rules.for_class(d["class_name"]).reject_conf), d)
            for d in part_dets
            if d["action"] == "uncertain"
        ]
        if dists:
            dist, d = min(dists, key=lambda x: x[0])
            why = f"uncertain: {d['class_name']} at {float(d['confidence']):.2f}, {dist:.2f} from its reject threshold"
        elif c["max_score"] is not None:
            dist = abs(float(c["max_score"]) - rules.default.reject_conf)
            why = f"uncertain: max score {float(c['max_score']):.2f}, {dist:.2f} from the reject threshold"
        else:
            dist, why = 1.0, "uncertain"
        if dis > 0:
            why += f"; {dis_why}"
        return 0, dist, why, dis
    if dis > 0:
        return 1, -dis, dis_why, dis
    if outcome == _PASS:
        u = seeded_uniform(seed, c["part_id"])
        if u < pass_sample_fraction:
            return 2, u, f"pass sample (u={u:.3f} < {pass_sample_fraction:g}): checks for escapes", dis
        return 4, u, "pass outside the sample", dis
    if outcome == _FAIL:
        ms = float(c["max_score"]) if c["max_score"] is not None else 0.0
        return 3, ms, f"fail at max score {ms:.2f}", dis
    # FAILSAFE: -t sorts before every PASS u in [0, 1), newest first
    return 4, -abs(float(c["t_wall"] or 0.0)), f"{outcome.lower()}: no trustworthy verdict", dis


@dataclass(frozen=True, slots=True)
class _Ranked:
    key: tuple[int, float, int]
    row: dict[str, Any]
    tier: int
    score: float
    why: str
    disagreement: float


def _ranked(db: sqlite_utils.Database, q: QueueQuery) -> list[_Ranked]:
    """Every candidate with its tier and score, in queue order (labels are not loaded here)."""
    rules = q.rules or RulesConfig()
    cands = queue_rows.queue_candidates(
        db, reviewed=q.reviewed, **{name: getattr(q, name) for name in queue_rows.FILTERS}
    )
    # detections matter only for parts that can be UNCERTAIN or disagree with a ground truth / shadow
    shadow = queue_rows.shadow_outcomes(db, sorted({int(c["part_id"]) for c in cands}))
    need = sorted(
        {
            int(c["part_id"])
            for c in cands
            if c["outcome"] == _UNCERTAIN or c["ground_truth"] or int(c["part_id"]) in shadow
        }
    )
    defects = queue_rows.detections_of_parts(db, need)
    by_part: dict[int, list[dict[str, Any]]] = {}
    for (pid, _cam), ds in defects.items():
        by_part.setdefault(pid, []).extend(ds)
    out = []
    for c in cands:
        pid, cam = int(c["part_id"]), str(c["camera_id"])
        tier, score, why, dis = _rank(
            c, defects.get((pid, cam), []), by_part.get(pid, []), shadow.get(pid), rules, q.seed, q.pass_sample_fraction
        )
        out.append(_Ranked((tier, float(score), int(c["image_id"])), c, tier, float(score), why, dis))
    out.sort(key=lambda r: r.key)
    return out


def _items(db: sqlite_utils.Database, ranked: Sequence[_Ranked]) -> list[QueueItem]:
    labels = current_labels_many(db, [r.row["image_id"] for r in ranked])
    items = []
    for r in ranked:
        c = r.row
        labs = labels.get(int(c["image_id"]), [])
        items.append(
            QueueItem(
                image_id=int(c["image_id"]),
                part_id=int(c["part_id"]),
                camera_id=str(c["camera_id"]),
                outcome=str(c["outcome"]),
                max_score=None if c["max_score"] is None else float(c["max_score"]),
                model_id=str(c["model_id"]),
                t_wall=None if c["t_wall"] is None else float(c["t_wall"]),
                tier=TIERS[r.tier],
                score=r.score,
                why=r.why,
                disagreement=float(r.disagreement),
                reviewed=bool(c["reviewed"]),
                n_labels=len(labs),
                classes=tuple(sorted({lab.class_name for lab in labs})),
            )
        )
    return items


def review_queue(db: sqlite_utils.Database, *, limit: int = 50, offset: int = 0, **query: Any) -> list[QueueItem]:
    """One page of the review queue, most useful to label first (tiers and scores in the module docstring).

    ``query``: the filters and ranking parameters, the fields of :class:`QueueQuery`
    (``outcome``, ``class_name``, ``min_conf``, ``max_conf``, ``since``, ``until``, ``model_id``,
    ``reviewed``, ``seed``, ``rules``, ``pass_sample_fraction``); an unknown name is a TypeError.
    """
    if limit < 1:
        raise ValueError(f"limit must be >= 1, not {limit}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0, not {offset}")
    return _items(db, _ranked(db, QueueQuery(**query))[offset : offset + limit])


def queue_counts(db: sqlite_utils.Database, **query: Any) -> dict[str, int]:
    """How many images each tier of the queue holds (``query`` as in :func:`review_queue`, without paging)."""
    counts = {t: 0 for t in TIERS}
    for r in _ranked(db, QueueQuery(**query)):
        counts[TIERS[r.tier]] += 1
    return counts
