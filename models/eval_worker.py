"""The evaluation worker: candidate vs current model on a golden set, in a process of its own.

``python -m models.eval_worker JOB_DIR`` (started by :class:`models.jobs.JobRunner` through
:mod:`models.eval_jobs`) reads ``JOB_DIR/spec.json``, runs :func:`models.eval_compare.compare` (the
production path: OnnxInspector + Decider through ``inspect_part``) and writes
``JOB_DIR/result.json``: the side-by-side summary, and per golden image its truth and what each
model found and decided, so the page can show the images where they disagree and threshold tuning
can re-decide the same detections without inference (:func:`result_from_json` rebuilds an
:class:`~models.evaluate.EvalResult`). Like the training worker it appends ``phase``, ``result``
(naming ``result.json``) or ``error`` events to ``JOB_DIR/progress.jsonl`` for the runner, and it
runs at a lower CPU priority (``nice`` in the spec): the line's inference thread keeps the CPU.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from station.serialize import dumps

from .worker import EventLog

log = logging.getLogger(__name__)

SUCCEEDED, FAILED = "succeeded", "failed"
RESULT_FILE = "result.json"


# --------------------------------------------------------------------------- JSON (de)serialisation


def result_to_json(r: Any) -> dict[str, Any]:
    """An EvalResult as JSON: its summary plus every image (truth, detections, eligibility, verdict)."""
    images = []
    for i, im in enumerate(r.images):
        det = im.detections
        images.append(
            {
                "index": i,
                "stem": im.stem,
                "truth": [[int(c), *[round(float(v), 2) for v in b]] for c, b in zip(im.truth_classes, im.truth_boxes)],
                "dets": [
                    [int(c), round(float(s), 5), *[round(float(v), 2) for v in b]]
                    for c, s, b in zip(det.class_ids, det.scores, det.boxes_xyxy)
                ],
                "eligible": [bool(e) for e in im.eligible],
                "outcome": im.outcome,
                "reasons": list(im.reasons),
                "ejected": bool(im.ejected),
                "ms": round(float(im.ms), 3),
            }
        )
    return {
        "summary": r.summary(),
        "model_id": r.model_id,
        "names": list(r.names),
        "seconds": round(r.seconds, 2),
        "images": images,
    }


def result_from_json(d: Mapping[str, Any]) -> Any:
    """Inverse of :func:`result_to_json` (scores recomputed from the per-image records by ``models.evaluate.score``)."""
    from station.config import RulesConfig
    from station.contracts import Detections

    from .evaluate import ImageResult, score

    s = d["summary"]
    names = tuple(d["names"])
    images = []
    for im in d["images"]:
        dets = np.asarray(im["dets"], np.float64).reshape(-1, 6)
        truth = np.asarray(im["truth"], np.float64).reshape(-1, 5)
        det = Detections(
            boxes_xyxy=dets[:, 2:6].astype(np.float32),
            scores=dets[:, 1].astype(np.float32),
            class_ids=dets[:, 0].astype(np.int32),
            names=names,
            model_id=d["model_id"],
        )
        images.append(
            ImageResult(
                im["stem"],
                truth[:, 0].astype(np.int32),
                truth[:, 1:5].astype(np.float32),
                det,
                np.asarray(im["eligible"], bool),
                im["outcome"],
                tuple(im["reasons"]),
                bool(im["ejected"]),
                float(im["ms"]),
            )
        )
    return score(
        images,
        names,
        RulesConfig.model_validate(s["rules"]),
        model_sha=s["model_sha"],
        model_id=d["model_id"],
        golden_id=s["golden_id"],
        conf=float(s["conf"]),
        seconds=float(d.get("seconds", 0.0)),
    )


# --------------------------------------------------------------------------- the worker


def run(eval_dir: Path) -> int:
    """Evaluate as ``eval_dir/spec.json`` says; write ``result.json`` and the events; return the exit code."""
    from pydantic import TypeAdapter

    from station import camera_setup
    from station.config import CalibrationConfig, InspectorConfig, RulesConfig

    from .eval_compare import compare

    spec = json.loads((eval_dir / "spec.json").read_text())
    events = EventLog(eval_dir / "progress.jsonl")
    events.emit("phase", phase="evaluate")
    if spec.get("nice"):
        try:  # the line keeps the CPU: this process yields to it
            os.nice(int(spec["nice"]))
        except OSError as e:
            log.warning("could not lower the evaluation's priority: %s", e)
    t0 = time.monotonic()
    try:
        comp = compare(
            spec["candidate_path"],
            spec.get("current_path"),
            spec["golden_root"],
            rules=RulesConfig.model_validate(spec["rules"]),
            calibration=CalibrationConfig.model_validate(spec["calibration"]),
            setup=camera_setup.from_json(spec.get("setup")),
            inspector_cfg=TypeAdapter(InspectorConfig).validate_python(spec["inspector"])
            if spec.get("inspector")
            else None,
        )
    except Exception as e:  # noqa: BLE001 - every failure is reported to the page, with the traceback in the log
        log.exception("evaluation failed")
        error = f"{type(e).__name__}: {e}"
        _write(eval_dir / RESULT_FILE, {"status": FAILED, "error": error})
        events.emit("error", message=error)
        return 1
    out = {
        "status": SUCCEEDED,
        "seconds": round(time.monotonic() - t0, 2),
        "escape_not_worse": comp.escape_not_worse,
        "disagreements": [dataclasses.asdict(d) for d in comp.disagreements],
        "candidate": result_to_json(comp.candidate),
        "current": result_to_json(comp.current) if comp.current is not None else None,
        "table": comp.table(),
    }
    _write(eval_dir / RESULT_FILE, out)
    print(comp.table(), flush=True)
    events.emit("result", result={"file": RESULT_FILE, "escape_not_worse": comp.escape_not_worse})
    return 0


def _write(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dumps(data))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the worker process."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m models.eval_worker JOB_DIR", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    return run(Path(argv[0]).resolve())


if __name__ == "__main__":
    sys.exit(main())
