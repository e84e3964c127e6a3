"""Quality statistics on a known set of recorded parts and relabels."""

from __future__ import annotations

import datetime as dt

import pytest

from labeling import labels as L
from labeling.stats import defect_pareto, defects_by_class_over_time, false_positive_rate, yield_by_hour, yield_by_shift
from station.contracts import Outcome
from tests.fixtures_labeling import line, part  # noqa: F401  (fixture)

B1, B2 = (5.0, 5.0, 20.0, 20.0), (30.0, 10.0, 50.0, 30.0)


def _t(s: str) -> float:
    return dt.datetime.fromisoformat(s).replace(tzinfo=dt.UTC).timestamp()


@pytest.fixture
def known(line):
    P, F, U, S = Outcome.PASS, Outcome.FAIL, Outcome.UNCERTAIN, Outcome.FAILSAFE
    line.record(
        [
            part(1, P, t_wall=_t("2024-03-01T06:10:00")),
            part(2, P, [("dent", 0.35, B1)], t_wall=_t("2024-03-01T06:20:00")),  # an ignored detection
            part(3, F, [("scratch", 0.9, B1)], t_wall=_t("2024-03-01T06:30:00")),
            part(4, U, [("dent", 0.4, B1)], t_wall=_t("2024-03-01T06:59:59")),
            part(5, F, [("scratch", 0.8, B1), ("stain", 0.7, B2)], t_wall=_t("2024-03-01T07:05:00")),
            part(6, S, t_wall=_t("2024-03-01T07:45:00")),
            part(7, P, t_wall=_t("2024-03-01T13:59:59")),
            part(8, F, [("dent", 0.95, B2)], t_wall=_t("2024-03-01T14:00:00")),
            part(9, P, t_wall=_t("2024-03-01T23:30:00")),
            part(10, F, [("scratch", 0.6, B1)], t_wall=_t("2024-03-02T02:00:00")),
            part(11, P, t_wall=_t("2024-03-02T06:00:00")),
        ]
    )
    db = line.db
    # an imported image: never production
    db.execute(
        "INSERT INTO inspections (part_id, seq, t_trigger_wall, t_recorded_wall, outcome, model_id, config_hash, "
        "calibration_id, source) "
        "VALUES (-1, 0, ?, 1.0, 'FAIL', 'import', '', '', 'import')",
        [_t("2024-03-01T06:15:00")],
    )
    db.conn.commit()
    img = line.image_id
    (p3,) = L.current_labels(db, img(3))
    L.delete_label(db, "qa", img(3), p3.id)  # false positive
    s5, t5 = L.current_labels(db, img(5))
    L.confirm(db, "qa", img(5), [s5.id])
    L.update_label(db, "qa", img(5), t5.id, box=(31, 11, 50, 30))  # moved
    (d8,) = L.current_labels(db, img(8))
    L.update_label(db, "qa", img(8), d8.id, class_name="scratch")  # reclassified
    L.add_label(db, "qa", img(1), (1, 1, 9, 9), "dent")  # missed by the model
    (ignored,) = L.current_labels(db, img(2))
    L.delete_label(db, "qa", img(2), ignored.id)
    extra = L.add_label(db, "qa", img(2), (1, 1, 9, 9), "dent")
    L.delete_label(db, "qa", img(2), extra.id)  # added then removed: not a miss
    return line


def _y(rows, key):
    return [(r[key], r["total"], r["PASS"], r["FAIL"], r["UNCERTAIN"], r["FAILSAFE"], r["yield"]) for r in rows]


def test_yield_by_hour_utc(known) -> None:
    assert _y(yield_by_hour(known.db, tz="UTC"), "bucket") == [
        ("2024-03-01T06:00:00+00:00", 4, 2, 1, 1, 0, 0.5),
        ("2024-03-01T07:00:00+00:00", 2, 0, 1, 0, 1, 0.0),
        ("2024-03-01T13:00:00+00:00", 1, 1, 0, 0, 0, 1.0),
        ("2024-03-01T14:00:00+00:00", 1, 0, 1, 0, 0, 0.0),
        ("2024-03-01T23:00:00+00:00", 1, 1, 0, 0, 0, 1.0),
        ("2024-03-02T02:00:00+00:00", 1, 0, 1, 0, 0, 0.0),
        ("2024-03-02T06:00:00+00:00", 1, 1, 0, 0, 0, 1.0),
    ]
    assert yield_by_hour(known.db, tz="UTC")[0]["t"] == _t("2024-03-01T06:00:00")


def test_yield_by_hour_in_a_half_hour_time_zone(known) -> None:
    rows = yield_by_hour(known.db, tz="Asia/Kolkata", until=_t("2024-03-01T07:00:00"))  # UTC+05:30
    assert _y(rows, "bucket") == [
        ("2024-03-01T11:00:00+05:30", 2, 2, 0, 0, 0, 1.0),  # 06:10Z, 06:20Z
        ("2024-03-01T12:00:00+05:30", 2, 0, 1, 1, 0, 0.0),  # 06:30Z, 06:59:59Z
    ]


