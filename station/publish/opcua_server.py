"""OPC UA server (asyncua): station state, counters, last result, recipe selection.

Modelled in the spirit of OPC UA for Machine Vision (OPC 40100): one
``InspectionStation`` object with ``State`` (running / paused, system state,
active alarms), ``Counters``, ``LastResult`` (part id, outcome, reasons,
model id, time) and ``RecipeManagement`` (``ActiveRecipe``, ``Recipes`` and
the method ``SelectRecipe(RecipeId) -> Accepted``). NodeIds are strings,
stable across restarts: ``ns=<ns>;s=InspectionStation.LastResult.PartId``.

The server runs on its own thread and event loop. It drains its bus
subscription every ``update_ms`` (only the newest result matters) and
refreshes counters and state from a snapshot callable, so a slow OPC UA
client can never slow the line. Clients are read-only except for the method.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from asyncua import Node, Server, ua

from ..bus import Subscription
from ..config import OpcUaServerConfig
from ..contracts import PartResult
from ..plc.registers import RESULT_CODE_OF

log = logging.getLogger(__name__)

ROOT = "InspectionStation"
COUNTERS = (
    ("Triggers", "triggers"), ("Frames", "frames"), ("Dropped", "dropped"), ("Verdicts", "verdicts"),
    ("Pass", "PASS"), ("Fail", "FAIL"), ("Uncertain", "UNCERTAIN"), ("Failsafe", "FAILSAFE"),
    ("RejectsScheduled", "rejects_scheduled"), ("RejectsFired", "rejects_fired"), ("RecordsWritten", "records_written"),
)  # fmt: skip

SnapshotFn = Callable[[], dict[str, Any]]
RecipeFn = Callable[[int], bool]


class OpcUaServer:
    """The station's OPC UA server; ``start()`` returns once it listens."""

    def __init__(
        self,
        cfg: OpcUaServerConfig,
        station_name: str,
        sub: Subscription,
        *,
        snapshot: SnapshotFn,
        on_recipe: RecipeFn | None = None,
    ):
        self.cfg = cfg
        self.station_name = station_name
        self.sub = sub
        self._snapshot = snapshot
        self._on_recipe = on_recipe
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._vars: dict[str, Node] = {}
        self._last_written: dict[str, Any] = {}
        self.port = cfg.port
        self.ns = 0
        self.updates = 0
        self.recipe_calls = 0

    @property
    def endpoint(self) -> str:
        """Where clients connect (with the real port once started)."""
        return f"opc.tcp://{self.cfg.host}:{self.port}"

    # -- lifecycle ----------------------------------------------------------
    def start(self, timeout_s: float = 15.0) -> None:
        """Start the server thread; raises if it cannot listen."""
        self._thread = threading.Thread(target=self._thread_main, name="opcua-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError(f"OPC UA server did not start within {timeout_s:.0f} s")
        if self._error is not None:
            raise RuntimeError(
                f"OPC UA server cannot listen on {self.cfg.host}:{self.cfg.port}: {self._error} (publish.opcua.port; 0 "
                "picks a free port)"
            ) from self._error
        log.info("OPC UA server on %s (namespace %d)", self.endpoint, self.ns)

    def stop(self) -> None:
        """Stop the server and its thread."""
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def health(self) -> dict[str, object]:
        """Listening endpoint."""
        alive = self._thread is not None and self._thread.is_alive()
        return {
            "state": "ok" if alive else "alarm",
            "message": self.endpoint if alive else "not running",
            "endpoint": self.endpoint,
        }

    # -- server thread ------------------------------------------------------
    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to start() or logged
            if not self._ready.is_set():
                self._error = exc
            else:
                log.exception("OPC UA server stopped on an error")
        finally:
            self._ready.set()
            loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        server = Server()
        await server.init()
        server.set_endpoint(f"opc.tcp://{self.cfg.host}:{self.cfg.port}/")
        server.set_server_name(f"Inspection station {self.station_name}")
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        self.ns = await server.register_namespace(self.cfg.namespace)
        await self._build(server)
        await server.start()
        try:
            if server.bserver is not None:
                self.port = server.bserver.port  # the real one when port 0 was asked
            await self._refresh()
            self._ready.set()
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.cfg.update_ms / 1000)
                await self._refresh()
        finally:
            await server.stop()

    def _nid(self, path: str) -> ua.NodeId:
        # asyncua annotates NodeId's fields with its ua.String/ua.Int16 classes, yet takes (and documents) str and int
        return ua.NodeId(f"{ROOT}.{path}" if path else ROOT, self.ns)  # type: ignore[arg-type]

    async def _var(self, parent: Node, path: str, value: Any, vtype: ua.VariantType) -> None:
        name = path.rsplit(".", 1)[-1]
        self._vars[path] = await parent.add_variable(
            self._nid(path), ua.QualifiedName(name, self.ns), ua.Variant(value, vtype)
        )
        self._last_written[path] = value

    async def _build(self, server: Server) -> None:
        ns = self.ns
        root = await server.nodes.objects.add_object(self._nid(""), ua.QualifiedName(ROOT, ns))
        await self._var(root, "StationName", self.station_name, ua.VariantType.String)

        state = await root.add_object(self._nid("State"), ua.QualifiedName("State", ns))
        await self._var(state, "State.Running", False, ua.VariantType.Boolean)
        await self._var(state, "State.Paused", False, ua.VariantType.Boolean)
        await self._var(state, "State.SystemState", "Stopped", ua.VariantType.String)
        await self._var(state, "State.ModelId", "", ua.VariantType.String)
        await self._var(state, "State.ConfigHash", "", ua.VariantType.String)
        await self._var(state, "State.ActiveAlarmCount", 0, ua.VariantType.UInt32)
        await self._var(state, "State.ActiveAlarms", [], ua.VariantType.String)

        counters = await root.add_object(self._nid("Counters"), ua.QualifiedName("Counters", ns))
        for name, _ in COUNTERS:
            await self._var(counters, f"Counters.{name}", 0, ua.VariantType.UInt64)

        last = await root.add_object(self._nid("LastResult"), ua.QualifiedName("LastResult", ns))
        await self._var(last, "LastResult.PartId", 0, ua.VariantType.UInt64)
        await self._var(last, "LastResult.Outcome", "", ua.VariantType.String)
        await self._var(last, "LastResult.OutcomeCode", 0, ua.VariantType.Int32)
        await self._var(last, "LastResult.Reasons", [], ua.VariantType.String)
        await self._var(last, "LastResult.ModelId", "", ua.VariantType.String)
        await self._var(last, "LastResult.ConfigHash", "", ua.VariantType.String)
        await self._var(last, "LastResult.TotalMs", 0.0, ua.VariantType.Double)
        await self._var(last, "LastResult.Time", datetime(1970, 1, 1, tzinfo=UTC), ua.VariantType.DateTime)

        recipes = await root.add_object(self._nid("RecipeManagement"), ua.QualifiedName("RecipeManagement", ns))
        await self._var(recipes, "RecipeManagement.ActiveRecipe", 0, ua.VariantType.Int32)
        await self._var(recipes, "RecipeManagement.Recipes", [], ua.VariantType.Int32)
        # ua.NodeId(int): see _nid
        arg_in = ua.Argument(Name="RecipeId", DataType=ua.NodeId(ua.ObjectIds.Int32), ValueRank=-1)  # type: ignore[arg-type]
        arg_in.Description = ua.LocalizedText("Recipe (product) number, as configured under `recipes:`")
        arg_out = ua.Argument(Name="Accepted", DataType=ua.NodeId(ua.ObjectIds.Boolean), ValueRank=-1)  # type: ignore[arg-type]
        arg_out.Description = ua.LocalizedText("True when the recipe is known and its model is being loaded")
        await recipes.add_method(
            self._nid("RecipeManagement.SelectRecipe"),
            ua.QualifiedName("SelectRecipe", ns),
            self._select_recipe,
            [arg_in],
            [arg_out],
        )

    def _select_recipe(self, parent: ua.NodeId, recipe: ua.Variant) -> list[ua.Variant]:
        """Method callback (server loop): quick, the model loads in the background."""
        self.recipe_calls += 1
        n = int(recipe.Value)
        accepted = bool(self._on_recipe(n)) if self._on_recipe is not None else False
        log.info("OPC UA SelectRecipe(%d) -> %s", n, accepted)
        return [ua.Variant(accepted, ua.VariantType.Boolean)]

    async def _set(self, path: str, value: Any, vtype: ua.VariantType) -> None:
        if self._last_written.get(path) == value:
            return
        await self._vars[path].write_value(ua.Variant(value, vtype))
        self._last_written[path] = value

    async def _refresh(self) -> None:
        last: PartResult | None = None
        for ev in self.sub.drain():
            if isinstance(ev, PartResult):
                last = ev
        snap = self._snapshot()
        S = ua.VariantType
        running, paused = bool(snap.get("running")), bool(snap.get("paused"))
        await self._set("State.Running", running, S.Boolean)
        await self._set("State.Paused", paused, S.Boolean)
        await self._set(
            "State.SystemState", "Stopped" if not running else "Paused" if paused else "Operational", S.String
        )
        await self._set("State.ModelId", str(snap.get("model_id", "")), S.String)
        await self._set("State.ConfigHash", str(snap.get("config_hash", "")), S.String)
        alarms = [str(a) for a in snap.get("alarms", [])]
        await self._set("State.ActiveAlarmCount", len(alarms), S.UInt32)
        await self._set("State.ActiveAlarms", alarms, S.String)
        counters = snap.get("counters", {})
        for name, key in COUNTERS:
            await self._set(f"Counters.{name}", int(counters.get(key, 0)), S.UInt64)
        await self._set("RecipeManagement.ActiveRecipe", int(snap.get("active_recipe", 0)), S.Int32)
        await self._set("RecipeManagement.Recipes", [int(r) for r in snap.get("recipes", [])], S.Int32)
        if last is not None:
            v = last.verdict
            await self._set("LastResult.PartId", int(v.part_id), S.UInt64)
            await self._set("LastResult.Outcome", v.outcome.value, S.String)
            await self._set("LastResult.OutcomeCode", int(RESULT_CODE_OF[v.outcome]), S.Int32)
            await self._set("LastResult.Reasons", list(v.reasons), S.String)
            await self._set("LastResult.ModelId", v.model_id, S.String)
            await self._set("LastResult.ConfigHash", v.config_hash, S.String)
            await self._set("LastResult.TotalMs", float(v.timings_ms.get("total", 0.0)), S.Double)
            t = last.trigger.t_trigger_wall or 0.0
            await self._set("LastResult.Time", datetime.fromtimestamp(t, tz=UTC), S.DateTime)
        self.updates += 1
