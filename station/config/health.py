"""Image health and model drift (station/health/): bands learned at setup, alarms, UNCERTAIN while drifting."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from .base import StrictModel

# The bounds each kind of health setting shares, declared once; each field picks its default and says what it is.
Frames = Annotated[int, Field(ge=3, le=10000)]
"""How many frames a band, baseline or window is computed over."""
Streak = Annotated[int, Field(ge=1, le=10000)]
"""How many consecutive frames it takes to raise or clear an alarm."""
RelativeChange = Annotated[float, Field(gt=0, lt=1)]
"""A change relative to the setup value (0.3 = 30 %), short of all of it."""
Limit01 = Annotated[float, Field(gt=0, le=1)]
"""A positive limit on a quantity that lies in 0..1 (a share, a fraction of the frame, a distance between
distributions)."""


class HealthConfig(StrictModel):
    """Per-frame image health and per-model score drift, checked on every part off the decision path.

    Each band is learned from the first ``setup_parts`` frames of each camera (and, for a model, its
    first ``model_baseline_parts`` frames after start-up or a model swap): the setup mean, widened to
    the larger of the relative tolerance below and ``band_sigma`` times the spread seen at setup.
    """

    enabled: bool = Field(
        True,
        description="Measure every frame (about 0.5 ms at 1 MP, after the verdict is handed to the ejector) and raise "
        "drift alarms.",
    )
    setup_parts: Frames = Field(
        20,
        description="Frames per camera the bands are learned from, at start-up (or after POST /api/health/relearn).",
    )
    alarm_after_parts: Streak = Field(5, description="Consecutive frames outside a band that raise its drift alarm.")
    clear_after_parts: Streak = Field(2, description="Consecutive frames back inside the band that clear the alarm.")
    band_sigma: float = Field(
        4.0,
        ge=0,
        le=100,
        description="The band is at least this many standard deviations (of the setup frames) wide on each side.",
    )
    sharpness_drop: RelativeChange = Field(
        0.3,
        description="Alarm when the image is this much less sharp than at setup (0.3 = 30 % less): lens dirty or focus "
        "moved.",
    )
    brightness_change: RelativeChange = Field(
        0.25,
        description="Alarm when the mean grey level is this much darker or brighter than at setup (0.25 = 25 %).",
    )
    clipped_rise: Limit01 = Field(
        0.02,
        description="Alarm when the share of clipped (black or white) pixels rises this much above setup (0.02 = 2 "
        "points).",
    )
    shift_frac: Limit01 = Field(
        0.03,
        description="Alarm when the part sits this far from its setup position, as a fraction of the frame width.",
    )
    model_baseline_parts: Frames = Field(
        50,
        description="Frames a model's score and detection-count baseline is taken from, at start-up and after each "
        "model swap (promotion).",
    )
    model_window_parts: Frames = Field(
        50, description="Sliding window of recent frames compared with the model's baseline."
    )
    score_ks_limit: Limit01 = Field(
        0.5,
        description="Alarm when the Kolmogorov-Smirnov distance between the window's and the baseline's image scores "
        "exceeds this (0..1).",
    )
    count_change: float = Field(
        1.0,
        gt=0,
        le=1000,
        description="Alarm when the window's mean detections per frame differs from the baseline's by more than this.",
    )
    uncertain_on_drift: bool = Field(
        False,
        description="While a drift alarm is active (image or model), parts that would PASS are UNCERTAIN (a blurred "
        "image is no basis for a PASS).",
    )
    trend_points: int = Field(
        120, ge=10, le=5000, description="Recent frames kept per camera for the trend charts of the health panel."
    )
