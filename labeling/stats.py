"""Quality statistics from the recorded inspections and the QA relabels.

Only line inspections count (``inspections.source != 'import'``). Times are the trigger
time (``t_trigger_wall``, else ``t_recorded_wall``) shown in the time zone ``tz`` (an IANA
name such as ``"Europe/Berlin"``, a tzinfo, or None for the machine's local zone). The
database groups rows in 15-minute UTC slots (every time zone offset is a multiple of 15
minutes), Python regroups the slots by local hour / day / shift, so the work in Python does
not grow with the number of parts.

``yield`` is PASS / all verdicts (FAIL, UNCERTAIN and FAILSAFE are not yield).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Literal
from zoneinfo import ZoneInfo

import sqlite_utils

from station.contracts import Outcome
from station.store import quality_stats

from .labels import current_labels_many

log = logging.getLogger(__name__)

SLOT_S = 900
DEFAULT_SHIFTS: tuple[tuple[str, str, str], ...] = (
    ("A", "06:00", "14:00"),
    ("B", "14:00", "22:00"),
    ("C", "22:00", "06:00"),
)
_OUTCOMES = tuple(o.value for o in Outcome)


def _tz(tz: str | dt.tzinfo | None) -> dt.tzinfo | None:
    if tz is None or isinstance(tz, dt.tzinfo):
        return tz
    try:
        return ZoneInfo(tz)
    except (KeyError, ValueError) as exc:
        raise ValueError(
            f"unknown time zone {tz!r} ({exc}); use an IANA name such as 'Europe/Berlin' or 'UTC'"
        ) from None


def _local(ts: float, tz: dt.tzinfo | None) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz) if tz is not None else dt.datetime.fromtimestamp(ts).astimezone()


def _floor(d: dt.datetime, bucket: str) -> dt.datetime:
    if bucket == "hour":
        return d.replace(minute=0, second=0, microsecond=0)
    if bucket == "day":
        return d.replace(hour=0, minute=0, second=0, microsecond=0)
    raise ValueError(f"bucket must be 'hour' or 'day', not {bucket!r}")


def _yield_row(counts: dict[str, int]) -> dict[str, Any]:
    total = sum(counts.get(o, 0) for o in _OUTCOMES)
    row: dict[str, Any] = {"total": total, **{o: counts.get(o, 0) for o in _OUTCOMES}}
    row["yield"] = counts.get("PASS", 0) / total if total else None
    return row


def defects_by_class_over_time(
    db: sqlite_utils.Database,
    bucket: Literal["hour", "day"] = "hour",
    *,
    since: float | None = None,
    until: float | None = None,
    tz: str | dt.tzinfo | None = None,
    actions: Sequence[str] = ("reject", "uncertain"),
) -> list[dict[str, Any]]:
    """Detections per class per local hour or day: ``[{bucket (ISO), t (UNIX start), class_name, count}]``, in time
    order.

    ``actions``: which detections count (default those that rejected or made the part
    uncertain; add ``"ignore"`` for every recorded detection).
    """
    zone = _tz(tz)
    _floor(dt.datetime.now(), bucket)  # validates bucket
    acc: dict[tuple[dt.datetime, str], int] = defaultdict(int)
    for slot, cls, n in quality_stats.defect_class_slots(db, SLOT_S, actions, since, until):
        acc[(_floor(_local(slot * SLOT_S, zone), bucket), cls)] += n
    return [
        {"bucket": b.isoformat(), "t": b.timestamp(), "class_name": c, "count": n}
        for (b, c), n in sorted(acc.items(), key=lambda kv: (kv[0][0].timestamp(), kv[0][1]))
    ]


def yield_by_hour(
    db: sqlite_utils.Database,
    *,
    since: float | None = None,
    until: float | None = None,
    tz: str | dt.tzinfo | None = None,
) -> list[dict[str, Any]]:
    """Verdicts per local hour: ``[{bucket, t, total, PASS, FAIL, UNCERTAIN, FAILSAFE, yield}]``, in time order."""
    zone = _tz(tz)
    acc: dict[dt.datetime, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for slot, outcome, n in quality_stats.outcome_slots(db, SLOT_S, since, until):
        acc[_floor(_local(slot * SLOT_S, zone), "hour")][outcome] += n
    return [
        {"bucket": b.isoformat(), "t": b.timestamp(), **_yield_row(c)}
        for b, c in sorted(acc.items(), key=lambda kv: kv[0].timestamp())
    ]


def _minutes(s: str, what: str) -> int:
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", s.strip()) if isinstance(s, str) else None
    if not m or int(m.group(1)) > 24 or int(m.group(2)) > 59:
        raise ValueError(f"shift {what} must be 'HH:MM', not {s!r}")
    v = int(m.group(1)) * 60 + int(m.group(2))
    if v > 1440 or v % 15:
        raise ValueError(f"shift {what} {s!r} must be on a quarter hour (00, 15, 30 or 45 minutes) and at most 24:00")
    return v % 1440


def shift_table(shifts: Sequence[tuple[str, str, str]]) -> list[tuple[str, int]]:
    """For each 15-minute slot of the day: (shift name, day offset of the shift's start: 0 or -1)."""
    table: list[tuple[str, int] | None] = [None] * 96
    for entry in shifts:
        if len(entry) != 3:
            raise ValueError(f"a shift is (name, 'HH:MM' start, 'HH:MM' end), not {entry!r}")
        name, start, end = entry
        a, b = _minutes(start, f"{name} start"), _minutes(end, f"{name} end")
        if a == b:
            raise ValueError(f"shift {name}: start and end are both {start}")
        slot = a // 15
        while slot != b // 15:
            if table[slot] is not None:
                raise ValueError(f"shifts {table[slot][0]} and {name} overlap at {slot // 4:02d}:{slot % 4 * 15:02d}")  # type: ignore[index]
            table[slot] = (str(name), -1 if slot < a // 15 else 0)
            slot = (slot + 1) % 96
    return [t if t is not None else ("-", 0) for t in table]


def yield_by_shift(
    db: sqlite_utils.Database,
    shifts: Sequence[tuple[str, str, str]] = DEFAULT_SHIFTS,
    *,
    since: float | None = None,
    until: float | None = None,
    tz: str | dt.tzinfo | None = None,
) -> list[dict[str, Any]]:
    """Verdicts per shift and shift date: ``[{date, shift, total, PASS, FAIL, UNCERTAIN, FAILSAFE, yield}]``.

    ``shifts``: (name, start, end) in local 'HH:MM', on quarter hours, not overlapping; a shift
    may cross midnight (its date is the day it started). Parts outside every shift count under
    shift ``"-"``.
    """
    zone = _tz(tz)
    table = shift_table(shifts)
    acc: dict[tuple[dt.date, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for slot, outcome, n in quality_stats.outcome_slots(db, SLOT_S, since, until):
        d = _local(slot * SLOT_S, zone)
        name, day = table[(d.hour * 60 + d.minute) // 15]
        acc[(d.date() + dt.timedelta(days=day), name)][outcome] += n
    order = {str(s[0]): i for i, s in enumerate(shifts)}
    return [
        {"date": d.isoformat(), "shift": name, **_yield_row(c)}
        for (d, name), c in sorted(acc.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], len(order))))
    ]


def false_positive_rate(
    db: sqlite_utils.Database, *, since: float | None = None, until: float | None = None
) -> dict[str, Any]:
    """How often QA removed the model's detections, on reviewed images.

    Each ``model`` label of a reviewed image is followed along its supersede chain to its end:
    ended ``deleted`` = a false positive; ended with another class = ``reclassified``; ended
    with another box = ``moved``; else ``confirmed`` (including untouched labels of a reviewed
    image: the reviewer saw and kept them). ``missed`` counts boxes QA added that are still
    there (false negatives). ``rate`` = false_positives / reviewed (None with nothing reviewed).
    Returns ``{reviewed, false_positives, rate, reclassified, moved, confirmed, missed, by_class}``
    with the same counts per model class in ``by_class``.
    """
    labels = quality_stats.reviewed_label_rows(db, since, until)
    nxt = {r[1]: r for r in labels if r[1] is not None}

    def end(r: tuple[Any, ...]) -> tuple[Any, ...]:
        while r[0] in nxt:
            r = nxt[r[0]]
        return r

    zero = {"reviewed": 0, "false_positives": 0, "reclassified": 0, "moved": 0, "confirmed": 0}
    total = dict(zero)
    by_class: dict[str, dict[str, Any]] = {}
    for r in labels:
        if r[8] != "model":
            continue
        e = end(r)
        kind = (
            "false_positives"
            if e[2] == "deleted"
            else "reclassified"
            if e[3] != r[3]
            else "moved"
            if tuple(e[4:8]) != tuple(r[4:8])
            else "confirmed"
        )
        c = by_class.setdefault(str(r[3]), dict(zero))
        for d in (total, c):
            d["reviewed"] += 1
            d[kind] += 1
    missed = sum(1 for r in labels if r[1] is None and r[8] == "qa" and end(r)[2] == "active")
    for c in by_class.values():
        c["rate"] = c["false_positives"] / c["reviewed"] if c["reviewed"] else None
    return {
        **total,
        "rate": total["false_positives"] / total["reviewed"] if total["reviewed"] else None,
        "missed": missed,
        "by_class": dict(sorted(by_class.items())),
    }


def defect_pareto(
    db: sqlite_utils.Database,
    *,
    source: Literal["model", "labels"] = "model",
    since: float | None = None,
    until: float | None = None,
    actions: Sequence[str] = ("reject", "uncertain"),
) -> list[dict[str, Any]]:
    """Defect classes by count, largest first: ``[{class_name, count, share, cumulative_share}]``.

    ``source="model"``: the line's detections (``actions`` as in :func:`defects_by_class_over_time`);
    ``source="labels"``: the current labels of QA-reviewed images (the corrected truth).
    """
    counts: dict[str, int] = defaultdict(int)
    if source == "model":
        counts.update(quality_stats.defect_class_counts(db, actions, since, until))
    elif source == "labels":
        ids = quality_stats.reviewed_image_ids(db, since, until)
        for labs in current_labels_many(db, ids).values():
            for lab in labs:
                counts[lab.class_name] += 1
    else:
        raise ValueError(f"source must be 'model' or 'labels', not {source!r}")
    total = sum(counts.values())
    out, cum = [], 0
    for cls, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        cum += n
        out.append({"class_name": cls, "count": n, "share": n / total, "cumulative_share": cum / total})
    return out
