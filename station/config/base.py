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
ReconnectMinS = Annotated[float, Field(gt=0, le=60, description="First wait before reconnecting after a failure.")]
"""Seconds before the first reconnect attempt after a connection failed; the wait doubles after each failure."""
ReconnectMaxS = Annotated[
    float, Field(gt=0, le=600, description="Longest wait between reconnect attempts (the wait doubles up to this).")
]
"""The cap of the doubling reconnect wait, seconds."""
