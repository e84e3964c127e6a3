"""Plant-floor services of a station: PLC handshake, MQTT publisher, OPC UA server, recipes.

Built by :class:`station.app.Station` only for the sections that are
configured; each consumes its own bus subscription in its own thread, so
none of them can slow the line. Start order: OPC UA server, MQTT, PLC
handshake (the PLC sees STATION_READY last); stop in reverse.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .serialize import event_to_dict
from .services import Services

if TYPE_CHECKING:
    from .app import Station

log = logging.getLogger(__name__)


class FloorServices:
    """The configured plant-floor protocol services of one station, and recipe selection."""

    def __init__(self, station: Station):
        self.station = station
        cfg = station.cfg
        report = station.alarms.report
        self.active_recipe = 0
        self._recipe_lock = threading.Lock()
        self.handshake: Any = None
        self.mqtt: Any = None
        self.opcua: Any = None
        if cfg.plc is not None:
            from .plc.handshake import PlcHandshake

            self.handshake = PlcHandshake(
                cfg.plc,
                station.bus.subscribe("plc", maxsize=cfg.plc.queue_size),
                report=report,
                ready=lambda: bool(station.running and not station.pipeline.paused and station.healthy),
                alarm_active=lambda: any(not e.component.startswith("plc") for e in station.alarms.active()),
                on_recipe=self.select_recipe,
                healthy=lambda: station.healthy,  # the watchdog: no HEARTBEAT toggles while a worker is stuck
            )
        if cfg.publish.mqtt is not None:
            from .publish.mqtt import MqttPublisher

            self.mqtt = MqttPublisher(
                cfg.publish.mqtt,
                cfg.name,
                station.bus.subscribe("mqtt", maxsize=10000),
                report=report,
                status=self._status,
            )
        if cfg.publish.opcua is not None:
            from .publish.opcua_server import OpcUaServer

            self.opcua = OpcUaServer(
                cfg.publish.opcua,
                cfg.name,
                station.bus.subscribe("opcua", maxsize=1000),
                snapshot=self.snapshot,
                on_recipe=self.select_recipe,
            )
        # the configured ones, in start order
        services = (("opcua", self.opcua), ("mqtt", self.mqtt), ("plc", self.handshake))
        self._configured = {name: svc for name, svc in services if svc is not None}
        self._services = Services()
        for name, svc in self._configured.items():
            self._services.add(name, svc.start, svc.stop)

    def start(self) -> None:
        """Start the configured services (OPC UA, MQTT, then the PLC handshake)."""
        self._services.start()

    def stop(self) -> None:
        """Stop in reverse order; the PLC gets the last results and STATION_READY = 0 first."""
        self._services.stop()

    # -- recipes ------------------------------------------------------------
    def select_recipe(self, n: int) -> bool:
        """Switch to recipe ``n`` (model from ``recipes:``); False, with an alarm, when that cannot be done."""
        cfg = self.station.cfg
        path = cfg.recipes.get(int(n))
        if path is None:
            self.station.alarms.report(
                "recipe", "alarm", f"unknown recipe {n}: configured are {sorted(cfg.recipes) or 'none'} (`recipes:`)"
            )
            return False
        if cfg.inspector.type != "onnx":
            self.station.alarms.report(
                "recipe", "alarm", f"recipe {n} needs inspector.type onnx to switch models (is {cfg.inspector.type})"
            )
            return False
        if not Path(path).is_file():
            self.station.alarms.report("recipe", "alarm", f"recipe {n}: model file {path} not found")
            return False

        def done(error: Exception | None) -> None:
            if error is not None:
                self.station.alarms.report(
                    "recipe", "alarm", f"recipe {n}: model {path} failed to load, keeping the running one: {error}"
                )
                return
            with self._recipe_lock:
                self.active_recipe = int(n)
            if self.handshake is not None:
                self.handshake.set_active_recipe(int(n))
            self.station.alarms.report("recipe", "ok", f"recipe {n} active ({Path(path).name})")

        log.info("recipe %d selected: loading %s", n, path)
        self.station.swap_model(Path(path), on_done=done)
        return True

    # -- views --------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """State, counters and recipe for the OPC UA server."""
        st = self.station
        return {
            **self._line_state(),
            "config_hash": st.config_hash,
            "alarms": [f"{e.component}: {e.message}" for e in st.alarms.active()],
            "counters": st.counters.snapshot().as_dict(),
            "recipes": sorted(st.cfg.recipes),
        }

    def _status(self) -> dict[str, Any]:
        """The status message of the MQTT publisher."""
        return {**self._line_state(), "alarms": [event_to_dict(e) for e in self.station.alarms.active()]}

    def _line_state(self) -> dict[str, Any]:
        """What the OPC UA snapshot and the MQTT status both carry."""
        st = self.station
        return {
            "running": st.running,
            "paused": st.pipeline.paused,
            "model_id": st.inspector.model_id,
            "active_recipe": self.active_recipe,
        }

    def health(self) -> dict[str, Any]:
        """Health of each configured service."""
        return {name: svc.health() for name, svc in reversed(self._configured.items())}
