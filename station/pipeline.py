"""The hot path: trigger -> acquire -> inspect -> decide -> reject scheduler.

Threads: one acquisition thread per camera, one inference worker. Every
part is registered with the reject scheduler *before* anything can fail,
so a part whose frame is dropped, whose grab fails or whose inspection
hangs still gets a FAILSAFE verdict and a reject at its deadline.

Nothing here touches disk, the database or the network: results leave
through ``on_final`` -> :class:`~station.bus.Bus`, which never blocks.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

from .acquire.base import CameraDriver, CameraError
from .actuate.scheduler import RejectScheduler
from .alarms import AlarmBoard
from .counters import Counters
from .decide import Decider
from .inspect.base import Inspector
from .types import Detections, Frame, PartResult, Trigger

log = logging.getLogger(__name__)


def _put_sentinel(q: "queue.Queue[Any]") -> None:
    """Wake a consumer blocked on ``q`` to stop it, dropping queued work if the queue is full."""
    while True:
        try:
            q.put_nowait(None)
            return
        except queue.Full:
            try:
                q.get_nowait()
            except queue.Empty:
                pass


def inspect_part(
    inspector: Inspector,
    decider: Decider,
    trigger: Trigger,
    frames: Sequence[Frame],
    pre_timings_ms: dict[str, float] | None = None,
    deadline_ns: int | None = None,
) -> PartResult:
    """Inspect every frame of a part and decide: the code path shared by the line and replay.

    An inspector exception becomes a FAILSAFE verdict naming it; so does an
    inspector still learning its reference (the frames are given to it to learn).
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
            det = inspector.inspect(f)
            detections.append(det)
            for k, ms in det.timings_ms.items():
                timings[k] = timings.get(k, 0.0) + ms
    except Exception as exc:  # noqa: BLE001 - any inspector failure must become a FAILSAFE verdict, not a lost part
        log.exception("inspector failed on part %d", trigger.part_id)
        v = decider.failsafe(trigger, f"inspector error: {type(exc).__name__}: {exc}", inspector.model_id, timings)
        return PartResult(trigger, v, tuple(frames))
    t1 = time.monotonic_ns()
    timings["inspect"] = (t1 - t0) / 1e6
    verdict = decider.decide(trigger, frames, detections, timings)
    timings["decide"] = (verdict.t_decided_ns - t1) / 1e6
    timings["total"] = (verdict.t_decided_ns - trigger.t_trigger_ns) / 1e6
    if deadline_ns is not None:
        timings["deadline_slack_ms"] = (deadline_ns - verdict.t_decided_ns) / 1e6
    return PartResult(trigger, replace(verdict, timings_ms=timings), tuple(frames), tuple(detections))


@dataclass
class _Assembly:
    trigger: Trigger
    frames: dict[str, Frame] = field(default_factory=dict)
    t_acquired_ns: int = 0


class Line:
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
    ):
        self.cameras = list(cameras)
        self.inspector = inspector
        self.decider = decider
        self.scheduler = scheduler
        self.counters = counters
        self.alarms = alarms
        self.grab_timeout_s = grab_timeout_s
        self._deadline_ns = int(scheduler.cfg.deadline_ms * 1e6)
        self._ids = itertools.count(first_part_id)
        self._seq = itertools.count(1)
        self._id_lock = threading.Lock()
        self._cam_queues: dict[str, queue.Queue[Trigger | None]] = {c.camera_id: queue.Queue(maxsize=frame_queue + 2) for c in self.cameras}
        self._assembly: dict[int, _Assembly] = {}
        self._asm_lock = threading.Lock()
        self._frames: queue.Queue[_Assembly | None] = queue.Queue(maxsize=frame_queue)
        self._threads: list[threading.Thread] = []
        self._running = False
        self.paused = False

    # -- control ------------------------------------------------------------
    def start(self) -> None:
        """Start the acquisition threads and the inference worker."""
        self._running = True
        for cam in self.cameras:
            t = threading.Thread(target=self._acquire_loop, args=(cam,), name=f"acquire-{cam.camera_id}", daemon=True)
            self._threads.append(t)
        self._threads.append(threading.Thread(target=self._infer_loop, name="inference", daemon=True))
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Stop the threads (parts in flight still get their verdict from the scheduler)."""
        self._running = False
        for q in [*self._cam_queues.values(), self._frames]:
            _put_sentinel(q)
        for t in self._threads:
            t.join(timeout=5)
        self._threads.clear()

    @property
    def threads(self) -> list[threading.Thread]:
        """The running acquisition and inference threads."""
        return list(self._threads)

    @property
    def acquiring(self) -> int:
        """Parts triggered whose frames are not all acquired yet."""
        with self._asm_lock:
            return len(self._assembly)

    def trigger(self, source: str = "software", encoder_count: int | None = None) -> Trigger | None:
        """A part is at the camera: register it and ask every camera for its frame.

        Thread-safe and non-blocking. Returns None while the line is paused.
        """
        if self.paused or not self._running:
            return None
        with self._id_lock:
            trig = Trigger(next(self._ids), next(self._seq), time.monotonic_ns(), encoder_count, source, time.time())
        self.counters.add("triggers")
        self.scheduler.register(trig)
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
        self.scheduler.register(trig)
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
    def _acquire_loop(self, cam: CameraDriver) -> None:
        q = self._cam_queues[cam.camera_id]
        while self._running:
            trig = q.get()
            if trig is None:
                return
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

    def _infer_loop(self) -> None:
        while True:
            asm = self._frames.get()
            if asm is None:
                return
            try:
                self._infer_one(asm)
            except Exception as exc:  # noqa: BLE001 - the worker must survive; the part goes FAILSAFE at its deadline
                log.exception("inference worker error on part %d", asm.trigger.part_id)
                self.alarms.report("inference", "alarm", f"worker error: {type(exc).__name__}: {exc}")

    def _infer_one(self, asm: _Assembly) -> None:
        """Inspect and decide one assembled part, unless its deadline already passed."""
        trig = asm.trigger
        frames = [asm.frames[c.camera_id] for c in self.cameras]
        t0 = time.monotonic_ns()
        deadline = trig.t_trigger_ns + self._deadline_ns
        if t0 >= deadline:
            return  # already FAILSAFE at its deadline: spend no time on it, catch up
        pre = {"acquire": (asm.t_acquired_ns - trig.t_trigger_ns) / 1e6, "queue": (t0 - asm.t_acquired_ns) / 1e6}
        self.scheduler.submit(inspect_part(self.inspector, self.decider, trig, frames, pre, deadline))
