"""Real plant-floor peers for the PLC / MQTT / OPC UA tests: a pymodbus server playing the PLC,
a mosquitto broker, free loopback ports. Everything listens on 127.0.0.1 only. Also
:class:`Results`, the collector of a station's final results that every station test shares."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import math
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from station.rt import set_realtime

if TYPE_CHECKING:
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import SimDevice

    from station.contracts import PartResult

FC_READ = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
FC_SET = {"coil": 5, "discrete": 2, "holding": 6, "input": 4}  # the datastore maps these codes to the tables
WRITE_FCS = {5, 6, 15, 16}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition", step: float = 0.005) -> Any:
    """Poll (test pacing only) until ``pred()`` is truthy and return its value; fail the test on timeout."""
    end = time.monotonic() + timeout
    while not (v := pred()):
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)
    return v


def trigger_parts(station: Any, n: int, *, timeout_s: float = 20.0) -> None:
    """Trigger ``n`` parts one after another, each once the previous one has its verdict (no frame-queue overrun).
    Fails the test when the line refuses a trigger or a verdict takes longer than ``timeout_s``."""
    for _ in range(n):
        before = station.counters.snapshot().verdicts
        assert station.trigger("test") is not None
        wait_for(lambda: station.counters.snapshot().verdicts > before, timeout_s, "a verdict")


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
        self.on_write: list[Callable[[Write], None]] = []  # called in the PLC's event loop, like PLC logic
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: ModbusTcpServer | None = None
        self.running = False

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> PlcSim:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)

            async def main() -> None:
                try:
                    from pymodbus.server import ModbusTcpServer  # lazy: Results et al. need no pymodbus

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
        # A PLC has its own CPU: here its thread must not wait behind the station's real-time threads.
        set_realtime(20, "PLC simulator", self._thread.native_id)
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

    def set_u32(self, table: str, address: int, value: int) -> int:
        """Write a 32-bit value (high word first); returns when it was set, stamped in the server's own thread."""
        value &= 0xFFFFFFFF
        vals = [value >> 16, value & 0xFFFF]
        server = self._server

        async def set_and_stamp() -> int:
            await server.async_setValues(0, FC_SET[table], address, vals)  # type: ignore[union-attr]
            return time.monotonic_ns()

        return int(self._run(set_and_stamp()))

    def set_later(self, delay_s: float, table: str, address: int, values: list[Any]) -> None:
        """From PLC logic (an ``on_write`` callback): change the PLC memory ``delay_s`` from now."""
        vals = [bool(v) for v in values] if table in ("coil", "discrete") else [int(v) & 0xFFFF for v in values]
        assert self._loop is not None and self._server is not None
        server, loop = self._server, self._loop
        loop.call_later(delay_s, lambda: loop.create_task(server.async_setValues(0, FC_SET[table], address, vals)))

    def coil_writes(self, address: int) -> list[Write]:
        """FC5 writes to one coil, in arrival order."""
        with self._lock:
            return [w for w in self.writes if w.fc == 5 and w.address == address]

    def _run(self, coro: Any) -> Any:
        assert self._loop is not None and self.running, "PLC simulator is not running"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(2)

    # -- datastore ----------------------------------------------------------
    def _device(self) -> SimDevice:
        from pymodbus.simulator import DataType, SimData, SimDevice

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
            for fn in self.on_write:
                fn(w)
        return None


@pytest.fixture
def plc() -> Any:
    """A running PLC simulator; stopped after the test."""
    sim = PlcSim().start()
    yield sim
    sim.stop()


