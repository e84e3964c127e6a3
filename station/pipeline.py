"""The hot path: trigger -> acquire -> inspect -> decide -> reject scheduler.

Threads: one acquisition thread per camera, one inference worker. Every
part is admitted by the reject scheduler *before* anything can fail,
so a part whose frame is dropped, whose grab fails or whose inspection
hangs still gets a FAILSAFE verdict and a reject at its deadline.

Nothing here touches disk, the database or the network: results leave
through ``on_final`` -> :class:`~station.bus.Bus`, which never blocks.

Each thread is a :class:`Worker` slot that notes when it starts and ends a
part (two attribute writes): :class:`~station.watchdog.Watchdog` reads them
to find a worker stuck in a call or dead, and :meth:`Pipeline.restart` abandons
it (its late result is ignored) and starts a fresh thread in its place.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .acquire.base import CameraDriver, CameraError
from .actuate.scheduler import RejectScheduler
from .alarms import AlarmBoard
from .contracts import Detections, Frame, Outcome, PartResult, Trigger
from .counters import Counters
from .decide import Decider
from .health import HealthMonitor
from .inspection.base import Inspector

INSPECTOR_ERROR = "inspector error: "  # prefix of the FAILSAFE reason when the inspector raised

log = logging.getLogger(__name__)


def _put_sentinel(q: queue.Queue[Any]) -> None:
    """Wake a consumer blocked on ``q`` to stop it, dropping queued work if the queue is full."""
    while True:
        try:
            q.put_nowait(None)
            return
        except queue.Full:
            with contextlib.suppress(queue.Empty):
                q.get_nowait()


class WorkerAbandoned(RuntimeError):
    """The worker was declared stuck and replaced while inspecting this part: stop, do not report."""


def inspect_part(
    inspector: Inspector,
    decider: Decider,
    trigger: Trigger,
    frames: Sequence[Frame],
    pre_timings_ms: dict[str, float] | None = None,
    deadline_ns: int | None = None,
    worker: Worker | None = None,
) -> PartResult:
    """Inspect every frame of a part and decide: the code path shared by the line and replay.

    An inspector exception becomes a FAILSAFE verdict naming it; so does an
    inspector still learning its reference (the frames are given to it to learn).
    ``worker``: the line's worker; once the watchdog has abandoned it, the
    remaining frames are not inspected (the fresh worker owns the inspector).
    """
    t0 = time.monotonic_ns()
    timings: dict[str, float] = dict(pre_timings_ms or {})
    if not inspector.ready:
        for f in frames:
            inspector.learn(f)
        v = decider.failsafe(trigger, "learning reference from good parts", inspector.model_id, timings)
        return PartResult(trigger, v, tuple(frames))
    detections: list[Detections] = []
    try:
        for f in frames:
            if worker is not None and worker.abandoned:
                raise WorkerAbandoned(f"worker {worker.name} was abandoned")
            det = inspector.inspect(f)
            detections.append(det)
            for k, ms in det.timings_ms.items():
                timings[k] = timings.get(k, 0.0) + ms
    except WorkerAbandoned:
        raise
    except Exception as exc:  # noqa: BLE001 - any inspector failure must become a FAILSAFE verdict, not a lost part
        log.exception("inspector failed on part %d", trigger.part_id)
        v = decider.failsafe(trigger, f"{INSPECTOR_ERROR}{type(exc).__name__}: {exc}", inspector.model_id, timings)
        return PartResult(trigger, v, tuple(frames))
    t1 = time.monotonic_ns()
    timings["inspect"] = (t1 - t0) / 1e6
    verdict = decider.decide(trigger, frames, detections, timings)
    timings["decide"] = (verdict.t_decided_ns - t1) / 1e6
    timings["total"] = (verdict.t_decided_ns - trigger.t_trigger_ns) / 1e6
    if deadline_ns is not None:
        timings["deadline_slack_ms"] = (deadline_ns - verdict.t_decided_ns) / 1e6
    return PartResult(trigger, replace(verdict, timings_ms=timings), tuple(frames), tuple(detections))


@dataclass(eq=False)
class Worker:
    """One hot-path thread and what it is doing, for the watchdog.

    ``busy_since_ns`` is 0 while the thread waits for work, else when it
    started ``busy_what`` ("inspect", "grab") on ``part_id``. An abandoned
    worker's thread may still be stuck in a call; when that returns, the
    thread drops what it holds and exits.
    """

    slot: str  # "inference" or "acquire-<camera id>"
    generation: int
    thread: threading.Thread | None = None
    started_ns: int = 0
    busy_since_ns: int = 0
    busy_what: str = ""
    part_id: int = 0
    done: int = 0
    abandoned: bool = False

    @property
    def name(self) -> str:
        """The thread's name."""
        return self.slot if self.generation == 1 else f"{self.slot}#{self.generation}"


