"""Evaluation jobs for the web models page: candidate vs current model on a golden set, in a worker process.

``python -m station.web.model_eval EVAL_DIR`` reads ``EVAL_DIR/spec.json``, runs
:func:`models.evaluate.compare` (the production path: OnnxInspector + Decider through
``inspect_part``) and writes ``EVAL_DIR/result.json``: the side-by-side summary, and per golden
image its truth and what each model found and decided, so the page can show the images where they
disagree and threshold tuning can re-decide the same detections without inference
(:func:`result_from_json` rebuilds an :class:`~models.evaluate.EvalResult`).

The worker runs at a lower CPU priority, in its own process: the line's inference thread keeps the
CPU and the GIL. :class:`EvalRunner` starts one evaluation at a time and reports when it ends.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..serialize import dumps

log = logging.getLogger(__name__)

RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"
EVAL_ID_PATTERN = r"^e[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$"
REPO_ROOT = Path(__file__).resolve().parents[2]


class EvalError(RuntimeError):
    """An evaluation cannot start; the message says why."""


class EvalBusyError(EvalError):
    """Another evaluation is running (one at a time)."""


# --------------------------------------------------------------------------- JSON (de)serialisation


def result_to_json(r: Any) -> dict[str, Any]:
    """An EvalResult as JSON: its summary plus every image (truth, detections, eligibility, verdict)."""
    images = []
    for i, im in enumerate(r.images):
        det = im.detections
        images.append({
            "index": i,
            "stem": im.stem,
            "truth": [[int(c), *[round(float(v), 2) for v in b]] for c, b in zip(im.truth_classes, im.truth_boxes)],
            "dets": [[int(c), round(float(s), 5), *[round(float(v), 2) for v in b]]
                     for c, s, b in zip(det.class_ids, det.scores, det.boxes_xyxy)],
            "eligible": [bool(e) for e in im.eligible],
            "outcome": im.outcome,
            "reasons": list(im.reasons),
            "ejected": bool(im.ejected),
            "ms": round(float(im.ms), 3),
        })
    return {"summary": r.summary(), "model_id": r.model_id, "names": list(r.names), "seconds": round(r.seconds, 2), "images": images}


def result_from_json(d: Mapping[str, Any]) -> Any:
    """Inverse of :func:`result_to_json` (scores recomputed from the per-image records by ``models.evaluate.score``)."""
    from models.evaluate import ImageResult, score

    from ..config import RulesConfig
    from ..types import Detections

    s = d["summary"]
    names = tuple(d["names"])
    images = []
    for im in d["images"]:
        dets = np.asarray(im["dets"], np.float64).reshape(-1, 6)
        truth = np.asarray(im["truth"], np.float64).reshape(-1, 5)
        det = Detections(
            boxes_xyxy=dets[:, 2:6].astype(np.float32), scores=dets[:, 1].astype(np.float32), class_ids=dets[:, 0].astype(np.int32),
            names=names, model_id=d["model_id"],
        )
        images.append(ImageResult(
            im["stem"], truth[:, 0].astype(np.int32), truth[:, 1:5].astype(np.float32), det, np.asarray(im["eligible"], bool),
            im["outcome"], tuple(im["reasons"]), bool(im["ejected"]), float(im["ms"]),
        ))
    return score(images, names, RulesConfig.model_validate(s["rules"]), model_sha=s["model_sha"], model_id=d["model_id"],
                 golden_id=s["golden_id"], conf=float(s["conf"]), seconds=float(d.get("seconds", 0.0)))


# --------------------------------------------------------------------------- the worker


def run(eval_dir: Path) -> int:
    """Evaluate as ``eval_dir/spec.json`` says; write ``result.json``; return the exit code."""
    from pydantic import TypeAdapter

    from models.evaluate import compare

    from .. import camera_setup
    from ..config import CalibrationConfig, InspectorConfig, RulesConfig

    spec = json.loads((eval_dir / "spec.json").read_text())
    if spec.get("nice"):
        try:  # the line keeps the CPU: this process yields to it
            os.nice(int(spec["nice"]))
        except OSError as e:
            log.warning("could not lower the evaluation's priority: %s", e)
    t0 = time.monotonic()
    try:
        comp = compare(
            spec["candidate_path"], spec.get("current_path"), spec["golden_root"],
            rules=RulesConfig.model_validate(spec["rules"]),
            calibration=CalibrationConfig.model_validate(spec["calibration"]),
            setup=camera_setup.from_json(spec.get("setup")),
            inspector_cfg=TypeAdapter(InspectorConfig).validate_python(spec["inspector"]) if spec.get("inspector") else None,
        )
    except Exception as e:  # noqa: BLE001 - every failure is reported to the page, with the traceback in the log
        log.exception("evaluation failed")
        _write(eval_dir / "result.json", {"status": FAILED, "error": f"{type(e).__name__}: {e}"})
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
    _write(eval_dir / "result.json", out)
    print(comp.table(), flush=True)
    return 0


def _write(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dumps(data))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the worker process."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m station.web.model_eval EVAL_DIR", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    return run(Path(argv[0]).resolve())


# --------------------------------------------------------------------------- the runner (web process)


@dataclass
class EvalState:
    """One evaluation job as the page sees it."""

    eval_id: str
    eval_dir: Path
    candidate_sha: str
    current_sha: str | None
    golden_id: str
    golden_name: str
    started_by: str
    started_at: float
    status: str = RUNNING
    finished_at: float | None = None
    error: str | None = None
    recorded: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (no server paths)."""
        return {
            "eval_id": self.eval_id, "candidate_sha": self.candidate_sha, "current_sha": self.current_sha, "golden_id": self.golden_id,
            "golden_name": self.golden_name, "started_by": self.started_by, "started_at": self.started_at, "status": self.status,
            "finished_at": self.finished_at, "error": self.error, "recorded": self.recorded,
        }

    def save(self) -> None:
        """Write ``state.json``."""
        _write(self.eval_dir / "state.json", {**self.as_dict(), "eval_dir": str(self.eval_dir)})

    @staticmethod
    def load(path: Path) -> "EvalState":
        """Read a ``state.json``."""
        d = json.loads(path.read_text())
        return EvalState(d["eval_id"], Path(d["eval_dir"]), d["candidate_sha"], d.get("current_sha"), d["golden_id"], d.get("golden_name", ""),
                         d.get("started_by", ""), d.get("started_at", 0.0), d.get("status", FAILED), d.get("finished_at"), d.get("error"),
                         d.get("recorded", False))


