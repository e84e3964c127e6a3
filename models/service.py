"""The model lifecycle of a running station: train, evaluate, shadow, promote, roll back, tune.

The web models page (:mod:`station.web.routes_models`) is a thin layer over one
:class:`ModelsService` per web app; the work is here, outside the web package. Files live next
to the station database (the same places the ``models`` command uses by default)::

    <data>/models/<sha256>.onnx   the registry's content-addressed model store (+ .pt weights)
    <data>/jobs/<job id>/         training jobs (models.jobs.JobRunner: one at a time, subprocess)
    <data>/evaluations/<eval id>/ evaluation jobs (models.eval_jobs, the same runner: one at a time, subprocess)
    <data>/golden/<name>/         frozen golden sets (models.golden); the page lists every one
    <data>/exports/<...>/         YOLO exports of dataset snapshots, made for training runs

where ``<data>`` is the folder of ``store.db_path``. Clients name models by sha256, golden sets by
golden id, snapshots, jobs and evaluations by id - never by a path.

Two parts have their own module and hang off the service: the golden sets (``svc.golden``,
:class:`models.golden_sets.GoldenSets`: list, resolve, freeze) and the line's thresholds
(``svc.rules``, :class:`models.line_rules.LineRules`: tune on an evaluation, apply, reset, view).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from station import camera_setup
from station.store import audit, queries
from station.store.db import open_db

from .eval_jobs import Evaluations, eval_dict
from .golden_sets import GoldenSets
from .jobs import JobBusyError, JobError, JobState
from .line_rules import LineRules
from .service_views import (
    Connection,
    ServiceError,
    evaluation_jpeg,
    evaluation_view,
    job_dict,
    record_dict,
    running_sha12,
)

__all__ = ["Connection", "ModelsService", "ServiceError", "job_dict", "record_dict"]

if TYPE_CHECKING:
    from station.app import Station

    from .registry import ModelRecord

log = logging.getLogger(__name__)


def _start_job(start: Callable[[], JobState], refused_status: int) -> JobState:
    """Runs ``start`` (a job runner's start): a job already running answers 409, a refused job ``refused_status``."""
    try:
        return start()
    except JobBusyError as e:
        raise ServiceError(409, str(e)) from None
    except JobError as e:
        raise ServiceError(refused_status, str(e)) from None


class ModelsService:
    """Everything the models routes do, with the station and a shared database connection (``db.use()``)."""

    def __init__(self, station: Station, db: Connection):
        from .jobs import JobRunner

        self.db = db
        self.station = station
        self.data_dir = Path(self.station.cfg.store.db_path).resolve().parent
        self.store_dir = self.data_dir / "models"
        self.jobs_dir = self.data_dir / "jobs"
        self.exports_dir = self.data_dir / "exports"
        self.golden = GoldenSets(station, self.data_dir / "golden", self.exports_dir)
        self.runner = JobRunner(self.jobs_dir)
        self.evals = Evaluations(self.data_dir / "evaluations")
        self.rules = LineRules(station, db, self.evals)
        self.last_shadow: dict[str, Any] | None = None
        self._ensure_current()

    # ------------------------------------------------------------------ registry

    def _ensure_current(self) -> None:
        """Register the model the line was configured with as the first current model (when none is yet)."""
        from . import registry

        insp = self.station.cfg.inspector
        if insp.type not in ("onnx", "anomaly") or not Path(insp.model).is_file():
            return
        with self.db.use() as db:
            if registry.current(db) is None:
                rec = registry.ensure_current(db, insp.model, store_dir=self.store_dir, user="system")
                log.info("registry: the configured model %s is the first current model", rec.short)

    def overview(self) -> dict[str, Any]:
        """The registry, what runs on the line, active jobs: what the page shows at the top."""
        from . import registry

        with self.db.use() as db:
            recs = registry.list_models(db)
            cur = registry.current(db)
        run12 = running_sha12(self.station)
        return {
            "station": self.station.cfg.name,
            "inspector_type": self.station.cfg.inspector.type,
            "running": {
                "model_id": self.station.inspector.model_id,
                "sha12": run12,
                "is_current": bool(cur and run12 and cur.sha256.startswith(run12)),
            },
            "current": cur.sha256 if cur else None,
            "models": [record_dict(r) for r in recs],
            "swaps": [
                {"t_wall": s.t_wall, "old": s.old_model_id, "new": s.new_model_id, "ok": s.ok, "error": s.error}
                for s in self.station.inspector.history[-10:]
            ],
        }

    def record(self, sha: str) -> ModelRecord:
        """A registered model by sha256 (404 when unknown)."""
        from . import registry

        with self.db.use() as db:
            try:
                return registry.get(db, sha)
            except registry.RegistryError as e:
                raise ServiceError(404, str(e)) from None

    def history(self) -> list[dict[str, Any]]:
        """Promotions, refusals, overrides and rollbacks, newest first."""
        from . import registry

        with self.db.use() as db:
            return list(reversed(registry.history(db)))

    # ------------------------------------------------------------------ training

    def start_training(self, body: Any, user: str) -> dict[str, Any]:
        """Export the snapshot as a YOLO dataset and start a training job (train -> export -> evaluate -> register)."""
        import labeling

        from . import registry
        from .jobs import JobSpec

        if self.runner.active() is not None:
            raise ServiceError(409, f"training job {self.runner.active().job_id} is running: one job at a time")  # type: ignore[union-attr]
        golden_root, golden_id = None, None
        if body.golden_id is not None or self.golden.list():
            golden_root, golden_id, _ = self.golden.root(body.golden_id)
        db = open_db(self.station.cfg.store.db_path, migrate=False)
        try:
            try:
                snap = labeling.get_snapshot(db, body.snapshot_id)
            except LookupError as e:
                raise ServiceError(404, str(e)) from None
            cur = registry.current(db)
            if golden_root is not None:
                from .golden import load_golden

                gnames = tuple(load_golden(golden_root, verify=False).names)
                if tuple(snap.class_names) != gnames:
                    raise ServiceError(
                        409,
                        f"snapshot {snap.id} classes {list(snap.class_names)} differ from golden set {golden_id} "
                        "classes "
                        f"{list(gnames)}: make the snapshot with the model's class order",
                    )
            if body.base == "current":
                if cur is None or not (cur.weights_path and cur.weights_path.exists()):
                    raise ServiceError(
                        409, "the current model has no .pt weights to fine-tune from: train from scratch"
                    )
                model = str(cur.weights_path)
            else:
                model = "yolov8n.yaml"
            out = self.exports_dir / f"snapshot-{snap.id}-{snap.sha[:12]}-v{body.val_fraction:g}-s{body.seed}"
            data_yaml = out / "data.yaml"
            if not data_yaml.is_file():
                if out.exists():
                    shutil.rmtree(out)
                try:
                    labeling.export_yolo(
                        db, self.station.images, snap.id, out, val_fraction=body.val_fraction, seed=body.seed
                    )
                except (FileNotFoundError, FileExistsError, ValueError) as e:
                    raise ServiceError(409, f"cannot export snapshot {snap.id}: {e}") from None
        finally:
            db.close()
        export_hw = tuple(body.export_hw) if body.export_hw else (body.imgsz, body.imgsz)
        compare_with = cur.path if (cur is not None and golden_root is not None and Path(cur.path).is_file()) else None
        spec = JobSpec(
            data_yaml=str(data_yaml),
            model=model,
            epochs=body.epochs,
            imgsz=body.imgsz,
            batch=body.batch,
            seed=body.seed,
            export_imgsz=export_hw,
            lineage={"snapshot_id": snap.id, "parent_sha": cur.sha256 if body.base == "current" and cur else None},
            golden=str(golden_root) if golden_root else None,
            current_model=str(compare_with) if compare_with else None,
            rules=self.station.decider.rules.model_dump(mode="json"),
            db=str(self.station.cfg.store.db_path),
            store_dir=str(self.store_dir),
            trained_by=user,
        )
        st = _start_job(lambda: self.runner.start(spec), refused_status=422)
        with self.db.use() as wdb:
            audit.record(
                wdb,
                user,
                "model_train_start",
                "job",
                st.job_id,
                after={
                    "snapshot_id": snap.id,
                    "epochs": body.epochs,
                    "imgsz": body.imgsz,
                    "base": body.base,
                    "golden_id": golden_id,
                },
            )
        return job_dict(st)

    def cancel_training(self, job_id: str, user: str) -> dict[str, Any]:
        """Ask the running job to stop."""
        try:
            st = self.runner.cancel(job_id)
        except JobError as e:
            raise ServiceError(409, str(e)) from None
        with self.db.use() as db:
            audit.record(db, user, "model_train_cancel", "job", job_id)
        return job_dict(st)

    def job(self, job_id: str | None) -> dict[str, Any]:
        """A job's state (None: this app's current/last job)."""
        try:
            return job_dict(self.runner.get(job_id))
        except JobError as e:
            raise ServiceError(404, str(e)) from None

    def job_log(self, job_id: str, offset: int, max_bytes: int = 65536) -> dict[str, Any]:
        """A piece of a job's log from byte ``offset`` (``offset`` < 0: the last ``max_bytes``)."""
        try:
            st = self.runner.get(job_id)
        except JobError as e:
            raise ServiceError(404, str(e)) from None
        p = st.log_path
        size = p.stat().st_size if p.exists() else 0
        start = max(0, size - max_bytes) if offset < 0 else min(offset, size)
        data = b""
        if size:
            with open(p, "rb") as fh:
                fh.seek(start)
                data = fh.read(max_bytes)
        return {
            "job_id": st.job_id,
            "offset": start,
            "next_offset": start + len(data),
            "size": size,
            "text": data.decode("utf-8", "replace"),
            "finished": st.finished,
        }

    # ------------------------------------------------------------------ evaluation

    def start_evaluation(self, sha: str, golden_id: str | None, user: str) -> dict[str, Any]:
        """Evaluate a registered model against the current one on a golden set (a worker process)."""
        from . import registry

        cand = self.record(sha)
        root, gid, gname = self.golden.root(golden_id)
        with self.db.use() as db:
            cur = registry.current(db)
        if cur is not None and cur.sha256 == cand.sha256:
            cur = None  # the current model alone
        insp = self.station.cfg.inspector
        spec = {
            "candidate_path": str(cand.path),
            "current_path": str(cur.path) if cur else None,
            "golden_root": str(root),
            "rules": self.station.decider.rules.model_dump(mode="json"),
            "calibration": self.station.decider.calibration.model_dump(mode="json"),
            "setup": camera_setup.to_json(self.station.decider.setup),  # drawn regions and calibrations in force
            "inspector": insp.model_dump(mode="json") if insp.type in ("onnx", "anomaly") else None,
        }
        fields = {
            "candidate_sha": cand.sha256,
            "current_sha": cur.sha256 if cur else None,
            "golden_id": gid,
            "golden_name": gname,
            "started_by": user,
        }
        st = _start_job(lambda: self.evals.start(spec, fields, self._record_evaluation), refused_status=500)
        with self.db.use() as db:
            audit.record(
                db,
                user,
                "model_evaluate",
                "model",
                cand.sha256,
                after={"eval_id": st.job_id, "golden_id": gid, "current": fields["current_sha"]},
            )
        return eval_dict(st)

    def _record_evaluation(self, st: JobState, result: Mapping[str, Any]) -> None:
        """Store both models' figures in the registry (the promotion gate reads them)."""
        from . import registry

        with self.db.use() as db:
            for side in ("candidate", "current"):
                r = result.get(side)
                if r:
                    registry.record_evaluation(db, r["summary"]["model_sha"], r["summary"])

    def evaluation(self, eval_id: str) -> dict[str, Any]:
        """An evaluation: its state and, once done, the side-by-side figures and the images where the models
        disagree."""
        return evaluation_view(self.evals, eval_id)

    def evaluation_image(self, eval_id: str, index: int, max_width: int = 360) -> bytes:
        """JPEG of golden image ``index`` with the truth, candidate and current boxes."""
        return evaluation_jpeg(self.evals, eval_id, index, max_width)

    # ------------------------------------------------------------------ promote / rollback

    def _swap(self, rec: ModelRecord, user: str, reason: str | None) -> dict[str, Any]:
        """Hot-swap the line to ``rec`` (audited when done); what the answer says about the swap."""
        before = self.station.inspector.model_id
        try:
            self.station.swap_model(Path(rec.path), user=user, reason=reason, sha256=rec.sha256)
        except ValueError as e:
            return {"status": "not swapped", "message": f"{e}; restart the station with this model"}
        return {"status": "loading", "from": before}

    def promote(self, sha: str, override: bool, reason: str | None, user: str) -> dict[str, Any]:
        """Promote through the gate (override needs a reason); the line hot-swaps to it."""
        from . import registry

        with self.db.use() as db:
            try:
                cand = registry.get(db, sha)
                cur = registry.current(db)
                gate = registry.gate(cand, cur)
                rec = registry.promote(db, cand.sha256, user, reason=reason, override=override)
            except registry.PromotionRefused as e:
                raise ServiceError(409, str(e)) from None
            except registry.RegistryError as e:
                raise ServiceError(404 if "no registered model" in str(e) else 409, str(e)) from None
        return {
            "model": record_dict(rec),
            "gate": gate.as_dict(),
            "overridden": bool(override and not gate.passed),
            "swap": self._swap(rec, user, reason),
        }

    def rollback(self, sha: str | None, reason: str | None, user: str) -> dict[str, Any]:
        """Back to a model that ran before (default: the one the last change replaced); the line hot-swaps to it."""
        from . import registry

        with self.db.use() as db:
            try:
                rec = registry.rollback(db, sha, user=user, reason=reason)
            except registry.RegistryError as e:
                raise ServiceError(404 if "no registered model" in str(e) else 409, str(e)) from None
        return {"model": record_dict(rec), "swap": self._swap(rec, user, reason)}

    # ------------------------------------------------------------------ shadow

    def start_shadow(self, sha: str, queue_size: int, user: str) -> dict[str, Any]:
        """Run a registered model in shadow mode on the line."""
        from station.shadow import ShadowError

        rec = self.record(sha)
        try:
            runner = self.station.start_shadow(Path(rec.path), queue_size=queue_size)
        except ShadowError as e:
            raise ServiceError(409, str(e)) from None
        except (ValueError, OSError) as e:
            raise ServiceError(422, f"model {rec.short} cannot run in shadow mode: {e}") from None
        with self.db.use() as db:
            audit.record(db, user, "shadow_start", "model", rec.sha256, after={"queue_size": queue_size})
        return runner.snapshot()

    def stop_shadow(self, user: str) -> dict[str, Any]:
        """Stop shadow mode (no-op answer when it was not running)."""
        final = self.station.stop_shadow()
        if final is None:
            return {"running": False, "stopped": None}
        self.last_shadow = final
        with self.db.use() as db:
            audit.record(db, user, "shadow_stop", "model", final["model_sha"], after=final)
        return {"running": False, "stopped": final}

    def shadow_view(self, sha: str | None, limit: int) -> dict[str, Any]:
        """Shadow mode now: the running counters (or the last run's) and the recorded disagreements."""
        from station.store.shadow_results import disagreements, summary

        runner = self.station.shadow
        snap = runner.snapshot() if runner is not None else self.last_shadow
        sha = sha or (snap["model_sha"] if snap else None)
        if sha is None:
            with self.db.use() as db:
                sha = queries.latest_shadow_model(db)
        if sha is None:
            return {"running": None, "model_sha": None, "summary": None, "disagreements": []}
        with self.db.use() as db:
            return {
                "running": snap if runner is not None else None,
                "last": snap if runner is None else None,
                "model_sha": sha,
                "summary": summary(db, sha),
                "disagreements": disagreements(db, model_sha=sha, limit=limit),
            }
