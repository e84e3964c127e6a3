"""Reject output and timing configuration."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from .base import StrictModel


class SimulatedOutputConfig(StrictModel):
    """Records every edge with its timestamp in memory: the default output."""

    type: Literal["simulated"] = Field("simulated", description="Driver: in-memory edge recorder.")
    max_edges: int = Field(100000, ge=10, description="Edges kept in memory (oldest dropped first).")


OutputConfig = Annotated[Union[SimulatedOutputConfig], Field(discriminator="type")]


class RejectConfig(StrictModel):
    """When and how the ejector fires."""

    mode: Literal["time"] = Field("time", description="time: fire at trigger time + travel_ms (constant belt speed).")
    travel_ms: float = Field(1000.0, gt=0, le=600000, description="Time for a part to travel from the camera to the ejector.")
    safety_margin_ms: float = Field(
        100.0, ge=0, description="The decision deadline is travel_ms - safety_margin_ms; a later verdict is FAILSAFE."
    )
    pulse_ms: float = Field(50.0, gt=0, le=10000, description="Width of the reject pulse.")
    line: str = Field("reject", description="Name of the output line that drives the ejector.")
    output: OutputConfig = Field(default_factory=SimulatedOutputConfig, description="The output driver.")

    @model_validator(mode="after")
    def _deadline_positive(self) -> "RejectConfig":
        if self.safety_margin_ms >= self.travel_ms:
            raise ValueError(
                f"safety_margin_ms ({self.safety_margin_ms}) must be smaller than travel_ms ({self.travel_ms}): "
                "no time would be left to decide"
            )
        return self

    @property
    def deadline_ms(self) -> float:
        """Time after the trigger by which a verdict must exist."""
        return self.travel_ms - self.safety_margin_ms