def test_yield_by_shift(known) -> None:
    assert _y(yield_by_shift(known.db, tz="UTC"), "shift") == [
        ("A", 7, 3, 2, 1, 1, pytest.approx(3 / 7)),
        ("B", 1, 0, 1, 0, 0, 0.0),
        ("C", 2, 1, 1, 0, 0, 0.5),  # 23:30 and 02:00 the next morning: the same night shift
        ("A", 1, 1, 0, 0, 0, 1.0),
    ]
    assert [r["date"] for r in yield_by_shift(known.db, tz="UTC")] == [
        "2024-03-01",
        "2024-03-01",
        "2024-03-01",
        "2024-03-02",
    ]
    berlin = yield_by_shift(known.db, tz="Europe/Berlin")  # UTC+1: part 7 (14:59:59) moves to shift B
    assert [(r["date"], r["shift"], r["total"]) for r in berlin] == [
        ("2024-03-01", "A", 6),
        ("2024-03-01", "B", 2),
        ("2024-03-01", "C", 2),
        ("2024-03-02", "A", 1),
    ]
    two = yield_by_shift(known.db, [("day", "06:00", "18:00")], tz="UTC")
    assert [(r["date"], r["shift"], r["total"]) for r in two] == [
        ("2024-03-01", "day", 8),
        ("2024-03-01", "-", 1),
        ("2024-03-02", "day", 1),
        ("2024-03-02", "-", 1),
    ]


@pytest.mark.parametrize(
    ("shifts", "match"),
    [
        ([("A", "06:00", "14:00"), ("B", "13:00", "22:00")], "shifts A and B overlap at 13:00"),
        ([("A", "06:10", "14:00")], "quarter hour"),
        ([("A", "6am", "14:00")], "'HH:MM'"),
        ([("A", "06:00", "06:00")], "start and end are both"),
    ],
)
def test_bad_shifts(known, shifts, match) -> None:
    with pytest.raises(ValueError, match=match):
        yield_by_shift(known.db, shifts)


def test_defects_by_class_over_time(known) -> None:
    day = defects_by_class_over_time(known.db, "day", tz="UTC")
    assert [(r["bucket"][:10], r["class_name"], r["count"]) for r in day] == [
        ("2024-03-01", "dent", 2),
        ("2024-03-01", "scratch", 2),
        ("2024-03-01", "stain", 1),
        ("2024-03-02", "scratch", 1),
    ]
    hour = defects_by_class_over_time(known.db, "hour", tz="UTC", until=_t("2024-03-01T08:00:00"))
    assert [(r["bucket"][11:16], r["class_name"], r["count"]) for r in hour] == [
        ("06:00", "dent", 1),
        ("06:00", "scratch", 1),
        ("07:00", "scratch", 1),
        ("07:00", "stain", 1),
    ]
    everything = defects_by_class_over_time(known.db, "day", tz="UTC", actions=("reject", "uncertain", "ignore"))
    assert sum(r["count"] for r in everything) == 7
    with pytest.raises(ValueError, match="bucket"):
        defects_by_class_over_time(known.db, "week")  # type: ignore[arg-type]  # the wrong value under test
    with pytest.raises(ValueError, match="unknown time zone"):
        yield_by_hour(known.db, tz="Mars/Olympus")


def test_false_positive_rate(known) -> None:
    fp = false_positive_rate(known.db)
    by_class = fp.pop("by_class")
    # reviewed model labels: p2 dent (ignored detection, deleted), p3 scratch (deleted), p5 scratch + stain, p8 dent
    assert fp == {
        "reviewed": 5,
        "false_positives": 2,
        "reclassified": 1,
        "moved": 1,
        "confirmed": 1,
        "rate": 0.4,
        "missed": 1,
    }
    assert by_class == {
        "dent": {"reviewed": 2, "false_positives": 1, "reclassified": 1, "moved": 0, "confirmed": 0, "rate": 0.5},
        "scratch": {"reviewed": 2, "false_positives": 1, "reclassified": 0, "moved": 0, "confirmed": 1, "rate": 0.5},
        "stain": {"reviewed": 1, "false_positives": 0, "reclassified": 0, "moved": 1, "confirmed": 0, "rate": 0.0},
    }
    # part 10's scratch was never reviewed: not counted; a time window narrows it down
    assert false_positive_rate(known.db, since=_t("2024-03-01T07:00:00"))["reviewed"] == 3


def test_defect_pareto(known) -> None:
    model = defect_pareto(known.db)
    assert [(r["class_name"], r["count"]) for r in model] == [("scratch", 3), ("dent", 2), ("stain", 1)]
    assert [r["share"] for r in model] == [pytest.approx(0.5), pytest.approx(1 / 3), pytest.approx(1 / 6)]
    assert model[-1]["cumulative_share"] == pytest.approx(1.0)
    qa = defect_pareto(known.db, source="labels")
    assert [(r["class_name"], r["count"]) for r in qa] == [("scratch", 2), ("dent", 1), ("stain", 1)]
    with pytest.raises(ValueError, match="source"):
        defect_pareto(known.db, source="guess")  # type: ignore[arg-type]
