"""An in-memory GPIO chip with the small subset of the libgpiod v2 Python API the station uses.

Selected with ``backend: fake`` in a ``gpiod`` output config: for tests and
demos on machines without GPIO (this one, CI). It is registered as a backend
of :data:`station.actuate.gpiod_output.GPIO_APIS`, so the driver code that
runs on a Jetson is the code under test; only the chip underneath differs.

Implemented: ``request_lines(path, config, consumer)``, ``Chip(path)`` with
``line_offset_from_id`` and ``close``, ``LineSettings``, ``line.Direction``,
``line.Value``, and on the request ``set_value``, ``get_value``, ``release``.
Errors mimic the real ones: unknown chip -> FileNotFoundError, unknown line
name -> OSError(ENOENT), offset out of range -> ValueError, line already
requested -> OSError(EBUSY).
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from types import SimpleNamespace


class Direction(Enum):
    """gpiod.line.Direction."""

    AS_IS = 1
    INPUT = 2
    OUTPUT = 3


class Value(Enum):
    """gpiod.line.Value."""

    INACTIVE = 0
    ACTIVE = 1


@dataclass
class LineSettings:
    """gpiod.LineSettings (the fields the station sets)."""

    direction: Direction = Direction.AS_IS
    active_low: bool = False
    output_value: Value = Value.INACTIVE


@dataclass(frozen=True, slots=True)
class PinEdge:
    """One change of the *physical* pin level (after active_low)."""

    offset: int
    level: int
    t_ns: int


@dataclass
class FakeChipState:
    """What a test can inspect: physical levels, edges, who holds which line."""

    path: str
    num_lines: int
    names: dict[str, int]
    levels: dict[int, int] = field(default_factory=dict)
    consumers: dict[int, str] = field(default_factory=dict)
    edges: list[PinEdge] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def level(self, offset: int) -> int:
        """Physical level of a line (0 when never driven)."""
        with self.lock:
            return self.levels.get(offset, 0)

    def edges_of(self, offset: int) -> list[PinEdge]:
        """Recorded level changes of one line."""
        with self.lock:
            return [e for e in self.edges if e.offset == offset]


class FakeLineRequest:
    """gpiod.LineRequest for output lines."""

    def __init__(self, chip: FakeChipState, settings: dict[int, LineSettings]):
        self._chip = chip
        self._settings = settings
        self._released = False
        for off, s in settings.items():
            self._drive(off, s.output_value)

    @property
    def offsets(self) -> list[int]:
        """Requested offsets."""
        return list(self._settings)

    def set_value(self, offset: int, value: Value) -> None:
        """Drive one requested output line (logical value)."""
        if self._released:
            raise RuntimeError("GPIO request has been released")
        s = self._settings.get(offset)
        if s is None:
            raise ValueError(f"line {offset} is not part of this request")
        if s.direction is not Direction.OUTPUT:
            raise PermissionError(errno.EPERM, "line is not an output")
        self._drive(offset, value)

    def get_value(self, offset: int) -> Value:
        """Logical value of a requested line."""
        level = self._chip.level(offset)
        active = level == 1 if not self._settings[offset].active_low else level == 0
        return Value.ACTIVE if active else Value.INACTIVE

    def release(self) -> None:
        """Give the lines back (they keep their last level, as on real hardware)."""
        if self._released:
            return
        self._released = True
        with self._chip.lock:
            for off in self._settings:
                self._chip.consumers.pop(off, None)

    def _drive(self, offset: int, value: Value) -> None:
        active = value is Value.ACTIVE
        level = int(active != self._settings[offset].active_low)
        t = time.monotonic_ns()
        with self._chip.lock:
            if self._chip.levels.get(offset) != level:
                self._chip.levels[offset] = level
                self._chip.edges.append(PinEdge(offset, level, t))


class FakeChip:
    """gpiod.Chip: name lookup only."""

    def __init__(self, state: FakeChipState):
        self._state = state

    def line_offset_from_id(self, id: str | int) -> int:
        """Offset of a line given its name or offset."""
        if isinstance(id, int):
            if not 0 <= id < self._state.num_lines:
                raise ValueError(f"line offset {id} out of range (chip has {self._state.num_lines} lines)")
            return id
        if id in self._state.names:
            return self._state.names[id]
        try:
            return self.line_offset_from_id(int(id))
        except ValueError:
            raise OSError(errno.ENOENT, f"no line named {id!r}") from None

    def close(self) -> None:
        """Nothing to close."""

    def __enter__(self) -> FakeChip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_LineSettings = LineSettings  # for annotations inside FakeGpiod, where the name is its gpiod-mirroring attribute


class FakeGpiod:
    """A stand-in for the ``gpiod`` module; chips are shared by path across instances."""

    chips: dict[str, FakeChipState] = {}
    _chips_lock = threading.Lock()
    LineSettings = LineSettings
    line = SimpleNamespace(Direction=Direction, Value=Value)

    @classmethod
    def add_chip(cls, path: str, num_lines: int = 64, names: dict[str, int] | None = None) -> FakeChipState:
        """Create (or replace) a fake chip at ``path`` with optional line names."""
        state = FakeChipState(path, num_lines, dict(names or {}))
        with cls._chips_lock:
            cls.chips[path] = state
        return state

    def _state(self, path: str) -> FakeChipState:
        with self._chips_lock:
            state = self.chips.get(path)
        if state is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        return state

    def Chip(self, path: str) -> FakeChip:  # noqa: N802 - mirrors gpiod.Chip
        """Open a chip by path."""
        return FakeChip(self._state(path))

    def request_lines(
        self,
        path: str,
        config: dict[Iterable[int | str] | int | str, _LineSettings | None],
        consumer: str | None = None,
    ) -> FakeLineRequest:
        """Request lines; keys are offsets, names, or tuples of them."""
        state = self._state(path)
        chip = FakeChip(state)
        settings: dict[int, LineSettings] = {}
        for key, s in config.items():
            keys = key if isinstance(key, (tuple, list, frozenset, set)) else (key,)
            for k in keys:
                settings[chip.line_offset_from_id(k)] = s or LineSettings()
        with state.lock:
            busy = [o for o in settings if o in state.consumers]
            if busy:
                raise OSError(errno.EBUSY, f"lines {busy} already requested by {[state.consumers[o] for o in busy]}")
            for o in settings:
                state.consumers[o] = consumer or "?"
        return FakeLineRequest(state, settings)
