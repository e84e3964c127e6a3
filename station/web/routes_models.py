"""The models page and its API: registry, training runs, evaluation, shadow mode, promotion, rollback, thresholds.

Roles: reading, training, evaluating, shadow mode and threshold proposals need ``qa``;
promotion, rollback and applying thresholds to the line need ``admin`` (they change what the
line rejects). Models are named by sha256, golden sets by golden id, snapshots, jobs and
evaluations by their ids: never a path. The work is in :mod:`models.service` (outside the web package).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, Field, field_validator
from starlette.concurrency import run_in_threadpool

from models.eval_jobs import eval_dict
from models.export import imgsz_problem
from models.service import ModelsService, ServiceError, job_dict

from .auth import AdminSession, QaSession
from .pages import desk_page
from .state import StateDep

log = logging.getLogger(__name__)
router = APIRouter(tags=["models"])

Sha = Annotated[
    str,
    PathParam(
        pattern=r"^[0-9a-fA-F]{8,64}$",
        description="sha256 of a registered model (or a unique prefix of 8+ hex digits).",
    ),
]
JobId = Annotated[str, PathParam(pattern=r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$", description="Training job id.")]
EvalId = Annotated[str, PathParam(pattern=r"^e[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$", description="Evaluation id.")]
GoldenId = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$", description="Golden set id (16 hex digits).")]
Reason = Annotated[str, Field(max_length=300, description="Why (kept in the audit trail).")]

T = TypeVar("T")

_service_lock = threading.Lock()


def models_service(state: StateDep) -> ModelsService:
    """The app's ModelsService (made on first use: it registers the configured model as the first current one).

    A route dependency (``svc: ServiceDep``); routes name it after their session, so the login is checked first.
    """
    with _service_lock:
        if state.models is None:
            state.models = ModelsService(state.station, state.db)
        return state.models


ServiceDep = Annotated[ModelsService, Depends(models_service)]


async def _call(fn: Callable[..., T], *args: Any) -> T:
    """Run a service call in the thread pool; its ServiceError becomes the HTTP answer."""
    try:
        return await run_in_threadpool(fn, *args)
    except ServiceError as e:
        raise HTTPException(e.status, str(e)) from None


# -- bodies ---------------------------------------------------------------------------------------
class TrainBody(BaseModel):
    """A training run on a frozen dataset snapshot."""

    snapshot_id: int = Field(..., ge=1, le=2**62, description="Dataset snapshot (QA review page) to train on.")
    epochs: int = Field(30, ge=1, le=1000, description="Training epochs.")
    imgsz: int = Field(640, ge=32, le=2048, description="Training image size (multiple of 32).")
    batch: int = Field(8, ge=1, le=256, description="Images per batch.")
    export_hw: list[int] | None = Field(
        None,
        min_length=2,
        max_length=2,
        description="ONNX input [height, width] (multiples of 32); default imgsz x imgsz.",
    )
    base: Literal["scratch", "current"] = Field(
        "scratch", description="Train a new model (scratch) or fine-tune the current model's weights."
    )
    golden_id: GoldenId | None = Field(
        None, description="Evaluate the result against the current model on this golden set (default: the newest)."
    )
    val_fraction: float = Field(
        0.2, ge=0.0, le=0.5, description="Share of the snapshot's parts (newest) used for validation."
    )
    seed: int = Field(0, ge=0, le=2**31, description="Training seed.")

    @field_validator("imgsz")
    @classmethod
    def _stride(cls, v: int) -> int:
        if problem := imgsz_problem(v):
            raise ValueError(problem)
        return v

    @field_validator("export_hw")
    @classmethod
    def _hw(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(x < 32 or x > 4096 or x % 32 for x in v):
            raise ValueError(f"export_hw {v}: two multiples of 32 between 32 and 4096")
        return v


class EvaluateBody(BaseModel):
    """Evaluate a model against the current one."""

    golden_id: GoldenId | None = Field(None, description="Golden set (default: the newest).")


class PromoteBody(BaseModel):
    """Promote a candidate; the gate refuses a worse escape rate unless overridden with a reason."""

    override: bool = Field(False, description="Promote even though the gate refuses (needs a reason; audited).")
    reason: Reason = ""

    @field_validator("reason")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.strip()


class RollbackBody(BaseModel):
    """Back to a model that ran before."""

    sha256: str | None = Field(
        None, pattern=r"^[0-9a-fA-F]{8,64}$", description="Default: the model the last change replaced."
    )
    reason: Reason = ""


class ShadowBody(BaseModel):
    """Shadow mode settings."""

    queue_size: int = Field(
        16, ge=1, le=1000, description="Parts waiting for the shadow model; more are dropped for it (counted)."
    )


class TuneBody(BaseModel):
    """Threshold tuning on an evaluation."""

    target_escape_rate: float = Field(
        ..., ge=0.0, le=1.0, description="Largest acceptable escape rate on the golden set, e.g. 0.01."
    )
    model: Literal["candidate", "current"] = Field("current", description="Which model of the evaluation to tune.")


class ApplyRulesBody(TuneBody):
    """Apply tuned thresholds to the line (audited)."""

    eval_id: str = Field(
        ..., pattern=r"^e[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$", description="The evaluation the thresholds come from."
    )
    reason: str = Field(
        ..., min_length=3, max_length=300, description="Why the line's thresholds change (audit trail)."
    )


class ResetRulesBody(BaseModel):
    """Back to the configured thresholds."""

    reason: str = Field(..., min_length=3, max_length=300, description="Why (audit trail).")


class GoldenBody(BaseModel):
    """Freeze a dataset snapshot as a golden set."""

    snapshot_id: int = Field(
        ..., ge=1, le=2**62, description="Dataset snapshot to freeze (every image; keep it apart from training data)."
    )
    name: str = Field(..., pattern=r"^[A-Za-z0-9._-]{1,60}$", description="Folder name of the golden set.")


# -- page ---------------------------------------------------------------------------------------
@router.get("/models", include_in_schema=False)
def models_page(request: Request) -> Response:
    """The models page: login first (redirect), then role qa (403 page)."""
    why = "Training, evaluating and shadow mode need a qa account; promoting and rolling back need an admin."
    return desk_page(request, "models.html", nav="models", area="The models page", why=why)


# -- reads (qa) ---------------------------------------------------------------------------------
@router.get("/api/models", summary="Registry, the model on the line, recent swaps (qa)")
async def overview(_: QaSession, svc: ServiceDep) -> dict[str, Any]:
    """Every registered model (sha, task, classes, input size, dataset snapshot, parent, metrics, who trained/promoted
    it, status)."""
    return await _call(svc.overview)


@router.get("/api/models/history", summary="Promotions, refusals, overrides, rollbacks (qa)")
async def history(_: QaSession, svc: ServiceDep) -> list[dict[str, Any]]:
    """From the audit trail, newest first."""
    return await _call(svc.history)


@router.get("/api/models/golden", summary="Golden sets (qa)")
async def golden_sets(_: QaSession, svc: ServiceDep) -> list[dict[str, Any]]:
    """The frozen golden sets evaluations can use."""
    return await _call(svc.golden.list)


@router.get("/api/models/snapshots", summary="Dataset snapshots to train on (qa)")
async def snapshots(state: StateDep, _: QaSession) -> list[dict[str, Any]]:
    """Dataset snapshots, newest first."""
    import labeling

    def read() -> list[dict[str, Any]]:
        with state.db.use() as db:
            snaps = labeling.list_snapshots(db)
        return [s.summary(sha_key="sha") for s in reversed(snaps)]

    return await _call(read)


@router.get("/api/models/jobs", summary="Training jobs, newest first (qa)")
async def jobs(_: QaSession, svc: ServiceDep) -> dict[str, Any]:
    """``active``: the running job (or null); ``jobs``: all jobs with their last state."""

    def read() -> dict[str, Any]:
        active = svc.runner.active()
        return {
            "active": job_dict(active) if active else None,
            "jobs": [job_dict(j) for j in svc.runner.list_jobs()[:30]],
        }

    return await _call(read)


@router.get("/api/models/jobs/{job_id}", summary="One training job: phase, epoch, losses, metrics (qa)")
async def job(_: QaSession, svc: ServiceDep, job_id: JobId) -> dict[str, Any]:
    """Live progress while it runs (poll it), the registered model's sha and comparison when it is done."""
    return await _call(svc.job, job_id)


