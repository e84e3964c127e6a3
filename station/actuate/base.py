"""The output driver contract and its registry."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..config.actuate import OutputConfig
from ..drivers import Registry


@dataclass(frozen=True, slots=True)
class OutputEdge:
    """One change of an output line, as a driver that records its edges keeps it (host monotonic time of the write)."""

    line: str
    value: bool
    t_ns: int


class OutputError(RuntimeError):
    """An output could not be set (PLC gone, device error)."""


def unmapped_line(line: str, setting: str, mapped: Iterable[str]) -> OutputError:
    """The error for a line name the driver's config does not map, naming the ``reject.output`` key to add it under."""
    return OutputError(
        f"output line {line!r} is not mapped; add it under reject.output.{setting} (mapped: {sorted(mapped)})"
    )


@runtime_checkable
class OutputDriver(Protocol):
    """Digital outputs: the reject line, station-ready, heartbeat.

    ``set`` must be fast (it runs on the reject scheduler thread) and must
    never sleep; pulses are timed by the scheduler as two ``set`` calls.
    """

    def open(self) -> None:
        """Connect."""

    def set(self, line: str, value: bool) -> None:
        """Drive ``line`` high (True) or low (False)."""

    def close(self) -> None:
        """Drive every line low and disconnect."""

    def health(self) -> dict[str, object]:
        """``{"state": "ok"|"warning"|"alarm", "message": str}``."""


OUTPUTS: Registry[OutputDriver] = Registry.from_union("output", OutputConfig)
