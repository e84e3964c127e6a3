"""A model's drift: its image scores and detection counts over a sliding window against a baseline taken at
promotion."""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import Any

import numpy as np

from ..config.health import HealthConfig
from ..contracts import Detections
from .bands import Streak, ks_distance

log = logging.getLogger(__name__)

MODEL_CHECKS = ("scores", "detections")


class ModelDrift:
    """One model's baseline of image scores and detection counts, and the sliding window compared with it."""

    def __init__(self, model_id: str, cfg: HealthConfig):
        self.model_id = model_id
        self.cfg = cfg
        self.base_scores: list[float] = []
        self.base_counts: list[int] = []
        self.base_sorted = np.zeros(0)
        self.base_mean_count = 0.0
        self.scores: deque[float] = deque(maxlen=cfg.model_window_parts)
        self.counts: deque[int] = deque(maxlen=cfg.model_window_parts)
        self.streaks = {c: Streak(cfg.alarm_after_parts, cfg.clear_after_parts) for c in MODEL_CHECKS}
        self.ks = 0.0
        self.messages: dict[str, str] = {}

    @property
    def ready(self) -> bool:
        """True once the baseline is taken."""
        return self.base_sorted.size > 0

    def export(self) -> dict[str, Any] | None:
        """The baseline, JSON-able (None until taken)."""
        return {"scores": self.base_sorted.tolist(), "mean_count": self.base_mean_count} if self.ready else None

    def restore(self, data: dict[str, Any]) -> None:
        """Take up the baseline an earlier run took of this model (:meth:`export`)."""
        self.base_sorted = np.sort(np.asarray(data["scores"], np.float64))
        self.base_scores = self.base_sorted.tolist()
        self.base_mean_count = float(data["mean_count"])

    def component(self, check: str) -> str:
        """The alarm board component of one check."""
        return f"drift:{self.model_id}:{check}"

    def add(self, det: Detections) -> dict[str, bool] | None:
        """Count one frame's detections; which checks fail once the baseline is taken and the window full, else None."""
        score = det.image_score if det.image_score is not None else (float(det.scores.max()) if len(det) else 0.0)
        if not self.ready:
            self.base_scores.append(float(score))
            self.base_counts.append(len(det))
            if len(self.base_scores) >= self.cfg.model_baseline_parts:
                self.base_sorted = np.sort(np.asarray(self.base_scores))
                self.base_mean_count = float(np.mean(self.base_counts))
                log.info(
                    "model %s: score baseline taken from %d frames (median %.3f, %.2f detections per frame)",
                    self.model_id,
                    len(self.base_scores),
                    float(np.median(self.base_sorted)),
                    self.base_mean_count,
                )
            return None
        self.scores.append(float(score))
        self.counts.append(len(det))
        if len(self.scores) < self.cfg.model_window_parts:
            return None
        self.ks = ks_distance(self.base_sorted, np.asarray(self.scores))
        return {
            "scores": self.ks > self.cfg.score_ks_limit,
            "detections": abs(self.mean_count - self.base_mean_count) > self.cfg.count_change,
        }

    @property
    def mean_count(self) -> float:
        """Mean detections per frame over the window."""
        c = self.counts.copy()
        return float(np.mean(c)) if c else math.nan

    def message(self, check: str) -> str:
        """The plain-words alarm of ``check``."""
        m = f"model {self.model_id}"
        if check == "scores":
            return (
                f"{m}: image scores drifted from the baseline taken at promotion (median "
                f"{np.median(self.base_sorted):.2f} -> "
                f"{np.median(self.scores.copy()):.2f}, KS distance {self.ks:.2f}): the parts or the picture changed"
            )
        return (
            f"{m}: {self.mean_count:.1f} detections per frame over the last {len(self.counts)} frames, "
            f"{self.base_mean_count:.1f} at promotion: the parts or the picture changed"
        )
