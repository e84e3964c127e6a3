"""The training job runner (models.jobs): spec checks, a failing worker, state on disk, the progress printer.

A real worker subprocess is started; it fails fast on a broken dataset (no training happens here:
a real training run is in tests/integration/test_training.py).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from models.cli import ProgressPrinter
from models.jobs import FAILED, JobError, JobRunner, JobSpec, JobState
from models.train import Progress, TrainingError, resolve_parent


def test_spec_is_checked_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(JobError, match="exactly one of data_yaml"):
        JobSpec().validate()
    with pytest.raises(JobError, match="does not exist"):
        JobSpec(data_yaml=str(tmp_path / "nope.yaml")).validate()
    with pytest.raises(JobError, match="lack n_val"):
        JobSpec(synthetic={"n_train": 2, "seed": 1}).validate()
    with pytest.raises(JobError, match="not a golden set"):
        JobSpec(synthetic={"n_train": 2, "n_val": 1, "seed": 1}, golden=str(tmp_path)).validate()
    with pytest.raises(JobError, match="store_dir"):
        JobSpec(synthetic={"n_train": 2, "n_val": 1, "seed": 1}, db=str(tmp_path / "s.db")).validate()
    with pytest.raises(JobError, match="unknown job spec fields: colour"):
        JobSpec.from_dict({"colour": "red"})
    spec = JobSpec(synthetic={"n_train": 2, "n_val": 1, "seed": 1}, export_imgsz=(416, 640))
    assert JobSpec.from_dict(json.loads(json.dumps(spec.as_dict()))) == spec
    runner = JobRunner(tmp_path / "jobs")
    with pytest.raises(JobError):
        runner.start(JobSpec())
    assert runner.list_jobs() == [] and runner.active() is None


def test_parents_are_resolved_or_refused(tmp_path: Path) -> None:
    assert resolve_parent("yolov8n.yaml") == "yolov8n.yaml"
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    with pytest.raises(TrainingError, match="ONNX cannot be fine-tuned"):
        resolve_parent(onnx)
    (tmp_path / "m.pt").write_bytes(b"w")
    assert resolve_parent(onnx) == str(tmp_path / "m.pt")
    with pytest.raises(TrainingError, match="do not exist"):
        resolve_parent(tmp_path / "other.pt")
    with pytest.raises(TrainingError, match="expected a .yaml"):
        resolve_parent("model.bin")


def test_a_failing_worker_ends_failed_with_its_error_and_log(tmp_path: Path) -> None:
    data = tmp_path / "data.yaml"
    data.write_text("path: /nonexistent/dataset\ntrain: images/train\nval: images/val\nnames:\n  0: scratch\n")
    runner = JobRunner(tmp_path / "jobs")
    seen: list[str] = []
    state = runner.start(
        JobSpec(data_yaml=str(data), epochs=1, imgsz=64, batch=2), lambda st, ev: seen.append(ev["event"])
    )
    runner.wait(state.job_id, timeout=300)
    assert state.status == FAILED and state.returncode == 1
    assert state.error and "nonexistent" in state.error  # Ultralytics' own message, passed on
    assert "Traceback" in state.log_path.read_text()
    assert seen[0] == "phase" and seen[-2:] == ["error", "finished"]
    on_disk = JobState.from_dict(json.loads((state.job_dir / "state.json").read_text()))
    assert on_disk.status == FAILED and on_disk.error == state.error
    assert [j.job_id for j in runner.list_jobs()] == [state.job_id]
    assert runner.get(state.job_id) is state and JobRunner(tmp_path / "jobs").get(state.job_id).status == FAILED


def test_progress_printer_lines() -> None:
    out = io.StringIO()
    pr = ProgressPrinter(out)
    st = JobState("j1", Path("/tmp/j1"))
    pr(st, {"event": "phase", "phase": "train"})
    pr(st, {"event": "progress", **Progress("batch", 2, 4, 5, 10, {"box_loss": 1.5}, elapsed_s=3, eta_s=30).as_dict()})
    pr(
        st,
        {
            "event": "progress",
            **Progress(
                "epoch", 2, 4, losses={"box_loss": 1.25}, metrics={"precision": 0.5, "recall": 0.25, "mAP50": 0.4}
            ).as_dict(),
        },
    )
    pr(st, {"event": "finished", "status": "succeeded"})
    text = out.getvalue()
    assert "[train]" in text and "epoch 2/4 [" in text and "mAP50=0.400" in text and "job j1 succeeded" in text
    assert "batch 5/10" not in text  # not a terminal: only whole lines
    assert Progress("batch", 2, 4, 5, 10).fraction == pytest.approx((1 + 0.5) / 4)


def test_a_job_left_running_by_a_dead_process_is_settled_from_its_events(tmp_path: Path) -> None:
    runner = JobRunner(tmp_path / "jobs")
    for job_id, events in (
        (
            "j-done",
            [
                {"event": "phase", "phase": "train"},
                {"event": "progress", **Progress("epoch", 1, 1, metrics={"mAP50": 0.5}).as_dict()},
                {"event": "result", "result": {"onnx": "/x/model.onnx"}},
            ],
        ),
        ("j-lost", [{"event": "phase", "phase": "train"}]),
    ):
        d = tmp_path / "jobs" / job_id
        d.mkdir(parents=True)
        (d / "progress.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events) + "{truncated")
        (d / "state.json").write_text(json.dumps(JobState(job_id, d, phase="train", started_at=1.0).as_dict()))
    done, lost = runner.get("j-done"), runner.get("j-lost")
    assert done.status == "succeeded" and done.result == {"onnx": "/x/model.onnx"} and len(done.epochs) == 1
    assert lost.status == FAILED and "abandoned" in (lost.error or "")
    assert {j.job_id: j.status for j in JobRunner(tmp_path / "jobs").list_jobs()} == {
        "j-done": "succeeded",
        "j-lost": FAILED,
    }


def test_an_evaluation_runs_on_the_same_runner_and_ends_failed_with_its_error(tmp_path: Path) -> None:
    from models.eval_jobs import EvalError, Evaluations, eval_dict
    from models.jobs import JobBusyError

    evals = Evaluations(tmp_path / "evaluations")
    assert isinstance(evals.runner, JobRunner) and evals.runner.worker == "models.eval_worker"
    with pytest.raises(EvalError, match="unknown evaluation meta fields: colour"):
        evals.start({}, {"colour": "red"})
    recorded: list[str] = []
    spec: dict[str, Any] = {
        "candidate_path": str(tmp_path / "missing.onnx"),
        "current_path": None,
        "golden_root": str(tmp_path / "no-golden"),
        "rules": {},
        "calibration": {},
    }
    st = evals.start(
        spec,
        {"candidate_sha": "ab" * 32, "golden_id": "0" * 16, "started_by": "qa"},
        lambda s, r: recorded.append(s.job_id),
    )
    assert st.job_id.startswith("e") and evals.active() is st
    with pytest.raises(JobBusyError, match="evaluation job .* is running"):
        evals.start(spec, {})
    evals.wait(timeout=120)
    assert st.status == FAILED and st.returncode == 1 and recorded == []  # nothing recorded for a failed evaluation
    assert st.error and "no-golden" in st.error  # the worker's own message, through its error event
    d = eval_dict(evals.get(st.job_id))
    assert (
        d["eval_id"] == st.job_id and d["candidate_sha"] == "ab" * 32 and d["started_by"] == "qa" and not d["recorded"]
    )
    assert evals.result(st.job_id) == {"status": FAILED, "error": st.error}
    assert evals.spec(st.job_id)["nice"] == 10 and [e.job_id for e in Evaluations(tmp_path / "evaluations").list()] == [
        st.job_id
    ]
    on_disk = Evaluations(tmp_path / "evaluations").get(st.job_id)  # another process: read back from state.json
    assert on_disk.status == FAILED and on_disk.meta["golden_id"] == "0" * 16
    with pytest.raises(LookupError):
        evals.get("e20260101-000000-abcdef")
