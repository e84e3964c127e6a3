"""Staged rollout on the real engines: the controller widens from the canary only on good metrics,
rolls a bad canary back by itself, a station offline during a promotion converges later, and a
station that cannot load a model keeps its last good one and reports why."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import onnx
import onnxruntime as ort
import psycopg
from onnx import TensorProto, helper

from station.contracts import Outcome
from station.plant.controller import Limits
from station.plant.follower import ModelFollower, s3_factory
from station.plant.ingest import Ingest
from tests.fixtures_plant import Plant, SimStation, wait_until


def onnx_model(path: Path, scale: float) -> Path:
    """A real (tiny) ONNX model: y = x * scale; each scale is another file and sha256."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    k = helper.make_tensor("k", TensorProto.FLOAT, [1], [scale])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "k"], ["y"])], f"scale{scale}", [x], [y], [k])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


class LineStation:
    """A simulated station that runs ONNX models: a real uplink, a real follower, onnxruntime loads."""

    def __init__(self, plant: Plant, name: str, group: str, quality: Callable[[str], Outcome]):
        self.sim = SimStation(
            name, plant.link(outbox_path=plant.root / f"{name}.db", batch=64, group=group, images="none")
        )
        self.session: ort.InferenceSession | None = None
        self.model_id = "v0"
        self.quality = quality  # outcome of a part under a model id: the test's "bad metrics"
        self.follower = ModelFollower(
            station=name,
            group=group,
            prefix=plant.prefix,
            nats_url=plant.engines.nats.url,
            bucket=plant.bucket,
            s3=s3_factory(plant.engines.s3.endpoint, "k", "s"),
            models_dir=plant.root / f"{name}-models",
            swap=self.swap,
            model_id=lambda: self.model_id,
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._line, daemon=True)

    def swap(self, path: Path, on_done: Callable[[Exception | None], None]) -> None:
        def load() -> None:
            try:
                session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types: reported, old model kept
                on_done(exc)
                return
            self.session, self.model_id = session, path.stem[:12]
            on_done(None)

        threading.Thread(target=load, daemon=True).start()

    def _line(self) -> None:
        while not self._stop.wait(0.01):
            self.sim.send(1, outcome=self.quality(self.model_id), model_id=self.model_id)

    def start(self, follow: bool = True) -> LineStation:
        self.sim.start()
        if follow:
            self.follower.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.follower.stop()
        self.sim.stop()


def test_canary_with_bad_metrics_rolls_back_and_an_offline_station_converges(plant: Plant, tmp_path):
    v1, v2 = onnx_model(tmp_path / "v1.onnx", 1.0), onnx_model(tmp_path / "v2.onnx", 2.0)
    import hashlib

    v2_id = hashlib.sha256(v2.read_bytes()).hexdigest()[:12]
    bad_v2 = lambda model_id: Outcome.FAIL if model_id == v2_id else Outcome.PASS  # noqa: E731
    ing = Ingest(plant.dsn, plant.engines.nats.url, prefix=plant.prefix, batch=200).start()
    canary = LineStation(plant, "can-1", "canary", bad_v2).start()
    wave = LineStation(plant, "w-1", "wave-1", bad_v2).start()
    late = LineStation(plant, "w-2", "wave-1", bad_v2).start(follow=False)  # offline for the rollout
    conn = psycopg.connect(plant.dsn)
    try:
        ctl = plant.rollout(conn)
        limits = Limits(min_parts=40, max_reject_rate=0.2, max_failsafe_rate=0.01, max_latency_ms_p95=100, timeout_s=60)
        done = ctl.promote(v1, "v1", ["canary", "wave-1"], limits)
        assert done["state"] == "done" and done["reached"] == ["canary", "wave-1"], done
        assert canary.follower.version == wave.follower.version == "v1"

        late.follower.start()  # back online: converges on the group's desired model
        wait_until(lambda: late.follower.version == "v1", 20, "the offline station converges")

        back = ctl.promote(v2, "v2", ["canary", "wave-1"], limits)
        assert back["state"] == "rolled_back" and back["reached"] == ["canary"], back
        assert "group canary: reject rate" in back["reason"]
        wait_until(
            lambda: canary.follower.version == "v1" and canary.model_id != v2_id, 20, "the canary swapped back to v1"
        )
        assert canary.follower.swaps == 3, "v1, v2, v1 again"
        assert wave.follower.swaps == 1 and late.follower.swaps == 1, "wave-1 never saw v2"
    finally:
        conn.close()
        for st in (canary, wave, late):
            st.stop()
        ing.stop()


def test_a_model_that_does_not_load_keeps_the_last_good_one_and_is_reported(plant: Plant, tmp_path):
    v1 = onnx_model(tmp_path / "v1.onnx", 1.0)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(v1.read_bytes()[:40])  # truncated: onnxruntime refuses it
    ing = Ingest(plant.dsn, plant.engines.nats.url, prefix=plant.prefix, batch=200).start()
    st = LineStation(plant, "can-9", "canary", lambda _m: Outcome.PASS).start()
    conn = psycopg.connect(plant.dsn)
    try:
        ctl = plant.rollout(conn)
        limits = Limits(min_parts=20, max_reject_rate=0.2, timeout_s=60)
        assert ctl.promote(v1, "v1", ["canary"], limits)["state"] == "done"
        good = st.model_id
        res = ctl.promote(broken, "v-broken", ["canary"], limits)
        assert (
            res["state"] == "rolled_back" and "could not run it" in res["reason"] and "keeping v1" in res["reason"]
        ), res
        assert st.model_id == good and st.follower.version == "v1", "the last good model kept running"
        assert len(st.follower.failed) == 1 and st.follower.swaps == 1, "the broken model is not tried again"
    finally:
        conn.close()
        st.stop()
        ing.stop()
