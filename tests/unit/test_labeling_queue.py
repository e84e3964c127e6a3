"""Review queue ordering and filters on parts recorded by the real Recorder."""

from __future__ import annotations

import pytest

from labeling import labels as L
from labeling.queue import QueueQuery, disagreement, match_boxes, queue_counts, review_queue, seeded_uniform
from station.config.rules import ClassRule, RulesConfig
from station.contracts import Outcome
from tests.fixtures_labeling import T0, line, part  # noqa: F401  (fixture)

B1 = (5.0, 5.0, 20.0, 20.0)
B2 = (30.0, 10.0, 50.0, 30.0)
PASS_IDS = list(range(30, 70))


@pytest.fixture
def queue_line(line):
    """A line with every kind of queue item (part ids say what they are)."""
    results = [
        # UNCERTAIN: distance to the default reject threshold 0.5: p10 0.05, p11 0.18, p12 0.02
        part(10, Outcome.UNCERTAIN, [("stain", 0.45, B1)]),
        part(11, Outcome.UNCERTAIN, [("scratch", 0.32, B1)]),
        part(12, Outcome.UNCERTAIN, [("dent", 0.48, B1)]),
        # disagreements with ground truth
        part(20, Outcome.PASS, truth=[("dent", B1)]),  # escape
        part(21, Outcome.FAIL, [("dent", 0.9, B1)], truth=[]),  # overkill
        part(22, Outcome.FAIL, [("dent", 0.9, B1)], truth=[("dent", B2)]),  # box mismatch
        part(23, Outcome.FAIL, [("stain", 0.8, B1)]),  # the shadow model passes it
        part(24, Outcome.FAIL, [("dent", 0.9, B1)], truth=[("dent", (5.5, 5.0, 20.0, 20.5))]),  # agrees
        # PASS parts, some with clean ground truth (agreement)
        *[part(i, Outcome.PASS, truth=[] if i % 2 else None) for i in PASS_IDS],
        # FAILs: low confidence first
        part(80, Outcome.FAIL, [("scratch", 0.95, B1)]),
        part(81, Outcome.FAIL, [("scratch", 0.55, B1)]),
        part(82, Outcome.FAIL, [("dent", 0.75, B1)], model_id="model-b"),
        part(90, Outcome.FAILSAFE),
        part(91, Outcome.FAILSAFE),
    ]
    line.record(results)
    db = line.db
    # the table comes from the shadow-mode migration; rows as the shadow runner writes them
    db.execute(
        "INSERT INTO shadow_results (part_id, t_wall, production_outcome, production_model_id, outcome, model_id,"
        " model_sha, differs, eject_differs) VALUES"
        " (23, 1, 'PASS', 'm', 'FAIL', 'cand', 'c', 1, 1), (23, 2, 'PASS', 'm', 'PASS', 'cand', 'c', 0, 0),"
        " (80, 1, 'FAIL', 'm', 'FAIL', 'cand', 'c', 0, 0)"
    )
    db.conn.commit()
    return line


def _parts(items):
    return [i.part_id for i in items]


def test_tiers_in_order_and_within_tier(queue_line) -> None:
    items = review_queue(queue_line.db, limit=1000)
    assert len(items) == 3 + 5 + len(PASS_IDS) + 3 + 2
    tiers = [i.tier for i in items]
    assert tiers == sorted(tiers, key=["uncertain", "disagreement", "pass_sample", "fail", "other"].index)
    by_tier = {t: [i for i in items if i.tier == t] for t in set(tiers)}
    assert _parts(by_tier["uncertain"]) == [12, 10, 11]
    assert [i.score for i in by_tier["uncertain"]] == [pytest.approx(0.02), pytest.approx(0.05), pytest.approx(0.18)]
    assert _parts(by_tier["disagreement"]) == [20, 23, 21, 22]
    assert [i.disagreement for i in by_tier["disagreement"]] == [1.0, 0.9, 0.8, 0.5]
    assert "escape" in by_tier["disagreement"][0].why and "shadow" in by_tier["disagreement"][1].why
    sample = sorted((seeded_uniform(0, p), p) for p in PASS_IDS if seeded_uniform(0, p) < 0.1)
    assert _parts(by_tier["pass_sample"]) == [p for _, p in sample]
    assert _parts(by_tier["fail"]) == [81, 82, 24, 80]  # by max score; 24 agrees with its ground truth
    rest = sorted((seeded_uniform(0, p), p) for p in PASS_IDS if seeded_uniform(0, p) >= 0.1)
    assert _parts(by_tier["other"]) == [91, 90] + [p for _, p in rest]  # FAILSAFE newest first, then PASS


def test_per_class_thresholds_from_rules(queue_line) -> None:
    rules = RulesConfig(classes={"dent": ClassRule(reject_conf=0.7, uncertain_conf=0.3)})
    items = review_queue(queue_line.db, outcome="UNCERTAIN", rules=rules)
    assert _parts(items) == [10, 11, 12]
    assert items[2].score == pytest.approx(0.22)


