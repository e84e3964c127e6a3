"""Plant-floor configuration: Modbus endpoints, encoder, PLC handshake, MQTT, OPC UA server.

The register addresses used by the PLC handshake are not configured one by
one: they are the documented map in :mod:`station.plc.registers` (and
``docs/plc.md``), shifted by the per-table base offsets below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from .base import (
    CountUpTo1k,
    ListenPort,
    MsUpTo1min,
    MsUpTo1s,
    MsUpTo10min,
    MsUpTo10s,
    ReconnectMaxS,
    ReconnectMinS,
    SecondsUpTo1min,
    StrictModel,
    TcpPort,
)

RegisterBase = Annotated[int, Field(ge=0, le=65000)]
"""Where the PLC program exposes address 0 of one table of the documented register map."""


class ModbusEndpointConfig(StrictModel):
    """A Modbus TCP server (PLC, remote I/O, counter module) the station talks to as a client."""

    host: str = Field("127.0.0.1", description="PLC address (IP or host name).")
    port: TcpPort = Field(502, description="Modbus TCP port of the PLC.")
    device_id: int = Field(1, ge=0, le=255, description="Modbus unit / device id (slave id).")
    timeout_ms: MsUpTo10s = Field(
        50.0, description="Give up on one request after this long; the connection is then dropped and re-opened."
    )
    reconnect_min_s: ReconnectMinS = 0.2
    reconnect_max_s: ReconnectMaxS = 5.0

    @model_validator(mode="after")
    def _backoff_ordered(self) -> ModbusEndpointConfig:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s ({self.reconnect_min_s}) must be <= reconnect_max_s ({self.reconnect_max_s})"
            )
        return self


class EncoderConfig(StrictModel):
    """Where the belt encoder count is read: a register of the PLC or of a counter module."""

    modbus: ModbusEndpointConfig = Field(
        default_factory=ModbusEndpointConfig, description="The Modbus server holding the count."
    )
    table: Literal["input", "holding"] = Field(
        "input", description="Register table of the count: input registers (FC4) or holding registers (FC3)."
    )
    address: int = Field(0, ge=0, le=65534, description="Address of the count (its first register when 32-bit).")
    bits: Literal[16, 32] = Field(
        32, description="Counter width; the count wraps around at 2**bits and the station unwraps it."
    )
    word_order: Literal["big", "little"] = Field(
        "big",
        description="32-bit counts: 'big' = high word in the first register (Modbus convention), 'little' = low word "
        "first.",
    )
    poll_ms: MsUpTo1s = Field(
        2.0, description="Read the count this often; the reject lands within about one poll of its count."
    )
    stale_ms: MsUpTo1min = Field(
        500.0,
        description="Raise an alarm when no count could be read for this long (pending rejects wait for the count).",
    )


class RejectVerifyConfig(StrictModel):
    """A sensor after the ejector that confirms each rejected part left the line."""

    modbus: ModbusEndpointConfig = Field(
        default_factory=ModbusEndpointConfig, description="The Modbus server with the confirmation bit."
    )
    table: Literal["discrete", "coil"] = Field(
        "discrete", description="Bit table of the sensor: discrete inputs (FC2) or coils (FC1)."
    )
    address: int = Field(
        1, ge=0, le=65535, description="Address of the confirmation bit (default: REJECT_CONFIRM of the PLC map)."
    )
    delay_ms: float = Field(
        50.0,
        ge=0,
        le=60000,
        description="Usual time from the pulse's rising edge to the sensor; a sensor edge confirms the open pulse "
        "whose age is closest to it.",
    )
    window_ms: MsUpTo1min = Field(
        500.0, description="A pulse not confirmed within this time after its rising edge is an alarm."
    )
    poll_ms: MsUpTo1s = Field(5.0, description="Read the confirmation bit this often while a pulse waits for it.")


class PlcConfig(StrictModel):
    """Handshake with a PLC over Modbus TCP: ready, heartbeat, part results, acknowledge, recipe.

    The register map is fixed and documented in docs/plc.md; the bases shift
    each table to where the PLC program exposes it.
    """

    modbus: ModbusEndpointConfig = Field(default_factory=ModbusEndpointConfig, description="The PLC.")
    coil_base: RegisterBase = Field(
        0, description="Address of coil 0 of the map (STATION_READY is coil_base + 1, ...)."
    )
    discrete_base: RegisterBase = Field(
        0, description="Address of discrete input 0 of the map (RESULT_ACK, REJECT_CONFIRM)."
    )
    holding_base: RegisterBase = Field(
        0, description="Address of holding register 0 of the map (PART_ID, RESULT_CODE, ...)."
    )
    input_base: RegisterBase = Field(
        0, description="Address of input register 0 of the map (ENCODER_COUNT, RECIPE_REQUEST)."
    )
    heartbeat_s: SecondsUpTo1min = Field(1.0, description="The HEARTBEAT coil toggles this often.")
    poll_ms: MsUpTo1s = Field(10.0, description="Handshake cycle: read acknowledge and recipe, write the next result.")
    ack_timeout_ms: MsUpTo1min = Field(
        500.0,
        description="A result the PLC has not acknowledged by then raises an alarm; the station moves on to the next "
        "part.",
    )
    result_max_age_ms: MsUpTo10min = Field(
        2000.0,
        description="Results older than this (e.g. decided while the PLC was away) are not handed over: the part has "
        "passed the ejector and the PLC has applied its own fail-safe.",
    )
    queue_size: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="Results waiting for the PLC; beyond this the oldest are dropped and counted.",
    )
    follow_recipe: bool = Field(
        True, description="Switch the model when the PLC writes a new product number to RECIPE_REQUEST."
    )


class MqttConfig(StrictModel):
    """Publish every verdict and status change to an MQTT broker (QoS 1, store-and-forward)."""

    host: str = Field("127.0.0.1", description="Broker address.")
    port: TcpPort = Field(1883, description="Broker port.")
    client_id: str | None = Field(None, description="MQTT client id (default: inspection-<station name>).")
    username: str | None = Field(None, description="Broker user name, if the broker asks for one.")
    password: str | None = Field(None, description="Broker password (prefer a file readable only by the station user).")
    topic_prefix: str = Field("station", description="Topics are <prefix>/<station name>/result|status|online.")
    qos: Literal[0, 1] = Field(1, description="MQTT quality of service of results and status (1 = at least once).")
    keepalive_s: int = Field(
        30,
        ge=5,
        le=3600,
        description="MQTT keepalive; the broker publishes the last will 'offline' after 1.5x this silence.",
    )
    outbox_path: Path = Field(
        Path("data/mqtt_outbox.db"),
        description="SQLite file holding messages until the broker acknowledges them (survives restarts).",
    )
    outbox_max: int = Field(
        100000,
        ge=10,
        le=100_000_000,
        description="Most messages kept while the broker is away; the oldest are dropped beyond this.",
    )
    max_inflight: CountUpTo1k = Field(20, description="Messages sent and not yet acknowledged at once.")
    reconnect_min_s: ReconnectMinS = 0.5
    reconnect_max_s: ReconnectMaxS = 10.0
    include_frames: bool = Field(
        True, description="Include per-frame facts (camera, size, driver meta) in result messages."
    )


class OpcUaServerConfig(StrictModel):
    """An OPC UA server exposing state, counters, the last result and recipe selection."""

    host: str = Field("127.0.0.1", description="Listen address (loopback unless the OPC UA client is elsewhere).")
    port: ListenPort = Field(4840, description="TCP port (0 = pick a free one; the chosen one is in Station.health()).")
    namespace: str = Field("urn:inspection-station", description="Namespace URI of the station's nodes.")
    update_ms: MsUpTo1min = Field(200.0, description="Counters and state are refreshed this often.")


class PublishConfig(StrictModel):
    """Where results and status go besides the database."""

    mqtt: MqttConfig | None = Field(None, description="MQTT publisher (off when absent).")
    opcua: OpcUaServerConfig | None = Field(None, description="OPC UA server (off when absent).")
