"""Real plant-floor peers for the PLC / MQTT / OPC UA tests: a pymodbus server playing the PLC,
a mosquitto broker, free loopback ports. Everything listens on 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

FC_READ = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
FC_SET = {"coil": 5, "discrete": 2, "holding": 6, "input": 4}  # the datastore maps these codes to the tables
WRITE_FCS = {5, 6, 15, 16}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition", step: float = 0.005) -> None:
    """Poll (test pacing only) until ``pred()``; fail the test on timeout."""
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


@dataclass(frozen=True)
class Write:
    """One write request the PLC received, stamped on arrival (time.monotonic_ns)."""

    t_ns: int
    fc: int
    address: int
    values: tuple[int, ...]


class PlcSim:
    """A Modbus TCP server (pymodbus) on 127.0.0.1 in its own thread and event loop, playing the PLC.

    Tables are separate (coils, discrete inputs, holding, input registers: 64 each).
    Every write request is recorded with its arrival time (``writes``); the test reads and
    sets the tables as a PLC program would (``read``, ``set``). ``stop()`` / ``start()``
    simulate the PLC disappearing and coming back on the same port (memory cleared).
    """

    SIZE = 64

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.writes: list[Write] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: ModbusTcpServer | None = None
        self.running = False

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> "PlcSim":
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)

            async def main() -> None:
                try:
                    self._server = ModbusTcpServer(self._device(), address=("127.0.0.1", self.port))
                    await self._server.serve_forever(background=True)
                except BaseException as exc:  # noqa: BLE001 - reported to the starting thread
                    errors.append(exc)
                finally:
                    ready.set()

            loop.run_until_complete(main())
            if not errors:
                loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"plc-sim-{self.port}", daemon=True)
        self._thread.start()
        ready.wait(5)
        if errors:
            raise errors[0]
        self.running = True
        return self

    def stop(self) -> None:
        if not self.running or self._loop is None:
            return
        self.running = False
        fut = asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop)  # type: ignore[union-attr]
        fut.result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(5)

    # -- the PLC program's view ---------------------------------------------
    def read(self, table: str, address: int, count: int = 1) -> list[Any]:
        """Current values of a table (sampled from the server datastore)."""
        return self._run(self._server.async_getValues(0, FC_READ[table], address, count))  # type: ignore[union-attr]

    def bit(self, table: str, address: int) -> bool:
        return bool(self.read(table, address)[0])

    def set(self, table: str, address: int, values: list[Any]) -> None:
        """Write the PLC's own memory (discrete inputs, input registers, or anything)."""
        vals = [bool(v) for v in values] if table in ("coil", "discrete") else [int(v) & 0xFFFF for v in values]
        self._run(self._server.async_setValues(0, FC_SET[table], address, vals))  # type: ignore[union-attr]

    def set_u32(self, table: str, address: int, value: int) -> None:
        value &= 0xFFFFFFFF
        self.set(table, address, [value >> 16, value & 0xFFFF])

    def coil_writes(self, address: int) -> list[Write]:
        """FC5 writes to one coil, in arrival order."""
        with self._lock:
            return [w for w in self.writes if w.fc == 5 and w.address == address]

    def _run(self, coro: Any) -> Any:
        assert self._loop is not None and self.running, "PLC simulator is not running"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(5)

    # -- datastore ----------------------------------------------------------
    def _device(self) -> SimDevice:
        n = self.SIZE
        return SimDevice(
            id=0,
            simdata=(
                [SimData(0, values=[False] * n, datatype=DataType.BITS)],
                [SimData(0, values=[False] * n, datatype=DataType.BITS)],
                [SimData(0, values=[0] * n, datatype=DataType.REGISTERS)],
                [SimData(0, values=[0] * n, datatype=DataType.REGISTERS)],
            ),
            action=self._on_access,
        )

    async def _on_access(self, fc: int, start: int, address: int, count: int, regs: list[int], values: Any) -> None:
        if fc in WRITE_FCS and values is not None:
            w = Write(time.monotonic_ns(), fc, address, tuple(int(v) for v in values))
            with self._lock:
                self.writes.append(w)
        return None


@pytest.fixture
def plc() -> Any:
    """A running PLC simulator; stopped after the test."""
    sim = PlcSim().start()
    yield sim
    sim.stop()


class Mosquitto:
    """A real mosquitto broker on a free loopback port, started with a generated config."""

    def __init__(self, tmp: Path, port: int | None = None):
        exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        if exe is None:
            pytest.skip("mosquitto is not installed (scripts/setup.sh test installs it)")
        self.exe = exe
        self.port = port or free_port()
        self.conf = tmp / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "Mosquitto":
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.proc = None


@dataclass(frozen=True)
class Handed:
    """One result the PLC program copied: what the station wrote, and when the PLC saw RESULT_VALID."""

    part_id: int
    code: int
    counter: int
    t_ns: int


class PlcProgram:
    """The PLC side of the handshake, polling its own memory like a PLC scan (every ~2 ms).

    On RESULT_VALID rising: copy PART_ID / RESULT_CODE / RESULT_COUNTER, set RESULT_ACK.
    On RESULT_VALID falling: clear RESULT_ACK. ``acknowledge = False`` makes it ignore results.
    Survives the simulator being stopped and restarted under it.
    """

    def __init__(self, plc: PlcSim, scan_s: float = 0.002):
        self.plc = plc
        self.scan_s = scan_s
        self.handed: list[Handed] = []
        self.acknowledge = True
        self._stop = threading.Event()
        self._prev_valid = False
        self._thread = threading.Thread(target=self._run, name="plc-program", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from station.plc import registers as R

        while not self._stop.wait(self.scan_s):
            if not self.plc.running:
                self._prev_valid = False
                continue
            try:
                valid = self.plc.bit("coil", R.RESULT_VALID.address)
                if valid and not self._prev_valid and self.acknowledge:
                    hr = self.plc.read("holding", R.PART_ID.address, 4)
                    self.handed.append(Handed((hr[0] << 16) | hr[1], hr[2], hr[3], time.monotonic_ns()))
                    self.plc.set("discrete", R.RESULT_ACK.address, [True])
                elif not valid and self._prev_valid:
                    self.plc.set("discrete", R.RESULT_ACK.address, [False])
                self._prev_valid = valid
            except (AssertionError, RuntimeError, TimeoutError, OSError):
                self._prev_valid = False  # the simulator went away mid-scan

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


class Results:
    """Every final result of a station, gathered from its bus (create before ``start``)."""

    def __init__(self, station: Any):
        from station.types import PartResult

        self._kind = PartResult
        self.sub = station.bus.subscribe("test-results", maxsize=100_000)
        self.items: list[Any] = []
        self.status: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        import queue as _q

        while not self._stop.is_set() or self.sub.pending:
            try:
                ev = self.sub.get(timeout=0.02)
            except _q.Empty:
                continue
            (self.items if isinstance(ev, self._kind) else self.status).append(ev)

    def close(self) -> list[Any]:
        self._stop.set()
        self._thread.join(2)
        return self.items


def wait_parts(station: Any, n: int, timeout: float = 30.0) -> None:
    """Wait until ``n`` verdicts exist (and a bounded trigger source is done)."""
    wait_for(lambda: station.counters.snapshot().verdicts >= n and station.trigger_source_done(), timeout, f"{n} verdicts")
