"""A classify model on a real Station: a verdict per class probability on the line, recorded, replayed, evaluated.

The model is the factory's real classify export (good / square / disc, seeded, cached under
STATION_MODEL_CACHE). Thresholds are placed between the probabilities a separate inspector
instance measures on the test images, so each image's expected verdict is known before the line runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from models.cli import main as models_main
from models.evaluate_classify import choose_threshold, evaluate_classify
from station.app import Station
from station.config import ConfigError, OnnxInspectorConfig, RulesConfig, parse_config
from station.contracts import Frame, PartResult
from station.decide import GOOD_CLASS
from station.inspection.onnx_backend import OnnxInspector
from station.serialize import result_to_dict
from station.store.db import open_db
from tests.fixtures_floor import wait_for
from tests.model_factory import (
    CLS_NAMES,
    _write_cls_dataset,
    classifying_model,
    draw_scene,
)
from tests.replay_cli import replay_results, run_replay
from tests.station_configs import store_section

DEFECTS = [c for c in CLS_NAMES if c != "good"]


def scenes(folder: Path) -> dict[str, np.ndarray]:
    """Nine unseen 64x64 scenes: three of each class (seed other than the model's training data)."""
    folder.mkdir()
    rng = np.random.default_rng(2024)
    out = {}
    for k in range(9):
        shape = (None, 0, 1)[k % 3]
        img, _ = draw_scene(rng, (64, 64), 0 if shape is None else 1, 16, 32, classes=(shape or 0,))
        name = f"{k:02d}_{('good', 'square', 'disc')[k % 3]}.png"
        cv2.imwrite(str(folder / name), img)
        out[name] = img
    return out


def p_defect(model: Path, images: dict[str, np.ndarray]) -> dict[str, float]:
    """The highest defect-class probability per image, from an inspector of our own."""
    insp = OnnxInspector(OnnxInspectorConfig(model=model, keepalive_s=0.0))
    try:
        out = {}
        for name, img in images.items():
            det = insp.inspect(Frame(0, "cam0", img, 0))
            out[name] = max(float(s) for s, c in zip(det.scores, det.class_ids) if CLS_NAMES[c] in DEFECTS)
        return out
    finally:
        insp.close()


def banded_rules(p: dict[str, float]) -> tuple[dict[str, Any], dict[str, str]]:
    """Rules whose thresholds split the images into thirds (PASS / UNCERTAIN / FAIL) and each image's expected
    verdict."""
    v = sorted(p.values())
    assert len(set(v)) == len(v), "tied probabilities: cannot place thresholds between them"
    unc, rej = (v[2] + v[3]) / 2, (v[5] + v[6]) / 2
    rule = {"reject_conf": rej, "uncertain_conf": unc}
    expect = {n: "FAIL" if x >= rej else "UNCERTAIN" if x >= unc else "PASS" for n, x in p.items()}
    return {"good_classes": ["good"], "classes": {c: rule for c in DEFECTS}}, expect


def config(tmp: Path, folder: Path, model: Path, rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "classify-line",
        "cameras": [{"type": "folder", "id": "cam0", "path": str(folder), "loop": False}],
        "trigger": {"type": "software"},
        "inspector": {"type": "onnx", "model": str(model), "follow_registry": False, "intra_op_threads": 1},
        "rules": rules,
        "reject": {"travel_ms": 3000, "safety_margin_ms": 200, "pulse_ms": 10},
        "store": store_section(tmp, keep_pass_every=1),
        "web": {"enabled": False},
    }


def test_the_line_gives_pass_uncertain_reject_by_class_probability(tmp_path: Path) -> None:
    model = classifying_model()
    folder = tmp_path / "scenes"
    images = scenes(folder)
    probs = p_defect(model, images)
    rules, expect = banded_rules(probs)
    assert set(expect.values()) == {"PASS", "UNCERTAIN", "FAIL"}
    st = Station(parse_config(config(tmp_path, folder, model, rules)))
    screen = st.bus.subscribe("operator-screen")  # what the live screen is sent
    st.start()
    try:
        for i in range(len(images)):
            assert st.trigger("test") is not None
            wait_for(lambda: st.counters.snapshot().verdicts > i, 30, "a verdict")
        wait_for(lambda: st.counters.snapshot().records_written >= len(images), 20, "records")
    finally:
        st.stop()
    db = open_db(tmp_path / "station.db", migrate=False)
    try:
        got = [dict(r) for r in db.query("SELECT part_id, outcome FROM inspections ORDER BY part_id")]
        defects = [dict(r) for r in db.query("SELECT part_id, class_name, confidence, action, rule FROM defects")]
    finally:
        db.close()
    names = sorted(images)  # the folder camera gives files in name order
    assert [r["outcome"] for r in got] == [expect[n] for n in names]
    for part, name in zip(got, names):
        mine = [d for d in defects if d["part_id"] == part["part_id"]]
        top = max((d for d in mine if d["class_name"] in DEFECTS), key=lambda d: d["confidence"], default=None)
        if expect[name] == "PASS":
            assert top is None  # below every defect class's uncertain_conf: nothing to record
        else:  # the rejecting / uncertain class is recorded with its probability
            assert top is not None and abs(top["confidence"] - probs[name]) < 1e-4
            assert top["action"] == {"FAIL": "reject", "UNCERTAIN": "uncertain"}[expect[name]]
    assert any(d["class_name"] == "good" and d["action"] == "ignore" and d["rule"] == GOOD_CLASS for d in defects)
    # the operator screen's live result carries each part's class and probability
    shown = []
    while screen.pending:
        ev = screen.get(timeout=1)
        if isinstance(ev, PartResult):
            shown.append(result_to_dict(ev))
    assert len(shown) == len(images) and all("defects" in r for r in shown)
    assert any(d["class_name"] in CLS_NAMES and 0.0 <= d["confidence"] <= 1.0 for r in shown for d in r["defects"])


def test_replay_gives_the_same_verdicts(tmp_path: Path) -> None:
    model = classifying_model()
    folder = tmp_path / "scenes"
    images = scenes(folder)
    rules, expect = banded_rules(p_defect(model, images))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(json.dumps(config(tmp_path, folder, model, rules)))
    out = tmp_path / "r.jsonl"
    proc = run_replay(folder, out, cfg)
    assert proc.returncode == 0, proc.stderr
    lines = replay_results(out)
    assert {n: r["outcome"] for n, r in lines.items()} == expect
    # rules that cannot judge a classify model: refused at start, naming the field
    cfg.write_text(json.dumps(config(tmp_path, folder, model, {"classes": rules["classes"]})))
    proc = run_replay(folder, out, cfg)
    assert proc.returncode == 2 and "rules.good_classes" in proc.stderr


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    model = classifying_model()
    folder = tmp_path / "scenes"
    scenes(folder)
    base = config(tmp_path, folder, model, {})
    with pytest.raises(ValueError, match=r"rules\.good_classes: \['goood'\] not among the model's classes"):
        Station(parse_config({**base, "rules": {"good_classes": ["goood"]}}))
    with pytest.raises(ValueError, match=r"rules\.good_classes: a classify model"):
        Station(parse_config(base))
    with pytest.raises(ConfigError) as ei:
        parse_config(
            {
                **base,
                "rules": {"good_classes": ["good"], "classes": {"square": {"reject_conf": 0.4, "uncertain_conf": 0.6}}},
            }
        )
    assert "rules.classes.square" in str(ei.value) and "uncertain_conf (0.6) must be <= reject_conf (0.4)" in str(
        ei.value
    )
    with pytest.raises(ConfigError, match=r"rules: .*good_classes lists \['good'\] more than once"):
        parse_config({**base, "rules": {"good_classes": ["good", "good"]}})
    with pytest.raises(ConfigError, match=r"rules\.good_classes"):
        parse_config({**base, "rules": {"good_classes": "good"}})


def test_models_evaluate_prints_balanced_accuracy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = classifying_model()
    split = _write_cls_dataset(tmp_path / "data", 0, 30, 64, seed=99) / "val"  # 10 unseen images per class
    js = tmp_path / "eval.json"
    assert (
        models_main(
            ["evaluate", "--candidate", str(model), "--golden", str(split), "--good-classes", "good", "--json", str(js)]
        )
        == 0
    )
    printed = capsys.readouterr().out
    s = json.loads(js.read_text())
    assert f"balanced accuracy  {100 * s['balanced_accuracy']:.1f} %" in printed
    assert s["n"] == 30 and s["n_per_class"] == {c: 10 for c in CLS_NAMES}
    # balanced accuracy is the mean per-class recall, and the recall agrees with the verdict table
    assert s["balanced_accuracy"] == pytest.approx(np.mean(list(s["per_class_recall"].values())), abs=1e-4)
    row = s["confusion"]["good"]
    assert s["per_class_recall"]["good"] == pytest.approx((row["PASS"] + 0.0) / 10)  # default uncertain_action: reject
    assert s["balanced_accuracy"] >= 0.8  # the factory's model learned its three shapes
    # the good class missing from the rules: refused, naming the field
    assert models_main(["evaluate", "--candidate", str(model), "--golden", str(split)]) == 2
    assert "rules.good_classes" in capsys.readouterr().err
    # a threshold chosen on these images reaches at least the operating point's balanced accuracy
    res = evaluate_classify(model, split, rules=RulesConfig(good_classes=["good"]))
    t, ba = choose_threshold(res.p_defect, res.is_defect)
    assert 0.0 <= t <= 1.0 and ba >= res.balanced_accuracy - 1e-9
