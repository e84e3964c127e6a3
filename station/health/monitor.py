"""Image health and model drift on every part: bands learned at setup, drift alarms, UNCERTAIN while drifting.

:class:`HealthMonitor` is fed by the inference worker *after* a part's verdict went to the
reject scheduler (``observe``), so its cost (about 0.5 ms a 1 MP frame, see bench/bench_health.py)
never delays a verdict. Per camera it learns a band for each figure of
:class:`~station.health.measure.FrameHealth` from the first ``setup_parts`` frames; per model it
takes a baseline of image scores and detection counts from the model's first
``model_baseline_parts`` frames (after start-up or a swap) and compares a sliding window with it.
A figure out of its band for ``alarm_after_parts`` consecutive frames raises an alarm on the
station's :class:`~station.alarms.AlarmBoard` (so: the operator screen, MQTT, OPC UA, /metrics);
``clear_after_parts`` frames back inside clear it.

Everything is bounded (setup lists, windows and trends have fixed sizes) and in memory; nothing
here does I/O. Readers (web, /metrics) take copies without a lock: ``deque.copy()`` and
``dict(...)`` run under the GIL in one step, so the worker never waits for a reader.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config.health import HealthConfig
from ..contracts import Detections, Frame
from .bands import Band, Streak, band
from .drift import MODEL_CHECKS, ModelDrift
from .measure import FrameHealth, ProfileShift, gray_view, measure, position_from

log = logging.getLogger(__name__)

Report = Callable[[str, str, str], None]
IMAGE_CHECKS = ("sharpness", "brightness", "clipped", "position")
FIGURES = ("sharpness", "brightness", "clipped", "shift_x", "shift_y")  # the figures of a FrameHealth, in its order


@dataclass(frozen=True, slots=True)
class HealthEvent:
    """A drift alarm raised or cleared, and on which part (kept for the panel and the tests)."""

    part_id: int
    component: str
    state: str  # "alarm" or "ok"
    message: str


def _shift_len(h: FrameHealth, band_x: Band, band_y: Band) -> float:
    return math.hypot(h.shift_x - band_x.mean, h.shift_y - band_y.mean)


class CameraHealth:
    """One camera: its setup frames, bands, alarm streaks and trend."""

    def __init__(self, camera_id: str, cfg: HealthConfig):
        self.camera_id = camera_id
        self.cfg = cfg
        self.trend: deque[tuple[int, FrameHealth]] = deque(maxlen=cfg.trend_points)
        self.streaks = {c: Streak(cfg.alarm_after_parts, cfg.clear_after_parts) for c in IMAGE_CHECKS}
        self.messages: dict[str, str] = {}
        self.reset()

    def reset(self) -> None:
        """Forget the bands: the next ``setup_parts`` frames are learned."""
        self.setup: list[FrameHealth] = []
        self.bands: dict[str, Band] = {}
        self.stats: dict[str, tuple[float, float]] = {}
        self.profile: ProfileShift | None = None
        self.frame_hw: tuple[int, ...] = ()
        self.width = 0
        self.shift_limit = 0.0

    def component(self, check: str) -> str:
        """The alarm board component of one check."""
        return f"health:{self.camera_id}:{check}"

    def measure(self, frame: Frame, det: Detections | None) -> FrameHealth:
        """The figures of ``frame``; the position from the inspector's alignment when it has one."""
        if self.bands and frame.image.shape[:2] != self.frame_hw:  # restored from a run with another frame size
            log.warning(
                "image health %s: frames are now %s, the bands were learned on %s: learning them again",
                self.camera_id,
                frame.image.shape[:2],
                self.frame_hw,
            )
            self.reset()
        self.frame_hw = frame.image.shape[:2]
        shift = position_from(det)
        if shift is None:
            gray = gray_view(frame.image)
            if self.profile is None:
                self.profile = ProfileShift.of(gray)  # the first frame since setup began is the position reference
            shift = self.profile.shift(gray)
        self.width = self.frame_hw[1]
        return measure(frame.image, shift)

    def learn(self, h: FrameHealth) -> None:
        """Add a setup frame; the bands are made once there are ``setup_parts``."""
        self.setup.append(h)
        if len(self.setup) < self.cfg.setup_parts:
            return
        a = np.asarray([(x.sharpness, x.brightness, x.clipped, x.shift_x, x.shift_y) for x in self.setup], np.float64)
        self.set_stats({k: (float(a[:, i].mean()), float(a[:, i].std())) for i, k in enumerate(FIGURES)})
        self.setup = []
        log.info(
            "image health %s: bands learned from %d frames: %s",
            self.camera_id,
            self.cfg.setup_parts,
            {k: b.as_dict() for k, b in self.bands.items()},
        )

    def set_stats(self, stats: dict[str, tuple[float, float]]) -> None:
        """The bands from the setup (mean, std) of each figure and the tolerances of the config."""
        c = self.cfg
        self.stats = stats
        self.bands = {
            "sharpness": band(*stats["sharpness"], rel_low=c.sharpness_drop, rel_high=None, sigma=c.band_sigma),
            "brightness": band(
                *stats["brightness"], rel_low=c.brightness_change, rel_high=c.brightness_change, sigma=c.band_sigma
            ),
            "clipped": band(
                *stats["clipped"], rel_low=None, rel_high=None, abs_high=c.clipped_rise, sigma=c.band_sigma
            ),
            "shift_x": band(*stats["shift_x"], rel_low=None, rel_high=None, sigma=0),
            "shift_y": band(*stats["shift_y"], rel_low=None, rel_high=None, sigma=0),
        }
        spread = math.hypot(stats["shift_x"][1], stats["shift_y"][1])
        self.shift_limit = max(c.shift_frac * self.width, c.band_sigma * spread)

    def export(self) -> dict[str, Any] | None:
        """What was learned, JSON-able (None while learning)."""
        if not self.bands:
            return None
        p = self.profile
        return {
            "stats": self.stats,
            "frame_hw": list(self.frame_hw),
            "profile": None if p is None else {"x": p.ref_x.tolist(), "y": p.ref_y.tolist(), "scale": p.scale},
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Take up what an earlier run learned (:meth:`export`)."""
        self.frame_hw = tuple(int(v) for v in data["frame_hw"])
        self.width = self.frame_hw[1]
        p = data.get("profile")
        self.profile = (
            None
            if p is None
            else ProfileShift(np.asarray(p["x"], np.float32), np.asarray(p["y"], np.float32), p["scale"])
        )
        self.set_stats({k: (float(v[0]), float(v[1])) for k, v in data["stats"].items()})

    def outside(self, h: FrameHealth) -> dict[str, bool]:
        """Which checks ``h`` fails (bands learned)."""
        b = self.bands
        return {
            "sharpness": b["sharpness"].outside(h.sharpness),
            "brightness": b["brightness"].outside(h.brightness),
            "clipped": b["clipped"].outside(h.clipped),
            "position": _shift_len(h, b["shift_x"], b["shift_y"]) > self.shift_limit,
        }

    def message(self, check: str, h: FrameHealth) -> str:
        """The plain-words alarm of ``check`` failed by ``h``."""
        b, cam = self.bands, f"camera {self.camera_id}"
        if check == "sharpness":
            pct = 100 * (1 - h.sharpness / b["sharpness"].mean) if b["sharpness"].mean > 0 else 100.0
            return f"{cam}: image {pct:.0f} % less sharp than at setup: lens dirty or focus moved"
        if check == "brightness":
            m = b["brightness"].mean
            pct = 100 * abs(h.brightness / m - 1) if m > 0 else 100.0
            if h.brightness < m:
                return (
                    f"{cam}: image {pct:.0f} % darker than at setup: light ageing or failing, or exposure or "
                    "aperture changed"
                )
            return f"{cam}: image {pct:.0f} % brighter than at setup: exposure, gain or ambient light changed"
        if check == "clipped":
            return (
                f"{cam}: {100 * h.clipped:.1f} % of pixels clipped ({100 * b['clipped'].mean:.1f} % at setup): "
                "over- or under-exposed, check exposure, gain and light"
            )
        dx, dy = h.shift_x - b["shift_x"].mean, h.shift_y - b["shift_y"].mean
        return (
            f"{cam}: part {math.hypot(dx, dy):.0f} px from its setup position ({dx:+.0f} px x, {dy:+.0f} px y): "
            "camera knocked or part guide moved"
        )


class HealthMonitor:
    """Every camera's image health and the running model's drift, fed once per part by the inference worker."""

    def __init__(self, cfg: HealthConfig, report: Report, events_kept: int = 200):
        self.cfg = cfg
        self._report = report
        self.cameras: dict[str, CameraHealth] = {}
        self.model: ModelDrift | None = None
        self.events: deque[HealthEvent] = deque(maxlen=events_kept)
        self._relearn = False
        self._uncertain: str | None = None  # the first active image alarm's message, when uncertain_on_drift
        self._saved_models: dict[str, dict[str, Any]] = {}  # model baselines of earlier runs, by model id
        self.relearned = False  # the image bands were relearned since start-up (the saved ones are stale)

    def restore(self, rows: list[tuple[str, str, dict[str, Any]]]) -> None:
        """Take up what earlier runs learned (``station.store.health_baselines.load``), before the first part."""
        for kind, key, data in rows:
            if kind == "camera":
                cam = CameraHealth(key, self.cfg)
                try:
                    cam.restore(data)
                except (
                    KeyError,
                    TypeError,
                    ValueError,
                    IndexError,
                ) as exc:  # a row this version cannot read: learn again
                    log.warning("image health %s: saved bands unreadable (%r): learning them again", key, exc)
                    continue
                self.cameras[key] = cam
            elif kind == "model":
                self._saved_models[key] = data
        if rows:
            log.info(
                "image health: bands of %s and baselines of %d model(s) taken up from the last run",
                sorted(self.cameras) or "no camera",
                len(self._saved_models),
            )

    def export(self) -> list[tuple[str, str, dict[str, Any]]]:
        """What is learned now, as (kind, key, data) rows to save (at a clean stop)."""
        rows: list[tuple[str, str, dict[str, Any]]] = []
        for cam_id, cam in list(self.cameras.items()):
            data = cam.export()
            if data is not None:
                rows.append(("camera", cam_id, data))
        m = self.model
        if m is not None and (data := m.export()) is not None:
            rows.append(("model", m.model_id, data))
        return rows

    @property
    def uncertain_reason(self) -> str | None:
        """Why the next parts may not PASS (a drift alarm, image or model, is active and ``uncertain_on_drift``), else
        None."""
        return self._uncertain

    def relearn(self) -> None:
        """Learn the image bands again from the next frames (after a deliberate change: new lens, new light)."""
        self._relearn = True

    def observe(self, part_id: int, frames: Sequence[Frame], detections: Sequence[Detections]) -> None:
        """Measure one part's frames and update bands, windows and alarms (the inference worker, after the verdict)."""
        if self._relearn:
            self._relearn = False
            self.relearned = True
            for cam in self.cameras.values():
                cam.reset()
                for check in IMAGE_CHECKS:
                    self._drop(
                        part_id, cam.component(check), cam.streaks[check], "bands relearned from the next frames"
                    )
        for i, frame in enumerate(frames):
            det = detections[i] if i < len(detections) else None
            self._observe_frame(part_id, frame, det)
            if det is not None:
                self._observe_model(part_id, det)
        if self.cfg.uncertain_on_drift:
            active = [
                f"image health: {cam.messages[c]}"
                for cam in self.cameras.values()
                for c in IMAGE_CHECKS
                if cam.streaks[c].active
            ]
            if self.model is not None:
                active += [
                    f"model drift: {self.model.messages[c]}" for c in MODEL_CHECKS if self.model.streaks[c].active
                ]
            self._uncertain = active[0] if active else None

    def _observe_frame(self, part_id: int, frame: Frame, det: Detections | None) -> None:
        cam = self.cameras.get(frame.camera_id)
        if cam is None:
            cam = self.cameras[frame.camera_id] = CameraHealth(frame.camera_id, self.cfg)
        h = cam.measure(frame, det)
        cam.trend.append((part_id, h))
        if det is None:
            # a part not inspected (reference still learning, inspector error): on the trend, but no basis for a band
            return
        if not cam.bands:
            cam.learn(h)
            return
        for check, out in cam.outside(h).items():
            streak = cam.streaks[check]
            change = streak.update(out)
            if change == "raise":
                cam.messages[check] = cam.message(check, h)
                self._set(part_id, cam.component(check), cam.messages[check], "")
            elif change == "clear":
                self._set(part_id, cam.component(check), None, "back within the setup band")

    def _observe_model(self, part_id: int, det: Detections) -> None:
        if self.model is None or self.model.model_id != det.model_id:
            old, self.model = self.model, ModelDrift(det.model_id, self.cfg)
            saved = self._saved_models.pop(det.model_id, None)
            if saved is not None:
                try:
                    self.model.restore(saved)
                except (
                    KeyError,
                    TypeError,
                    ValueError,
                ) as exc:  # a row this version cannot read: take the baseline again
                    log.warning("model %s: saved baseline unreadable (%r): taking it again", det.model_id, exc)
                    self.model = ModelDrift(det.model_id, self.cfg)
            if old is not None:
                for check in MODEL_CHECKS:
                    self._drop(part_id, old.component(check), old.streaks[check], f"model replaced by {det.model_id}")
        m = self.model
        out = m.add(det)
        if out is None:
            return
        for check, bad in out.items():
            change = m.streaks[check].update(bad)
            if change == "raise":
                m.messages[check] = m.message(check)
                self._set(part_id, m.component(check), m.messages[check], "")
            elif change == "clear":
                self._set(part_id, m.component(check), None, "back within the baseline")

    def _set(self, part_id: int, component: str, alarm: str | None, ok_message: str) -> None:
        """Raise ``alarm`` on ``component``, or clear it with ``ok_message`` (reported to the alarm board)."""
        state, message = ("ok", ok_message) if alarm is None else ("alarm", alarm)
        self.events.append(HealthEvent(part_id, component, state, message))
        self._report(component, state, message)

    def _drop(self, part_id: int, component: str, streak: Streak, why: str) -> None:
        """Forget a streak (relearn, model replaced); clears its alarm if it was active."""
        was = streak.active
        streak.active, streak.out, streak.back = False, 0, 0
        if was:
            self._set(part_id, component, None, why)

    # -- readers (web, /metrics): copies, no lock ------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Bands, alarm states, latest figures and trends of every camera, and the model's drift figures."""
        cams: dict[str, Any] = {}
        for cam_id, cam in list(self.cameras.items()):
            trend = cam.trend.copy()
            bands = dict(cam.bands)
            cams[cam_id] = {
                "learning": not bands,
                "setup_frames": len(cam.setup),
                "setup_parts": self.cfg.setup_parts,
                "bands": {k: b.as_dict() for k, b in bands.items()},
                "shift_limit_px": cam.shift_limit,
                "alarms": {c: cam.messages.get(c) for c in IMAGE_CHECKS if cam.streaks[c].active},
                "last": None if not trend else _health_dict(trend[-1][1]),
                "trend": {
                    "part_id": [p for p, _ in trend],
                    "sharpness": [round(h.sharpness, 5) for _, h in trend],
                    "brightness": [round(h.brightness, 2) for _, h in trend],
                    "clipped": [round(h.clipped, 5) for _, h in trend],
                    "shift_px": [round(math.hypot(h.shift_x, h.shift_y), 2) for _, h in trend],
                },
            }
        m = self.model
        model = None
        if m is not None:
            model = {
                "model_id": m.model_id,
                "baseline_frames": len(m.base_scores),
                "baseline_parts": self.cfg.model_baseline_parts,
                "ready": m.ready,
                "window_frames": len(m.scores),
                "ks": m.ks,
                "baseline_median_score": float(np.median(m.base_sorted)) if m.ready else None,
                "window_median_score": float(np.median(m.scores.copy())) if len(m.scores) else None,
                "baseline_detections_per_frame": m.base_mean_count if m.ready else None,
                "window_detections_per_frame": m.mean_count if len(m.counts) else None,
                "alarms": {c: m.messages.get(c) for c in MODEL_CHECKS if m.streaks[c].active},
            }
        return {"enabled": True, "uncertain_on_drift": self.cfg.uncertain_on_drift, "cameras": cams, "model": model}


def _health_dict(h: FrameHealth) -> dict[str, float]:
    return {
        "sharpness": h.sharpness,
        "brightness": h.brightness,
        "clipped": h.clipped,
        "shift_x": h.shift_x,
        "shift_y": h.shift_y,
    }