def test_pass_sample_is_seeded_and_deterministic(queue_line) -> None:
    db = queue_line.db
    a = review_queue(db, outcome="PASS", seed=1, limit=1000, pass_sample_fraction=0.25)
    b = review_queue(db, outcome="PASS", seed=1, limit=1000, pass_sample_fraction=0.25)
    c = review_queue(db, outcome="PASS", seed=2, limit=1000, pass_sample_fraction=0.25)
    assert a == b
    sample_a = [i.part_id for i in a if i.tier == "pass_sample"]
    sample_c = [i.part_id for i in c if i.tier == "pass_sample"]
    assert sample_a != sample_c
    assert 2 <= len(sample_a) <= 20  # about 25 % of 40
    assert set(sample_a) == {p for p in PASS_IDS if seeded_uniform(1, p) < 0.25}


def test_pages_concatenate_to_the_whole_queue(queue_line) -> None:
    db = queue_line.db
    whole = review_queue(db, limit=1000)
    pages = []
    for off in range(0, len(whole), 7):
        pages += review_queue(db, limit=7, offset=off)
    assert pages == whole
    assert review_queue(db, limit=7, offset=len(whole)) == []
    counts = queue_counts(db)
    assert counts == {
        "uncertain": 3,
        "disagreement": 4,
        "pass_sample": counts["pass_sample"],
        "fail": 4,
        "other": len(whole) - 11 - counts["pass_sample"],
    }


def test_filters(queue_line) -> None:
    db = queue_line.db
    assert _parts(review_queue(db, outcome="FAIL")) == [23, 21, 22, 81, 82, 24, 80]
    assert _parts(review_queue(db, model_id="model-b")) == [82]
    assert set(_parts(review_queue(db, class_name="dent"))) == {12, 21, 22, 24, 82}
    assert _parts(review_queue(db, min_conf=0.7, max_conf=0.8)) == [23, 82]
    assert _parts(review_queue(db, since=T0 + 80 * 60, until=T0 + 91 * 60)) == [81, 82, 80, 90]
    with pytest.raises(ValueError):
        review_queue(db, outcome="MAYBE")
    with pytest.raises(ValueError, match="limit"):
        review_queue(db, limit=0)


def test_reviewed_deleted_and_imported_images_leave_the_default_queue(queue_line) -> None:
    db = queue_line.db
    img12, img10 = queue_line.image_id(12), queue_line.image_id(10)
    L.mark_image_good(db, "qa", img12)
    db.execute("UPDATE images SET deleted_at = 1.0 WHERE id = ?", [img10])
    db.execute(
        "INSERT INTO inspections (part_id, seq, t_recorded_wall, outcome, model_id, config_hash, calibration_id, "
        "source) "
        "VALUES (-1, 0, 1.0, 'UNCERTAIN', 'import', '', '', 'import')"
    )
    db.execute(
        "INSERT INTO images (part_id, camera_id, sha256, relpath, width, height, format, bytes, kept_reason) "
        "VALUES (-1, 'import', ?, 'x', 64, 48, 'png', 1, 'import')",
        ["b" * 64],
    )
    db.conn.commit()
    assert _parts(review_queue(db, outcome="UNCERTAIN")) == [11]
    reviewed = review_queue(db, reviewed=True)
    assert _parts(reviewed) == [12] and reviewed[0].reviewed and reviewed[0].n_labels == 0
    assert _parts(review_queue(db, outcome="UNCERTAIN", reviewed=None)) == [12, 11]


def test_disagreement_signal() -> None:
    assert disagreement([], None, "PASS", None) == (0.0, "")
    assert disagreement([], [("dent", B1)], "PASS", None)[0] == 1.0
    assert disagreement([("dent", B1)], [], "FAIL", None)[0] == 0.8
    assert disagreement([("dent", B1)], [("dent", B1)], "FAIL", None)[0] == 0.0
    assert disagreement([("scratch", B1)], [("dent", B1)], "FAIL", None)[0] == 0.5  # same place, other class
    assert disagreement([("dent", B1), ("dent", B2)], [("dent", B1)], "FAIL", None)[0] == pytest.approx(0.5 / 3)
    assert disagreement([], [], "PASS", "FAIL")[0] == 0.9
    assert disagreement([], [], "UNCERTAIN", "FAIL")[0] == 0.0  # both reject
    assert match_boxes([("a", B1), ("a", B2)], [("a", B2), ("a", B1), ("b", B1)]) == (2, 0, 1)


def test_queue_query_is_the_one_set_of_keywords(queue_line) -> None:
    db = queue_line.db
    q = QueueQuery(outcome="FAIL", seed=3, pass_sample_fraction=0.5)
    as_kwargs = {f: getattr(q, f) for f in QueueQuery.__dataclass_fields__}
    assert review_queue(db, limit=1000, **as_kwargs) == review_queue(
        db, limit=1000, outcome="FAIL", seed=3, pass_sample_fraction=0.5
    )
    assert queue_counts(db, **as_kwargs)["fail"] == 4
    with pytest.raises(TypeError, match="outcom"):
        review_queue(db, outcom="FAIL")  # a misspelt filter is an error, not "no filter"
    with pytest.raises(TypeError, match="limit"):
        queue_counts(db, limit=5)  # counts are not paged
    with pytest.raises(ValueError, match="pass_sample_fraction"):
        queue_counts(db, pass_sample_fraction=1.5)
