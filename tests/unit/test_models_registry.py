"""The model registry (models.registry) on a real SQLite database with real Ultralytics ONNX exports."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from models import registry
from models.registry import PromotionRefused, RegistryError
from station.inspection.base import ModelLoadError
from station.store.db import open_db
from tests.model_factory import tiny_model


@pytest.fixture(scope="module")
def onnx_a() -> Path:
    return tiny_model("detect", imgsz=64, epochs=1)


@pytest.fixture(scope="module")
def onnx_b() -> Path:
    return tiny_model("detect", imgsz=64, epochs=1, export_imgsz=96)  # same weights, another export: other bytes


@pytest.fixture
def db(tmp_path: Path):
    d = open_db(tmp_path / "station.db")
    yield d
    d.close()


def _summary(sha: str, golden: str, escape: float) -> dict:
    return {"golden_id": golden, "model_sha": sha, "escape_rate": escape, "false_reject_rate": 0.0}


def _audit(db) -> list[tuple]:
    return list(db.execute("SELECT user, action, object_id, before, after, reason FROM audit ORDER BY id"))


def test_register_copies_by_content_and_reads_the_metadata(db, tmp_path: Path, onnx_a: Path) -> None:
    src = tmp_path / "m.onnx"
    shutil.copyfile(onnx_a, src)
    (tmp_path / "m.pt").write_bytes(b"weights")
    rec = registry.register(
        db,
        src,
        store_dir=tmp_path / "store",
        trained_by="alice",
        dataset_snapshot="snap-1",
        metrics={"train": {"mAP50": 0.5}},
    )
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    assert rec.sha256 == sha and rec.status == "candidate" and rec.task == "detect"
    assert rec.names == ("square", "disc") and rec.input_hw == (64, 64) and rec.imgsz == 64
    assert rec.path == (tmp_path / "store" / f"{sha}.onnx").resolve() and rec.path.read_bytes() == src.read_bytes()
    assert rec.weights_path is not None and rec.weights_path.read_bytes() == b"weights"
    assert rec.dataset_snapshot == "snap-1" and rec.trained_by == "alice" and rec.metrics == {"train": {"mAP50": 0.5}}
    src.unlink()  # the registry keeps its own copy
    assert registry.get(db, sha[:10]).path.exists()
    again = registry.register(db, rec.path, store_dir=tmp_path / "store", metrics={"note": 1})
    assert again.id == rec.id and again.metrics == {"train": {"mAP50": 0.5}, "note": 1}
    assert len(registry.list_models(db)) == 1 and registry.current(db) is None


def test_bad_files_and_ids_are_refused_with_the_reason(db, tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="not a valid ONNX model"):
        registry.register(db, bad, store_dir=tmp_path / "store")
    with pytest.raises(RegistryError, match="at least 8 hex digits"):
        registry.get(db, "abc")
    with pytest.raises(RegistryError, match="no registered model"):
        registry.get(db, "0" * 64)
    assert not (tmp_path / "store").exists()


def test_promotion_gate_override_and_rollback(db, tmp_path: Path, onnx_a: Path, onnx_b: Path) -> None:
    store = tmp_path / "store"
    a = registry.ensure_current(db, onnx_a, store_dir=store)  # the station's starting model
    assert a.status == "current" and (cur := registry.current(db)) is not None and cur.sha256 == a.sha256
    b = registry.register(db, onnx_b, store_dir=store)
    with pytest.raises(PromotionRefused, match="no evaluation on a common golden set"):
        registry.promote(db, b.sha256, "qa1")
    registry.record_evaluation(db, a.sha256, _summary(a.sha256, "g1", 0.05))
    registry.record_evaluation(db, b.sha256, _summary(b.sha256, "g1", 0.20))
    with pytest.raises(RegistryError, match="is of model"):
        registry.record_evaluation(db, b.sha256, _summary(a.sha256, "g1", 0.0))
    with pytest.raises(PromotionRefused, match=r"escape rate 0.2000 is worse than the current model's 0.0500"):
        registry.promote(db, b.sha256, "qa1")
    with pytest.raises(RegistryError, match="override needs a reason"):
        registry.promote(db, b.sha256, "qa1", override=True)
    assert (cur := registry.current(db)) is not None and cur.sha256 == a.sha256
    r = registry.promote(db, b.sha256, "qa1", reason="line trial approved by M. Smith", override=True)
    assert r.status == "current" and r.promoted_by == "qa1"
    assert registry.get(db, a.sha256).status == "retired"
    # the better model (lower escape rate) passes the gate against the current one
    back = registry.promote(db, a.sha256, "qa2")
    assert back.status == "current"
    # rollback returns to the model the last change replaced
    rb = registry.rollback(db, user="qa2", reason="operators prefer b")
    assert rb.sha256 == b.sha256 and (cur := registry.current(db)) is not None and cur.sha256 == b.sha256
    rows = _audit(db)
    actions = [r[1] for r in rows]
    assert actions == [
        "model_promote",
        "model_promote_refused",
        "model_promote_refused",
        "model_promote_override",
        "model_promote",
        "model_rollback",
    ]
    override = rows[3]
    assert override[0] == "qa1" and override[2] == b.sha256 and override[5] == "line trial approved by M. Smith"
    assert json.loads(override[3]) == {"sha": a.sha256}
    gate = json.loads(override[4])["gate"]
    assert gate["passed"] is False and gate["candidate_escape_rate"] == 0.2 and gate["current_escape_rate"] == 0.05
    assert [h["action"] for h in registry.history(db)] == actions
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM audit")


def test_rollback_only_to_a_model_that_ran(db, tmp_path: Path, onnx_a: Path, onnx_b: Path) -> None:
    store = tmp_path / "store"
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback(db, user="x")
    a = registry.ensure_current(db, onnx_a, store_dir=store)
    b = registry.register(db, onnx_b, store_dir=store)
    with pytest.raises(RegistryError, match="never ran as the current model"):
        registry.rollback(db, b.sha256, user="x")
    with pytest.raises(RegistryError, match="already the current model"):
        registry.rollback(db, a.sha256, user="x")
    with pytest.raises(RegistryError, match="already the current model"):
        registry.promote(db, a.sha256, "x")
    assert registry.ensure_current(db, onnx_b, store_dir=store).sha256 == a.sha256  # a current model stays
    with pytest.raises(sqlite3.IntegrityError):  # never two current models, whatever writes the table
        db.execute("UPDATE models SET status = 'current' WHERE sha256 = ?", [b.sha256])


def test_cli_register_promote_rollback(
    tmp_path: Path, onnx_a: Path, onnx_b: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from models.cli import main

    dbp = str(tmp_path / "station.db")
    assert main(["register", str(onnx_a), "--db", dbp, "--user", "u1"]) == 0
    sha_a = capsys.readouterr().out.split()[1]
    assert main(["register", str(onnx_b), "--db", dbp]) == 0
    sha_b = capsys.readouterr().out.split()[1]
    assert (tmp_path / "models" / f"{sha_a}.onnx").is_file()  # default store: next to the database
    assert main(["current", "--db", dbp]) == 1
    assert main(["promote", sha_a[:12], "--db", dbp, "--user", "qa"]) == 0  # first model: not gated
    assert main(["promote", sha_b[:12], "--db", dbp, "--user", "qa"]) == 3  # no common evaluation: refused
    assert "refused" in capsys.readouterr().err
    assert main(["promote", sha_b[:12], "--db", dbp, "--user", "qa", "--override", "--reason", "bench trial"]) == 0
    assert main(["rollback", "--db", dbp, "--user", "qa"]) == 0
    capsys.readouterr()
    assert main(["current", "--db", dbp]) == 0
    assert capsys.readouterr().out.startswith(sha_a[:12])
    assert main(["history", "--db", dbp]) == 0
    out = capsys.readouterr().out
    assert "model_promote_override" in out and "bench trial" in out and "model_rollback" in out
    assert main(["list", "--db", dbp, "--status", "retired"]) == 0
    assert capsys.readouterr().out.startswith(sha_b[:12])
    assert main(["promote", "zz", "--db", dbp, "--user", "qa"]) == 2
    assert "at least 8 hex digits" in capsys.readouterr().err
