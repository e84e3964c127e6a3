"""The model lifecycle for real: train (job runner, subprocess) -> export -> evaluate -> register -> gate -> rollback.

Real parts only: Ultralytics trains a real (tiny) model from a yaml in a worker subprocess, the
ONNX export is Ultralytics', evaluation runs the station's production path (OnnxInspector +
Decider via inspect_part) on a frozen golden set of unseen synthetic parts, the registry is a real
SQLite station database. The "better" model is the shipped default model; the "worse" one is a
1-epoch model trained on 8 thumbnails, whose higher escape rate is measured, not assumed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from models import DEFAULT_DIR, SHIPPED_DIRS, registry
from models.dataset import GOLDEN_START, NAMES, make_golden_set
from models.default_model import RECIPES
from models.eval_compare import compare
from models.evaluate import evaluate
from models.export import read_lineage
from models.golden import GoldenSet
from models.jobs import CANCELLED, SUCCEEDED, JobBusyError, JobRunner, JobSpec
from models.registry import PromotionRefused
from station.config import StationConfig, SyntheticCameraConfig, load_config
from station.inspection.model_meta import read_model_meta
from station.store.db import open_db

DEFAULT_ONNX = DEFAULT_DIR / "model.onnx"
# Floors measured with the shipped model on this very golden set (40 unseen parts, seed 4242, defect
# rate 0.5), at the rules it ships with; they leave a margin below the measured values (see the report).
RECALL_FLOOR = 0.90  # measured 1.0 (every class 1.0 at reject_conf 0.5)
ESCAPE_CEILING = 0.0  # measured 0 of 22: every defective part FAIL (>= 0.5), none in the UNCERTAIN band
MAP50_FLOOR = 0.95  # measured 1.0


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> GoldenSet:
    cam = SyntheticCameraConfig(defect_rate=0.5)  # the line's 1280x800 frames
    return make_golden_set(
        tmp_path_factory.mktemp("golden") / "g", 40, seed=4242, camera_cfg=cam, start_id=GOLDEN_START + 500_000
    )


def test_shipped_model_finds_defects_on_unseen_parts(golden: GoldenSet) -> None:
    meta = read_model_meta(DEFAULT_ONNX)
    assert meta.names == NAMES and meta.task == "detect"
    card = json.loads((DEFAULT_DIR / "model.json").read_text())
    assert card["sha256"] == meta.sha256  # the card describes the shipped file
    lineage = read_lineage(meta.raw)
    assert (
        lineage["dataset_snapshot"] == card["training"]["dataset_snapshot"]
        and lineage["train_seed"] == card["training"]["recipe"]["seed"]
    )
    assert card["test"]["rules"] == RECIPES["machined"].shipped_rules().model_dump(mode="json")
    assert StationConfig().rules == RECIPES["machined"].shipped_rules()  # what a config without `rules:` gets
    r = evaluate(DEFAULT_ONNX, golden, rules=RECIPES["machined"].shipped_rules())
    assert r.n_defective >= 15
    assert r.recall >= RECALL_FLOOR, r.table()
    assert r.escape_rate <= ESCAPE_CEILING, r.table()
    assert r.map50 >= MAP50_FLOOR, r.table()
    assert all(c.recall >= 0.85 for c in r.per_class.values()), r.table()  # each measured 1.0


PCB_ONNX = SHIPPED_DIRS["pcb"] / "model.onnx"
# Floors for the shipped pcb model on 40 unseen pcb parts (seed 4242), measured like the ones above.
PCB_RECALL_FLOOR = 0.80  # measured 0.97 (scratch 1.0, spot 0.93, missing 1.0 at the shipped rules; full resolution)
PCB_ESCAPE_CEILING = 0.05  # measured 0 of 22 (the half-scale model before it: 0 of 22 too)
PCB_MAP50_FLOOR = 0.93  # measured 0.985 (the half-scale model: 1.0)


def test_shipped_pcb_model_finds_defects_on_unseen_pcb_parts(tmp_path: Path) -> None:
    """The pcb product's model (``models build-default --product pcb``), and the example config that runs it."""
    meta = read_model_meta(PCB_ONNX)
    assert meta.names == NAMES and meta.task == "detect"
    card = json.loads((PCB_ONNX.parent / "model.json").read_text())
    assert card["sha256"] == meta.sha256 and card["training"]["recipe"]["product"] == "pcb"
    assert "--product pcb" in card["training"]["command"]
    cfg = load_config(Path(__file__).resolve().parents[2] / "deploy" / "config" / "synthetic-pcb.yaml")
    assert cfg.cameras[0].product == "pcb" and Path(cfg.inspector.model).resolve() == PCB_ONNX  # type: ignore[union-attr]
    assert cfg.rules == RECIPES["pcb"].shipped_rules()  # the example config decides as the model was tested
    assert card["test"]["rules"] == cfg.rules.model_dump(mode="json")
    shipped = RECIPES["pcb"].shipped_inspector(PCB_ONNX.parent)  # and inspects as it was tested: with its check
    tc, want = cfg.inspector.template_check, shipped.template_check  # type: ignore[union-attr]
    assert tc is not None and want is not None and tc.verifier and want.verifier
    assert tc.reference.template_path and want.reference.template_path
    repo = Path(__file__).resolve().parents[2]  # the example config's paths are relative to the repository
    assert (repo / tc.reference.template_path).resolve() == want.reference.template_path.resolve()
    assert (repo / tc.verifier).resolve() == want.verifier.resolve()
    files: Any = {"verifier": True, "reference": {"template_path"}}
    assert tc.model_dump(exclude=files) == want.model_dump(exclude=files)
    cam = SyntheticCameraConfig(product="pcb", defect_rate=0.5)
    golden = make_golden_set(tmp_path / "g", 40, seed=4242, camera_cfg=cam, start_id=GOLDEN_START + 500_000)
    r = evaluate(PCB_ONNX, golden, rules=RECIPES["pcb"].shipped_rules(), inspector_cfg=shipped)
    assert r.n_defective >= 15
    assert r.recall >= PCB_RECALL_FLOOR, r.table()
    assert r.escape_rate <= PCB_ESCAPE_CEILING, r.table()
    assert r.map50 >= PCB_MAP50_FLOOR, r.table()


