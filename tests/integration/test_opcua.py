"""OPC UA both ways, with real asyncua peers on loopback.

* An asyncua client reads the station's OPC UA server (state, counters, last result) and selects a recipe.
* The ``opcua`` output driver pulses a Boolean node on a remote asyncua server (a PLC's OPC UA interface).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from asyncua import Client, ua

from station.app import Station
from station.contracts import Outcome
from tests.fixtures_floor import RemoteOpcUaServer, running, wait_for, wait_parts
from tests.reject_checks import expected_rising_edges


def _nid(name: str, ns: int) -> ua.NodeId:
    # asyncua annotates NodeId's fields with its ua.String/ua.Int16 classes, yet takes (and documents) str and int
    return ua.NodeId(name, ns)  # type: ignore[arg-type]


async def _read(endpoint: str, uri: str, paths: list[str]) -> dict[str, Any]:
    async with Client(endpoint, timeout=5) as client:
        ns = await client.get_namespace_index(uri)
        nodes = [client.get_node(_nid(f"InspectionStation.{p}", ns)) for p in paths]
        values = await client.read_values(nodes)
        return dict(zip(paths, values))


async def _select(endpoint: str, uri: str, recipe: int) -> bool:
    async with Client(endpoint, timeout=5) as client:
        ns = await client.get_namespace_index(uri)
        rm = client.get_node(_nid("InspectionStation.RecipeManagement", ns))
        return bool(
            await rm.call_method(ua.QualifiedName("SelectRecipe", ns), ua.Variant(recipe, ua.VariantType.Int32))
        )


def read(station: Station, *paths: str) -> dict[str, Any]:
    opcua = station.cfg.publish.opcua
    assert opcua is not None
    return asyncio.run(_read(station.floor.opcua.endpoint, opcua.namespace, list(paths)))


def test_client_reads_state_counters_and_last_result(make_config):
    cfg = make_config(
        publish={"opcua": {"port": 0, "update_ms": 50}}, trigger={"type": "timer", "parts_per_minute": 1200}
    )
    station = Station(cfg, max_parts=20)
    with running(station) as results:
        assert station.floor.opcua.port != 0, "port 0 picks a free port; the real one is published"
        assert station.health()["components"]["opcua"]["endpoint"].endswith(f":{station.floor.opcua.port}")
        wait_parts(station, 20)
        wait_for(lambda: station.scheduler.pending_rejects == 0, 5, "last reject pulses")
        time.sleep(0.2)  # a few refresh periods
        v = read(
            station,
            "StationName",
            "State.Running",
            "State.Paused",
            "State.SystemState",
            "State.ModelId",
            "Counters.Verdicts",
            "Counters.Pass",
            "Counters.Fail",
            "Counters.Failsafe",
            "Counters.Triggers",
            "Counters.RejectsFired",
            "LastResult.PartId",
            "LastResult.Outcome",
            "LastResult.OutcomeCode",
            "LastResult.Reasons",
            "LastResult.ModelId",
            "LastResult.Time",
        )
        station.pause(True)
        refused = asyncio.run(
            _select(station.floor.opcua.endpoint, cfg.publish.opcua.namespace, 5)
        )  # no recipes configured
        time.sleep(0.2)
        paused = read(station, "State.Paused", "State.SystemState", "State.ActiveAlarmCount", "State.ActiveAlarms")
    snap = station.counters.snapshot()
    last = results.items[-1]
    assert v["StationName"] == cfg.name and v["State.Running"] is True and v["State.Paused"] is False
    assert v["State.SystemState"] == "Operational" and v["State.ModelId"] == station.inspector.model_id
    assert (v["Counters.Verdicts"], v["Counters.Triggers"]) == (snap.verdicts, snap.triggers) == (20, 20)
    assert (v["Counters.Pass"], v["Counters.Fail"], v["Counters.Failsafe"]) == (snap.PASS, snap.FAIL, snap.FAILSAFE)
    assert v["Counters.RejectsFired"] == snap.rejects_fired
    assert v["LastResult.PartId"] == last.trigger.part_id
    assert v["LastResult.Outcome"] == last.verdict.outcome.value
    assert (
        v["LastResult.OutcomeCode"]
        == {Outcome.PASS: 1, Outcome.FAIL: 2, Outcome.UNCERTAIN: 3, Outcome.FAILSAFE: 4}[last.verdict.outcome]
    )
    assert v["LastResult.Reasons"] == list(last.verdict.reasons)
    assert v["LastResult.ModelId"] == last.verdict.model_id
    assert abs(v["LastResult.Time"].timestamp() - last.trigger.t_trigger_wall) < 0.01
    assert paused["State.Paused"] is True and paused["State.SystemState"] == "Paused"
    assert refused is False
    assert paused["State.ActiveAlarmCount"] == len(paused["State.ActiveAlarms"]) >= 1
    assert any(a.startswith("recipe: unknown recipe 5") for a in paused["State.ActiveAlarms"])


def test_select_recipe_method_switches_the_model(make_config):
    from tests.model_factory import detecting_model, tiny_model

    model_a, model_b = tiny_model("detect"), detecting_model()
    cfg = make_config(
        inspector={"type": "onnx", "model": str(model_a), "keepalive_s": 0},
        recipes={1: str(model_a), 2: str(model_b)},
        publish={"opcua": {"port": 0, "update_ms": 50}},
        trigger={"type": "timer", "parts_per_minute": 300},
    )
    station = Station(cfg)
    station.start()
    uri = cfg.publish.opcua.namespace
    try:
        id_a = station.inspector.model_id
        assert read(station, "RecipeManagement.Recipes")["RecipeManagement.Recipes"] == [1, 2]
        assert asyncio.run(_select(station.floor.opcua.endpoint, uri, 2)) is True
        wait_for(lambda: station.inspector.model_id != id_a, 15, "model switch")
        time.sleep(0.2)
        v = read(station, "RecipeManagement.ActiveRecipe", "State.ModelId")
        assert v == {"RecipeManagement.ActiveRecipe": 2, "State.ModelId": station.inspector.model_id}
        assert asyncio.run(_select(station.floor.opcua.endpoint, uri, 9)) is False, "unknown recipe refused"
        assert any(e.component == "recipe" and "unknown recipe 9" in e.message for e in station.alarms.active())
    finally:
        station.stop()
    assert station.floor.opcua.recipe_calls == 2


def test_opcua_output_pulses_a_remote_boolean_node(make_config):
    remote = RemoteOpcUaServer(("Reject",)).start()
    try:
        cfg = make_config(
            reject={
                "travel_ms": 400,
                "safety_margin_ms": 100,
                "pulse_ms": 30,
                "output": {
                    "type": "opcua",
                    "endpoint": remote.endpoint,
                    "nodes": {"reject": "ns=2;s=Reject"},
                    "timeout_s": 1.0,
                },
            },
            trigger={"type": "timer", "parts_per_minute": 600},
        )
        station = Station(cfg, max_parts=15)
        with running(station) as results:
            wait_parts(station, 15)
    finally:
        remote.stop()
    rejecting = [r for r in results.items if r.verdict.outcome is not Outcome.PASS]
    writes = [(t, v) for t, node, v in remote.writes if node == "ns=2;s=Reject"]
    values = [v for _, v in writes]
    rises = sum(1 for a, b in zip([False, *values], values) if b and not a)
    assert len(rejecting) == len(station.scheduler.fired) > 0
    assert rises == len(expected_rising_edges(station.scheduler.fired, 30))  # close parts share a pulse
    assert values[-1] is False, "released on stop"
    assert station.scheduler.output_errors == 0
    starts = set(expected_rising_edges(station.scheduler.fired, 30))
    fired = sorted(f.scheduled_ns for f in station.scheduler.fired if f.actual_ns in starts)
    rise_times = [t for (t, v), prev in zip(writes, [False, *values]) if v and not prev]
    late = [(t - s) / 1e6 for t, s in zip(rise_times, fired)]
    assert all(0 <= ms < 50 for ms in late), f"node written shortly after schedule: {late}"