@router.get("/api/models/jobs/{job_id}/log", summary="A training job's log (qa)")
async def job_log(
    _: QaSession,
    svc: ServiceDep,
    job_id: JobId,
    offset: int = Query(-1, ge=-1, le=2**40, description="Byte offset; -1 = the last 64 KB."),
) -> dict[str, Any]:
    """Text from ``offset`` (at most 64 KB) and ``next_offset`` to continue from."""
    return await _call(svc.job_log, job_id, offset)


@router.get("/api/models/evaluations", summary="Evaluations, newest first (qa)")
async def evaluations(_: QaSession, svc: ServiceDep) -> list[dict[str, Any]]:
    """State of each evaluation job."""
    return await _call(lambda: [eval_dict(e) for e in svc.evals.list()])


@router.get("/api/models/evaluations/{eval_id}", summary="Candidate vs current on the golden set (qa)")
async def evaluation(_: QaSession, svc: ServiceDep, eval_id: EvalId) -> dict[str, Any]:
    """Side by side: escape / false-reject / uncertain rates, precision, recall, mAP50, per class, confusion; images
    where they disagree."""
    return await _call(svc.evaluation, eval_id)


@router.get(
    "/api/models/evaluations/{eval_id}/images/{index}",
    summary="A golden image with truth and both models' boxes (qa)",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "JPEG thumbnail"}},
)
async def evaluation_image(
    _: QaSession, svc: ServiceDep, eval_id: EvalId, index: Annotated[int, PathParam(ge=0, le=10**7)]
) -> Response:
    """Golden-set image ``index``: truth green (outer box), candidate orange, current blue (at their uncertain
    threshold)."""
    jpeg = await _call(svc.evaluation_image, eval_id, index)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/api/models/shadow", summary="Shadow mode: counters and disagreements (qa)")