@dataclass(frozen=True)
class Stall:
    """A worker the watchdog must replace: stuck in one call, or its thread gone."""

    slot: str
    kind: str  # "stuck" or "dead"
    what: str  # "inspect", "grab", or "" (dead thread)
    part_id: int
    seconds: float

    def describe(self) -> str:
        """One line for the alarm and the log."""
        if self.kind == "dead":
            return f"{self.slot} thread died"
        return f"{self.slot} stuck {self.seconds:.1f} s in {self.what} (part {self.part_id})"


@dataclass
class _Assembly:
    trigger: Trigger
    frames: dict[str, Frame] = field(default_factory=dict)
    t_acquired_ns: int = 0


class Pipeline:
    """Runs parts through the cameras and the inspector into the scheduler."""

    def __init__(
        self,
        cameras: Sequence[CameraDriver],
        inspector: Inspector,
        decider: Decider,
        scheduler: RejectScheduler,
        counters: Counters,
        alarms: AlarmBoard,
        *,
        first_part_id: int = 1,
        frame_queue: int = 4,
        grab_timeout_s: float = 0.5,
        health: HealthMonitor | None = None,
    ):
        self.cameras = list(cameras)
        self.inspector = inspector
        self.decider = decider
        self.scheduler = scheduler
        self.counters = counters
        self.alarms = alarms
        self.grab_timeout_s = grab_timeout_s
        self.health = health  # image health and model drift, fed after each verdict (station/health/)
        self._deadline_ns = int(scheduler.cfg.deadline_ms * 1e6)
        self._ids = itertools.count(first_part_id)
        self._seq = itertools.count(1)
        self._id_lock = threading.Lock()
        self._cam_queues: dict[str, queue.Queue[Trigger | None]] = {
            c.camera_id: queue.Queue(maxsize=frame_queue + 2) for c in self.cameras
        }
        self._assembly: dict[int, _Assembly] = {}
        self._asm_lock = threading.Lock()
        self._frames: queue.Queue[_Assembly | None] = queue.Queue(maxsize=frame_queue)
        self._threads: list[threading.Thread] = []
        self._workers: dict[str, Worker] = {}
        self._abandoned: list[Worker] = []
        self._worker_lock = threading.Lock()
        self._inspector_failing = False  # the last inspected part's inspector raised (the "inspector" alarm)
        self.late_abandoned = 0  # results of abandoned workers that came back late (ignored)
        self.undistort: dict[str, Callable[[Any], Any]] = {}  # camera id -> remap (calibration.undistort)
        self._running = False
        self.paused = False

    # -- control ------------------------------------------------------------
    def start(self) -> None:
        """Start the acquisition threads and the inference worker."""
        self._running = True
        slots = [f"acquire-{cam.camera_id}" for cam in self.cameras] + ["inference"]
        for slot in slots:
            self._spawn(slot, 1)

    def _spawn(self, slot: str, generation: int) -> threading.Thread:
        w = Worker(slot, generation, started_ns=time.monotonic_ns())
        if slot == "inference":
            t = threading.Thread(target=self._infer_loop, args=(w,), name=w.name, daemon=True)
        else:
            cam = next(c for c in self.cameras if f"acquire-{c.camera_id}" == slot)
            t = threading.Thread(target=self._acquire_loop, args=(cam, w), name=w.name, daemon=True)
        w.thread = t
        with self._worker_lock:
            self._workers[slot] = w
            self._threads = [x.thread for x in self._workers.values() if x.thread is not None]
        t.start()
        return t

    def stop(self) -> None:
        """Stop the threads (parts in flight still get their verdict from the scheduler).

        A thread stuck in a call is not waited for longer than 5 s; abandoned ones not at all.
        """
        self._running = False
        queues: list[queue.Queue[Any]] = [*self._cam_queues.values(), self._frames]
        for q in queues:
            _put_sentinel(q)
        end = time.monotonic() + 5
        for t in self.threads:
            t.join(timeout=max(0.0, end - time.monotonic()))
        with self._worker_lock:
            self._workers.clear()
            self._threads = []

    @property
    def threads(self) -> list[threading.Thread]:
        """The running acquisition and inference threads (not the abandoned ones)."""
        return list(self._threads)

    # -- watchdog -----------------------------------------------------------
    def workers(self) -> dict[str, Worker]:
        """The current worker of each slot."""
        with self._worker_lock:
            return dict(self._workers)

    def stalled(self, stall_s: float, grab_stall_s: float | None = None) -> list[Stall]:
        """Workers stuck in one call longer than ``stall_s`` (grabs: ``grab_stall_s``), or whose thread died.

        Reads the workers' fields without a lock (each is one atomic read): never slows the line.
        """
        if not self._running:
            return []
        now = time.monotonic_ns()
        out: list[Stall] = []
        for w in self.workers().values():
            if w.abandoned:
                continue
            since = w.busy_since_ns
            limit = stall_s if w.slot == "inference" or grab_stall_s is None else grab_stall_s
            if since and now - since > limit * 1e9:
                out.append(Stall(w.slot, "stuck", w.busy_what, w.part_id, (now - since) / 1e9))
            elif w.thread is not None and not w.thread.is_alive() and self._running:
                out.append(Stall(w.slot, "dead", w.busy_what, w.part_id, 0.0))
        return out

    def recovered(self, slot: str, settle_s: float) -> bool:
        """The worker of ``slot`` finished a part, or waited ``settle_s`` for work without sticking."""
        w = self._workers.get(slot)
        if w is None or w.thread is None or not w.thread.is_alive():
            return False
        if w.done > 0 and not w.busy_since_ns:
            return True
        return not w.busy_since_ns and time.monotonic_ns() - w.started_ns > settle_s * 1e9

    def abandon(self, stall: Stall) -> Worker | None:
        """Give up on a stuck or dead worker: its late result will be ignored.

        A grab in progress fails its part (FAILSAFE, counted as dropped, as any failed grab);
        an inspection in progress is left to the scheduler's deadline. A stuck inspection holds
        the inspector's lock: the inspector gets a fresh one (``abandon_stuck``) for the next worker.
        """
        with self._worker_lock:
            w = self._workers.get(stall.slot)
            if w is None or w.abandoned:
                return None
            w.abandoned = True
            self._abandoned.append(w)
            del self._workers[stall.slot]
            self._threads = [x.thread for x in self._workers.values() if x.thread is not None]
        if stall.kind == "stuck" and stall.what == "inspect":
            abandon_stuck = getattr(self.inspector, "abandon_stuck", None)
            if abandon_stuck is not None:
                abandon_stuck()
        if stall.kind == "stuck" and stall.what == "grab" and stall.part_id:
            self._drop(stall.part_id, f"{stall.slot}: grab stuck {stall.seconds:.1f} s (watchdog)")
        return w

    def restart(self, stall: Stall) -> threading.Thread | None:
        """Abandon the worker of ``stall`` and start a fresh thread in its slot (None when the line stopped)."""
        old = self.abandon(stall)
        if old is None or not self._running:
            return None
        log.error("%s: abandoned, starting a fresh thread", stall.describe())
        return self._spawn(stall.slot, old.generation + 1)

    @property
    def acquiring(self) -> int:
        """Parts triggered whose frames are not all acquired yet."""
        with self._asm_lock:
            return len(self._assembly)

    @property
    def frames_waiting(self) -> int:
        """Parts whose frames wait for the inference worker (the frame queue's depth)."""
        return self._frames.qsize()

    def triggers_waiting(self, camera_id: str) -> int:
        """Triggers waiting for the acquisition thread of ``camera_id`` (its queue's depth)."""
        return self._cam_queues[camera_id].qsize()

    def trigger(self, source: str = "software", encoder_count: int | None = None) -> Trigger | None:
        """A part is at the camera: register it and ask every camera for its frame.

        Thread-safe and non-blocking. Returns None while the line is paused.
        """
        if self.paused or not self._running:
            return None
        with self._id_lock:
            trig = Trigger(next(self._ids), next(self._seq), time.monotonic_ns(), encoder_count, source, time.time())
        self.counters.add("triggers")
        self.scheduler.admit(trig)
        with self._asm_lock:
            self._assembly[trig.part_id] = _Assembly(trig)
        for cam_id, q in self._cam_queues.items():
            try:
                q.put_nowait(trig)
            except queue.Full:
                self._drop(trig.part_id, f"camera {cam_id} busy: trigger overrun")
                break
        return trig

    def trigger_from_camera(self, camera_id: str, frame: Frame | None, error: str = "") -> Trigger | None:
        """A camera's frame arrival is the trigger (hardware-triggered / free-running camera).

        Registers the part at the frame's host time with ``frame`` as that
        camera's image and asks the *other* cameras for theirs. ``frame`` None
        means the frame arrived broken (``error``): the part is FAILSAFE and
        counted as dropped. Returns None while paused (the frame is discarded).
        """
        if self.paused or not self._running:
            return None
        t_ns = frame.t_exposure_ns if frame is not None else time.monotonic_ns()
        with self._id_lock:
            trig = Trigger(next(self._ids), next(self._seq), t_ns, None, f"camera:{camera_id}", time.time())
        self.counters.add("triggers")
        self.scheduler.admit(trig)
        with self._asm_lock:
            self._assembly[trig.part_id] = _Assembly(trig)
        if frame is None:
            self._drop(trig.part_id, f"camera {camera_id}: {error}")
            return trig
        for cam_id, q in self._cam_queues.items():
            if cam_id == camera_id:
                continue
            try:
                q.put_nowait(trig)
            except queue.Full:
                self._drop(trig.part_id, f"camera {cam_id} busy: trigger overrun")
                return trig
        self._add_frame(replace(frame, part_id=trig.part_id))
        return trig

    # -- threads ------------------------------------------------------------
    def _acquire_loop(self, cam: CameraDriver, w: Worker) -> None:
        q = self._cam_queues[cam.camera_id]
        while self._running and not w.abandoned:
            trig = q.get()
            if trig is None:
                return
            w.part_id = trig.part_id
            w.busy_what = "grab"
            w.busy_since_ns = time.monotonic_ns()
            try:
                frame = cam.grab(trig, self.grab_timeout_s)
            except CameraError as exc:
                self.alarms.report(f"camera:{cam.camera_id}", "alarm", str(exc))
                self._drop(trig.part_id, f"camera {cam.camera_id}: {exc}")
                continue
            except Exception as exc:  # noqa: BLE001 - a driver bug must fail the part, not the thread
                log.exception("camera %s raised", cam.camera_id)
                self.alarms.report(f"camera:{cam.camera_id}", "alarm", f"{type(exc).__name__}: {exc}")
                self._drop(trig.part_id, f"camera {cam.camera_id}: {type(exc).__name__}: {exc}")
                continue
            finally:
                w.busy_since_ns = 0
                w.done += 1
            if w.abandoned:  # the watchdog gave up on this grab: its part is already FAILSAFE
                self.late_abandoned += 1
                return
            undistort = self.undistort.get(cam.camera_id)
            if undistort is not None:
                try:
                    frame = replace(frame, image=undistort(frame.image))
                except ValueError as exc:  # a frame of another size than the calibration's
                    self.alarms.report(f"camera:{cam.camera_id}", "alarm", str(exc))
                    self._drop(trig.part_id, f"camera {cam.camera_id}: {exc}")
                    continue
            self.alarms.report(f"camera:{cam.camera_id}", "ok", "grabbing")
            self._add_frame(frame)

    def _add_frame(self, frame: Frame) -> None:
        with self._asm_lock:
            asm = self._assembly.get(frame.part_id)
            if asm is None:
                return  # part already dropped by another camera
            asm.frames[frame.camera_id] = frame
            if len(asm.frames) < len(self.cameras):
                return
            del self._assembly[frame.part_id]
        asm.t_acquired_ns = time.monotonic_ns()
        try:
            self._frames.put_nowait(asm)
        except queue.Full:
            self._count_drop(asm.trigger, "inspector busy: frame queue full (drop-new)")
            return
        self.counters.add("frames")

    def _drop(self, part_id: int, reason: str) -> None:
        with self._asm_lock:
            asm = self._assembly.pop(part_id, None)
        if asm is not None:
            self._count_drop(asm.trigger, reason)

    def _count_drop(self, trig: Trigger, reason: str) -> None:
        self.counters.add("dropped")
        self.scheduler.submit(PartResult(trig, self.decider.failsafe(trig, reason, self.inspector.model_id)))

    def _infer_loop(self, w: Worker) -> None:
        while not w.abandoned:
            asm = self._frames.get()
            if asm is None:
                return
            try:
                self._infer_one(asm, w)
            except Exception as exc:  # noqa: BLE001 - the worker must survive; the part goes FAILSAFE at its deadline
                log.exception("inference worker error on part %d", asm.trigger.part_id)
                self.alarms.report("inference", "alarm", f"worker error: {type(exc).__name__}: {exc}")

    def _infer_one(self, asm: _Assembly, w: Worker) -> None:
        """Inspect and decide one assembled part, unless its deadline already passed."""
        trig = asm.trigger
        frames = [asm.frames[c.camera_id] for c in self.cameras]
        t0 = time.monotonic_ns()
        deadline = trig.t_trigger_ns + self._deadline_ns
        if t0 >= deadline:
            return  # already FAILSAFE at its deadline: spend no time on it, catch up
        pre = {"acquire": (asm.t_acquired_ns - trig.t_trigger_ns) / 1e6, "queue": (t0 - asm.t_acquired_ns) / 1e6}
        w.part_id = trig.part_id
        w.busy_what = "inspect"
        w.busy_since_ns = t0
        result: PartResult | None = None
        try:
            result = inspect_part(self.inspector, self.decider, trig, frames, pre, deadline, w)
        except WorkerAbandoned:
            pass
        finally:
            w.busy_since_ns = 0
            w.done += 1
        if result is None or w.abandoned:  # declared stuck meanwhile: the part went FAILSAFE at its deadline
            self.late_abandoned += 1
            log.warning("late result of abandoned worker %s for part %d ignored", w.name, trig.part_id)
            return
        health = self.health
        reason = health.uncertain_reason if health is not None else None
        if reason is not None and result.verdict.outcome is Outcome.PASS:
            result = replace(result, verdict=self.decider.uncertain(result.verdict, reason))
        self.scheduler.submit(result)
        if health is not None:
            self._observe_health(health, result)
        # an inspector that raises is an alarm until it inspects a part again (reported on changes only)
        reasons = result.verdict.reasons
        failed = bool(reasons) and reasons[0].startswith(INSPECTOR_ERROR)
        if failed != self._inspector_failing:
            self._inspector_failing = failed
            if failed:
                self.alarms.report("inspector", "alarm", f"part {trig.part_id}: {reasons[0]}")
            else:
                self.alarms.report("inspector", "ok", f"inspecting again (part {trig.part_id})")

    def _observe_health(self, health: HealthMonitor, result: PartResult) -> None:
        """Image health and model drift of a decided part (after its verdict went to the scheduler)."""
        try:
            health.observe(result.trigger.part_id, result.frames, result.detections)
        except Exception as exc:  # noqa: BLE001 - a health measurement must never stop the line
            log.exception("image health failed on part %d", result.trigger.part_id)
            self.alarms.report("health", "warning", f"image health not measured: {type(exc).__name__}: {exc}")
