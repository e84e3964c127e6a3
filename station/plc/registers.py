"""The Modbus register map between the station (Modbus TCP client) and the PLC (server).

One table, the single source of truth: ``docs/plc.md`` and the README print
it with :func:`markdown_table`. Addresses are relative to the per-table bases
of :class:`~station.config.PlcConfig` (``coil_base``, ``discrete_base``,
``holding_base``, ``input_base``; all 0 by default).

32-bit values take two registers, high word first ("big" word order).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

from ..contracts import Outcome

Table = Literal["coil", "discrete", "holding", "input"]


@dataclass(frozen=True, slots=True)
class Point:
    """One entry of the map."""

    name: str
    table: Table
    address: int
    kind: str  # "bit", "uint16", "uint32"
    writer: Literal["station", "PLC"]
    meaning: str


class ResultCode(IntEnum):
    """RESULT_CODE values (0 = no result yet)."""

    NONE = 0
    PASS = 1
    FAIL = 2
    UNCERTAIN = 3
    FAILSAFE = 4


RESULT_CODE_OF: dict[Outcome, ResultCode] = {
    Outcome.PASS: ResultCode.PASS,
    Outcome.FAIL: ResultCode.FAIL,
    Outcome.UNCERTAIN: ResultCode.UNCERTAIN,
    Outcome.FAILSAFE: ResultCode.FAILSAFE,
}

# -- coils (FC1 read / FC5 write): written by the station ---------------------
REJECT = Point(
    "REJECT",
    "coil",
    0,
    "bit",
    "station",
    "Reject pulse (only with `reject.output.type: modbus`, station-timed modes time/encoder).",
)
STATION_READY = Point(
    "STATION_READY",
    "coil",
    1,
    "bit",
    "station",
    "1 while the station runs and accepts parts (0 when stopped or paused).",
)
HEARTBEAT = Point(
    "HEARTBEAT",
    "coil",
    2,
    "bit",
    "station",
    "Toggles every `plc.heartbeat_s` (1 s); a PLC that sees it stand still must treat the station as gone.",
)
RESULT_VALID = Point(
    "RESULT_VALID",
    "coil",
    3,
    "bit",
    "station",
    "1 = PART_ID / RESULT_CODE hold a new result; cleared by the station once RESULT_ACK is seen.",
)
STATION_ALARM = Point(
    "STATION_ALARM",
    "coil",
    4,
    "bit",
    "station",
    "1 while the station has an active alarm (camera, writer, encoder, ...).",
)

# -- discrete inputs (FC2 read): written by the PLC ---------------------------
RESULT_ACK = Point(
    "RESULT_ACK",
    "discrete",
    0,
    "bit",
    "PLC",
    "PLC sets it after copying the result; clears it when RESULT_VALID drops.",
)
REJECT_CONFIRM = Point(
    "REJECT_CONFIRM",
    "discrete",
    1,
    "bit",
    "PLC",
    "Sensor after the ejector: 1 when a rejected part left the line (optional `reject.verify`).",
)

# -- holding registers (FC3 read / FC6, FC16 write): written by the station ---
PART_ID = Point("PART_ID", "holding", 0, "uint32", "station", "Part id of the result (registers 0-1, high word first).")
RESULT_CODE = Point(
    "RESULT_CODE",
    "holding",
    2,
    "uint16",
    "station",
    "1 PASS, 2 FAIL, 3 UNCERTAIN, 4 FAILSAFE (reject on 2, 3*, 4; *per station config).",
)
RESULT_COUNTER = Point(
    "RESULT_COUNTER",
    "holding",
    3,
    "uint16",
    "station",
    "+1 per result handed over (wraps at 65536): lets the PLC spot a missed result.",
)
ACTIVE_RECIPE = Point(
    "ACTIVE_RECIPE",
    "holding",
    4,
    "uint16",
    "station",
    "Recipe the station runs now (0 = none / default model); follows RECIPE_REQUEST once the model is loaded.",
)

# -- input registers (FC4 read): written by the PLC ---------------------------
ENCODER_COUNT = Point(
    "ENCODER_COUNT",
    "input",
    0,
    "uint32",
    "PLC",
    "Belt encoder count (registers 0-1, high word first, wraps at 2^32) for `reject.mode: encoder`.",
)
RECIPE_REQUEST = Point(
    "RECIPE_REQUEST",
    "input",
    2,
    "uint16",
    "PLC",
    "Product number to inspect next (0 = no request); mapped to a model by `recipes:`.",
)

MAP: tuple[Point, ...] = (
    REJECT, STATION_READY, HEARTBEAT, RESULT_VALID, STATION_ALARM,
    RESULT_ACK, REJECT_CONFIRM,
    PART_ID, RESULT_CODE, RESULT_COUNTER, ACTIVE_RECIPE,
    ENCODER_COUNT, RECIPE_REQUEST,
)  # fmt: skip

_TABLE_TEXT = {
    "coil": "coil (FC1/FC5)",
    "discrete": "discrete input (FC2)",
    "holding": "holding register (FC3/FC16)",
    "input": "input register (FC4)",
}


def split_u32(value: int, word_order: str = "big") -> list[int]:
    """A 32-bit unsigned value as two 16-bit registers."""
    value &= 0xFFFFFFFF
    hi, lo = value >> 16, value & 0xFFFF
    return [hi, lo] if word_order == "big" else [lo, hi]


def join_u32(regs: list[int], word_order: str = "big") -> int:
    """Two 16-bit registers as one 32-bit unsigned value."""
    a, b = regs[0] & 0xFFFF, regs[1] & 0xFFFF
    return (a << 16) | b if word_order == "big" else (b << 16) | a


def markdown_table() -> str:
    """The map as a Markdown table (what docs/plc.md and the README show)."""
    rows = ["| Name | Table | Address | Type | Written by | Meaning |", "| --- | --- | --- | --- | --- | --- |"]
    for p in MAP:
        addr = f"{p.address}-{p.address + 1}" if p.kind == "uint32" else str(p.address)
        rows.append(f"| `{p.name}` | {_TABLE_TEXT[p.table]} | {addr} | {p.kind} | {p.writer} | {p.meaning} |")
    return "\n".join(rows)