class EvalRunner:
    """Starts evaluation workers (one at a time) and calls ``on_done(state, result)`` when one ends."""

    def __init__(self, evals_dir: Path, *, python: str | None = None, nice: int = 10):
        self.evals_dir = Path(evals_dir).resolve()
        self.evals_dir.mkdir(parents=True, exist_ok=True)
        self.python = python or sys.executable
        self.nice = nice
        self._lock = threading.Lock()
        self._active: EvalState | None = None
        self._done = threading.Event()

    def active(self) -> EvalState | None:
        """The running evaluation, if any."""
        a = self._active
        return a if a is not None and a.status == RUNNING else None

    def start(self, spec: Mapping[str, Any], state_fields: Mapping[str, Any],
              on_done: Callable[[EvalState, Mapping[str, Any]], None] | None = None) -> EvalState:
        """Start a worker for ``spec``; raises :class:`EvalBusyError` while another runs."""
        with self._lock:
            if self.active() is not None:
                raise EvalBusyError(f"evaluation {self._active.eval_id} is running: one at a time; wait for it")  # type: ignore[union-attr]
            eval_id = "e" + time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
            d = self.evals_dir / eval_id
            d.mkdir(parents=True)
            (d / "spec.json").write_text(json.dumps({"nice": self.nice, **dict(spec)}, indent=1, default=str))
            state = EvalState(eval_id, d, started_at=time.time(), **state_fields)
            state.save()
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
            with open(d / "eval.log", "ab") as logf:
                try:
                    proc = subprocess.Popen(
                        [self.python, "-m", "station.web.model_eval", str(d)], cwd=str(d), env=env, stdin=subprocess.DEVNULL,
                        stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
                    )
                except OSError as e:
                    state.status, state.error, state.finished_at = FAILED, f"cannot start the evaluation worker: {e}", time.time()
                    state.save()
                    raise EvalError(state.error) from e
            self._active = state
            self._done = threading.Event()
            threading.Thread(target=self._watch, args=(state, proc, on_done), name=f"eval-{eval_id}", daemon=True).start()
            log.info("evaluation %s started (pid %d)", eval_id, proc.pid)
            return state

    def _watch(self, state: EvalState, proc: subprocess.Popen[bytes], on_done: Callable[[EvalState, Mapping[str, Any]], None] | None) -> None:
        rc = proc.wait()
        result: dict[str, Any] = {}
        try:
            result = json.loads((state.eval_dir / "result.json").read_text())
        except (OSError, ValueError):
            result = {"status": FAILED, "error": f"evaluation worker exited with code {rc} and wrote no result (see its log)"}
        state.status = result.get("status", FAILED) if rc == 0 else FAILED
        state.error = result.get("error") or (None if rc == 0 else f"evaluation worker exited with code {rc}")
        if state.status == SUCCEEDED and on_done is not None:
            try:
                on_done(state, result)
                state.recorded = True
            except Exception as e:  # noqa: BLE001 - the evaluation stays viewable even when recording it failed
                log.exception("evaluation %s: recording failed", state.eval_id)
                state.error = f"evaluated, but recording in the registry failed: {e}"
        state.finished_at = time.time()
        state.save()
        self._done.set()
        log.info("evaluation %s %s%s", state.eval_id, state.status, f": {state.error}" if state.error else "")

    def wait(self, timeout: float | None = None) -> None:
        """Block until the running evaluation (if any) ends."""
        if self.active() is not None:
            self._done.wait(timeout)

    def get(self, eval_id: str) -> EvalState:
        """An evaluation by id (the running one, or from its folder)."""
        a = self._active
        if a is not None and a.eval_id == eval_id:
            return a
        p = self.evals_dir / eval_id / "state.json"
        if not p.is_file():
            raise LookupError(f"no evaluation {eval_id}")
        return EvalState.load(p)

    def list(self, limit: int = 50) -> list[EvalState]:
        """Evaluations, newest first."""
        out = []
        for p in sorted(self.evals_dir.glob("e*/state.json"), reverse=True)[:limit]:
            try:
                st = self.get(p.parent.name)
            except (ValueError, KeyError, LookupError):
                continue
            out.append(st)
        return out

    def result(self, eval_id: str) -> dict[str, Any]:
        """The worker's result.json of a finished evaluation."""
        st = self.get(eval_id)
        if st.status == RUNNING:
            raise EvalError(f"evaluation {eval_id} is still running")
        p = st.eval_dir / "result.json"
        if not p.is_file():
            raise EvalError(f"evaluation {eval_id} has no result ({st.error or st.status})")
        return json.loads(p.read_text())

    def spec(self, eval_id: str) -> dict[str, Any]:
        """The spec an evaluation ran with."""
        return json.loads((self.get(eval_id).eval_dir / "spec.json").read_text())


if __name__ == "__main__":
    sys.exit(main())