class Mosquitto:
    """A real mosquitto broker on a free loopback port, started with a generated config."""

    def __init__(self, tmp: Path, port: int | None = None, persistence: bool = False):
        exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        if exe is None:
            pytest.fail("mosquitto is not installed: run scripts/setup.sh test (or apt-get install mosquitto)")
        self.exe = exe
        self.port = port or free_port()
        self.conf = tmp / "mosquitto.conf"
        # as root, mosquitto would switch to user "mosquitto", which cannot write tmp_path
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", f"user {getpass.getuser()}"]
        if persistence:  # keeps sessions and queued QoS 1 messages across a restart
            lines += ["persistence true", f"persistence_location {tmp}/", "autosave_interval 1"]
        else:
            lines += ["persistence false"]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Mosquitto:
        self.proc = subprocess.Popen(
            [self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
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

    def __enter__(self) -> PlcProgram:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


_NO_PIXELS = np.zeros((0, 0), np.uint8)


def without_pixels(r: Any) -> Any:
    """``r`` (a PartResult) with empty images and heat maps: its verdict, boxes and scores only."""
    from dataclasses import replace

    return replace(
        r,
        frames=tuple(replace(f, image=_NO_PIXELS) for f in r.frames),
        detections=tuple(replace(d, anomaly_map=None) if d.anomaly_map is not None else d for d in r.detections),
    )


class Results:
    """Every final result of a station, gathered from its bus (create before ``start``).

    ``items`` holds the PartResults in publication order, ``by_id`` the latest one of each part id,
    ``status`` every other bus event; :meth:`wait` blocks until a given part's result is in.
    ``keep_images=False`` keeps each result without its pixels (images and heat maps), so a test
    that measures the station's memory over thousands of parts does not measure its own collector.
    """

    def __init__(self, station: Any, *, keep_images: bool = True):
        from station.contracts import PartResult

        self._kind = PartResult
        self._keep_images = keep_images
        self.sub = station.bus.subscribe("test-results", maxsize=100_000)
        self.items: list[PartResult] = []
        self.by_id: dict[int, PartResult] = {}
        self.status: list[Any] = []
        self._cond = threading.Condition()
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
            with self._cond:
                if isinstance(ev, self._kind):
                    if not self._keep_images:
                        ev = without_pixels(ev)
                    self.items.append(ev)
                    self.by_id[ev.trigger.part_id] = ev
                    self._cond.notify_all()
                else:
                    self.status.append(ev)

    def wait(self, part_id: int, timeout_s: float = 10.0) -> PartResult:
        """The final result of ``part_id`` (test pacing: blocks until it is published)."""
        with self._cond:
            if not self._cond.wait_for(lambda: part_id in self.by_id, timeout=timeout_s):
                raise AssertionError(f"no result for part {part_id} within {timeout_s} s")
            return self.by_id[part_id]

    def close(self) -> list[PartResult]:
        """Stop gathering (after draining what is queued); returns ``items``."""
        self._stop.set()
        self._thread.join(2)
        return self.items


@contextlib.contextmanager
def running(station: Any) -> Iterator[Results]:
    """Starts ``station`` with a :class:`Results` collector; on leaving, stops the station, then the collector (its
    ``items`` stay readable)."""
    results = Results(station)
    station.start()
    try:
        yield results
    finally:
        station.stop()
        results.close()


def wait_parts(station: Any, n: int, timeout: float = 30.0) -> None:
    """Wait until ``n`` verdicts exist (and a bounded trigger source is done)."""
    wait_for(
        lambda: station.counters.snapshot().verdicts >= n and station.trigger_source_done(), timeout, f"{n} verdicts"
    )


class MqttCollector:
    """A real paho-mqtt subscriber (QoS 1) collecting every message of ``topic`` with its arrival order.

    With ``persistent=True`` it keeps a broker session (clean_session False): messages published
    while it is disconnected are queued for it by the broker (with broker persistence, across a
    broker restart too).
    """

    def __init__(self, port: int, topic: str, client_id: str = "test-collector", persistent: bool = False):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, bytes, bool]] = []  # (topic, payload, retain)
        self._lock = threading.Lock()
        self.connected = threading.Event()
        self.topic = topic
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent)
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)  # type: ignore[arg-type]
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self.connected.wait(5):
            raise RuntimeError("test subscriber could not connect")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        client.subscribe(self.topic, qos=1)
        self.connected.set()

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def of(self, suffix: str) -> list[tuple[bytes, bool]]:
        """Payloads (and retain flags) of the topics ending with ``suffix``."""
        with self._lock:
            return [(p, r) for t, p, r in self.messages if t.endswith(suffix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class RemoteOpcUaServer:
    """An asyncua server playing a PLC's OPC UA interface: writable Boolean ``ns=2;s=<name>`` nodes.

    Every write a client makes is recorded with its arrival time (``writes``).
    """

    def __init__(self, names: tuple[str, ...] = ("Reject",), port: int | None = None):
        self.port = port or free_port()
        self.names = names
        self.writes: list[tuple[int, str, Any]] = []  # (t_ns, node id string, value)
        self.endpoint = f"opc.tcp://127.0.0.1:{self.port}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()

    def start(self) -> RemoteOpcUaServer:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="remote-opcua", daemon=True)
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("remote OPC UA server did not start")
        return self

    async def _main(self) -> None:
        from asyncua import Server, ua
        from asyncua.common.callback import CallbackType

        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        server = Server()
        await server.init()
        server.set_endpoint(self.endpoint + "/")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await server.register_namespace("urn:test-plc")
        # asyncua annotates NodeId's fields with its ua.String/ua.Int16 classes, yet takes (and documents) str and int
        plc = await server.nodes.objects.add_object(ua.NodeId("PLC", idx), ua.QualifiedName("PLC", idx))  # type: ignore[arg-type]
        for name in self.names:
            var = await plc.add_variable(
                ua.NodeId(name, idx),  # type: ignore[arg-type]  # as above
                ua.QualifiedName(name, idx),
                ua.Variant(False, ua.VariantType.Boolean),
            )
            await var.set_writable()

        async def on_write(event: Any, dispatcher: Any) -> None:
            t = time.monotonic_ns()
            for wv in event.request_params.NodesToWrite:
                self.writes.append((t, wv.NodeId.to_string(), wv.Value.Value.Value))

        server.subscribe_server_callback(CallbackType.PostWrite, on_write)
        async with server:
            self._ready.set()
            await self._stopping.wait()

    def values(self, node: str) -> list[Any]:
        return [v for _, n, v in self.writes if n == node]

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(10)


BELT_START = 2**32 - 9000  # the count wraps around 2**32 a fraction of a second into a run


class _BeltTimeline:
    """count(t) = start + v0 (t + a T/2π (1 - cos 2πt/T)): speed v0 (1 + a sin 2πt/T), always > 0 for a < 1."""

    v0: float
    a: float
    period: float
    t0: float
    start: int
    writes: list[tuple[int, int]]  # (t_ns the PLC register holds it, count)

    def count(self, t: float) -> int:
        w = 2 * math.pi / self.period
        return self.start + int(self.v0 * (t + self.a / w * (1 - math.cos(w * t))))

    def crossing_ns(self, target: int) -> int:
        """When the physical belt reached ``target``."""
        lo, hi = 0.0, 60.0
        for _ in range(60):  # count(t) is monotonic: bisect
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self.count(mid) < target else (lo, mid)
        return int((self.t0 + hi) * 1e9)

    def register_at(self, t_ns: int) -> int:
        """The count the PLC register held at ``t_ns`` (what any reader could see then)."""
        return max((c for t, c in self.writes if t <= t_ns), default=self.start)

    def register_crossing_ns(self, target: int) -> int:
        """When the register first held a count >= ``target``."""
        return next(t for t, c in self.writes if c >= target)


class Belt(_BeltTimeline):
    """The PLC's encoder on a belt of varying speed, written to ENCODER_COUNT (input registers 0-1) every ~0.5 ms,
    by a thread of this process (fine for behaviour; for timing use :class:`BeltProcess`)."""

    def __init__(
        self, plc: PlcSim, v0: float = 20000.0, a: float = 0.6, period_s: float = 0.7, start: int = BELT_START
    ):
        self.plc, self.v0, self.a, self.period, self.start = plc, v0, a, period_s, start
        self._stop = threading.Event()
        self.t0 = time.monotonic_ns() / 1e9
        self.writes = [(self.plc.set_u32("input", 0, start), start)]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.plc.running:
                c = self.count(time.monotonic_ns() / 1e9 - self.t0)
                try:
                    t_set = self.plc.set_u32("input", 0, c)
                except (AssertionError, RuntimeError, TimeoutError):
                    pass  # the PLC is being stopped or restarted
                else:
                    self.writes.append((t_set, c))
            time.sleep(0.0005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


def realtime_process(pid: int, what: str, priority: int = 20) -> None:
    """Every thread of process ``pid`` at SCHED_FIFO ``priority`` when permitted: a peer that has its own hardware
    in a plant (a PLC) is not starved by the load under test."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return  # the process is gone (or no /proc): nothing to raise
    for tid in tids:
        set_realtime(priority, what, int(tid))


_BELT_PROCESS = """
import sys
sys.path.insert(0, {repo!r})
from tests.fixtures_floor import Belt, PlcSim
plc = PlcSim().start()
belt = Belt(plc, v0={v0!r}, a={a!r}, period_s={period!r}, start={start!r})
print(plc.port, repr(belt.t0), flush=True)
sys.stdin.readline()
belt.stop()
print("\\n".join(f"{{t}} {{c}}" for t, c in belt.writes), flush=True)
plc.stop()
"""


class BeltProcess(_BeltTimeline):
    """A PLC (pymodbus server) with its belt encoder in its own process, like PLC hardware:
    its own GIL, and SCHED_FIFO when permitted, so the count register follows the belt within ~1 ms
    whatever the station's process is doing. ``writes`` (stamped in the PLC's server thread; the
    clock is the system-wide monotonic clock) is available after ``stop()``."""

    def __init__(self, v0: float = 20000.0, a: float = 0.6, period_s: float = 0.7, start: int = BELT_START):
        import sys

        self.v0, self.a, self.period, self.start = v0, a, period_s, start
        self.writes = []
        repo = str(Path(__file__).resolve().parents[1])
        code = _BELT_PROCESS.format(repo=repo, v0=v0, a=a, period=period_s, start=start)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        port, t0 = self.proc.stdout.readline().split()
        self.port, self.t0 = int(port), float(t0)
        realtime_process(self.proc.pid, "belt PLC process")

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        out, _ = self.proc.communicate("stop\n", timeout=10)
        self.writes = [(int(a), int(b)) for a, b in (line.split() for line in out.splitlines() if line.strip())]
