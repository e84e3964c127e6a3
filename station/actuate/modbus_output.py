"""Output lines as Modbus TCP coils (or holding registers) of a PLC or remote I/O.

One dedicated connection (not shared with the PLC handshake or the encoder
poll) with a short timeout: a write is one request, ~0.3-1 ms on a LAN. The
fail-fast / reconnect-behind / restore behaviour is
:class:`~station.actuate.reconnecting.ReconnectingOutput`'s.
"""

from __future__ import annotations

from pymodbus.client import ModbusTcpClient

from ..alarms import ReportFn
from ..config import ModbusOutputConfig
from ..plc.link import Backoff
from .base import OutputError, unmapped_line
from .reconnecting import ReconnectingOutput


class ModbusOutput(ReconnectingOutput):
    """Drives named lines as coils (FC5) or holding registers written 1/0 (FC6)."""

    component = "output:modbus"

    def __init__(self, cfg: ModbusOutputConfig, report: ReportFn | None = None):
        super().__init__(Backoff(cfg.reconnect_min_s, cfg.reconnect_max_s), report)
        self.cfg = cfg
        self._client = ModbusTcpClient(
            cfg.host, port=cfg.port, timeout=cfg.timeout_ms / 1000, retries=0, name=self.component
        )

    @property
    def peer(self) -> str:
        """host:port of the PLC."""
        return f"modbus {self.cfg.host}:{self.cfg.port}"

    def _connect(self) -> None:
        if not self._client.connect():
            raise ConnectionError("connection refused or timed out")

    def _write_line(self, line: str, value: bool) -> None:
        if line in self.cfg.coils:
            rr = self._client.write_coil(self.cfg.coils[line], value, device_id=self.cfg.device_id)
        elif line in self.cfg.registers:
            rr = self._client.write_register(self.cfg.registers[line], 1 if value else 0, device_id=self.cfg.device_id)
        else:
            raise unmapped_line(line, "coils", [*self.cfg.coils, *self.cfg.registers])
        if rr.isError():  # the PLC answered with an exception code: the mapping is wrong, the link is fine
            raise OutputError(f"{self.peer} refused {line}={value} ({rr}); check reject.output.coils / registers")

    def _disconnect(self) -> None:
        self._client.close()
