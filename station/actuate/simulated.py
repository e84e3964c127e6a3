"""An output driver that records every edge with its host timestamp."""

from __future__ import annotations

import threading
import time
from collections import deque

from ..config import SimulatedOutputConfig
from .base import OutputEdge


class SimulatedOutput:
    """Keeps the last ``max_edges`` edges; the default reject output."""

    def __init__(self, cfg: SimulatedOutputConfig):
        self.cfg = cfg
        self._edges: deque[OutputEdge] = deque(maxlen=cfg.max_edges)
        self._state: dict[str, bool] = {}
        self._lock = threading.Lock()

    def open(self) -> None:
        """Nothing to connect."""

    def set(self, line: str, value: bool) -> None:
        """Record the edge (only real changes are edges)."""
        t = time.monotonic_ns()
        with self._lock:
            if self._state.get(line, False) == value:
                return
            self._state[line] = value
            self._edges.append(OutputEdge(line, value, t))

    def edges(self, line: str | None = None) -> list[OutputEdge]:
        """A copy of the recorded edges, optionally of one line."""
        with self._lock:
            return [e for e in self._edges if line is None or e.line == line]

    def close(self) -> None:
        """Drive every line low."""
        for line in list(self._state):
            self.set(line, False)

    def health(self) -> dict[str, object]:
        """Always ok."""
        return {"state": "ok", "message": f"{len(self._edges)} edges recorded"}
