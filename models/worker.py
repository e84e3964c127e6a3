"""The training job worker: ``python -m models.worker <job_dir>`` (started by :class:`models.jobs.JobRunner`).

Reads ``<job_dir>/spec.json``, runs [dataset] -> train -> export -> [evaluate] -> [register] and
appends one JSON event per line to ``<job_dir>/progress.jsonl``. SIGTERM sets the cancel event:
training stops at the next batch, other steps at the next step boundary; the worker then writes a
``cancelled`` event and exits with code 3. Exit code 0 = a ``result`` event was written; 1 = error.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from station import serialize

from .jobs import JobSpec
from .train import Progress, TrainingCancelled

log = logging.getLogger("models.worker")

EXIT_CANCELLED = 3


class EventLog:
    """Appends JSON lines to the progress file, flushed after each one."""

    def __init__(self, path: Path):
        self.fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the job's life, closed by close()
        self.lock = threading.Lock()

    def emit(self, event: str, **data: Any) -> None:
        with self.lock:
            self.fh.write(serialize.dumps({"event": event, "t": time.time(), **data}) + "\n")
            self.fh.flush()

    def progress(self, p: Progress) -> None:
        self.emit("progress", **p.as_dict())


def run(job_dir: Path, cancel: threading.Event) -> int:
    """Run the job in ``job_dir``; returns the process exit code."""
    events = EventLog(job_dir / "progress.jsonl")
    try:
        spec = JobSpec.from_dict(json.loads((job_dir / "spec.json").read_text()))
        result = _run(spec, job_dir / "work", events, cancel)
    except TrainingCancelled as e:
        events.emit("cancelled", message=str(e))
        return EXIT_CANCELLED
    except Exception as e:  # noqa: BLE001 - report every failure to the runner, with its traceback in the log
        traceback.print_exc()
        events.emit("error", message=f"{type(e).__name__}: {e}")
        return 1
    events.emit("result", result=result)
    return 0


def _check(cancel: threading.Event, step: str) -> None:
    if cancel.is_set():
        raise TrainingCancelled(f"cancelled before {step}")


def _run(spec: JobSpec, work: Path, events: EventLog, cancel: threading.Event) -> dict[str, Any]:
    from .dataset import TrainView, dataset_snapshot, make_synthetic_dataset
    from .export import export_onnx
    from .train import TORCH_ARCHS, resolve_parent, train

    result: dict[str, Any] = {}
    if spec.synthetic is not None:
        events.emit("phase", phase="dataset")
        from station.config.camera import SyntheticCameraConfig

        syn = dict(spec.synthetic)
        cam = SyntheticCameraConfig.model_validate(syn.get("camera") or {})
        v = syn.get("view") or {}
        view = TrainView.from_dict(v)
        out = Path(syn.get("out_dir") or work / "dataset")
        data_yaml = make_synthetic_dataset(
            out,
            int(syn["n_train"]),
            int(syn["n_val"]),
            int(syn["seed"]),
            cam,
            n_test=int(syn.get("n_test", 0)),
            view=view,
        )
    else:
        data_yaml = Path(spec.data_yaml)  # type: ignore[arg-type]
    result["data_yaml"] = str(data_yaml)
    _check(cancel, "training")

    events.emit("phase", phase="train")
    parent = resolve_parent(spec.model)
    tr = train(
        data_yaml,
        work / "train",
        **spec.train_args(),
        on_progress=events.progress,
        cancel=cancel,
        hyp=spec.hyp,
    )
    result["train"] = {
        "best_pt": str(tr.best_pt),
        "metrics": dict(tr.metrics),
        "epochs": tr.epochs_done,
        "seconds": round(tr.seconds, 1),
        "log": str(tr.log_path),
        "args": {k: str(v) for k, v in tr.args.items()},
    }
    _check(cancel, "export")

    events.emit("phase", phase="export")
    parent_sha = None
    if not parent.endswith(".yaml") and parent not in TORCH_ARCHS:
        from .golden import sha256_file

        onnx_parent = Path(spec.model).with_suffix(".onnx")
        parent_sha = sha256_file(onnx_parent) if onnx_parent.is_file() else sha256_file(Path(parent))
    snapshot = dataset_snapshot(data_yaml)
    lineage = {
        "dataset_snapshot": snapshot,
        "parent_sha": parent_sha,
        "train_seed": spec.seed,
        "arch": Path(spec.model).name,
        "epochs": tr.epochs_done,
        "imgsz": spec.imgsz,
        **dict(spec.lineage),
    }
    out_onnx = Path(spec.export_path) if spec.export_path else work / "model.onnx"
    export_imgsz = list(spec.export_imgsz) if spec.export_imgsz else [spec.imgsz, spec.imgsz]
    onnx_path = export_onnx(tr.best_pt, out_onnx, export_imgsz, lineage=lineage, parity_golden=spec.golden)
    from .golden import sha256_file

    result["onnx"] = str(onnx_path)
    result["sha256"] = sha256_file(onnx_path)
    result["lineage"] = lineage
    _check(cancel, "evaluation")

    comparison = None
    if spec.golden is not None:
        events.emit("phase", phase="evaluate")
        from station.config import RulesConfig

        from .eval_compare import compare

        rules = RulesConfig.model_validate(spec.rules or {})
        comparison = compare(onnx_path, spec.current_model, spec.golden, rules=rules)
        result["comparison"] = comparison.summary()
        print(comparison.table(), flush=True)
        _check(cancel, "registration")

    if spec.db is not None:
        events.emit("phase", phase="register")
        from station.store.db import open_db

        from . import registry

        assert spec.store_dir is not None  # JobSpec refuses a db without a store_dir
        db = open_db(spec.db)
        try:
            rec = registry.register(
                db,
                onnx_path,
                store_dir=spec.store_dir,
                trained_by=spec.trained_by,
                metrics={"train": dict(tr.metrics)},
            )
            if comparison is not None:
                registry.record_evaluation(db, rec.sha256, comparison.candidate.summary())
                if comparison.current is not None:
                    try:
                        registry.record_evaluation(db, comparison.current.model_sha, comparison.current.summary())
                    except registry.RegistryError as e:
                        log.warning("current model's evaluation not recorded: %s", e)
            result["registered"] = {"sha256": rec.sha256, "path": str(rec.path)}
        finally:
            db.close()
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point of the worker process."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m models.worker JOB_DIR", file=sys.stderr)
        return 2
    job_dir = Path(argv[0]).resolve()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    os.environ["YOLO_OFFLINE"] = "1"
    cancel = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: cancel.set())
    signal.signal(signal.SIGINT, lambda *_: cancel.set())
    try:
        spec_nice = int(json.loads((job_dir / "spec.json").read_text()).get("nice", 10))
        if spec_nice:
            os.nice(spec_nice)
    except (OSError, ValueError) as e:
        log.warning("could not lower the worker's priority: %s", e)
    return run(job_dir, cancel)


if __name__ == "__main__":
    sys.exit(main())
