"""Image health and model drift (station/health/): bands learned at setup, alarms, UNCERTAIN while drifting."""

from __future__ import annotations

from pydantic import Field

from .base import StrictModel


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
    setup_parts: int = Field(
        20,
        ge=3,
        le=10000,
        description="Frames per camera the bands are learned from, at start-up (or after POST /api/health/relearn).",
    )
    alarm_after_parts: int = Field(
        5, ge=1, le=10000, description="Consecutive frames outside a band that raise its drift alarm."
    )
    clear_after_parts: int = Field(
        2, ge=1, le=10000, description="Consecutive frames back inside the band that clear the alarm."
    )
    band_sigma: float = Field(
        4.0,
        ge=0,
        le=100,
        description="The band is at least this many standard deviations (of the setup frames) wide on each side.",
    )
    sharpness_drop: float = Field(
        0.3,
        gt=0,
        lt=1,
        description="Alarm when the image is this much less sharp than at setup (0.3 = 30 % less): lens dirty or focus "
        "moved.",
    )
    brightness_change: float = Field(
        0.25,
        gt=0,
        lt=1,
        description="Alarm when the mean grey level is this much darker or brighter than at setup (0.25 = 25 %).",
    )
    clipped_rise: float = Field(
        0.02,
        gt=0,
        le=1,
        description="Alarm when the share of clipped (black or white) pixels rises this much above setup (0.02 = 2 "
        "points).",
    )
    shift_frac: float = Field(
        0.03,
        gt=0,
        le=1,
        description="Alarm when the part sits this far from its setup position, as a fraction of the frame width.",
    )
    model_baseline_parts: int = Field(
        50,
        ge=3,
        le=10000,
        description="Frames a model's score and detection-count baseline is taken from, at start-up and after each "
        "model swap (promotion).",
    )
    model_window_parts: int = Field(
        50, ge=3, le=10000, description="Sliding window of recent frames compared with the model's baseline."
    )
    score_ks_limit: float = Field(
        0.5,
        gt=0,
        le=1,
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
