"""The watchdog: stuck or dead hot-path workers, and systemd's watchdog.

One thread, every ``watchdog.period_s`` (0.1 s), reads what each hot-path
worker is doing (:meth:`station.pipeline.Pipeline.stalled`: two integers per
worker, no lock the line takes). A worker busy with one part longer than
``watchdog.stall_s`` (a model call that never returns, a camera grab that
never returns) or whose thread died is, within ``stall_s + period_s``:

* abandoned: a thread stuck in a C call cannot be killed, so it is marked and
  its late result ignored; a stuck inspection leaves the inspector's lock to it
  (:meth:`~station.inspection.swap.SwappableInspector.abandon_stuck`);
* replaced by a fresh thread (the station also loads a fresh inspector
  instance when it can, through the hot-swap path);
* reported: the ``watchdog`` alarm, cleared once the fresh worker has
  recovered (finished a part, or waited ``recover_s`` for work without sticking).

The parts in flight need nothing from here: the reject scheduler makes a part
without a verdict FAILSAFE at its deadline and rejects it. While a worker is
stuck and until it recovers, :attr:`Watchdog.healthy` is False: the PLC
heartbeat stands still, STATION_READY drops, and systemd gets no WATCHDOG=1.
More than ``max_restarts`` restarts within ``restart_window_s`` (or a dead
reject scheduler, which cannot be replaced under its pending pulses) and the
watchdog gives up: ``on_give_up(reason)`` stops the station, which exits
non-zero for systemd (``Restart=on-failure``) to start it again.

:class:`SdNotifier` speaks sd_notify over ``$NOTIFY_SOCKET`` (a unix datagram
socket) with the standard library only.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .alarms import AlarmBoard
from .config import WatchdogConfig
from .pipeline import Pipeline, Stall
from .services import ThreadWorker

log = logging.getLogger(__name__)

COMPONENT = "watchdog"


class SdNotifier:
    """sd_notify(3) without libsystemd: one datagram per message to ``$NOTIFY_SOCKET``.

    Inactive (every call a no-op returning False) when the variable is not set,
    e.g. outside systemd. ``watchdog_s`` is systemd's ``WatchdogSec`` when it
    asked this process for keep-alives (``$WATCHDOG_USEC``, ``$WATCHDOG_PID``).
    """

    def __init__(self, env: Mapping[str, str] | None = None):
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if path.startswith("@"):
            self.address = "\0" + path[1:]  # abstract namespace
        elif path.startswith("/"):
            self.address = path
        self.watchdog_s: float | None = None
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6
        self._sock: socket.socket | None = None
        self._warned = False
        self.sent = 0

    @property
    def active(self) -> bool:
        """True when a service manager listens."""
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send ``lines`` ("READY=1", "WATCHDOG=1", "STATUS=...") as one message; never blocks or raises."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(lines).encode(), self.address)
            self.sent += 1
            return True
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("sd_notify to %r failed: %s", self.address, exc)
            return False

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


@dataclass(frozen=True)
class RestartRecord:
    """One worker the watchdog replaced."""

    t_wall: float
    t_ns: int
    stall: Stall


class Watchdog(ThreadWorker):
    """Health check of the hot-path workers; restarts them, or gives up."""

    def __init__(
        self,
        cfg: WatchdogConfig,
        pipeline: Pipeline,
        alarms: AlarmBoard,
        *,
        notifier: SdNotifier | None = None,
        grab_timeout_s: float = 0.5,
        on_restart: Callable[[Stall, threading.Thread], None] | None = None,
        on_give_up: Callable[[str], None] | None = None,
        fatal: Callable[[], str | None] = lambda: None,
    ):
        self.cfg = cfg
        self.pipeline = pipeline
        self.alarms = alarms
        self.notifier = notifier or SdNotifier({})
        self.grab_stall_s = max(cfg.stall_s, 2 * grab_timeout_s)
        self._on_restart = on_restart
        self._on_give_up = on_give_up
        self._fatal = fatal
        # keep-alives at least twice per WatchdogSec, and no rarer than notify_s
        self.notify_s = min(cfg.notify_s, self.notifier.watchdog_s / 2) if self.notifier.watchdog_s else cfg.notify_s
        self._healthy = True
        self._recovering: set[str] = set()
        self._restart_ns: deque[int] = deque()
        self.restarts: list[RestartRecord] = []
        self.gave_up: str | None = None
        self._last_notify = 0.0
        super().__init__("watchdog")

    @property
    def healthy(self) -> bool:
        """False from a stuck or dead worker until its replacement recovered (or for good after giving up)."""
        return self._healthy

    def start(self) -> None:
        """Start the health-check thread (after the line's threads)."""
        self._start_thread(self._run)

    def stop(self) -> None:
        """Stop checking (first thing at station stop: a stopping line is not a stuck one)."""
        self._stop_thread(2)

    def _run(self) -> None:
        while not self._stop.wait(self.cfg.period_s):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the health check must keep running
                log.exception("watchdog check failed")
                self._healthy = False  # no keep-alives from a check that cannot run

    def check(self) -> None:
        """One health check: restart stuck or dead workers, clear the alarm on recovery, keep systemd informed."""
        if self.gave_up is not None:
            return
        reason = self._fatal()
        if reason:
            self._give_up(reason)
            return
        stalls = self.pipeline.stalled(self.cfg.stall_s, self.grab_stall_s)
        if stalls:
            self._healthy = False  # stops WATCHDOG=1, the PLC heartbeat and STATION_READY at once
            for s in stalls:
                if not self._restart(s):
                    return
        elif self._recovering:
            self._recovering = {
                slot for slot in self._recovering if not self.pipeline.recovered(slot, self.cfg.recover_s)
            }
            if not self._recovering:
                self._healthy = True
                last = self.restarts[-1].stall.describe() if self.restarts else ""
                self.alarms.report(COMPONENT, "ok", f"recovered: the fresh worker runs ({last})")
        if self._healthy:
            now = time.monotonic()
            if now - self._last_notify >= self.notify_s:
                self._last_notify = now
                self.notifier.notify("WATCHDOG=1")

    def _restart(self, s: Stall) -> bool:
        now = time.monotonic_ns()
        window_ns = int(self.cfg.restart_window_s * 1e9)
        while self._restart_ns and now - self._restart_ns[0] > window_ns:
            self._restart_ns.popleft()
        if len(self._restart_ns) >= self.cfg.max_restarts:
            self.pipeline.abandon(s)  # its lock must not hold up the stop
            self._give_up(
                f"{s.describe()}; {len(self._restart_ns)} restart(s) within {self.cfg.restart_window_s:.0f} s already: "
                "giving up, the station stops for systemd to restart it"
            )
            return False
        self._restart_ns.append(now)
        self.restarts.append(RestartRecord(time.time(), now, s))
        n = len(self._restart_ns)
        self.alarms.report(
            COMPONENT,
            "alarm",
            f"{s.describe()}: restarted in a fresh thread ({n} in {self.cfg.restart_window_s:.0f} s)",
        )
        t = self.pipeline.restart(s)
        if t is None:
            return True  # the line is stopping
        self._recovering.add(s.slot)
        if self._on_restart is not None:
            try:
                self._on_restart(s, t)
            except Exception:  # noqa: BLE001 - a failed extra (priority, fresh model) must not stop the restart
                log.exception("watchdog restart hook failed")
        return True

    def _give_up(self, reason: str) -> None:
        self.gave_up = reason
        self._healthy = False
        log.critical("watchdog: %s", reason)
        self.alarms.report(COMPONENT, "alarm", reason)
        self.notifier.notify("STATUS=" + reason.replace("\n", " ")[:200])
        if self._on_give_up is not None:
            self._on_give_up(reason)
