"""Reject output and timing configuration."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from .base import MsUpTo1s, MsUpTo10min, MsUpTo10s, ReconnectMaxS, ReconnectMinS, SecondsUpTo1min, StrictModel, repeated
from .camera import ReconnectConfig
from .floor import EncoderConfig, ModbusEndpointConfig, RejectVerifyConfig


def _require_lines(lines: Mapping[str, object], key: str, example: str = "") -> None:
    """An output driver maps at least one line (the reject line); ValueError naming ``key`` otherwise."""
    if not lines:
        hint = f" (e.g. {example})" if example else ""
        raise ValueError(f"no output lines: map at least the reject line under `{key}`{hint}")


class SimulatedOutputConfig(StrictModel):
    """Records every edge with its timestamp in memory: the default output."""

    type: Literal["simulated"] = Field("simulated", description="Driver: in-memory edge recorder.")
    driver: ClassVar[str] = "station.actuate.simulated:SimulatedOutput"  # imported when first used (station/drivers.py)
    max_edges: int = Field(100000, ge=10, description="Edges kept in memory (oldest dropped first).")


class ModbusOutputConfig(ModbusEndpointConfig):
    """Output lines as coils (or holding registers) of a PLC / remote I/O over Modbus TCP."""

    type: Literal["modbus"] = Field("modbus", description="Driver: Modbus TCP coils / holding registers.")
    driver: ClassVar[str] = (
        "station.actuate.modbus_output:ModbusOutput"  # imported when first used (station/drivers.py)
    )
    coils: dict[str, int] = Field(
        default_factory=lambda: {"reject": 0},
        description="Output line name -> coil address (FC5). The reject line defaults to coil 0 (REJECT in "
        "docs/plc.md).",
    )
    registers: dict[str, int] = Field(
        default_factory=dict,
        description="Output line name -> holding register address, written 1/0 (FC6), for PLCs that expose no coils.",
    )

    @model_validator(mode="after")
    def _lines_unique(self) -> ModbusOutputConfig:
        both = sorted(set(self.coils) & set(self.registers))
        if both:
            raise ValueError(f"lines {both} are mapped both to a coil and to a register; keep one")
        _require_lines({**self.coils, **self.registers}, "coils", "reject: 0")
        return self


def _reject_on_line_0() -> dict[str, int | str]:
    return {"reject": 0}


class GpiodOutputConfig(StrictModel):
    """Linux GPIO lines (Jetson, Raspberry Pi, industrial PCs) through libgpiod v2."""

    type: Literal["gpiod"] = Field("gpiod", description="Driver: libgpiod v2 character-device GPIO.")
    driver: ClassVar[str] = "station.actuate.gpiod_output:GpiodOutput"  # imported when first used (station/drivers.py)
    chip: str = Field("/dev/gpiochip0", description="GPIO chip device path (see `gpiodetect`).")
    lines: dict[str, int | str] = Field(
        default_factory=_reject_on_line_0,
        description="Output line name -> line offset on the chip, or the line's name (e.g. 'PQ.05' on a Jetson; see "
        "`gpioinfo`).",
    )
    active_low: bool = Field(False, description="The ejector fires when the pin is low (inverted driver stage).")
    consumer: str = Field(
        "inspection-station", description="Consumer label shown by `gpioinfo` for the requested lines."
    )
    backend: str = Field(
        "libgpiod",
        description="GPIO API implementation: 'libgpiod' (the gpiod Python package) or 'fake' (in-memory chip for "
        "tests and demos).",
    )

    @model_validator(mode="after")
    def _has_lines(self) -> GpiodOutputConfig:
        _require_lines(self.lines, "lines", "reject: 17")
        return self


class OpcUaOutputConfig(StrictModel):
    """Output lines as Boolean variables of a remote OPC UA server (a PLC's OPC UA interface)."""

    type: Literal["opcua"] = Field("opcua", description="Driver: write Boolean nodes on an OPC UA server.")
    driver: ClassVar[str] = "station.actuate.opcua_output:OpcUaOutput"  # imported when first used (station/drivers.py)
    endpoint: str = Field("opc.tcp://127.0.0.1:4840", description="Server endpoint URL.")
    nodes: dict[str, str] = Field(
        default_factory=lambda: {"reject": "ns=2;s=Reject"},
        description="Output line name -> NodeId string of a writable Boolean variable.",
    )
    timeout_s: SecondsUpTo1min = Field(1.0, description="Request timeout; a write that takes longer fails the edge.")
    reconnect_min_s: ReconnectMinS = 0.5
    reconnect_max_s: ReconnectMaxS = 10.0

    @model_validator(mode="after")
    def _has_nodes(self) -> OpcUaOutputConfig:
        _require_lines(self.nodes, "nodes")
        return self


class PylonOutputLineConfig(StrictModel):
    """One camera I/O line driven by a camera user output."""

    line: str = Field(
        "Line2", description="Camera I/O line (LineSelector), set to LineMode Output with LineSource = `user_output`."
    )
    user_output: str = Field(
        "UserOutput1",
        description="The user output (UserOutputSelector) that drives the line; its UserOutputValue is the level.",
    )
    invert: bool = Field(False, description="Invert the line electrically (LineInverter): the ejector fires on low.")


class PylonOutputConfig(StrictModel):
    """Output lines of a Basler camera (UserOutput -> LineN), e.g. an ejector wired to the camera's opto output."""

    type: Literal["pylon"] = Field("pylon", description="Driver: Basler camera user outputs (pypylon).")
    driver: ClassVar[str] = "station.actuate.pylon_output:PylonOutput"  # imported when first used (station/drivers.py)
    camera_id: str | None = Field(
        None,
        description="Use the device of this station camera (a `pylon` camera): the output shares the open device, is "
        "re-configured "
        "after every camera reconnect and reports an error while the camera is away. Leave unset to open a camera of "
        "its own "
        "with `serial` / `user_name`.",
    )
    serial: str | None = Field(
        None, description="Own device only: serial number of the camera whose outputs are driven."
    )
    user_name: str | None = Field(None, description="Own device only: user-defined name (DeviceUserID) of that camera.")
    lines: dict[str, PylonOutputLineConfig] = Field(
        default_factory=lambda: {"reject": PylonOutputLineConfig()},
        description="Station output line name (e.g. reject) -> camera line and user output.",
    )
    verify: bool = Field(
        False,
        description="Read UserOutputValue back after every write and fail the edge when it differs (one more round "
        "trip per edge).",
    )
    lock_timeout_ms: MsUpTo1s = Field(
        20.0, description="Longest wait for the camera device (while it is being reconfigured) before an edge fails."
    )
    reconnect: ReconnectConfig = Field(
        default_factory=ReconnectConfig, description="Own device only: reconnection after the camera is lost."
    )

    @model_validator(mode="after")
    def _identity_and_lines(self) -> PylonOutputConfig:
        if self.camera_id is not None and (self.serial is not None or self.user_name is not None):
            raise ValueError(
                "set either `camera_id` (share a station camera) or `serial`/`user_name` (own device), not both"
            )
        if self.serial is not None and self.user_name is not None:
            raise ValueError("set either `serial` or `user_name`, not both")
        _require_lines(self.lines, "lines", "reject: {line: Line2}")
        for attr in ("line", "user_output"):
            dup = repeated([getattr(v, attr) for v in self.lines.values()])
            if dup:
                raise ValueError(
                    f"`lines`: {attr} {', '.join(dup)} used by more than one output line; give each its own"
                )
        return self


OutputConfig = Annotated[
    SimulatedOutputConfig | ModbusOutputConfig | GpiodOutputConfig | OpcUaOutputConfig | PylonOutputConfig,
    Field(discriminator="type"),
]


class RejectConfig(StrictModel):
    """When and how the ejector fires."""

    mode: Literal["time", "encoder", "plc"] = Field(
        "time",
        description=(
            "time: fire at trigger time + travel_ms (constant belt speed); "
            "encoder: fire when the belt encoder reaches the count at trigger + travel_counts (variable speed); "
            "plc: hand part id + result to the PLC (section `plc`), which times the reject itself."
        ),
    )
    travel_ms: MsUpTo10min = Field(
        1000.0,
        description="Time for a part to travel from the camera to the ejector; in encoder mode, the SHORTEST such time "
        "(fastest belt): it sets the decision deadline.",
    )
    safety_margin_ms: float = Field(
        100.0, ge=0, description="The decision deadline is travel_ms - safety_margin_ms; a later verdict is FAILSAFE."
    )
    pulse_ms: MsUpTo10s = Field(50.0, description="Width of the reject pulse.")
    line: str = Field("reject", description="Name of the output line that drives the ejector.")
    output: OutputConfig = Field(default_factory=SimulatedOutputConfig, description="The output driver.")
    realtime_priority: int = Field(
        10,
        ge=0,
        le=99,
        description="SCHED_FIFO priority of the reject scheduler thread so edges stay on time under load (needs "
        "CAP_SYS_NICE; 0 = normal priority).",
    )
    travel_counts: int | None = Field(
        None, ge=1, le=2**31 - 1, description="encoder mode: encoder counts from the camera to the ejector."
    )
    encoder: EncoderConfig | None = Field(None, description="encoder mode: where the belt encoder count is read.")
    verify: RejectVerifyConfig | None = Field(
        None,
        description="Optional sensor confirming each rejected part left the line; unconfirmed pulses raise an alarm.",
    )

    @model_validator(mode="after")
    def _deadline_positive(self) -> RejectConfig:
        if self.safety_margin_ms >= self.travel_ms:
            raise ValueError(
                f"safety_margin_ms ({self.safety_margin_ms}) must be smaller than travel_ms ({self.travel_ms}): "
                "no time would be left to decide"
            )
        return self

    @model_validator(mode="after")
    def _encoder_mode_complete(self) -> RejectConfig:
        if self.mode == "encoder":
            missing = [k for k in ("travel_counts", "encoder") if getattr(self, k) is None]
            if missing:
                raise ValueError(
                    f"mode: encoder needs {' and '.join(missing)} (counts from camera to ejector, and where to read "
                    "the count)"
                )
        return self

    @property
    def deadline_ms(self) -> float:
        """Time after the trigger by which a verdict must exist."""
        return self.travel_ms - self.safety_margin_ms
