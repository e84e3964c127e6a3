"""One dedicated Modbus TCP connection with a short timeout, reconnect backoff and alarms.

Every user (reject output, encoder tracker, PLC handshake, reject verifier)
owns its own :class:`ModbusLink`, so a slow poll can never delay a reject
edge on another connection. A request that fails for a transport reason
(timeout, refused, reset) closes the socket: a late answer on a reused
socket would be taken for the answer to the next request. The next
:meth:`ModbusLink.connect_if_due` re-opens it, waiting longer after each
failure (``reconnect_min_s`` doubling up to ``reconnect_max_s``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException

from ..alarms import ReportFn, report_or_log
from ..config import ModbusEndpointConfig

log = logging.getLogger(__name__)


class ModbusLinkError(RuntimeError):
    """A Modbus request failed; ``transport`` is True when the connection was lost."""

    def __init__(self, message: str, transport: bool):
        super().__init__(message)
        self.transport = transport


class Backoff:
    """Reconnect delays: ``min_s``, doubled after each failure up to ``max_s``."""

    def __init__(self, min_s: float, max_s: float):
        self.min_s = min_s
        self.max_s = max_s
        self.delay = min_s
        self.next_try = 0.0

    def due(self, now: float | None = None) -> bool:
        """True when the next attempt may be made."""
        return (time.monotonic() if now is None else now) >= self.next_try

    def failed(self) -> float:
        """Record a failure; returns the wait before the next attempt."""
        wait = self.delay
        self.next_try = time.monotonic() + wait
        self.delay = min(self.max_s, self.delay * 2)
        return wait

    def succeeded(self) -> None:
        """Reset after a success."""
        self.delay = self.min_s
        self.next_try = 0.0


class ModbusLink:
    """A Modbus TCP client for one job; thread-safe; never waits longer than ``timeout_ms`` per request."""

    def __init__(self, cfg: ModbusEndpointConfig, component: str, report: ReportFn | None = None):
        self.cfg = cfg
        self.component = component
        self.report = report
        self._client = ModbusTcpClient(
            cfg.host, port=cfg.port, timeout=cfg.timeout_ms / 1000, retries=0, name=component
        )
        self._lock = threading.Lock()
        self._backoff = Backoff(cfg.reconnect_min_s, cfg.reconnect_max_s)
        self.connected = False
        self.failures = 0
        self.reconnects = 0
        self._ever_connected = False

    @property
    def address(self) -> str:
        """host:port for messages."""
        return f"{self.cfg.host}:{self.cfg.port}"

    # -- connection ---------------------------------------------------------
    def connect_if_due(self) -> bool:
        """Connected now? Tries to (re)connect when the backoff allows; never raises."""
        if self.connected:
            return True
        if not self._backoff.due():
            return False
        with self._lock:
            ok = bool(self._client.connect())
            if ok:
                self.connected = True
                self._backoff.succeeded()
                if self._ever_connected:
                    self.reconnects += 1
                self._ever_connected = True
        if ok:
            self._emit("ok", f"connected to {self.address}")
        else:
            wait = self._backoff.failed()
            self._emit("alarm", f"cannot connect to {self.address}; retrying in {wait:.1f} s")
        return ok

    def close(self) -> None:
        """Close the socket (a later request reconnects)."""
        with self._lock:
            self._client.close()
            self.connected = False

    # -- requests -----------------------------------------------------------
    def write_coil(self, address: int, value: bool) -> None:
        """FC5."""
        self._call("write coil", address, lambda c: c.write_coil(address, bool(value), device_id=self.cfg.device_id))

    def write_register(self, address: int, value: int) -> None:
        """FC6."""
        self._call(
            "write register",
            address,
            lambda c: c.write_register(address, int(value) & 0xFFFF, device_id=self.cfg.device_id),
        )

    def write_registers(self, address: int, values: list[int]) -> None:
        """FC16."""
        regs = [int(v) & 0xFFFF for v in values]
        self._call("write registers", address, lambda c: c.write_registers(address, regs, device_id=self.cfg.device_id))

    def read_bits(self, table: str, address: int, count: int = 1) -> list[bool]:
        """FC1 (``coil``) or FC2 (``discrete``)."""
        if table == "coil":
            rr = self._call(
                "read coils", address, lambda c: c.read_coils(address, count=count, device_id=self.cfg.device_id)
            )
        else:
            rr = self._call(
                "read discrete inputs",
                address,
                lambda c: c.read_discrete_inputs(address, count=count, device_id=self.cfg.device_id),
            )
        return [bool(b) for b in rr.bits[:count]]

    def read_registers(self, table: str, address: int, count: int = 1) -> list[int]:
        """FC3 (``holding``) or FC4 (``input``)."""
        if table == "holding":
            rr = self._call(
                "read holding registers",
                address,
                lambda c: c.read_holding_registers(address, count=count, device_id=self.cfg.device_id),
            )
        else:
            rr = self._call(
                "read input registers",
                address,
                lambda c: c.read_input_registers(address, count=count, device_id=self.cfg.device_id),
            )
        return list(rr.registers[:count])

    def _call(self, what: str, address: int, fn: Callable[[ModbusTcpClient], Any]) -> Any:
        if not self.connected:
            raise ModbusLinkError(f"{self.component}: not connected to {self.address}", transport=True)
        with self._lock:
            try:
                rr = fn(self._client)
            except (ModbusException, OSError) as exc:
                self._client.close()
                self.connected = False
                transport_exc: Exception | None = exc
            else:
                transport_exc = None
        if transport_exc is not None:
            self.failures += 1
            wait = self._backoff.failed()
            msg = f"lost {self.address} during {what} @{address}: {transport_exc}; reconnecting in {wait:.1f} s"
            self._emit("alarm", msg)
            raise ModbusLinkError(f"{self.component}: {msg}", transport=True)
        if rr.isError():
            # The PLC answered with an exception code: the link is fine, the map is not.
            raise ModbusLinkError(
                f"{self.component}: {self.address} refused {what} @{address} ({rr}); check the register map / bases in "
                "the config",
                transport=False,
            )
        return rr

    def _emit(self, state: str, message: str) -> None:
        report_or_log(self.report, self.component, state, message)
