"""Composition root: build every driver from the config, start in order, stop in reverse.

:class:`Station` is also the service object the web app, the publishers and
the tests talk to: counters, alarms, the bus, the last result, triggering
and model hot swap all hang off it.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any

from .acquire.base import CAMERAS, CameraDriver
from .acquire.triggers import TRIGGERS, TriggerSource
from .actuate.base import OUTPUTS, OutputDriver
from .actuate.modes import prepare_output, scheduler_factory
from .alarms import AlarmBoard
from .bus import Bus
from .config import CalibrationConfig, StationConfig, config_hash
from .contracts import PartResult, StatusEvent, Trigger
from .counters import Counters, CounterValues, reconcile
from .decide import Decider, check_rules_for_model
from .floor import FloorServices
from .health import HealthMonitor
from .inspection.base import INSPECTORS, Inspector
from .inspection.swap import SwappableInspector
from .pipeline import Pipeline
from .rt import freeze_heap, limit_malloc_arenas, set_realtime
from .serialize import event_to_dict
from .services import Services
from .store import audit, health_baselines, queries
from .store.db import StoreError, open_db
from .store.images import ImageStore
from .store.recorder import Recorder, replay_at_start
from .timings import StageTimings
from .watchdog import SdNotifier, Watchdog

log = logging.getLogger(__name__)


def _file_sha256(path: Path) -> str | None:
    """The sha256 of a model file (its registry id), None when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None


def effective_calibration(cfg: CalibrationConfig) -> CalibrationConfig:
    """The calibration in force: from ``cfg.file`` when set (written by ``python -m calibration``)."""
    if cfg.file is None:
        return cfg
    from calibration.chessboard import load

    res = load(cfg.file)
    return cfg.model_copy(update={"id": res.id, "mm_per_px": res.mm_per_px})


def build_inspector(cfg: StationConfig, db: Any = None) -> Inspector:
    """The configured inspector backend (not yet warmed up).

    With an ONNX inspector that follows the registry, the model promoted in the
    station database runs instead of ``inspector.model`` (a promotion survives restarts).
    """
    icfg = cfg.inspector
    if db is not None and icfg.type in ("onnx", "anomaly") and icfg.follow_registry:
        from models.registry import current  # light: no torch

        rec = current(db)
        # an anomaly line follows anomaly models, an onnx line Ultralytics exports
        if rec is not None and Path(rec.path).is_file() and (rec.task == "anomaly") == (icfg.type == "anomaly"):
            log.info("running the registry's current model %s (%s)", rec.sha256[:12], rec.path)
            icfg = icfg.model_copy(update={"model": Path(rec.path)})
    return INSPECTORS.create(icfg)


