"""Driver registries: a driver is chosen by the ``type`` field of its config.

Built-in drivers are named as ``"module:Class"`` strings and imported only
when used, so a station without a Basler camera never imports pypylon.
Tests and plug-ins add drivers with :meth:`Registry.register`.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, Callable, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class UnknownDriverError(LookupError):
    """No driver is registered for a config ``type``."""


class Registry(Generic[T]):
    """Maps a config ``type`` to the class (or factory) that implements it."""

    def __init__(self, kind: str, builtins: dict[str, str]):
        self.kind = kind
        self._paths = dict(builtins)
        self._loaded: dict[str, Callable[..., T]] = {}

    def register(self, type_name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: register a class or factory under ``type_name``."""

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            self._loaded[type_name] = factory
            return factory

        return deco

    def types(self) -> list[str]:
        """All registered type names."""
        return sorted(set(self._paths) | set(self._loaded))

    def get(self, type_name: str) -> Callable[..., T]:
        """The factory for ``type_name``, importing it on first use."""
        if type_name not in self._loaded:
            path = self._paths.get(type_name)
            if path is None:
                raise UnknownDriverError(f"no {self.kind} driver of type {type_name!r}; known: {', '.join(self.types())}")
            module, _, attr = path.partition(":")
            self._loaded[type_name] = getattr(importlib.import_module(module), attr)
        return self._loaded[type_name]

    def create(self, cfg: Any, **kwargs: Any) -> T:
        """Build the driver for ``cfg`` (any config model with a ``type`` field)."""
        factory = self.get(cfg.type)
        log.debug("creating %s driver %s", self.kind, cfg.type)
        return factory(cfg, **kwargs)
