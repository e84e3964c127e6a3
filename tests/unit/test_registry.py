"""Drivers are declared once, on their config classes; every config type resolves to an implementation."""

from __future__ import annotations

import subprocess
import sys
from typing import ClassVar, Literal

import pytest

from station.acquire.base import CAMERAS
from station.acquire.triggers import TRIGGERS
from station.actuate.base import OUTPUTS
from station.config import CameraConfig, InspectorConfig, OutputConfig, StrictModel, TriggerConfig
from station.drivers import Registry, UnknownDriverError, union_members
from station.inspection.base import INSPECTORS

REGISTRIES = [
    (CAMERAS, CameraConfig),
    (TRIGGERS, TriggerConfig),
    (OUTPUTS, OutputConfig),
    (INSPECTORS, InspectorConfig),
]


@pytest.mark.parametrize(("registry", "union"), REGISTRIES, ids=lambda v: getattr(v, "kind", ""))
def test_every_config_type_resolves_to_a_driver(registry: Registry, union: object) -> None:
    members = union_members(union)
    assert registry.types() == sorted(m.model_fields["type"].default for m in members)
    for m in members:
        impl = registry.get(m.model_fields["type"].default)
        assert callable(impl) and impl.__name__ in getattr(m, "driver", ""), (m.__name__, impl)


def test_unknown_type_and_undeclared_driver_are_refused() -> None:
    with pytest.raises(UnknownDriverError, match="no camera driver of type 'gige'; known: folder, opencv"):
        CAMERAS.get("gige")

    class NoDriver(StrictModel):
        type: Literal["x"] = "x"

    with pytest.raises(TypeError, match="NoDriver has no driver"):
        Registry.from_union("thing", NoDriver)

    class A(StrictModel):
        type: Literal["x"] = "x"
        driver: ClassVar[str] = "station.acquire.synthetic:SyntheticCamera"

    class B(A):
        pass

    from typing import Union

    with pytest.raises(TypeError, match="two thing configs declare type 'x'"):
        Registry.from_union("thing", Union[A, B])  # noqa: UP007 - the typing.Union spelling is what is tested


def test_building_the_registries_imports_no_optional_driver() -> None:
    """pypylon, pymodbus, asyncua and torch are imported only by the driver that uses them."""
    code = (
        "import sys, station.app, station.acquire.base, station.actuate.base, station.inspection.base; "
        "print(sorted(m for m in ('pypylon', 'pymodbus', 'asyncua', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
