"""Output lines on Linux GPIO through the libgpiod v2 Python bindings (Jetson, Raspberry Pi, IPCs).

The GPIO API itself is chosen by ``backend`` from :data:`GPIO_APIS`:
``libgpiod`` is the real ``gpiod`` package (``pip install gpiod``, v2), ``fake``
an in-memory chip (:mod:`station.actuate.gpio_fake`) for machines without GPIO.
Both are used through the same calls, so what the tests exercise is what
runs on the device. See docs/gpio.md for trying it on hardware.
"""

from __future__ import annotations

import errno
import importlib
import logging
import threading
from types import SimpleNamespace
from typing import Any

from ..config import GpiodOutputConfig
from ..drivers import Registry
from .base import OutputError, unmapped_line

log = logging.getLogger(__name__)


def libgpiod_api() -> SimpleNamespace:
    """The real libgpiod v2 bindings, as the namespace the driver uses."""
    try:
        gpiod = importlib.import_module("gpiod")
        line = importlib.import_module("gpiod.line")
    except ImportError:
        raise OutputError(
            "the gpiod output needs the libgpiod v2 bindings: pip install 'gpiod>=2.2' (see docs/gpio.md)"
        ) from None
    if not hasattr(gpiod, "request_lines"):
        raise OutputError(
            f"gpiod {getattr(gpiod, '__version__', '?')} is the v1 API; the station needs v2: pip install 'gpiod>=2.2' "
            "(see docs/gpio.md)"
        )
    return SimpleNamespace(
        Chip=gpiod.Chip, LineSettings=gpiod.LineSettings, line=line, request_lines=gpiod.request_lines
    )


GPIO_APIS: Registry[Any] = Registry(
    "gpio backend",
    {
        "libgpiod": "station.actuate.gpiod_output:libgpiod_api",
        "fake": "station.actuate.gpio_fake:FakeGpiod",
    },
)


class GpiodOutput:
    """Drives named output lines of one GPIO chip; ``set`` is one ioctl, well under 100 µs."""

    def __init__(self, cfg: GpiodOutputConfig):
        self.cfg = cfg
        self._api: Any = None
        self._request: Any = None
        self._offsets: dict[str, int] = {}
        self._lock = threading.Lock()
        self.writes = 0
        self.errors = 0

    @property
    def offsets(self) -> dict[str, int]:
        """Line name -> resolved chip offset (after open)."""
        return dict(self._offsets)

    def open(self) -> None:
        """Resolve line names, request every line as an output driven inactive."""
        self._api = GPIO_APIS.get(self.cfg.backend)()
        api = self._api
        try:
            chip = api.Chip(self.cfg.chip)
        except FileNotFoundError:
            raise OutputError(
                f"GPIO chip {self.cfg.chip} not found (reject.output.chip); list the chips with `gpiodetect`"
            ) from None
        except PermissionError:
            raise OutputError(
                f"no permission to open {self.cfg.chip}: add the station user to the 'gpio' group (see docs/gpio.md)"
            ) from None
        try:
            for name, spec in self.cfg.lines.items():
                try:
                    self._offsets[name] = chip.line_offset_from_id(spec)
                except (OSError, ValueError) as exc:
                    raise OutputError(
                        f"reject.output.lines.{name}: {spec!r} is not a line of {self.cfg.chip} ({exc}); see `gpioinfo "
                        f"{self.cfg.chip}`"
                    ) from None
        finally:
            chip.close()
        settings = api.LineSettings(
            direction=api.line.Direction.OUTPUT, output_value=api.line.Value.INACTIVE, active_low=self.cfg.active_low
        )
        try:
            self._request = api.request_lines(
                self.cfg.chip, config={tuple(self._offsets.values()): settings}, consumer=self.cfg.consumer
            )
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise OutputError(
                    f"GPIO lines {self._offsets} of {self.cfg.chip} are held by another program (`gpioinfo` shows the "
                    "consumer)"
                ) from None
            raise OutputError(f"cannot request GPIO lines {self._offsets} of {self.cfg.chip}: {exc}") from None
        log.info("gpiod output on %s: %s (active_low=%s)", self.cfg.chip, self._offsets, self.cfg.active_low)

    def set(self, line: str, value: bool) -> None:
        """Drive ``line`` active/inactive (active_low inverts the pin level)."""
        offset = self._offsets.get(line)
        if offset is None:
            raise unmapped_line(line, "lines", self._offsets)
        if self._request is None:
            raise OutputError("gpiod output is not open")
        v = self._api.line.Value.ACTIVE if value else self._api.line.Value.INACTIVE
        try:
            with self._lock:
                self._request.set_value(offset, v)
        except Exception as exc:  # noqa: BLE001 - the bindings raise OSError or their own errors; all mean the edge failed
            self.errors += 1
            raise OutputError(f"GPIO {self.cfg.chip}:{offset} ({line}) = {value} failed: {exc}") from None
        self.writes += 1

    def close(self) -> None:
        """Drive every line inactive and release them."""
        if self._request is None:
            return
        for line in self._offsets:
            try:
                self.set(line, False)
            except OutputError as exc:
                log.warning("could not release %s on close: %s", line, exc)
        self._request.release()
        self._request = None

    def health(self) -> dict[str, object]:
        """ok while the lines are held."""
        if self._request is None:
            return {"state": "alarm", "message": f"{self.cfg.chip}: lines not requested"}
        state = "ok" if self.errors == 0 else "warning"
        return {
            "state": state,
            "message": f"{self.cfg.chip} {self._offsets}: {self.writes} writes, {self.errors} errors",
        }
