"""Versioned calibrations and regions per camera (real SQLite), and how the Decider applies them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sqlite_utils

from calibration import records
from calibration.camera import calibrate_camera
from station import camera_setup
from station.config import CalibrationConfig, ClassRule, RulesConfig
from station.config.regions import CameraRegions, NamedRegion, Zone
from station.contracts import Detections, Frame, Outcome, Trigger
from station.decide import Decider
from station.store import camera_setup as store
from tests.calib_views import CHESS, views


def audit_rows(db: sqlite_utils.Database) -> list[tuple]:
    return db.execute(
        "SELECT user, action, object_type, object_id, before, after, reason FROM audit ORDER BY id"
    ).fetchall()


def test_calibration_versions_rollback_and_audit(fresh_db: sqlite_utils.Database) -> None:
    cal = calibrate_camera(views(CHESS), CHESS)
    v1 = records.record(fresh_db, "line-7", "cam0", cal, user="boss", reason="first setup")
    assert (v1.version, v1.ref, v1.created_by) == (1, cal.id, "boss")
    assert [i["name"] for i in v1.images] == [f"v{i}.png" for i in range(7)] and all(i["used"] for i in v1.images)
    assert v1.body["mm_per_px"] == cal.mm_per_px and v1.body["rms_px"] == cal.rms_px
    # a recalibration (here: fewer views, another id) goes in force; the old one is kept
    cal2 = calibrate_camera(views(CHESS, n=6), CHESS)
    v2 = records.record(fresh_db, "line-7", "cam0", cal2, user="boss", reason="camera knocked")
    now = store.in_force(fresh_db, "calibration", "line-7", "cam0")
    assert now is not None and now.version == 2
    assert store.in_force(fresh_db, "calibration", "line-7", "cam1") is None
    back = records.rollback(fresh_db, "line-7", "cam0", 1, user="boss", reason="v2 looked wrong")
    now = store.in_force(fresh_db, "calibration", "line-7", "cam0")
    assert back.ref == cal.id and now is not None and now.version == 1
    assert [v.version for v in store.history(fresh_db, "calibration", "line-7", "cam0")] == [2, 1]
    rows = audit_rows(fresh_db)
    assert [r[1] for r in rows] == ["calibration_new", "calibration_new", "calibration_rollback"]
    assert (
        rows[2][3] == "line-7/cam0/v1"
        and json.loads(rows[2][4]) == {"version": 2, "ref": v2.ref}
        and rows[2][6] == "v2 looked wrong"
    )
    with pytest.raises(store.SetupError, match="version 1 is already in force"):
        records.rollback(fresh_db, "line-7", "cam0", 1, user="boss")
    with pytest.raises(store.SetupError, match="no version 9"):
        records.rollback(fresh_db, "line-7", "cam0", 9, user="boss")
    with pytest.raises(Exception, match="append-only"):
        fresh_db.execute("UPDATE camera_setup SET ref = 'x'")
    with pytest.raises(Exception, match="append-only"):
        fresh_db.execute("DELETE FROM camera_setup_in_force")


SEAL: list[tuple[float, float]] = [(0, 0), (50, 0), (50, 100), (0, 100)]  # a strict region on the left
SPEC = CameraRegions(
    image_size=(200, 100),
    roi=[(0, 0), (180, 0), (180, 100), (0, 100)],
    ignore=[Zone(name="fixture", points=[(100, 0), (140, 0), (120, 60)])],
    regions=[
        NamedRegion(name="seal", points=SEAL, reject_conf=0.2, min_area_mm2=0.0),
        NamedRegion(
            name="cosmetic",
            points=[(50, 0), (100, 0), (100, 100), (50, 100)],
            reject_conf=0.9,
            min_area_mm2=50.0,
        ),
    ],
)


def verdict(decider: Decider, box: tuple[float, float, float, float], conf: float = 0.6):
    det = Detections(
        np.array([box], np.float32), np.array([conf], np.float32), np.array([0], np.int32), ("spot",), "m1"
    )
    return decider.decide(Trigger(1, 1, 0), [Frame(1, "cam0", np.zeros((100, 200), np.uint8), 0)], [det], {})


def test_regions_versions_and_what_the_decider_does_with_them(fresh_db: sqlite_utils.Database) -> None:
    cal = calibrate_camera(views(CHESS), CHESS)
    records.record(fresh_db, "line-7", "cam0", cal, user="boss")
    v = camera_setup.save_regions(fresh_db, "line-7", "cam0", SPEC, user="boss", reason="drawn")
    assert v.ref == "regions-v1"
    setup = camera_setup.load(fresh_db, "line-7", ["cam0", "cam1"])
    assert list(setup) == ["cam0"] and setup["cam0"].mm_per_px == cal.mm_per_px
    d = Decider(
        RulesConfig(default=ClassRule(reject_conf=0.5, uncertain_conf=0.3)),
        CalibrationConfig(id="nominal"),
        "cfg",
        setup,
    )
    assert d.config_hash == "cfg+gcam0:v1" and d.calibration_id == cal.id
    # seal: strict threshold
    v_seal = verdict(d, (10, 40, 20, 50), conf=0.25)
    assert v_seal.outcome is Outcome.FAIL and v_seal.reasons == ("spot (region seal: conf 0.25 >= 0.2)",)
    assert v_seal.calibration_id == cal.id and v_seal.config_hash == "cfg+gcam0:v1"
    # cosmetic: a 10x10 px defect is 100 px * mm_per_px^2 (~37 mm2) < 50 mm2: ignored
    assert verdict(d, (60, 40, 70, 50), conf=0.95).outcome is Outcome.PASS
    assert verdict(d, (110, 10, 130, 20)).defects[0].rule == "ignore zone fixture"
    assert verdict(d, (182, 40, 198, 50)).defects[0].rule == "outside the ROI"
    assert verdict(d, (150, 70, 160, 80)).outcome is Outcome.FAIL  # in the ROI, in no region: the class rule
    # no setup: the config's calibration id and hash, unchanged
    plain = Decider(RulesConfig(), CalibrationConfig(id="nominal"), "cfg")
    assert (plain.config_hash, plain.calibration_id) == ("cfg", "nominal")


def test_bad_regions_are_refused_naming_the_polygon() -> None:
    with pytest.raises(
        ValueError, match="region seal: point \\[250.0, 0.0\\] lies outside the 200x100 reference image"
    ):
        CameraRegions.model_validate(
            {"image_size": (200, 100), "regions": [{"name": "seal", "points": [(0, 0), (250, 0), (0, 50)]}]}
        )
    with pytest.raises(ValueError, match="zone: the polygon has no area"):
        CameraRegions.model_validate({"ignore": [{"points": [(0, 0), (10, 10), (20, 20)]}]})
    with pytest.raises(ValueError, match="region names must be unique; repeated: a"):
        CameraRegions.model_validate({"regions": [{"name": "a", "points": SEAL}, {"name": "a", "points": SEAL}]})


def test_setup_travels_to_the_evaluation_worker_and_eligibility_ignores_region_thresholds(
    fresh_db: sqlite_utils.Database,
) -> None:
    """The models page's evaluation worker gets the setup as JSON; the evaluation's eligibility check zeroes region
    thresholds."""
    from models.evaluate import _eligibility_decider

    camera_setup.save_regions(fresh_db, "line-7", "cam0", SPEC, user="boss")
    setup = camera_setup.load(fresh_db, "line-7", ["cam0"])
    back = camera_setup.from_json(json.loads(json.dumps(camera_setup.to_json(setup))))
    d1, d2 = (Decider(RulesConfig(), CalibrationConfig(), "cfg", s) for s in (setup, back))
    for box, conf in (
        ((10, 40, 20, 50), 0.25),
        ((60, 40, 70, 50), 0.95),
        ((110, 10, 130, 20), 0.6),
        ((150, 70, 160, 80), 0.6),
    ):
        a, b = verdict(d1, box, conf), verdict(d2, box, conf)
        assert (a.outcome, a.defects, a.config_hash) == (b.outcome, b.defects, b.config_hash)
    elig = _eligibility_decider(RulesConfig(), CalibrationConfig(), setup)
    det = Detections(
        np.array([(60, 40, 80, 60)], np.float32), np.array([0.05], np.float32), np.array([0], np.int32), ("spot",), "m1"
    )
    judged = elig.judge(
        det, 0, "cam0"
    )  # in the lenient region: counted (its size decides), though far below its reject_conf
    assert judged is not None and judged.rule.startswith("region cosmetic: area")