class Station:
    """One inspection station: cameras, inspector, decision, reject, recording."""

    def __init__(
        self,
        cfg: StationConfig,
        *,
        max_parts: int | None = None,
        cameras: list[CameraDriver] | None = None,
        inspector: Inspector | None = None,
        output: OutputDriver | None = None,
    ):
        """Build every component from ``cfg``; ``cameras``/``inspector``/``output`` replace the configured ones."""
        self.cfg = cfg
        self.config_hash = config_hash(cfg)
        limit_malloc_arenas(cfg.pipeline.malloc_arenas)  # before the station's threads start
        self.bus = Bus()
        self.alarms = AlarmBoard(self.bus.publish)
        self.last_result: PartResult | None = None
        self._started = False
        self._lock = threading.Lock()
        self._stop_lock = threading.Lock()  # the watchdog's give-up and the caller may both stop
        self.failure: str | None = None  # why the station stopped itself (the watchdog gave up)
        self.failed = threading.Event()
        self._on_failure: list[Any] = []
        self.notifier = SdNotifier()  # systemd Type=notify: READY=1, WATCHDOG=1 (no-op outside systemd)

        cfg.store.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.db = open_db(cfg.store.db_path)  # migrations run here, before any thread starts
        self._db_thread = threading.get_ident()  # sqlite: only this thread may close it
        self._db_close_pending = False
        try:
            self._build(cfg, max_parts, cameras, inspector, output)
        except BaseException:
            self.db.close()  # a config that cannot be built must not leave the database open
            raise

    def _build(
        self,
        cfg: StationConfig,
        max_parts: int | None,
        cameras: list[CameraDriver] | None,
        inspector: Inspector | None,
        output: OutputDriver | None,
    ) -> None:
        """Build every driver and service from ``cfg`` (called once by ``__init__``)."""
        images = ImageStore.from_config(cfg.store)
        replay_at_start(self.db, cfg.store.spill_path, images)  # an earlier run's unwritten records, before counting
        persisted = queries.load_counters(self.db)
        restored = queries.resume_counters(self.db)
        if persisted and restored and persisted["triggers"] > restored["triggers"]:
            log.warning(
                "%d part(s) in flight at the last stop have no record (the PLC must have rejected them)",
                persisted["triggers"] - restored["triggers"],
            )
        self.counters = Counters(CounterValues(**restored) if restored else None)
        self.stage_timings = StageTimings()  # per-stage latency histograms since start (/metrics)
        first_part_id = queries.last_part_id(self.db) + 1

        self.images = images
        self.recorder = Recorder(
            cfg.store.db_path,
            self.images,
            self.counters,
            self.bus.subscribe("recorder", maxsize=cfg.store.queue_size),
            batch_size=cfg.store.batch_size,
            on_status=self._on_status,
            spill_path=cfg.store.spill_path,
            synchronous=cfg.store.synchronous,
        )

        self.cameras: list[CameraDriver] = (
            cameras if cameras is not None else [CAMERAS.create(c, on_status=self.alarms.report) for c in cfg.cameras]
        )
        self.inspector = SwappableInspector(inspector if inspector is not None else build_inspector(cfg, self.db))
        try:
            check_rules_for_model(cfg.rules, getattr(self.inspector.current, "task", None), self.inspector.names)
        except ValueError:
            self.inspector.close()
            raise
        # an output hosted by a station camera (pylon UserOutput) shares that camera's open device
        out_kw: dict[str, Any] = (
            {"cameras": {c.camera_id: c for c in self.cameras}} if getattr(cfg.reject.output, "camera_id", None) else {}
        )
        self.output: OutputDriver = output if output is not None else OUTPUTS.create(cfg.reject.output, **out_kw)
        self.output = prepare_output(
            cfg.reject, self.output, self.alarms.report
        )  # alarms + optional reject verification
        self.decider = Decider(
            cfg.rules, effective_calibration(cfg.calibration), self.config_hash, self._load_camera_setup()
        )
        self._apply_rules_override()  # thresholds tuned from the web (station/rules_overrides.py), kept across restarts
        self.shadow: Any = None  # a ShadowRunner while shadow mode runs (start_shadow)
        self.scheduler = scheduler_factory(cfg.reject, self.alarms.report)(
            cfg.reject,
            self.output,
            self.decider,
            self.counters,
            self._on_final,
            reject_uncertain=cfg.rules.uncertain_action == "reject",
            model_id=lambda: self.inspector.model_id,
        )
        # image health and model drift on every part (station/health/), fed by the inference worker
        self.image_health: HealthMonitor | None = (
            HealthMonitor(cfg.health, self.alarms.report) if cfg.health.enabled else None
        )
        if self.image_health is not None:
            self.image_health.restore(health_baselines.load(self.db))  # bands and baselines of the last run
        self.pipeline = Pipeline(
            self.cameras,
            self.inspector,
            self.decider,
            self.scheduler,
            self.counters,
            self.alarms,
            first_part_id=first_part_id,
            frame_queue=cfg.pipeline.frame_queue,
            grab_timeout_s=cfg.pipeline.grab_timeout_ms / 1000,
            health=self.image_health,
        )
        self._set_undistort(self.decider.setup)
        # a camera trigger: the frames of a hardware-triggered / free-running camera create the parts
        trig_kw: dict[str, Any] = (
            {"cameras": {c.camera_id: c for c in self.cameras}, "on_frame": self.pipeline.trigger_from_camera}
            if cfg.trigger.type == "camera"
            else {}
        )
        self.trigger_source: TriggerSource = TRIGGERS.create(
            cfg.trigger, fire=self._fire, max_parts=max_parts, **trig_kw
        )
        self.watchdog: Watchdog | None = None
        if cfg.watchdog.enabled:
            self.watchdog = Watchdog(
                cfg.watchdog,
                self.pipeline,
                self.alarms,
                notifier=self.notifier,
                grab_timeout_s=cfg.pipeline.grab_timeout_ms / 1000,
                on_restart=self._on_worker_restart,
                on_give_up=self.fail,
                fatal=self._fatal_check,
            )
        self.floor = FloorServices(self)  # PLC handshake, MQTT, OPC UA: only the configured ones
        self.uplink: Any = None  # the plant tier (station/plant/uplink.py), only with a `plant:` section
        if cfg.plant is not None:
            from .plant.labels_up import label_feed
            from .plant.uplink import PlantUplink

            self.uplink = PlantUplink(
                cfg.plant,
                cfg.name,
                self.bus.subscribe("plant", maxsize=cfg.plant.queue_size),
                report=self.alarms.report,
                status=lambda: {
                    "model_id": self.inspector.model_id,
                    "alarms": [f"{e.component}: {e.message}" for e in self.alarms.active()],
                },
                labels=label_feed(cfg, images) if cfg.plant.labels else None,
            )
        self.follower: Any = (
            None  # staged rollout: the plant's desired model for this station's group, through swap_model
        )
        if cfg.plant is not None and cfg.plant.follow_models:
            from .plant.follower import follower_for_station

            self.follower = follower_for_station(self)
        self._drain_s: float | None = None  # the scheduler's drain at stop (stop(drain_s))
        self.services = self._services()

    # -- lifecycle ----------------------------------------------------------
    def _services(self) -> Services:
        """Everything that runs, in start order (stopped in reverse): consumers first, the trigger last.

        The reject scheduler stops (draining the last pulses) after the line and before the outputs
        and the plant-floor links that carry those pulses and verdicts; the recorder stops last.
        """
        s = Services()
        s.add("recorder", self.recorder.start, self.recorder.stop)
        s.add("output", self.output.open, self.output.close)
        s.add("floor", self.floor.start, self.floor.stop)  # PLC handshake, MQTT, OPC UA
        if self.uplink is not None:
            s.add("plant uplink", self.uplink.start, self.uplink.stop)
        if self.follower is not None:
            s.add("plant follower", self.follower.start, self.follower.stop)
        s.add(
            "scheduler",
            self.scheduler.start,
            lambda: self.scheduler.stop(drain_s=0.0 if self._drain_s is None else self._drain_s),
        )
        s.add("inspector", self.inspector.warmup, self.inspector.close)
        for cam in self.cameras:
            s.add(f"camera:{cam.camera_id}", cam.open, cam.close)
        s.add("line", self._start_pipeline, self._stop_pipeline)
        s.add("trigger", self._start_trigger, self.trigger_source.stop)
        if self.watchdog is not None:
            s.add(
                "watchdog", self.watchdog.start, self.watchdog.stop
            )  # first to stop: a stopping line is not a stuck one
        return s

    def _start_pipeline(self) -> None:
        self.pipeline.start()
        self._make_realtime(self.pipeline.threads)

    def _stop_pipeline(self) -> None:
        self.stop_shadow()
        self.pipeline.stop()

    def _start_trigger(self) -> None:
        freeze_heap()  # before the first part: no full collection of the start-up heap on the line
        self.trigger_source.start()
        # The trigger thread takes the scheduler's lock for every part (deadline registration): at
        # normal priority it can be preempted holding it while real-time threads fill the cores.
        self._make_realtime(self.trigger_source.threads)

    @property
    def running(self) -> bool:
        """True from a completed :meth:`start` until :meth:`stop`."""
        return self._started

    def start(self) -> None:
        """Start every service in order (station/services.py), the trigger last."""
        # Python switches threads every 5 ms by default: too coarse for reject edges.
        sys.setswitchinterval(0.0005)
        self.services.start()
        self._started = True
        self.alarms.report("station", "ok", "running")
        self.notifier.notify("READY=1", f"STATUS=running, model {self.inspector.model_id}")
        log.info("station %s running (config %s, model %s)", self.cfg.name, self.config_hash, self.inspector.model_id)

    def _save_health(self) -> None:
        """Keep what image health learned for the next start (the line is stopped: nothing measures now)."""
        if self.image_health is None:
            return
        try:
            if self.image_health.relearned:
                health_baselines.forget(self.db, "camera")  # relearned on purpose: the old bands must not come back
            health_baselines.save(self.db, self.image_health.export())
        except (sqlite3.Error, StoreError) as exc:
            log.warning("image health bands not saved (they are learned again at the next start): %s", exc)

    def _make_realtime(self, threads: list[threading.Thread]) -> None:
        """Give started decision-path threads the line's real-time priority (``pipeline.realtime_priority``)."""
        for t in threads:
            set_realtime(self.cfg.pipeline.realtime_priority, f"thread {t.name}", t.native_id)

    def stop(self, drain_s: float | None = None) -> None:
        """Stop in reverse order; parts in flight get their verdicts and pulses first."""
        with self._stop_lock:
            self._stop(drain_s)
            # the watchdog's stop runs in a thread of its own: the database is closed by the owner's stop()
            if self._db_close_pending and threading.get_ident() == self._db_thread:
                self._db_close_pending = False
                self._save_health()
                self.db.close()

    def _stop(self, drain_s: float | None) -> None:
        if not self._started:
            return
        self._started = False
        self.notifier.notify("STOPPING=1")
        self._drain_s = self.cfg.reject.travel_ms / 1000 + 0.5 if drain_s is None else drain_s
        # in reverse: watchdog, trigger, line, cameras, inspector, scheduler (drains), ..., recorder
        self.services.stop()
        self._db_close_pending = True  # closed by stop() in the thread that opened it
        self.notifier.close()
        log.info("station stopped: %s", self.counters.snapshot().as_dict())
        if self.failure is not None:
            log.critical("station stopped itself: %s", self.failure)

    # -- watchdog -----------------------------------------------------------
    @property
    def healthy(self) -> bool:
        """False while the watchdog sees a stuck or dead worker (PLC heartbeat and STATION_READY stop)."""
        return self.watchdog is None or self.watchdog.healthy

    def on_failure(self, callback: Any) -> None:
        """Call ``callback(reason)`` when the station stops itself (``station run`` then exits with 1)."""
        self._on_failure.append(callback)
        if self.failure is not None:
            callback(self.failure)

    def fail(self, reason: str) -> None:
        """Stop the station from inside (the watchdog gave up): in a thread of its own, then tell ``on_failure``."""
        if self.failure is not None:
            return
        self.failure = reason
        self.alarms.report("station", "alarm", f"stopping: {reason}")

        def stop_then_tell() -> None:
            try:
                self.stop()
            finally:
                self.failed.set()
                for cb in list(self._on_failure):
                    try:
                        cb(reason)
                    except Exception:  # noqa: BLE001 - one broken listener must not hide the failure from the others
                        log.exception("on_failure callback failed")

        threading.Thread(target=stop_then_tell, name="station-fail-stop", daemon=True).start()

    def _fatal_check(self) -> str | None:
        """A failure no thread restart can mend (checked by the watchdog)."""
        if self.scheduler.died and self._started:
            return "the reject scheduler thread died (pending rejects cannot be handed to a fresh one)"
        return None

    def _on_worker_restart(self, stall: Any, thread: threading.Thread) -> None:
        """A fresh hot-path thread: the line's priority; after a stuck inspection, a fresh model instance."""
        self._make_realtime([thread])
        if stall.slot != "inference" or stall.kind != "stuck":
            return
        factory = self._fresh_inspector_factory()
        if factory is None:
            return  # the same instance under a fresh lock (e.g. a reference template that took N parts to learn)

        def done(error: Exception | None) -> None:
            if error is not None:
                self.alarms.report("watchdog:model", "warning", f"fresh inspector instance failed to load: {error}")

        self.inspector.load_async(factory, done)

    def _fresh_inspector_factory(self) -> Any:
        """Builds a fresh instance of the running model file (onnx/anomaly), or None."""
        if self.cfg.inspector.type not in ("onnx", "anomaly"):
            return None
        model = getattr(getattr(self.inspector.current, "cfg", None), "model", None)
        if model is None or not Path(model).is_file():
            return None
        from .inspection.loader import inspector_for_file

        expect = getattr(self.inspector.current, "frame_size", None)
        return lambda: inspector_for_file(Path(model), self.cfg.inspector, expect_frame_size=expect)

    def __enter__(self) -> Station:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- services -----------------------------------------------------------
    def trigger(self, source: str = "software", encoder_count: int | None = None) -> Trigger | None:
        """Trigger one part now (software trigger, API, PLC bit).

        Returns None when the line is paused, or when the parts are created by a
        camera's own frames (``trigger.type: camera``): an extra software trigger
        would steal a frame from the next real part.
        """
        if self.cfg.trigger.type == "camera":
            log.warning("software trigger from %s refused: parts are triggered by camera frames", source)
            return None
        return self.pipeline.trigger(source, encoder_count)

    def trigger_source_done(self) -> bool:
        """True when a bounded run (``max_parts``) has triggered all its parts and decided them."""
        return bool(getattr(self.trigger_source, "done", threading.Event()).is_set()) and self.scheduler.in_flight == 0

    def pause(self, paused: bool) -> None:
        """Stop or resume accepting triggers (parts in flight finish)."""
        self.pipeline.paused = paused
        # "info": shown on screens and published, but not an alarm someone must acknowledge
        self.alarms.report("line", "info" if paused else "ok", "paused" if paused else "running")

    def swap_model(
        self,
        path: Path,
        on_done: Any = None,
        *,
        user: str | None = None,
        reason: str | None = None,
        sha256: str | None = None,
    ) -> None:
        """Load another model file (Ultralytics ONNX or anomaly model) in the background and swap it in between two
        parts.

        An anomaly model learned on frames of another size is refused (the running model keeps running).
        ``on_done(error)`` is called when the load ends (None: swapped in). With ``user`` (a person's
        swap: web promotion, rollback, operator swap) the outcome is also reported as the ``model``
        alarm component and written to the audit trail (``model_swap`` / ``model_swap_failed``, the
        model named by ``sha256``, else by the sha256 of the file) by :meth:`_swap_done`.
        """
        if self.cfg.inspector.type not in ("onnx", "anomaly"):
            raise ValueError("hot swap needs an onnx or anomaly inspector (inspector.type: onnx or anomaly)")
        from .inspection.loader import inspector_for_file

        done = on_done
        if user is not None:
            user = audit.check_user(user)
            before = self.inspector.model_id
            # opened here, handed to the loader thread: the audit row is written as soon as the swap ends
            db = open_db(self.cfg.store.db_path, synchronous="NORMAL", migrate=False, check_same_thread=False)

            def done(error: Exception | None) -> None:
                try:
                    self._swap_done(db, Path(path), error, user, reason, sha256, before)
                finally:
                    db.close()
                if on_done is not None:
                    on_done(error)

        expect = getattr(self.inspector.current, "frame_size", None)
        self.inspector.load_async(
            lambda: inspector_for_file(Path(path), self.cfg.inspector, expect_frame_size=expect), done
        )

    def _swap_done(
        self,
        db: Any,
        path: Path,
        error: Exception | None,
        user: str,
        reason: str | None,
        sha256: str | None,
        before: str,
    ) -> None:
        """A person's swap ended (model-load thread): the ``model`` alarm and the audit row, on the swap's own
        connection."""
        if sha256 is None:
            sha256 = _file_sha256(path) or str(path)
        if error is None:
            self.alarms.report("model", "ok", f"model {self.inspector.model_id} loaded")
        else:
            self.alarms.report("model", "alarm", f"model swap to {sha256[:12]} failed: {error}")
        try:
            audit.record(
                db,
                user,
                "model_swap" if error is None else "model_swap_failed",
                "model",
                sha256,
                before=before,
                after=None if error else self.inspector.model_id,
                reason=reason or (str(error) if error else None),
            )
        except sqlite3.Error as e:
            log.warning("model swap by %s not audited: %s", user, e)

    def start_shadow(self, model_path: Path, *, queue_size: int = 16) -> Any:
        """Run ``model_path`` beside the line on every part, without acting (station/shadow.py); returns the runner.

        One shadow model at a time: raises ShadowError while one runs (stop it first).
        """
        from .shadow import ShadowError, start_for_station

        with self._lock:
            if self.shadow is not None and self.shadow.running:
                raise ShadowError(f"shadow mode already runs {self.shadow.stats.model_id}: stop it first")
            self.shadow = start_for_station(self, Path(model_path), queue_size=queue_size)
            return self.shadow

    def stop_shadow(self) -> dict[str, Any] | None:
        """Stop shadow mode; returns its final counters (None when it was not running)."""
        with self._lock:
            runner, self.shadow = self.shadow, None
        return runner.stop() if runner is not None else None

    def set_rules(self, rules: Any, config_hash: str, setup: Any = None) -> None:
        """Decide the next parts by ``rules`` (verdicts carry ``config_hash``): a new Decider, swapped in between two
        parts.

        ``setup``: the per-camera calibration and regions (default: those of the running decider).
        """
        new = Decider(rules, self.decider.calibration, config_hash, self.decider.setup if setup is None else setup)
        self.decider = new
        self.pipeline.decider = new  # read once per part by the inference worker
        self.scheduler.decider = new  # FAILSAFE verdicts at the deadline

    def _load_camera_setup(self) -> dict[str, Any]:
        from . import camera_setup

        setup = camera_setup.load(self.db, self.cfg.name, [c.id for c in self.cfg.cameras])
        for cam, s in setup.items():
            log.info(
                "camera %s: calibration %s, regions v%s in force",
                cam,
                s.calibration_ref or "(config)",
                s.regions_version,
            )
        return setup

    def set_camera_setup(self, setup: Any) -> None:
        """Judge the next parts by ``setup`` (:func:`station.camera_setup.load`, read by the caller on its own
        connection)."""
        d = self.decider
        self._set_undistort(setup)
        self.set_rules(d.rules, d.base_config_hash, setup=setup)

    def _set_undistort(self, setup: Any) -> None:
        if self.cfg.calibration.undistort:
            from .camera_setup import undistorters

            self.pipeline.undistort = undistorters(
                setup
            )  # one dict swap: the acquisition threads read it once per frame

    def _apply_rules_override(self) -> None:
        from . import rules_overrides

        rules, ov = rules_overrides.effective(self.db, self.cfg.rules)
        if ov is not None and ov.classes:
            self.decider = Decider(
                rules, self.decider.calibration, rules_overrides.tagged_hash(self.config_hash, ov), self.decider.setup
            )
            log.info("rules override %d (by %s) in force: %s", ov.id, ov.user, dict(ov.classes))

    def reconcile(self) -> list[str]:
        """Broken counter invariants right now (empty when they add up).

        Exact when the line is stopped or idle; while parts flow, the snapshot
        and the in-flight counts are read a few microseconds apart, so a
        transient mismatch can appear (the web app re-checks before alarming).
        """
        return reconcile(
            self.counters.snapshot(),
            pending_verdicts=self.scheduler.in_flight,
            pending_records=self.recorder.pending,
            pending_rejects=self.scheduler.pending_rejects,
            pending_frames=self.pipeline.acquiring,
        )

    def health(self) -> dict[str, Any]:
        """Health of every component (for /health and the operator screen)."""
        comps = {f"camera:{c.camera_id}": c.health() for c in self.cameras}
        comps["output"] = self.output.health()
        comps.update(self.floor.health())
        if self.uplink is not None:
            comps[self.uplink.component] = self.uplink.health()
        return {
            "running": self._started,
            "paused": self.pipeline.paused,
            "model_id": self.inspector.model_id,
            "config_hash": self.config_hash,
            "healthy": self.healthy,
            "failure": self.failure,
            "components": comps,
            "alarms": [event_to_dict(e) for e in self.alarms.active()],
            # where every verdict's record is: pending includes spilled (in the spill file, replayed
            # into the database when it can be written again, or at the next start)
            "records": {
                "written": self.recorder.records_written,
                "dropped": self.recorder.records_dropped,
                "pending": self.recorder.pending,
                "spilled": self.recorder.spilled,
            },
        }

    # -- callbacks ----------------------------------------------------------
    def _fire(self, source: str) -> object:
        return self.pipeline.trigger(source)

    def _on_final(self, result: PartResult) -> None:
        self.last_result = result
        self.stage_timings.observe(result.verdict.timings_ms)
        self.bus.publish(result)

    def _on_status(self, event: StatusEvent) -> None:
        self.alarms.report(event.component, event.state, event.message)