async def shadow(
    _: QaSession,
    svc: ServiceDep,
    sha: str | None = Query(None, pattern=r"^[0-9a-fA-F]{64}$", description="A model's recorded shadow results."),
    limit: int = Query(50, ge=1, le=1000),
) -> dict[str, Any]:
    """The running (or last) shadow run's counters and the parts where its verdict differs from the line's."""
    return await _call(svc.shadow_view, sha.lower() if sha else None, limit)


@router.get("/api/models/rules", summary="The line's per-class thresholds: configured, in force, overrides (qa)")
async def rules(_: QaSession, svc: ServiceDep) -> dict[str, Any]:
    """Thresholds of the running model's classes and the override history."""
    return await _call(svc.rules.view)


# -- writes: qa ---------------------------------------------------------------------------------
@router.post("/api/models/train", status_code=202, summary="Start a training run on a dataset snapshot (qa)")
async def train(session: QaSession, svc: ServiceDep, body: TrainBody) -> dict[str, Any]:
    """Export the snapshot, train (job runner: one at a time, subprocess), export ONNX, evaluate against the current
    model, register.

    404 unknown snapshot / golden set, 409 a job is running or the snapshot cannot be used.
    """
    return await _call(svc.start_training, body, session.user.username)


@router.post("/api/models/jobs/{job_id}/cancel", summary="Cancel the running training job (qa)")
async def cancel(session: QaSession, svc: ServiceDep, job_id: JobId) -> dict[str, Any]:
    """Training stops at the next batch (409 when that job is not running)."""
    return await _call(svc.cancel_training, job_id, session.user.username)