def test_cli_evaluate_record_and_tune(tmp_path: Path, golden: GoldenSet, capsys: pytest.CaptureFixture[str]) -> None:
    from models.cli import main

    dbp = str(tmp_path / "station.db")
    db = open_db(dbp)
    shipped = registry.ensure_current(db, DEFAULT_ONNX, store_dir=tmp_path / "store")
    db.close()
    out_json = tmp_path / "cmp.json"
    assert (
        main(
            [
                "evaluate",
                "--candidate",
                shipped.sha256[:12],
                "--golden",
                str(golden.root),
                "--use-db",
                "--record",
                "--db",
                dbp,
                "--json",
                str(out_json),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "escape rate" in text and f"recorded evaluation of {shipped.sha256[:12]}" in text
    summary = json.loads(out_json.read_text())
    db = open_db(dbp)
    rec = registry.get(db, shipped.sha256).golden(golden.golden_id)
    db.close()
    assert rec is not None and rec["escape_rate"] == summary["candidate"]["escape_rate"]
    assert main(["tune", "--model", str(DEFAULT_ONNX), "--golden", str(golden.root), "--target", "0.0"]) == 0
    text = capsys.readouterr().out
    assert "target escape rate" in text and "uncertain_action: reject" in text


def _synthetic(n_train: int, n_val: int, seed: int) -> dict[str, Any]:
    """A job's ``synthetic`` dataset: mostly defective parts, seen at 128 x 128."""
    return {
        "n_train": n_train,
        "n_val": n_val,
        "seed": seed,
        "camera": {"defect_rate": 0.8},
        "view": {"input_hw": [128, 128]},
    }


def _tiny_spec(tmp: Path, **kw: Any) -> JobSpec:
    base: dict[str, Any] = dict(
        synthetic=_synthetic(8, 4, seed=5),
        model="yolov8n.yaml",
        epochs=1,
        imgsz=128,
        batch=8,
        seed=1,
        hyp={"mosaic": 0.0},
        export_imgsz=(128, 128),
    )
    base.update(kw)
    return JobSpec(**base)


@pytest.mark.slow
def test_training_job_evaluate_register_gate_rollback(tmp_path: Path, golden: GoldenSet) -> None:
    db_path, store = tmp_path / "station.db", tmp_path / "store"
    db = open_db(db_path)
    shipped = registry.ensure_current(db, DEFAULT_ONNX, store_dir=store)
    events: list[Mapping[str, Any]] = []
    runner = JobRunner(tmp_path / "jobs")
    spec = _tiny_spec(
        tmp_path,
        golden=str(golden.root),
        current_model=str(shipped.path),
        db=str(db_path),
        store_dir=str(store),
        trained_by="pytest",
    )
    state = runner.start(spec, lambda st, ev: events.append(ev))
    with pytest.raises(JobBusyError, match="one job at a time"):
        runner.start(spec)
    with pytest.raises(JobBusyError, match="another process"):  # another runner (e.g. the CLI) on the same jobs folder
        JobRunner(tmp_path / "jobs").start(spec)
    runner.wait(state.job_id, timeout=600)
    assert state.status == SUCCEEDED, f"{state.error}\n{state.log_path.read_text()[-3000:]}"
    # live progress: phases in order, a start, one epoch with losses and validation metrics, the final validation
    phases = [e["phase"] for e in events if e["event"] == "phase"]
    assert phases == ["dataset", "train", "export", "evaluate", "register"]
    prog = [e for e in events if e["event"] == "progress"]
    assert [p["phase"] for p in prog if p["phase"] != "batch"] == ["start", "epoch", "final", "done"]
    epoch = next(p for p in prog if p["phase"] == "epoch")
    assert epoch["epoch"] == 1 and epoch["epochs"] == 1 and set(epoch["losses"]) >= {"box_loss", "cls_loss"}
    assert {"precision", "recall", "mAP50"} <= set(epoch["metrics"])
    assert len(state.epochs) == 1 and state.progress is not None
    log_text = state.log_path.read_text()
    assert "Ultralytics" in log_text and "models.train: start=yolov8n.yaml" in log_text
    assert json.loads((state.job_dir / "state.json").read_text())["status"] == SUCCEEDED
    # the export keeps Ultralytics' metadata and adds lineage
    res = state.result or {}
    meta = read_model_meta(res["onnx"])
    assert meta.names == NAMES and meta.imgsz == (128, 128) and meta.stride == 32
    lineage = read_lineage(meta.raw)
    assert (
        lineage["train_seed"] == 1
        and lineage["dataset_snapshot"].startswith("synthetic-")
        and lineage["parent_sha"] is None
    )
    # registered as a candidate, with both evaluations recorded on the golden set
    tiny = registry.get(db, res["registered"]["sha256"])
    assert (
        tiny.status == "candidate"
        and tiny.dataset_snapshot == lineage["dataset_snapshot"]
        and tiny.trained_by == "pytest"
    )
    assert tiny.weights_path is not None and tiny.weights_path.exists()
    ge_tiny = tiny.golden(golden.golden_id)
    ge_shipped = registry.get(db, shipped.sha256).golden(golden.golden_id)
    assert ge_tiny is not None and ge_shipped is not None
    # measured, not assumed: the 1-epoch thumbnail model lets more defective parts through
    assert ge_tiny["escape_rate"] > ge_shipped["escape_rate"]
    with pytest.raises(PromotionRefused, match="worse than the current model"):
        registry.promote(db, tiny.sha256, "qa")
    registry.promote(db, tiny.sha256, "qa", reason="trial on line 2", override=True)
    assert (cur := registry.current(db)) is not None and cur.sha256 == tiny.sha256
    # the better model passes the gate against the current (worse) one
    assert registry.promote(db, shipped.sha256, "qa").status == "current"
    # rollback restores the sha the last change replaced
    assert registry.rollback(db, user="qa", reason="check").sha256 == tiny.sha256
    actions = [(h["action"], h["reason"]) for h in registry.history(db)]
    assert actions[1:] == [
        ("model_promote_refused", None),
        ("model_promote_override", "trial on line 2"),
        ("model_promote", None),
        ("model_rollback", "check"),
    ]
    # the comparison shows the same figures side by side and lists the disagreements
    comp = compare(tiny.path, shipped.path, golden)
    assert comp.candidate.escape_rate == pytest.approx(ge_tiny["escape_rate"])
    assert not comp.escape_not_worse and comp.disagreements
    assert "gate (escape rate not worse): FAIL" in comp.table()
    db.close()


@pytest.mark.slow
def test_cancel_stops_a_training_job(tmp_path: Path) -> None:
    runner = JobRunner(tmp_path / "jobs")
    first_batch = threading.Event()

    def on_event(st: Any, ev: Mapping[str, Any]) -> None:
        if ev.get("event") == "progress" and ev.get("phase") == "batch":
            first_batch.set()

    spec = _tiny_spec(
        tmp_path,
        epochs=200,
        synthetic=_synthetic(16, 2, seed=6),
        batch=2,
    )
    state = runner.start(spec, on_event)
    assert first_batch.wait(300), state.log_path.read_text()[-2000:]
    t0 = time.monotonic()
    runner.cancel(state.job_id)
    runner.wait(state.job_id, timeout=120)
    assert state.status == CANCELLED and state.returncode == 3, state.error
    assert "cancelled during epoch" in (state.error or "")
    assert time.monotonic() - t0 < 60
    assert runner.active() is None
    assert state.epochs == [] or state.epochs[-1].epoch < 200
    # the lock is free again: a new job may start (and is cancelled at once)
    again = runner.start(spec)
    runner.cancel(again.job_id)
    runner.wait(again.job_id, timeout=120)
    assert again.status == CANCELLED
