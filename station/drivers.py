"""Driver registries: a driver is chosen by the ``type`` field of its config.

Each driver is declared once, on its config class: ``type`` (the name in the
YAML) and ``driver`` (``"module:Class"``, the implementation). A registry is
derived from a config union (:meth:`Registry.from_union`), so the set of types
the config accepts and the set of drivers are the same set by construction.
Implementations are imported only when used, so a station without a Basler
camera never imports pypylon. A new driver is a new config class in the union.
"""

from __future__ import annotations

import importlib
import logging
import types
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Generic, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel

log = logging.getLogger(__name__)

T = TypeVar("T")


class UnknownDriverError(LookupError):
    """No driver is registered for a config ``type``."""


def union_members(union: Any) -> tuple[type[BaseModel], ...]:
    """The config classes of a (possibly ``Annotated``) ``Union`` of driver configs."""
    if get_origin(union) is Annotated:
        union = get_args(union)[0]
    return get_args(union) if get_origin(union) in (Union, types.UnionType) else (union,)


class Registry(Generic[T]):
    """Maps a config ``type`` to the class (or factory) that implements it."""

    def __init__(self, kind: str, drivers: Mapping[str, str]):
        self.kind = kind
        self._paths = dict(drivers)
        self._loaded: dict[str, Callable[..., T]] = {}

    @classmethod
    def from_union(cls, kind: str, union: Any) -> Registry[T]:
        """The registry of every config class in ``union``: its ``type`` default to its ``driver``."""
        drivers: dict[str, str] = {}
        for member in union_members(union):
            type_name = member.model_fields["type"].default
            path = getattr(member, "driver", None)
            if not isinstance(path, str) or ":" not in path:
                raise TypeError(f"{member.__name__} has no driver = 'module:Class' (station/drivers.py)")
            if type_name in drivers:
                raise TypeError(f"two {kind} configs declare type {type_name!r}")
            drivers[type_name] = path
        return cls(kind, drivers)

    def types(self) -> list[str]:
        """All type names."""
        return sorted(self._paths)

    def get(self, type_name: str) -> Callable[..., T]:
        """The factory for ``type_name``, importing it on first use."""
        if type_name not in self._loaded:
            path = self._paths.get(type_name)
            if path is None:
                raise UnknownDriverError(
                    f"no {self.kind} driver of type {type_name!r}; known: {', '.join(self.types())}"
                )
            module, _, attr = path.partition(":")
            self._loaded[type_name] = getattr(importlib.import_module(module), attr)
        return self._loaded[type_name]

    def create(self, cfg: Any, **kwargs: Any) -> T:
        """Build the driver for ``cfg`` (any config model with a ``type`` field)."""
        factory = self.get(cfg.type)
        log.debug("creating %s driver %s", self.kind, cfg.type)
        return factory(cfg, **kwargs)
