"""Hot swap of a running model: a thread inspects continuously while models are swapped/refused."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from station.config.inspection import OnnxInspectorConfig
from station.contracts import Frame
from station.inspection.base import Inspector, ModelLoadError
from station.inspection.onnx_backend import OnnxInspector
from station.inspection.swap import SwappableInspector
from tests.model_factory import CLS_NAMES, classifying_model, detecting_model, draw_scene, tiny_model

os.environ.setdefault("YOLO_OFFLINE", "1")
pytestmark = pytest.mark.slow


@dataclass
class Call:
    seq: int
    t0: int
    t1: int
    model_id: str
    n: int


def _factory(path: Path):
    return lambda: OnnxInspector(OnnxInspectorConfig(model=path, conf=0.1, keepalive_s=0))


def test_swap_under_a_running_loop(tmp_path: Path) -> None:
    path_a = detecting_model()
    path_b = tiny_model("detect", imgsz=64, epochs=1)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(path_a.read_bytes()[: 3 * 1024 * 1024])

    first = _factory(path_a)()
    sw = SwappableInspector(first)
    assert isinstance(sw, Inspector)
    id_a = sw.model_id
    rng = np.random.default_rng(0)
    frames = [draw_scene(rng, (96, 128), 2, 12, 28)[0] for _ in range(8)]

    calls: list[Call] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def loop() -> None:
        seq = 0
        while not stop.is_set():
            f = Frame(part_id=seq, camera_id="cam0", image=frames[seq % len(frames)], t_exposure_ns=0)
            t0 = time.monotonic_ns()
            try:
                det = sw.inspect(f)
            except BaseException as e:  # record and stop: the assertion below reports it
                errors.append(e)
                return
            calls.append(Call(seq, t0, time.monotonic_ns(), det.model_id, len(det)))
            seq += 1

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    time.sleep(0.5)

    done: list[Exception | None] = []
    t_swap_asked = time.monotonic_ns()
    sw.load_async(_factory(path_b), done.append).join(timeout=120)
    assert done == [None]
    id_b = sw.model_id
    assert id_b != id_a and id_b == sw.current.model_id
    time.sleep(0.5)

    sw.load_async(_factory(corrupt), done.append).join(timeout=120)
    assert len(done) == 2 and isinstance(done[1], ModelLoadError) and str(corrupt) in str(done[1])
    assert sw.model_id == id_b  # refused: the running model is untouched
    time.sleep(0.5)
    stop.set()
    worker.join(timeout=30)

    assert not errors, errors
    assert not worker.is_alive()
    ids = [c.model_id for c in calls]
    assert set(ids) == {id_a, id_b}
    k = ids.index(id_b)
    assert ids[:k] == [id_a] * k and ids[k:] == [id_b] * (len(ids) - k), "model order must be A...A B...B"
    assert k > 0 and len(ids) - k > 0
    assert [c.seq for c in calls] == list(range(len(calls)))  # every call returned, in order

    ok, failed = sw.history
    assert ok.ok and (ok.old_model_id, ok.new_model_id) == (id_a, id_b) and ok.load_s > 0
    assert (
        not failed.ok
        and failed.old_model_id == id_b
        and failed.new_model_id is None
        and "not a valid ONNX" in failed.error
    )
    assert t_swap_asked < ok.t_ns < failed.t_ns
    # a part that started after the swap ran on B; a part that ended before it ran on A
    assert all(c.model_id == id_b for c in calls if c.t0 > ok.t_ns)
    assert all(c.model_id == id_a for c in calls if c.t1 < ok.t_ns)
    # the old model was closed once swapped out; the new one is still serving
    assert not first.ready and sw.ready
    sw.close()
    assert not sw.current.ready


def test_swap_to_another_task_and_failed_factory() -> None:
    sw = SwappableInspector(_factory(detecting_model())())
    img = draw_scene(np.random.default_rng(1), (64, 64), 1, 16, 30)[0]
    f = Frame(part_id=1, camera_id="cam0", image=img, t_exposure_ns=0)
    assert sw.inspect(f).names == sw.names

    def broken() -> Inspector:
        raise RuntimeError("disk on fire")

    done: list[Exception | None] = []
    sw.load_async(broken, done.append).join(timeout=30)
    assert isinstance(done[0], RuntimeError) and sw.history[-1].error == "disk on fire"

    sw.load_async(_factory(classifying_model())).join(timeout=120)  # on_done is optional
    assert sw.names == CLS_NAMES
    det = sw.inspect(f)
    assert len(det) == len(CLS_NAMES) and det.model_id == sw.model_id  # classify: one entry per class
    sw.close()
    done.clear()
    sw.load_async(broken, done.append).join(timeout=30)
    assert isinstance(done[0], RuntimeError) and "closed" in str(done[0])
