"""The base of every config model: strict, frozen, documented."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    """A config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=False)


def repeated(values: Sequence[str]) -> list[str]:
    """The values listed more than once, sorted: what a "must be unique" check names in its error."""
    return sorted({v for v in values if values.count(v) > 1})


# Quantities several sections share: the bounds (and the meaning) are declared here once; each field picks its default
# (``port: TcpPort = Field(502, description=...)``, ``reconnect_min_s: ReconnectMinS = 0.5``).
TcpPort = Annotated[int, Field(ge=1, le=65535)]
"""A TCP port to connect to."""
ListenPort = Annotated[int, Field(ge=0, le=65535)]
"""A TCP port to listen on; 0 picks a free one."""

# Durations and counts: positive, the unit and the upper bound in the name (``MsUpTo1s``: milliseconds, above 0, at
# most a second; ``CountUpTo1k``: 1 to 1,000); a field says what it is in its own description and leaves the bounds to
# its type (``poll_ms: MsUpTo1s = Field(2.0, description=...)``).
SecondsUpTo1min = Annotated[float, Field(gt=0, le=60)]
SecondsUpTo1day = Annotated[float, Field(gt=0, le=86400)]
MsUpTo1s = Annotated[float, Field(gt=0, le=1000)]
MsUpTo10s = Annotated[float, Field(gt=0, le=10000)]
MsUpTo1min = Annotated[float, Field(gt=0, le=60000)]
MsUpTo10min = Annotated[float, Field(gt=0, le=600000)]
CountUpTo1k = Annotated[int, Field(ge=1, le=1000)]
CountUpTo10k = Annotated[int, Field(ge=1, le=10000)]

ReconnectMinS = Annotated[SecondsUpTo1min, Field(description="First wait before reconnecting after a failure.")]
"""Seconds before the first reconnect attempt after a connection failed; the wait doubles after each failure."""
ReconnectMaxS = Annotated[
    float, Field(gt=0, le=600, description="Longest wait between reconnect attempts (the wait doubles up to this).")
]
"""The cap of the doubling reconnect wait, seconds."""

Share = Annotated[float, Field(ge=0.0, le=1.0)]
"""A share or a rate: 0..1."""
OverlapRatio = Annotated[float, Field(gt=0.0, le=1.0)]
"""How much two boxes (or a box and a zone) overlap, as a fraction: above 0, at most 1."""
SmallPx = Annotated[int, Field(ge=0, le=200)]
"""A small distance in (full-resolution) pixels: a jitter, a margin, a merge distance."""
JpegQuality = Annotated[int, Field(ge=10, le=100)]
"""JPEG quality (higher = sharper and larger)."""
Threads = Annotated[int, Field(ge=0, le=256)]
"""Threads of a runtime; 0 = one per core."""
