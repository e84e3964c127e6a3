"""Model jobs (training, evaluation): one at a time, in a subprocess, with live progress, cancellable, logs kept.

The station (web UI) and the ``models`` CLI start training through :class:`JobRunner`; the web
models page runs its evaluations through one as well (``JobRunner(..., worker="models.eval_worker",
kind="evaluation")``, see :mod:`models.eval_jobs`): one runner for every kind of model job. Each
job gets a folder ``<jobs_dir>/<job_id>/`` holding:

- ``spec.json``       what to do (:class:`JobSpec` for training; the worker's own JSON for others);
- ``progress.jsonl``  one JSON event per line, written by the worker (``phase``, ``progress``,
                      ``result``, ``error``, ``cancelled``), read by the runner while it runs;
- ``job.log``         the worker's stdout and stderr (Ultralytics' log and progress bars);
- ``state.json``      the last known :class:`JobState` (survives a restart of the station);
- ``work/``           dataset, weights, exported ONNX.

The worker is ``python -m <worker> <job_dir>`` (``models.worker`` trains): torch and ultralytics are imported only
there,
never in the station process; it runs at a lower CPU priority (``nice``) so the line keeps the CPU.
One job at a time per ``jobs_dir``, across processes: the runner holds an exclusive ``flock`` on
``<jobs_dir>/runner.lock`` while a job runs, and a second start is refused with :class:`JobBusyError`.
Cancel sends SIGTERM: the worker stops at the next training batch (or between steps) and reports
``cancelled``; a worker that does not stop within the grace time is killed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from station import serialize

from .train import Progress, TrainRun

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
RUNNING, SUCCEEDED, FAILED, CANCELLED = "running", "succeeded", "failed", "cancelled"
FINISHED = (SUCCEEDED, FAILED, CANCELLED)


class JobError(RuntimeError):
    """A job operation failed; the message says why."""


class JobBusyError(JobError):
    """Another job of the same runner is running (one at a time)."""


@dataclass(frozen=True)
class JobSpec(TrainRun):
    """What a training job does: [make a synthetic dataset] -> train -> export -> [evaluate] -> [register].

    Give ``data_yaml`` (an existing YOLO dataset) or ``synthetic`` (arguments of
    :func:`models.dataset.make_synthetic_dataset`: ``n_train``, ``n_val``, ``seed``, ``camera`` (a
    SyntheticCameraConfig dict), ``view`` (a TrainView dict)). ``model`` is a ``.yaml`` or a parent
    ``.pt``/``.onnx`` (fine-tune). With ``golden`` the exported model (and ``current_model`` if
    given) is evaluated on that golden set through the production path at ``rules``; with ``db`` the
    model is registered as a candidate (with its evaluations) in that station database, its files
    stored in ``store_dir``.
    """

    data_yaml: str | None = None
    synthetic: Mapping[str, Any] | None = None
    hyp: Mapping[str, Any] = field(default_factory=dict)
    export_imgsz: tuple[int, int] | None = None
    export_path: str | None = None
    lineage: Mapping[str, Any] = field(default_factory=dict)
    golden: str | None = None
    current_model: str | None = None
    rules: Mapping[str, Any] | None = None
    db: str | None = None
    store_dir: str | None = None
    trained_by: str = "unknown"
    nice: int = 10

    def validate(self) -> None:
        """Raise :class:`JobError` naming the field when the spec cannot run."""
        if (self.data_yaml is None) == (self.synthetic is None):
            raise JobError("give exactly one of data_yaml (an existing dataset) or synthetic (dataset parameters)")
        if self.data_yaml is not None and not (Path(self.data_yaml).is_file() or Path(self.data_yaml).is_dir()):
            raise JobError(
                f"data_yaml {self.data_yaml} does not exist (a YOLO data.yaml, or a classify dataset folder)"
            )
        if self.synthetic is not None:
            missing = [k for k in ("n_train", "n_val", "seed") if k not in self.synthetic]
            if missing:
                raise JobError(f"synthetic dataset parameters lack {', '.join(missing)}")
        if self.epochs < 1 or self.batch < 1 or self.imgsz < 32:
            raise JobError(
                f"epochs >= 1, batch >= 1, imgsz >= 32 required (got {self.epochs}, {self.batch}, {self.imgsz})"
            )
        if self.golden is not None and not (Path(self.golden) / "golden.json").is_file():
            raise JobError(f"golden {self.golden} is not a golden set (no golden.json)")
        if self.current_model is not None and not Path(self.current_model).is_file():
            raise JobError(f"current_model {self.current_model} does not exist")
        if self.db is not None and self.store_dir is None:
            raise JobError("db given without store_dir: where should the registered model files go?")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        d = dataclasses.asdict(self)
        d["export_imgsz"] = list(self.export_imgsz) if self.export_imgsz else None
        return d

    def resolved(self, base: Path | str) -> JobSpec:
        """The spec with its relative file paths made absolute against ``base`` (the worker runs elsewhere)."""
        base = Path(base)

        def ab(v: str | None) -> str | None:
            return None if v is None else str((base / v).resolve()) if not Path(v).is_absolute() else v

        model = self.model
        if Path(model).suffix in (".pt", ".onnx") or (base / model).is_file():
            model = ab(model)  # type: ignore[assignment]
        synthetic = dict(self.synthetic) if self.synthetic is not None else None
        if synthetic is not None and synthetic.get("out_dir"):
            synthetic["out_dir"] = ab(synthetic["out_dir"])
        return dataclasses.replace(
            self,
            data_yaml=ab(self.data_yaml),
            export_path=ab(self.export_path),
            golden=ab(self.golden),
            current_model=ab(self.current_model),
            db=ab(self.db),
            store_dir=ab(self.store_dir),
            model=model,
            synthetic=synthetic,
        )

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> JobSpec:
        """Inverse of :meth:`as_dict` (unknown keys are an error)."""
        names = {f.name for f in dataclasses.fields(JobSpec)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise JobError(f"unknown job spec fields: {', '.join(unknown)}")
        d = dict(d)
        if d.get("export_imgsz") is not None:
            d["export_imgsz"] = tuple(int(v) for v in d["export_imgsz"])
        return JobSpec(**d)


def exported_onnx(job_dir: Path, result: Mapping[str, Any]) -> Path:
    """The ONNX file a finished job exported (``result["onnx"]``; relative to ``<job>/work``, where the worker runs)."""
    onnx = Path(result["onnx"])
    return onnx if onnx.is_absolute() else job_dir / "work" / onnx


@dataclass
class JobState:
    """What is known about a job (mutable: updated by the runner's monitor thread)."""

    job_id: str
    job_dir: Path
    status: str = RUNNING
    phase: str = "starting"
    progress: Progress | None = None
    epochs: list[Progress] = field(default_factory=list)  # one entry per finished epoch
    result: dict[str, Any] | None = None
    error: str | None = None
    pid: int | None = None
    started_at: float = 0.0
    finished_at: float | None = None
    returncode: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # what the starter wants kept with the job (who, what on)

    @property
    def log_path(self) -> Path:
        """The worker's stdout + stderr."""
        return self.job_dir / "job.log"

    @property
    def finished(self) -> bool:
        """True once succeeded, failed or cancelled."""
        return self.status in FINISHED

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (for state.json and the web API)."""
        return {
            "job_id": self.job_id,
            "job_dir": str(self.job_dir),
            "status": self.status,
            "phase": self.phase,
            "progress": self.progress.as_dict() if self.progress else None,
            "epochs": [p.as_dict() for p in self.epochs],
            "result": self.result,
            "error": self.error,
            "pid": self.pid,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "returncode": self.returncode,
            "log_path": str(self.log_path),
            "meta": self.meta,
        }

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> JobState:
        """Inverse of :meth:`as_dict`."""
        return JobState(
            job_id=d["job_id"],
            job_dir=Path(d["job_dir"]),
            status=d["status"],
            phase=d.get("phase", ""),
            progress=Progress.from_dict(d["progress"]) if d.get("progress") else None,
            epochs=[Progress.from_dict(p) for p in d.get("epochs") or []],
            result=d.get("result"),
            error=d.get("error"),
            pid=d.get("pid"),
            started_at=d.get("started_at", 0.0),
            finished_at=d.get("finished_at"),
            returncode=d.get("returncode"),
            meta=dict(d.get("meta") or {}),
        )


EventCallback = Callable[[JobState, Mapping[str, Any]], None]


class JobRunner:
    """Starts and watches model jobs of one kind (see the module docstring).

    ``worker``: the module run as ``python -m <worker> <job_dir>``; ``kind``: what its jobs are
    called in messages; ``id_prefix``: put before every job id (tells the kinds' ids apart).
    """

    def __init__(
        self,
        jobs_dir: Path | str,
        *,
        python: str | None = None,
        poll_s: float = 0.2,
        worker: str = "models.worker",
        kind: str = "training",
        id_prefix: str = "",
    ):
        self.jobs_dir = Path(jobs_dir).resolve()
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.python = python or sys.executable
        self.poll_s = poll_s
        self.worker, self.kind, self.id_prefix = worker, kind, id_prefix
        self._lock = threading.Lock()
        self._active: JobState | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._monitor: threading.Thread | None = None
        self._lock_fh: Any = None
        self._cancel_requested = False
        self._done = threading.Event()

    # ------------------------------------------------------------------ public

    def start(
        self,
        spec: JobSpec | Mapping[str, Any],
        on_event: EventCallback | None = None,
        *,
        meta: Mapping[str, Any] | None = None,
    ) -> JobState:
        """Start ``spec`` in a worker subprocess; raises :class:`JobBusyError` if a job is running.

        A :class:`JobSpec` (training) is checked and its relative paths are taken relative to the
        current directory; another worker's spec (a JSON-ready mapping) is written as it is.
        ``meta`` is kept in the job's state (``JobState.meta``).
        """
        if isinstance(spec, JobSpec):
            spec = spec.resolved(Path.cwd())
            spec.validate()
            spec_dict = spec.as_dict()
        else:
            spec_dict = dict(spec)
        with self._lock:
            if self._active is not None and not self._active.finished:
                raise JobBusyError(
                    f"{self.kind} job {self._active.job_id} is running (phase {self._active.phase}); "
                    "wait for it or cancel it first: one job at a time"
                )
            fh = open(self.jobs_dir / "runner.lock", "a+")  # noqa: SIM115 - held (flock) while the job runs
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                holder = self._lock_holder()
                raise JobBusyError(
                    f"another process is running a {self.kind} job in {self.jobs_dir}{holder}: one job at a time; "
                    "wait for it or cancel it there"
                ) from None
            job_id = self.id_prefix + time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
            job_dir = self.jobs_dir / job_id
            (job_dir / "work").mkdir(parents=True)
            (job_dir / "spec.json").write_text(serialize.dumps(spec_dict, indent=1, canonical=True) + "\n")
            (job_dir / "progress.jsonl").touch()
            env = {**os.environ, "YOLO_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
            env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
            logf = open(job_dir / "job.log", "ab")  # noqa: SIM115 - handed to the child process
            try:
                proc = subprocess.Popen(
                    [self.python, "-m", self.worker, str(job_dir)],
                    cwd=str(job_dir / "work"),
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C in the terminal reaches the runner, which cancels cleanly
                    pass_fds=(fh.fileno(),),  # the worker shares the lock: it stays held while the worker lives
                )
            except OSError as e:
                logf.close()
                fcntl.flock(fh, fcntl.LOCK_UN)
                fh.close()
                raise JobError(f"cannot start the {self.kind} worker ({self.python}): {e}") from e
            logf.close()
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()} {job_id}\n")
            fh.flush()
            state = JobState(job_id, job_dir, pid=proc.pid, started_at=time.time(), meta=dict(meta or {}))
            self._active, self._proc, self._lock_fh = state, proc, fh
            self._cancel_requested = False
            self._done = threading.Event()
            self._save(state)
            self._monitor = threading.Thread(
                target=self._watch, args=(state, proc, on_event), name=f"job-{job_id}", daemon=True
            )
            self._monitor.start()
            log.info("%s job %s started (pid %d) in %s", self.kind, job_id, proc.pid, job_dir)
            return state

    def active(self) -> JobState | None:
        """The running job of this runner, if any."""
        a = self._active
        return a if a is not None and not a.finished else None

    def get(self, job_id: str | None = None) -> JobState:
        """A job's state: this runner's current/last job by default, else read from its folder."""
        a = self._active
        if a is not None and (job_id is None or a.job_id == job_id):
            return a
        if job_id is None:
            raise JobError("no job has been started by this runner")
        p = self.jobs_dir / job_id / "state.json"
        if not p.is_file():
            raise JobError(f"no job {job_id} in {self.jobs_dir}")
        return self._reconcile(JobState.from_dict(json.loads(p.read_text())))

    def list_jobs(self) -> list[JobState]:
        """All jobs in ``jobs_dir`` (newest first), from their state files."""
        out = []
        for p in sorted(self.jobs_dir.glob("*/state.json"), reverse=True):
            try:
                st = JobState.from_dict(json.loads(p.read_text()))
            except (ValueError, KeyError):
                log.warning("unreadable job state %s", p)
                continue
            a = self._active
            out.append(a if a is not None and a.job_id == st.job_id else self._reconcile(st))
        return out

    def _reconcile(self, state: JobState) -> JobState:
        """A state file left 'running' by a process that died: if nobody holds the lock, the worker is gone."""
        if state.finished or (self._active is not None and self._active.job_id == state.job_id):
            return state
        with open(self.jobs_dir / "runner.lock", "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return state  # a runner or its worker is alive: it may well be this job
            fcntl.flock(fh, fcntl.LOCK_UN)
        # replay the worker's events: it may have finished after the process that watched it died
        state.epochs = []
        path = state.job_dir / "progress.jsonl"
        kinds: list[str] = []
        for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            self._apply(state, ev)
            kinds.append(str(ev.get("event")))
        if "result" in kinds and state.result is not None:
            state.status = SUCCEEDED
        elif "cancelled" in kinds:
            state.status = CANCELLED
        else:
            state.status = FAILED
            state.error = state.error or "abandoned: the process running this job stopped before it finished"
        state.phase = "finished"
        state.finished_at = state.finished_at or time.time()
        self._save(state)
        return state

    def cancel(self, job_id: str | None = None, grace_s: float = 60.0) -> JobState:
        """Ask the running job to stop (SIGTERM); kill it if it has not stopped after ``grace_s``. Returns at once."""
        with self._lock:
            state, proc = self._active, self._proc
            if state is None or proc is None or state.finished or (job_id is not None and state.job_id != job_id):
                raise JobError(f"no running job{' ' + job_id if job_id else ''} to cancel")
            self._cancel_requested = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        threading.Thread(target=self._kill_after, args=(proc, grace_s), name="job-kill", daemon=True).start()
        log.info("%s job %s: cancel requested", self.kind, state.job_id)
        return state

    def wait(self, job_id: str | None = None, timeout: float | None = None) -> JobState:
        """Block until the job finishes (or ``timeout``); returns its state."""
        state = self.get(job_id)
        if state is self._active:
            self._done.wait(timeout)
        return state

    # ------------------------------------------------------------------ internals

    def _lock_holder(self) -> str:
        try:
            txt = (self.jobs_dir / "runner.lock").read_text().split()
            return f" (pid {txt[0]}, job {txt[1]})" if len(txt) >= 2 else ""
        except OSError:
            return ""

    def _kill_after(self, proc: subprocess.Popen[bytes], grace_s: float) -> None:
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log.warning("%s worker %d ignored SIGTERM for %.0f s: killed", self.kind, proc.pid, grace_s)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    def _save(self, state: JobState) -> None:
        tmp = state.job_dir / "state.json.tmp"
        tmp.write_text(serialize.dumps(state.as_dict(), indent=1) + "\n")
        os.replace(tmp, state.job_dir / "state.json")

    def _apply(self, state: JobState, ev: Mapping[str, Any]) -> None:
        kind = ev.get("event")
        if kind == "phase":
            state.phase = str(ev.get("phase"))
        elif kind == "progress":
            p = Progress.from_dict(ev)
            state.progress = p
            if p.phase == "epoch":
                state.epochs.append(p)
        elif kind == "result":
            state.result = dict(ev.get("result") or {})
        elif kind == "error":
            state.error = str(ev.get("message"))
        elif kind == "cancelled":
            state.error = str(ev.get("message") or "cancelled")

    def _watch(self, state: JobState, proc: subprocess.Popen[bytes], on_event: EventCallback | None) -> None:
        try:
            self._follow(state, proc, on_event)
        except Exception as e:  # noqa: BLE001 - the job must end in a final state whatever happened here
            log.exception("job %s: watcher failed", state.job_id)
            state.status, state.error, state.finished_at = FAILED, f"job watcher failed: {e}", time.time()
            self._save(state)
        finally:
            with self._lock:
                fh = self._lock_fh
                self._lock_fh = None
                if fh is not None:
                    fcntl.flock(fh, fcntl.LOCK_UN)
                    fh.close()
            self._done.set()

    def _follow(self, state: JobState, proc: subprocess.Popen[bytes], on_event: EventCallback | None) -> None:
        path = state.job_dir / "progress.jsonl"
        offset = 0
        buf = b""
        last_save = 0.0
        while True:
            exited = proc.poll() is not None
            with open(path, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
            offset += len(chunk)
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if not line.strip():
                    continue
                try:
                    ev = json.loads(line)
                except ValueError:
                    log.warning("job %s: bad progress line %r", state.job_id, line[:100])
                    continue
                self._apply(state, ev)
                if on_event is not None:
                    try:
                        on_event(state, ev)
                    except Exception:  # noqa: BLE001 - a broken UI callback must not stop the watcher
                        log.exception("job event callback failed")
            now = time.monotonic()
            if now - last_save > 1.0:
                self._save(state)
                last_save = now
            if exited:
                break
            time.sleep(self.poll_s)  # polling a file, off the line's decision path
        state.returncode = proc.returncode
        if state.result is not None and proc.returncode == 0:
            state.status = SUCCEEDED
        elif self._cancel_requested or proc.returncode == 3:
            state.status = CANCELLED
            state.error = state.error or "cancelled"
        else:
            state.status = FAILED
            state.error = state.error or f"{self.kind} worker exited with code {proc.returncode}; see {state.log_path}"
        state.phase = "finished"
        state.finished_at = time.time()
        self._save(state)
        log.info("%s job %s %s%s", self.kind, state.job_id, state.status, f": {state.error}" if state.error else "")
        if on_event is not None:
            try:
                on_event(state, {"event": "finished", "status": state.status})
            except Exception:  # noqa: BLE001
                log.exception("job event callback failed")
