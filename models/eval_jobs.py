"""Evaluation jobs of the web models page, run by the one job runner (:class:`models.jobs.JobRunner`).

An evaluation is a job of kind ``evaluation``: the worker is :mod:`models.eval_worker`, its id is
``e<date>-<time>-<hex>``, its folder ``<evals_dir>/<eval id>/`` holds ``spec.json``, ``state.json``,
``progress.jsonl``, ``job.log`` and the worker's ``result.json``. One at a time; the worker runs at
a lower CPU priority. What the page shows of an evaluation (who started it, on which models and
golden set) is kept in the job's ``meta``; when the worker reports its result, ``on_done(state,
result)`` records it (in the registry) before the job is marked finished.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .eval_worker import RESULT_FILE
from .jobs import FINISHED, JobError, JobRunner, JobState

log = logging.getLogger(__name__)

EVAL_ID_PATTERN = r"^e[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$"
META_KEYS = ("candidate_sha", "current_sha", "golden_id", "golden_name", "started_by")

OnDone = Callable[[JobState, Mapping[str, Any]], None]


class EvalError(JobError):
    """An evaluation cannot start, or has no result; the message says why."""


def eval_dict(st: JobState) -> dict[str, Any]:
    """An evaluation's state for the page (no server paths)."""
    m = st.meta
    return {
        "eval_id": st.job_id,
        **{k: m.get(k) for k in META_KEYS},
        "started_at": st.started_at,
        "status": st.status,
        "finished_at": st.finished_at,
        "error": st.error,
        "recorded": bool(m.get("recorded")),
    }


class Evaluations:
    """Evaluation jobs in ``evals_dir`` (see the module docstring)."""

    def __init__(self, evals_dir: Path | str, *, python: str | None = None, nice: int = 10):
        self.runner = JobRunner(evals_dir, python=python, worker="models.eval_worker", kind="evaluation", id_prefix="e")
        self.nice = nice

    def active(self) -> JobState | None:
        """The running evaluation, if any."""
        return self.runner.active()

    def start(self, spec: Mapping[str, Any], meta: Mapping[str, Any], on_done: OnDone | None = None) -> JobState:
        """Start a worker for ``spec``; raises :class:`models.jobs.JobBusyError` while another runs."""
        unknown = sorted(set(meta) - set(META_KEYS))
        if unknown:
            raise EvalError(f"unknown evaluation meta fields: {', '.join(unknown)}")

        def on_event(st: JobState, ev: Mapping[str, Any]) -> None:
            if ev.get("event") == "result" and on_done is not None:
                self._record(st, on_done)

        return self.runner.start({"nice": self.nice, **dict(spec)}, on_event, meta=meta)

    def _record(self, st: JobState, on_done: OnDone) -> None:
        """The worker wrote its result: record it (the job is finished only after this)."""
        try:
            on_done(st, json.loads((st.job_dir / RESULT_FILE).read_text()))
            st.meta["recorded"] = True
        except Exception as e:  # noqa: BLE001 - the evaluation stays viewable even when recording it failed
            log.exception("evaluation %s: recording failed", st.job_id)
            st.error = f"evaluated, but recording in the registry failed: {e}"

    def wait(self, timeout: float | None = None) -> None:
        """Block until the running evaluation (if any) ends."""
        a = self.active()
        if a is not None:
            self.runner.wait(a.job_id, timeout)

    def get(self, eval_id: str) -> JobState:
        """An evaluation by id (the running one, or from its folder); LookupError when unknown."""
        try:
            return self.runner.get(eval_id)
        except JobError as e:
            raise LookupError(f"no evaluation {eval_id}") from e

    def list(self, limit: int = 50) -> list[JobState]:
        """Evaluations, newest first."""
        return self.runner.list_jobs()[:limit]

    def result(self, eval_id: str) -> dict[str, Any]:
        """The worker's result.json of a finished evaluation."""
        st = self.get(eval_id)
        if st.status not in FINISHED:
            raise EvalError(f"evaluation {eval_id} is still running")
        p = st.job_dir / RESULT_FILE
        if not p.is_file():
            raise EvalError(f"evaluation {eval_id} has no result ({st.error or st.status})")
        return json.loads(p.read_text())

    def spec(self, eval_id: str) -> dict[str, Any]:
        """The spec an evaluation ran with."""
        return json.loads((self.get(eval_id).job_dir / "spec.json").read_text())
