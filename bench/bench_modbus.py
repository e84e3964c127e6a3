"""Modbus TCP round trips against a local pymodbus server, side by side with a raw TCP echo.

The PLC simulator (tests/fixtures_floor.PlcSim: pymodbus ModbusTcpServer) runs in its own
process, like a PLC on the network; so does the reference, a minimal TCP echo server answering
12-byte messages (the size of a Modbus write-coil request). Measured from the station side:

* reference   - raw socket send/recv of 12 bytes (the floor: loopback + two Python processes)
* write coil  - ``ModbusOutput.set("reject", v)`` (FC5), what the reject scheduler does per edge
* read count  - ``ModbusLink.read_registers("input", 0, 2)`` (FC4), one encoder poll
* handshake   - one result hand-over: FC16 (4 registers) + FC5 RESULT_VALID

Not a test: prints p50 / p99 / max in ms and the ratio to the reference.

    python bench/bench_modbus.py            # 3000 requests per row
    python bench/bench_modbus.py --quick    # 500
"""

from __future__ import annotations

import argparse
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from station.actuate.modbus_output import ModbusOutput  # noqa: E402
from station.config import ModbusEndpointConfig, ModbusOutputConfig  # noqa: E402
from station.plc.link import ModbusLink  # noqa: E402
from tests.fixtures_floor import realtime_process  # noqa: E402

PLC = """
import sys, time; sys.path.insert(0, %r)
from tests.fixtures_floor import PlcSim
p = PlcSim().start(); print(p.port, flush=True); time.sleep(3600)
"""
ECHO = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", 0)); s.listen(1)
print(s.getsockname()[1], flush=True)
c, _ = s.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while True:
    d = c.recv(64)
    if not d:
        break
    c.sendall(d)
"""


def spawn(code: str) -> tuple[subprocess.Popen[bytes], int]:
    """A peer in its own process (SCHED_FIFO when permitted, like dedicated PLC hardware)."""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    realtime_process(proc.pid, "bench peer process")
    return proc, port


def timed(fn: Callable[[int], object], n: int) -> np.ndarray:
    for i in range(50):  # warm up
        fn(i)
    out = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter_ns()
        fn(i)
        out[i] = (time.perf_counter_ns() - t0) / 1e6
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=3000)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 500 if args.quick else args.count
    logging.basicConfig(level=logging.ERROR)

    plc, plc_port = spawn(PLC % str(REPO))
    echo, echo_port = spawn(ECHO)
    rows: list[tuple[str, np.ndarray]] = []
    try:
        sock = socket.create_connection(("127.0.0.1", echo_port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        msg = bytes(12)

        def echo_rt(_: int) -> None:
            sock.sendall(msg)
            got = 0
            while got < len(msg):
                got += len(sock.recv(64))

        rows.append(("reference", timed(echo_rt, n)))
        sock.close()

        out = ModbusOutput(ModbusOutputConfig(port=plc_port, timeout_ms=200))
        out.open()
        rows.append(("write coil", timed(lambda i: out.set("reject", bool(i & 1)), n)))
        out.close()

        link = ModbusLink(ModbusEndpointConfig(port=plc_port, timeout_ms=200), "bench")
        assert link.connect_if_due()
        rows.append(("read count", timed(lambda i: link.read_registers("input", 0, 2), n)))

        def handshake(i: int) -> None:
            link.write_registers(0, [0, i & 0xFFFF, 2, i & 0xFFFF])
            link.write_coil(3, True)

        rows.append(("handshake", timed(handshake, n)))
        link.close()
    finally:
        plc.kill()
        echo.kill()

    ref_p50 = float(np.percentile(rows[0][1], 50))
    print(
        f"Modbus TCP on loopback, pymodbus {__import__('pymodbus').__version__} server in its own process, {n} "
        "requests per row"
    )
    print(f"{'row':<12} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'p50 / reference':>16}")
    for name, a in rows:
        p50, p99 = float(np.percentile(a, 50)), float(np.percentile(a, 99))
        print(f"{name:<12} {p50:>8.3f} {p99:>8.3f} {a.max():>8.3f} {p50 / ref_p50:>15.1f}x")


if __name__ == "__main__":
    main()