@router.post("/api/models/{sha}/evaluate", status_code=202, summary="Evaluate a model against the current one (qa)")
async def evaluate(session: QaSession, svc: ServiceDep, sha: Sha, body: EvaluateBody | None = None) -> dict[str, Any]:
    """Both models through the production path on the golden set (a worker process); both results go to the registry
    (the gate reads them)."""
    return await _call(svc.start_evaluation, sha.lower(), body.golden_id if body else None, session.user.username)


@router.post("/api/models/evaluations/{eval_id}/tune", summary="Per-class thresholds for a target escape rate (qa)")
async def tune(_: QaSession, svc: ServiceDep, eval_id: EvalId, body: TuneBody) -> dict[str, Any]:
    """A proposal only (nothing changes): thresholds, the escape rate they reach and the false-reject rate they cost."""
    return await _call(svc.rules.tune, eval_id, body.model, body.target_escape_rate)


@router.post("/api/models/{sha}/shadow", status_code=201, summary="Start shadow mode with a model (qa)")
async def shadow_start(session: QaSession, svc: ServiceDep, sha: Sha, body: ShadowBody | None = None) -> dict[str, Any]:
    """The model judges every part beside the line without acting; 409 while another shadow runs."""
    return await _call(svc.start_shadow, sha.lower(), body.queue_size if body else 16, session.user.username)


@router.post("/api/models/shadow/stop", summary="Stop shadow mode (qa)")
async def shadow_stop(session: QaSession, svc: ServiceDep) -> dict[str, Any]:
    """The final counters (``stopped`` null when it was not running)."""
    return await _call(svc.stop_shadow, session.user.username)


@router.post("/api/models/golden", status_code=201, summary="Freeze a dataset snapshot as a golden set (qa)")
async def golden_freeze(session: QaSession, svc: ServiceDep, body: GoldenBody) -> dict[str, Any]:
    """Every image of the snapshot with its labels, hashed; never overwritten. Keep golden parts out of training
    snapshots."""
    return await _call(svc.golden.freeze, body.snapshot_id, body.name, session.user.username)


# -- writes: admin --------------------------------------------------------------------------------
@router.post("/api/models/{sha}/promote", summary="Promote a model; the line hot-swaps to it (admin)")
async def promote(session: AdminSession, svc: ServiceDep, sha: Sha, body: PromoteBody | None = None) -> dict[str, Any]:
    """Refused (409, audited) when its escape rate on the golden set is worse than the current model's, unless
    ``override`` with a reason."""
    b = body or PromoteBody()
    if b.override and not b.reason:
        raise HTTPException(422, "reason: an override needs a reason (it is kept in the audit trail)")
    return await _call(svc.promote, sha.lower(), b.override, b.reason or None, session.user.username)


@router.post("/api/models/rollback", summary="Roll back to an earlier model in one action (admin)")
async def rollback(session: AdminSession, svc: ServiceDep, body: RollbackBody | None = None) -> dict[str, Any]:
    """Default: the model the last change replaced; the line hot-swaps to it. Audited, not gated."""
    b = body or RollbackBody()
    return await _call(svc.rollback, b.sha256.lower() if b.sha256 else None, b.reason or None, session.user.username)


@router.post("/api/models/rules", summary="Apply tuned thresholds to the line (admin)")
async def apply_rules(session: AdminSession, svc: ServiceDep, body: ApplyRulesBody) -> dict[str, Any]:
    """Recomputes the tuning of ``eval_id`` and writes it as the line's threshold override (audited, kept across
    restarts); in force from the next part.

    409 when the evaluated model is not the one on the line.
    """
    return await _call(
        svc.rules.apply_tuning,
        body.eval_id,
        body.model,
        body.target_escape_rate,
        body.reason.strip(),
        session.user.username,
    )


@router.post("/api/models/rules/reset", summary="Back to the configured thresholds (admin)")
async def reset_rules(session: AdminSession, svc: ServiceDep, body: ResetRulesBody) -> dict[str, Any]:
    """Audited; 409 when no override is in force."""
    return await _call(svc.rules.reset, body.reason.strip(), session.user.username)
