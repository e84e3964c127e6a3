"""The plant tier's test helpers: parts for simulated stations, waiting, a per-test plant.

The engines themselves (NATS, PostgreSQL, SeaweedFS) are started once per test
session by the ``plant_engines`` fixture in tests/integration/plant/conftest.py.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from station.bus import Bus
from station.config import WebConfig
from station.config.plant import PlantLinkConfig
from station.contracts import Defect, Frame, Outcome, PartResult, Trigger, Verdict
from station.plant import wire
from station.plant.controller import RolloutController
from station.plant.engines import Engines
from station.plant.uplink import PlantUplink
from station.plant.web import build_server
from station.plant.web_state import PlantWebState

if TYPE_CHECKING:
    import psycopg

OUTCOME_CYCLE = (
    Outcome.PASS,
    Outcome.PASS,
    Outcome.FAIL,
    Outcome.PASS,
    Outcome.FAILSAFE,
    Outcome.UNCERTAIN,
    Outcome.PASS,
)


def wait_until(pred: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    """Poll (test pacing only) until ``pred()``; fail the test on timeout."""
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


def part(
    part_id: int,
    *,
    outcome: Outcome | None = None,
    t_wall: float | None = None,
    image: np.ndarray | None = None,
    model_id: str = "m1",
) -> PartResult:
    """One part's result as a station's decision stage makes it (real types, one camera frame)."""
    outcome = outcome or OUTCOME_CYCLE[part_id % len(OUTCOME_CYCLE)]
    now_ns = time.monotonic_ns()
    img = image if image is not None else np.full((48, 64), part_id % 251, np.uint8)
    defects = (
        (Defect("scratch", 0.9, (1.0, 2.0, 10.0, 12.0), 1.2, "cam0", "reject", "scratch"),)
        if outcome == Outcome.FAIL
        else ()
    )
    verdict = Verdict(
        part_id, outcome, (), defects, model_id, "cfg", "cal", {"inference": 3.0}, now_ns - 4_000_000, now_ns
    )
    trig = Trigger(part_id, part_id, now_ns - 4_000_000, t_trigger_wall=t_wall if t_wall is not None else time.time())
    return PartResult(trig, verdict, (Frame(part_id, "cam0", img, now_ns),))


@dataclass
class Plant:
    """One test's slice of the shared engines: its own subject prefix and database."""

    engines: Engines
    prefix: str
    dsn: str
    bucket: str
    root: Path

    def link(self, **kw: object) -> PlantLinkConfig:
        """A station's ``plant:`` section pointing at this plant."""
        base: dict[str, object] = {
            "nats_url": self.engines.nats.url,
            "s3_endpoint": self.engines.s3.endpoint,
            "s3_bucket": self.bucket,
            "subject_prefix": self.prefix,
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 0.5,
        }
        return PlantLinkConfig.model_validate({**base, **kw})

    def s3(self) -> Any:
        """A client of this plant's object store, its bucket made."""
        s3 = wire.s3_client(self.engines.s3.endpoint, "k", "s")
        wire.ensure_bucket(s3, self.bucket)
        return s3

    def rollout(self, conn: psycopg.Connection) -> RolloutController:
        """The rollout controller of this plant, on the database connection ``conn``."""
        return RolloutController(conn, self.engines.nats.url, self.s3(), self.bucket, prefix=self.prefix)

    @contextlib.contextmanager
    def dashboard(self, users: Path) -> Iterator[str]:
        """The plant dashboard of this plant on a free loopback port, logins from the ``users`` file; its URL."""
        state = PlantWebState(
            dsn=self.dsn,
            users_db=users,
            s3=wire.s3_client(self.engines.s3.endpoint, "k", "s"),
            bucket=self.bucket,
            nats_url=self.engines.nats.url,
            prefix=self.prefix,
            cfg=WebConfig(port=0),
        )
        server, sock = build_server(state, "127.0.0.1", 0)
        th = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        th.start()
        wait_until(lambda: server.started, 10, "dashboard up")
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True
            th.join(10)
            sock.close()
            state.close()


_ids = itertools.count()


def new_plant(engines: Engines, tmp_path: Path) -> Plant:
    """A fresh subject prefix and database on the shared engines (and the one image bucket)."""
    tag = f"t{next(_ids)}{uuid.uuid4().hex[:6]}"
    return Plant(
        engines, tag, engines.pg.create_database(tag), "plant-test", tmp_path
    )  # keys are content hashes: one bucket serves all


class SimStation:
    """A simulated station: a real bus and a real :class:`PlantUplink`, fed parts by the test."""

    def __init__(self, name: str, cfg: PlantLinkConfig):
        self.name = name
        self.bus = Bus()
        self.alarms: list[tuple[str, str, str]] = []
        self.uplink = PlantUplink(
            cfg, name, self.bus.subscribe("plant", maxsize=cfg.queue_size), report=lambda *a: self.alarms.append(a)
        )
        self.sent = 0

    def start(self) -> SimStation:
        self.uplink.start()
        return self

    def send(self, n: int, **kw: object) -> None:
        """Decide ``n`` more parts (published on the bus as the station's decision stage does)."""
        for _ in range(n):
            self.sent += 1
            self.bus.publish(part(self.sent, **kw))  # type: ignore[arg-type]

    def stop(self) -> None:
        self.uplink.stop(flush_s=0)
