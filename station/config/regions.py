"""Regions drawn on a camera's reference image: the inspection ROI, ignore zones and named regions with rules.

Stored versioned per camera in the database (``station/store/camera_setup.py``, kind ``regions``),
drawn on the admin page, applied by ``station/decide.py`` to every backend's detections. A
detection is placed by the centre of its box (a blob's box for anomaly and reference inspectors).
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from .base import StrictModel, repeated
from .rules import Confidence, check_band

Point = tuple[float, float]


def _check_polygon(points: list[Point], what: str) -> list[Point]:
    if len(points) < 3:
        raise ValueError(f"{what}: a polygon needs at least 3 points, got {len(points)}")
    area2 = sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(points, points[1:] + points[:1]))
    if abs(area2) < 2.0:
        raise ValueError(f"{what}: the polygon has no area (its points lie on a line); draw it again")
    return points


class Zone(StrictModel):
    """An ignore zone: a polygon in reference-image pixels where detections never count."""

    name: str = Field("", max_length=40, description="Optional label shown on the screens (e.g. 'fixture').")
    points: list[Point] = Field(..., max_length=200, description="Polygon vertices [x, y] in frame pixels (3 to 200).")

    @field_validator("points")
    @classmethod
    def _poly(cls, v: list[Point]) -> list[Point]:
        return _check_polygon(v, "zone")


class NamedRegion(StrictModel):
    """A region with its own thresholds and minimum defect size (e.g. a strict sealing face, a lenient cosmetic
    face)."""

    name: str = Field(
        ...,
        min_length=1,
        max_length=40,
        pattern=r"^[\w .-]+$",
        description="Region name, shown in the reasons of verdicts.",
    )
    points: list[Point] = Field(..., max_length=200, description="Polygon vertices [x, y] in frame pixels (3 to 200).")
    reject_conf: Confidence | None = Field(
        None, description="Reject at or above this confidence inside the region (None: the class rule's)."
    )
    uncertain_conf: Confidence | None = Field(
        None, description="UNCERTAIN at or above this confidence inside the region (None: the class rule's)."
    )
    min_area_mm2: float | None = Field(
        None,
        ge=0.0,
        description="Defects smaller than this (mm^2) are ignored inside the region (None: the class rule's).",
    )

    @field_validator("points")
    @classmethod
    def _poly(cls, v: list[Point]) -> list[Point]:
        return _check_polygon(v, "region")

    @model_validator(mode="after")
    def _band(self) -> NamedRegion:
        check_band(self.uncertain_conf, self.reject_conf, f"region {self.name}: ")
        return self


class CameraRegions(StrictModel):
    """Everything drawn on one camera's reference image."""

    image_size: tuple[int, int] | None = Field(
        None, description="[width, height] of the reference image the polygons were drawn on."
    )
    roi: list[Point] | None = Field(
        None,
        max_length=200,
        description="Inspection ROI polygon; detections outside it never count (None: the whole frame).",
    )
    ignore: list[Zone] = Field(default_factory=list, max_length=50, description="Ignore zones.")
    regions: list[NamedRegion] = Field(
        default_factory=list,
        max_length=50,
        description="Named regions; the first that holds a detection's centre gives its rule.",
    )

    @field_validator("roi")
    @classmethod
    def _roi(cls, v: list[Point] | None) -> list[Point] | None:
        return None if v is None else _check_polygon(v, "roi")

    @model_validator(mode="after")
    def _inside_and_unique(self) -> CameraRegions:
        dup = repeated([r.name for r in self.regions])
        if dup:
            raise ValueError(f"region names must be unique; repeated: {', '.join(dup)}")
        if self.image_size is not None:
            w, h = self.image_size
            polys = (
                [("roi", self.roi or [])]
                + [(f"zone {i + 1}", z.points) for i, z in enumerate(self.ignore)]
                + [(f"region {r.name}", r.points) for r in self.regions]
            )
            for what, pts in polys:
                bad = [p for p in pts if not (-1 <= p[0] <= w + 1 and -1 <= p[1] <= h + 1)]
                if bad:
                    raise ValueError(f"{what}: point {list(bad[0])} lies outside the {w}x{h} reference image")
        return self
