"""Which reject scheduler a ``reject.mode`` gets, and output wrapping (verification, alarms)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from ..alarms import ReportFn
from ..config import RejectConfig
from ..contracts import PartResult
from .base import OutputDriver
from .scheduler import RejectScheduler


class PlcRejectScheduler(RejectScheduler):
    """``reject.mode: plc``: deadlines and FAILSAFE verdicts as usual, but no pulse.

    The PLC receives part id + result through the handshake
    (:mod:`station.plc.handshake`) and times the reject itself.
    """

    def _schedule_reject(self, result: PartResult) -> PartResult:
        return result


def scheduler_factory(cfg: RejectConfig, report: ReportFn | None = None) -> Callable[..., RejectScheduler]:
    """The scheduler class for ``cfg.mode``, called like :class:`RejectScheduler`."""
    if cfg.mode == "encoder":
        from .encoder import EncoderRejectScheduler

        return functools.partial(EncoderRejectScheduler, report=report)
    if cfg.mode == "plc":
        return PlcRejectScheduler
    return RejectScheduler


def prepare_output(cfg: RejectConfig, output: OutputDriver, report: ReportFn | None = None) -> OutputDriver:
    """Bind alarms to a network output and wrap it with reject verification when ``cfg.verify`` is set."""
    bind: Any = getattr(output, "bind_alarms", None)
    if report is not None and callable(bind):
        bind(report)
    if cfg.verify is None:
        return output
    from .verify import VerifiedOutput

    return VerifiedOutput(output, cfg.verify, cfg.line, report)
