"""The base of every config model: strict, frozen, documented."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=False)


def repeated(values: Sequence[str]) -> list[str]:
    """The values listed more than once, sorted: what a "must be unique" check names in its error."""
    return sorted({v for v in values if values.count(v) > 1})
