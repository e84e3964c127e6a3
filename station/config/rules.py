"""Decision rules: how detections become one verdict."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .base import OverlapRatio, StrictModel, repeated

Confidence = Annotated[float, Field(ge=0.0, le=1.0)]
"""A detection confidence, or a threshold on one: 0..1."""


def check_band(uncertain_conf: float | None, reject_conf: float | None, where: str = "") -> None:
    """The UNCERTAIN band lies below the reject threshold (a None side is not set): ValueError, prefixed ``where``."""
    if uncertain_conf is not None and reject_conf is not None and uncertain_conf > reject_conf:
        raise ValueError(
            f"{where}uncertain_conf ({uncertain_conf}) must be <= reject_conf ({reject_conf}); "
            "set uncertain_conf = reject_conf to disable the uncertain band"
        )


class ClassRule(StrictModel):
    """Thresholds for one defect class."""

    reject_conf: Confidence = Field(0.5, description="Confidence at or above which the defect rejects the part.")
    uncertain_conf: Confidence = Field(
        0.3, description="Confidence at or above which (and below reject_conf) the part is UNCERTAIN."
    )
    min_area_mm2: float = Field(
        0.0, ge=0.0, description="Defects smaller than this (in mm^2, from calibration) are ignored."
    )
    max_count: int = Field(
        0, ge=0, description="Up to this many rejecting defects of the class are tolerated (0 = any one rejects)."
    )
    enabled: bool = Field(True, description="False: detections of this class never affect the verdict.")

    @model_validator(mode="after")
    def _band_is_ordered(self) -> ClassRule:
        check_band(self.uncertain_conf, self.reject_conf)
        return self


class IgnoreZone(StrictModel):
    """A rectangle (frame pixels) where detections are ignored, e.g. a fixture."""

    camera_id: str | None = Field(None, description="Camera the zone applies to (None = all cameras).")
    x1: float = Field(..., description="Left edge in frame pixels.")
    y1: float = Field(..., description="Top edge in frame pixels.")
    x2: float = Field(..., description="Right edge in frame pixels.")
    y2: float = Field(..., description="Bottom edge in frame pixels.")
    min_overlap: OverlapRatio = Field(
        0.5, description="Ignore a detection when this fraction of its box lies in the zone."
    )


class RulesConfig(StrictModel):
    """Per-class thresholds, ignore zones and what UNCERTAIN does."""

    default: ClassRule = Field(default_factory=ClassRule, description="Rule for classes not listed in `classes`.")
    classes: dict[str, ClassRule] = Field(default_factory=dict, description="Per-class rules by class name.")
    ignore_zones: list[IgnoreZone] = Field(default_factory=list, description="Regions where detections never count.")
    uncertain_action: Literal["reject", "pass"] = Field(
        "reject", description="What the ejector does with an UNCERTAIN part (it is queued for review either way)."
    )
    good_classes: list[str] = Field(
        default_factory=list,
        description="Classify models: the classes that mean a good part (e.g. ['functional']). Their probability is "
        "recorded and shown (action 'ignore', rule 'good class') but never rejects; every other class is a defect "
        "class judged by its rule (reject when P(class) >= reject_conf, UNCERTAIN from uncertain_conf). Required "
        "when the model's task is classify.",
    )

    @model_validator(mode="after")
    def _good_classes_unique(self) -> RulesConfig:
        dup = repeated(self.good_classes)
        if dup:
            raise ValueError(f"good_classes lists {dup} more than once; list each good class once")
        return self

    def for_class(self, name: str) -> ClassRule:
        """The rule that applies to class ``name``."""
        return self.classes.get(name, self.default)


def default_model_rules() -> RulesConfig:
    """The rules of the embedded default (``rules:`` left out of a config): the shipped default model's bands.

    Reject at 0.5 for every class, as :class:`ClassRule`; the UNCERTAIN band (ejected too, and queued
    for review) starts at 0.35 for scratches, 0.45 for spots and is closed for ``missing``. Chosen on a
    development golden set (600 unseen parts, seed 555: the bands on a 0.05 grid with no escape and the
    fewest false rejects) and checked on 1,000 other unseen parts (seed 99): models/README.md. Classes
    of another model fall back to ``default`` (0.5 / 0.3).
    """
    return RulesConfig(
        classes={
            "scratch": ClassRule(reject_conf=0.5, uncertain_conf=0.35),
            "spot": ClassRule(reject_conf=0.5, uncertain_conf=0.45),
            "missing": ClassRule(reject_conf=0.5, uncertain_conf=0.5),
        }
    )
