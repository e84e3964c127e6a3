"""The output driver contract and its registry."""

from __future__ import annotations

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
